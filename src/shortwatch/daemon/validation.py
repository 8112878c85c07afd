"""Gatekeeper between sources and monitors: bad input is counted, logged and quarantined.

What it checks for every sample, whatever its source:
- non-finite or physically impossible channel values (often wrong units): that channel is
  dropped, the rest of the sample is kept, and the raw sample goes to quarantine;
- duplicate or out-of-order timestamps for a cell: the sample is quarantined, because
  detectors are causal and must see each cell's data once, in time order;
- cells with no config section: accepted with defaults (logged once), or quarantined
  when ``daemon.accept_unknown_cells`` is false.
Each kind of problem is logged once with an example; the counts are in ``counts``.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from typing import Any

from shortwatch.model import Rejected, Sample
from shortwatch.settings import Settings
from shortwatch.state import Stateful

log = logging.getLogger(__name__)

V_LIMIT = 10.0  # V: no single Li cell reads beyond this; larger values are usually mV
J_LIMIT_mA_cm2 = 1000.0  # cells run at 0.1-10 mA/cm2 (a short in a CV sweep: ~100); mA read as A is 1000x
P_RANGE = (-1.0, 200.0)  # MPa: a force in N or kg read as MPa lands far above this
T_RANGE = (-80.0, 300.0)  # degC: -2500 is a disconnected thermocouple


def sample_raw(s: Sample) -> str:
    """A sample as a canonical-CSV row, for the quarantine table."""
    return ",".join("" if v is None else str(v) for v in s.row())


class RejectCounter:
    """Counts rejections by reason and logs the first of each reason with an example."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def note(self, r: Rejected) -> None:
        self.counts[r.reason] += 1
        if self.counts[r.reason] == 1:
            log.warning(
                "rejected input (%s) from %s: %s; raw=%r (further %s are counted, not logged)",
                r.reason,
                r.source,
                r.detail or "-",
                r.raw[:200],
                r.reason,
            )


