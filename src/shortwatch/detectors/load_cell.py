"""load_cell (kind ``data``): a stuck or saturated load cell.

In a fixed-gap fixture, plating and stripping Li must move the stack pressure, and a live
load cell always shows some noise in its last digit. A reading that stays exactly the same
for an hour of data while current flows is a sensor that stopped (or sits at its rail), and
every pressure feature of the cell is then meaningless. It resolves when the reading moves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shortwatch.detectors.base import Detector, Verdict
from shortwatch.model import Sample
from shortwatch.settings import CellSpec

if TYPE_CHECKING:
    from shortwatch.detectors.monitor import CellMonitor


class LoadCell(Detector):
    name = "load_cell"
    kind = "data"
    per_sample = True
    # in a symmetric cell, plating one side and stripping the other leave the stack height,
    # and so a coarsely rounded reading, unchanged for hours: no evidence of a stuck sensor
    cell_kinds = ("full", "anode-free")
    params = {
        "stuck_s": (3600.0, "an unchanged raw reading under current for this long (data seconds) is stuck"),
        "constant_pressure": (False, "judge constant-pressure fixtures too (a servo may hold the reading)"),
    }

    def __init__(self, spec: CellSpec, overrides: dict[str, Any] | None = None):
        super().__init__(spec, overrides)
        self.value: float | None = None
        self.since: float | None = None  # data time the current value first appeared
        self.under_current_s = 0.0  # of that time, how long current flowed
        self.t_prev: float | None = None

    def on_sample(self, s: Sample, pressure: float | None, m: CellMonitor) -> Verdict | None:
        raw = s.pressure_MPa
        if raw is None:
            return None
        if self.spec.fixture == "constant-pressure" and not self.p["constant_pressure"]:
            return None
        t = s.time
        if raw != self.value:
            stuck_before = self.state_name != "ok"
            self.value, self.since, self.under_current_s, self.t_prev = raw, t, 0.0, t
            if stuck_before:
                summary = f"The load cell of {m.cell} reads again ({raw} MPa)"
                return self.verdict(t, "ok", 0.0, None, summary, {"pressure_MPa": raw, "cycle": m.segmenter.cycle})
            return None
        i = m.current_A
        if i is not None and abs(i) > m.segmenter.rest_threshold() and self.t_prev is not None:
            self.under_current_s += t - self.t_prev
        self.t_prev = t
        limit = self.p["stuck_s"]
        if self.state_name != "ok" or self.under_current_s < limit:
            return None
        hours = (t - self.since) / 3600.0  # type: ignore[operator]
        summary = (
            f"The load cell of {m.cell} has read exactly {raw} MPa for {hours:.1f} h while current flowed: "
            "stuck or saturated; its pressure features are not to be trusted"
        )
        evidence = {
            "pressure_MPa": raw,
            "unchanged_since_s": self.since,
            "under_current_s": round(self.under_current_s),
            "threshold": limit,
            "cycle": m.segmenter.cycle,
        }
        advice = "Check the load cell, its amplifier and cable, and its range (is the reading at full scale?)."
        return self.verdict(t, "warning", self.under_current_s, limit, summary, evidence, advice)
