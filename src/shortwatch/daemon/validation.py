"""Gatekeeper between sources and monitors: bad input is counted, logged and quarantined.

What it checks for every sample, whatever its source:
- times: before 1900 (``bad_time``), or implausibly far ahead (``future_time``): of the wall
  clock (a day in live mode, a year in replay, where files are recorded), or, in replay, a
  year ahead of the cell's previous sample. One such row would otherwise be stored and
  make every later real row of its cell "out of order";
- cell ids (DESIGN.md: 1-128 printable characters without ``/``, ``+`` or ``#``): others are
  quarantined as ``bad_cell_id`` (they break exports, MQTT topics and tags);
- ``cycle`` and ``step``: integers from 0 to 2^31-1, else that field is dropped (``bad_integer``);
- non-finite or physically impossible channel values (often wrong units): that channel is
  dropped, the rest of the sample is kept, and the raw sample goes to quarantine;
- duplicate or out-of-order timestamps for a cell: the sample is quarantined, because
  detectors are causal and must see each cell's data once, in time order;
- cells with no config section: accepted with defaults (the first one logged at once, the
  others counted and summarised in one line), or quarantined when
  ``daemon.accept_unknown_cells`` is false.
Each kind of problem is logged once with an example; the counts are in ``counts``.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
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
T_MIN = -2_208_988_800.0  # 1900-01-01: no cell was measured before; export cannot write year < 1
FUTURE_LIVE_S = 86_400.0  # live: a day ahead of the wall clock (a wrong zone is at most 14 h)
FUTURE_REPLAY_S = 366 * 86_400.0  # replay: recorded files hold no future beyond clock skew
JUMP_S = 366 * 86_400.0  # replay: a jump this far ahead of the cell's previous sample
INT_MAX = 2**31 - 1  # cycle and step: what every store and InfluxDB integer field takes
UNKNOWN_SUMMARY_S = 60.0  # how often new cells without a config section are summarised
_BAD_ID_CHARS = frozenset("/+#")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def valid_cell_id(cell: str) -> bool:
    """DESIGN.md's rule: 1-128 printable characters without control characters, ``/``, ``+``, ``#``."""
    return 0 < len(cell) <= 128 and cell.isprintable() and _BAD_ID_CHARS.isdisjoint(cell)


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

    _transient = (
        "settings",
        "rejects",
        "i_limit",
        "dropped",
        "live",
        "_ahead_s",
        "_horizon",
        "_jump_s",
        "_unlogged",
        "_logged_at",
    )

    def __init__(self, settings: Settings, rejects: RejectCounter, live: bool = False):
        self.settings = settings
        self.rejects = rejects
        self.live = live
        self._ahead_s = FUTURE_LIVE_S if live else FUTURE_REPLAY_S
        self._horizon = time.time() + self._ahead_s  # re-read only when a time passes it
        self._jump_s = math.inf if live else JUMP_S
        # Time order: a cell's V/I samples are one series whatever stream they come in (so a
        # renamed or copied export is recognised as a repeat), while samples with neither V nor
        # I (a load cell, a thermometer) are ordered within their own stream, beside it.
        self.last: dict[str, Sample] = {}  # cell -> its last accepted V/I sample
        self.aux: dict[str, dict[str, Sample]] = {}  # stream -> cell -> its last auxiliary sample
        self.unknown_cells: set[str] = set()
        self._unlogged: list[str] = []  # unknown cells not yet named in a log line
        self._logged_at = 0.0
        self.i_limit: dict[str, float] = {}  # cell -> largest plausible |I| (A)
        # (channels, why) the last check dropped; the pipeline takes and clears it
        self.dropped: tuple[tuple[str, ...], str] | None = None

    def check(self, s: Sample, source: str, quarantine: list[Rejected]) -> Sample | None:
        """The sample to accept (possibly with channels dropped), or None."""
        cell = s.cell
        t = s.time
        if not (T_MIN <= t <= self._horizon) and not self._time_ok(s, source, quarantine):
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
        if last is not None and not (last.time < t <= last.time + self._jump_s):
            self._reject_order(s, last, source, quarantine)
            return None
        v, i, p, temp, cyc, step = s.voltage_V, s.current_A, s.pressure_MPa, s.temperature_C, s.cycle, s.step
        if not (
            (v is None or -V_LIMIT <= v <= V_LIMIT)
            and (i is None or -i_max <= i <= i_max)
            and (p is None or P_RANGE[0] <= p <= P_RANGE[1])
            and (temp is None or T_RANGE[0] <= temp <= T_RANGE[1])
            and (cyc is None or (type(cyc) is int and 0 <= cyc <= INT_MAX))
            and (step is None or (type(step) is int and 0 <= step <= INT_MAX))
        ):
            if not (
                (cyc is None or (type(cyc) is int and 0 <= cyc <= INT_MAX))
                and (step is None or (type(step) is int and 0 <= step <= INT_MAX))
            ):
                self._drop_integers(s, source, quarantine)
            bad = _bad_channels(s, self.settings.cell_spec(cell).area_cm2)
            if bad:
                reason = "non_finite" if any(not math.isfinite(getattr(s, f)) for f, _ in bad) else "out_of_range"
                self._reject(quarantine, s, source, reason, "; ".join(msg for _, msg in bad))
                self.dropped = (tuple(f for f, _ in bad), quarantine[-1].detail)
                for f, _ in bad:
                    setattr(s, f, None)
                if s.voltage_V is None and s.current_A is None and s.pressure_MPa is None:
                    return None
        book[cell] = s
        return s

    def _reject_order(self, s: Sample, last: Sample, source: str, quarantine: list[Rejected]) -> None:
        """Quarantine a sample not after the cell's last one, or implausibly far after it."""
        t = s.time
        if t > last.time:
            reason, detail = "future_time", f"{(t - last.time) / 86400:.0f} days after the cell's previous sample"
        elif t == last.time:
            same = (s.voltage_V, s.current_A, s.pressure_MPa) == (last.voltage_V, last.current_A, last.pressure_MPa)
            reason = "duplicate" if same else "duplicate_time"
            detail = "same time and values as the previous sample" if same else "same time, other values"
        else:
            reason, detail = "out_of_order", f"{last.time - t:.3f} s older than the cell's last sample"
        self._reject(quarantine, s, source, reason, detail)

    def _time_ok(self, s: Sample, source: str, quarantine: list[Rejected]) -> bool:
        """The rare times outside [1900, the cached horizon]: refresh the horizon, or reject."""
        t = s.time
        if t - t:  # NaN or inf
            self._reject(quarantine, s, source, "non_finite", "time is not a finite number")
            return False
        if t < T_MIN:
            self._reject(quarantine, s, source, "bad_time", f"time {t!r} is before 1900")
            return False
        now = time.time()
        self._horizon = now + self._ahead_s
        if t <= self._horizon:
            return True
        self._reject(
            quarantine,
            s,
            source,
            "future_time",
            f"time {t!r} is {(t - now) / 86400:,.0f} days ahead of the wall clock "
            f"(at most {self._ahead_s / 86400:.0f} accepted)",
        )
        return False

    def _drop_integers(self, s: Sample, source: str, quarantine: list[Rejected]) -> None:
        """Drop a cycle or step that is not an integer from 0 to INT_MAX; keep the sample."""
        bad = [
            (f, v)
            for f in ("cycle", "step")
            if (v := getattr(s, f)) is not None and not (type(v) is int and 0 <= v <= INT_MAX)
        ]
        detail = "; ".join(f"{f} {v!r} is not an integer from 0 to {INT_MAX}: dropped" for f, v in bad)
        self._reject(quarantine, s, source, "bad_integer", detail)
        for f, _ in bad:
            setattr(s, f, None)

    def _admit(self, cell: str, s: Sample, source: str, quarantine: list[Rejected]) -> bool:
        """A cell's first sample: is its id valid, is it configured, or may it run on defaults?"""
        if not valid_cell_id(cell):
            r = Rejected(
                source,
                "bad_cell_id",
                sample_raw(s),
                time=s.time,
                detail=f"cell id {cell[:200]!r}: a cell id is 1-128 printable characters without / + #",
            )
            quarantine.append(r)
            self.rejects.note(r)
            return False
        if cell in self.settings.cells or cell in self.unknown_cells:
            return True
        if not self.settings.daemon.accept_unknown_cells:
            self._reject(quarantine, s, source, "unknown_cell", f"cell {cell!r} has no [cells] section")
            return False
        self.unknown_cells.add(cell)
        self.rejects.counts["unknown_cell"] += 1
        if len(self.unknown_cells) == 1:
            log.warning(
                "cell %r has no [cells.%s] section in the config: using defaults "
                "(further such cells are counted and summarised)",
                cell,
                _toml_key(cell),
            )
            self._logged_at = time.monotonic()
        else:
            self._unlogged.append(cell)
        return True

    def report_unknown(self, force: bool = False) -> None:
        """One log line for the cells without a config section seen since the last one
        (at most every UNKNOWN_SUMMARY_S, or now when forced): 100k such cells are one line,
        not 100k warnings."""
        if not self._unlogged or (not force and time.monotonic() - self._logged_at < UNKNOWN_SUMMARY_S):
            return
        names = self._unlogged
        log.warning(
            "%d more cells have no [cells] section in the config (e.g. %s): using defaults; %d unknown cells in all",
            len(names),
            ", ".join(repr(c) for c in names[:5]),
            len(self.unknown_cells),
        )
        self._unlogged = []
        self._logged_at = time.monotonic()

    def state(self) -> dict[str, Any]:
        out = super().state()
        out["last"] = {c: _row(s) for c, s in self.last.items()}
        out["aux"] = {src: {c: _row(s) for c, s in cells.items()} for src, cells in self.aux.items()}
        out["unknown_cells"] = sorted(self.unknown_cells)
        return out

    def load(self, state: dict[str, Any]) -> None:
        """Resume, forgetting last times that today's checks would have refused: a checkpoint
        written before them may hold a far-future time that would block its cell for good."""
        super().load({k: v for k, v in state.items() if k not in ("last", "aux", "unknown_cells")})
        self.unknown_cells = set(state.get("unknown_cells", ()))
        horizon = time.time() + self._ahead_s
        dropped: list[str] = []

        def book(rows: dict[str, Any]) -> dict[str, Sample]:
            out = {}
            for c, x in rows.items():
                if not isinstance(x, list):
                    continue
                if x and isinstance(x[0], int | float) and T_MIN <= x[0] <= horizon:
                    out[c] = _sample(c, x)
                else:
                    dropped.append(c)
            return out

        self.last = book(state.get("last", {}))
        self.aux = {src: book(cells) for src, cells in state.get("aux", {}).items() if isinstance(cells, dict)}
        if dropped:
            log.warning(
                "checkpoint: forgot the last sample time of %d cell(s) (e.g. %s): before 1900 or far in the "
                "future, it would have put every later sample out of order",
                len(dropped),
                ", ".join(repr(c) for c in dropped[:5]),
            )

    def _reject(self, quarantine: list[Rejected], s: Sample, source: str, reason: str, detail: str) -> None:
        r = Rejected(source=source, reason=reason, raw=sample_raw(s), cell=s.cell, time=s.time, detail=detail)
        quarantine.append(r)
        self.rejects.note(r)


def _toml_key(cell: str) -> str:
    """The cell id as a TOML key: bare when it can be, else quoted (``"gcpl.pr_182.1"``)."""
    return cell if _BARE_KEY.fullmatch(cell) else json.dumps(cell, ensure_ascii=False)


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