class SampleValidator(Stateful):
    """Per-cell last timestamps and the checks above; its state is checkpointed."""

    _transient = ("settings", "rejects", "i_limit", "dropped")

    def __init__(self, settings: Settings, rejects: RejectCounter):
        self.settings = settings
        self.rejects = rejects
        # Time order: a cell's V/I samples are one series whatever stream they come in (so a
        # renamed or copied export is recognised as a repeat), while samples with neither V nor
        # I (a load cell, a thermometer) are ordered within their own stream, beside it.
        self.last: dict[str, Sample] = {}  # cell -> its last accepted V/I sample
        self.aux: dict[str, dict[str, Sample]] = {}  # stream -> cell -> its last auxiliary sample
        self.unknown_cells: list[str] = []
        self.i_limit: dict[str, float] = {}  # cell -> largest plausible |I| (A)
        # (channels, why) the last check dropped; the pipeline takes and clears it
        self.dropped: tuple[tuple[str, ...], str] | None = None

    def check(self, s: Sample, source: str, quarantine: list[Rejected]) -> Sample | None:
        """The sample to accept (possibly with channels dropped), or None."""
        cell = s.cell
        t = s.time
        if not (-1e11 < t < 1e11):  # NaN and inf fail this too
            self._reject(quarantine, s, source, "non_finite", "time is not a finite number")
            return None
        i_max = self.i_limit.get(cell)
        if i_max is None:  # first sample of this cell
            if not self._admit(cell, s, source, quarantine):
                return None
            i_max = self.i_limit[cell] = J_LIMIT_mA_cm2 * self.settings.cell_spec(cell).area_cm2 / 1000.0
        if s.voltage_V is not None or s.current_A is not None:
            book = self.last
        else:
            book = self.aux.get(source)
            if book is None:
                book = self.aux[source] = {}
        last = book.get(cell)
        if last is not None and t <= last.time:
            if t == last.time:
                same = (s.voltage_V, s.current_A, s.pressure_MPa) == (last.voltage_V, last.current_A, last.pressure_MPa)
                reason = "duplicate" if same else "duplicate_time"
                detail = "same time and values as the previous sample" if same else "same time, other values"
            else:
                reason, detail = "out_of_order", f"{last.time - t:.3f} s older than the cell's last sample"
            self._reject(quarantine, s, source, reason, detail)
            return None
        v, i, p, temp = s.voltage_V, s.current_A, s.pressure_MPa, s.temperature_C
        if not (
            (v is None or -V_LIMIT <= v <= V_LIMIT)
            and (i is None or -i_max <= i <= i_max)
            and (p is None or P_RANGE[0] <= p <= P_RANGE[1])
            and (temp is None or T_RANGE[0] <= temp <= T_RANGE[1])
        ):
            bad = _bad_channels(s, self.settings.cell_spec(cell).area_cm2)
            reason = "non_finite" if any(not math.isfinite(getattr(s, f)) for f, _ in bad) else "out_of_range"
            self._reject(quarantine, s, source, reason, "; ".join(msg for _, msg in bad))
            self.dropped = (tuple(f for f, _ in bad), quarantine[-1].detail)
            for f, _ in bad:
                setattr(s, f, None)
            if s.voltage_V is None and s.current_A is None and s.pressure_MPa is None:
                return None
        book[cell] = s
        return s

    def _admit(self, cell: str, s: Sample, source: str, quarantine: list[Rejected]) -> bool:
        """A cell's first sample: is it configured, or may it run on defaults?"""
        if cell in self.settings.cells or cell in self.unknown_cells:
            return True
        if not self.settings.daemon.accept_unknown_cells:
            self._reject(quarantine, s, source, "unknown_cell", f"cell {cell!r} has no [cells] section")
            return False
        self.unknown_cells.append(cell)
        self.rejects.counts["unknown_cell"] += 1
        log.warning("cell %r has no [cells.%s] section in the config: using defaults", cell, cell)
        return True

    def state(self) -> dict[str, Any]:
        out = super().state()
        out["last"] = {c: _row(s) for c, s in self.last.items()}
        out["aux"] = {src: {c: _row(s) for c, s in cells.items()} for src, cells in self.aux.items()}
        return out

    def load(self, state: dict[str, Any]) -> None:
        super().load({k: v for k, v in state.items() if k not in ("last", "aux")})
        self.last = {c: _sample(c, x) for c, x in state.get("last", {}).items() if isinstance(x, list)}
        self.aux = {
            src: {c: _sample(c, x) for c, x in cells.items()}
            for src, cells in state.get("aux", {}).items()
            if isinstance(cells, dict)
        }

    def _reject(self, quarantine: list[Rejected], s: Sample, source: str, reason: str, detail: str) -> None:
        r = Rejected(source=source, reason=reason, raw=sample_raw(s), cell=s.cell, time=s.time, detail=detail)
        quarantine.append(r)
        self.rejects.note(r)


def _row(s: Sample) -> list[Any]:
    return [s.time, s.voltage_V, s.current_A, s.pressure_MPa]


def _sample(cell: str, row: list[Any]) -> Sample:
    return Sample(row[0], cell, row[1], row[2], row[3])


def _bad_channels(s: Sample, area_cm2: float) -> list[tuple[str, str]]:
    """(field, reason) for each channel that is non-finite or physically impossible."""
    bad = []
    v, i, p, temp = s.voltage_V, s.current_A, s.pressure_MPa, s.temperature_C
    if v is not None and not (-V_LIMIT <= v <= V_LIMIT):
        bad.append(("voltage_V", f"voltage {v} V outside ±{V_LIMIT} V (in mV? voltage_V is volts)"))
    if i is not None and not (abs(i) / area_cm2 * 1000.0 <= J_LIMIT_mA_cm2):
        j = abs(i) / area_cm2 * 1000.0
        bad.append(("current_A", f"current {i} A is {j:.4g} mA/cm2 on {area_cm2} cm2 (in mA? current_A is amperes)"))
    if p is not None and not (P_RANGE[0] <= p <= P_RANGE[1]):
        bad.append(("pressure_MPa", f"pressure {p} MPa outside {P_RANGE} (a force in N? pressure_MPa is MPa)"))
    if temp is not None and not (T_RANGE[0] <= temp <= T_RANGE[1]):
        bad.append(("temperature_C", f"temperature {temp} C outside {T_RANGE}"))
    return bad
