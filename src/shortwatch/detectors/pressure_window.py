"""pressure_window: stack pressure outside the cell's safe window.

Below ~1-3 MPa voids form at the Li interface; at 10 MPa or more Li creeps through the
separator (DOMAIN.md, Deysher et al.). The pressure the detector sees has passed a
median-of-3 filter in the monitor, and an excursion must last ``confirm_samples`` samples,
so a single wild load-cell reading is never taken for a pressure excursion.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shortwatch.detectors.base import Detector, Verdict
from shortwatch.model import Sample
from shortwatch.settings import CellSpec

if TYPE_CHECKING:
    from shortwatch.detectors.monitor import CellMonitor


class PressureWindow(Detector):
    name = "pressure_window"
    per_sample = True
    params = {
        "confirm_samples": (3, "consecutive (median-filtered) samples outside the window that warn"),
        "hysteresis_MPa": (0.1, "back inside by this margin to resolve"),
    }

    def __init__(self, spec: CellSpec, overrides: dict[str, Any] | None = None):
        super().__init__(spec, overrides)
        self.outside = 0
        self.inside = 0
        self.extreme: float | None = None

    def on_sample(self, s: Sample, pressure: float | None, m: CellMonitor) -> Verdict | None:
        if pressure is None:
            return None
        lo, hi = self.spec.pressure_window.min_MPa, self.spec.pressure_window.max_MPa
        hyst = self.p["hysteresis_MPa"]
        if pressure < lo or pressure > hi:
            self.outside += 1
            self.inside = 0
            if self.extreme is None or abs(pressure - (lo + hi) / 2) > abs(self.extreme - (lo + hi) / 2):
                self.extreme = pressure
        elif lo + hyst <= pressure <= hi - hyst:
            self.inside += 1
            self.outside = 0
        n = self.p["confirm_samples"]
        if (self.outside if self.state_name == "ok" else self.inside) < n:
            return None  # no transition: nothing to explain
        evidence = {"pressure_MPa": round(pressure, 3), "min_MPa": lo, "max_MPa": hi, "cycle": m.segmenter.cycle}
        if self.state_name == "ok" and self.outside >= n:
            low = pressure < lo
            summary = (
                f"Stack pressure {pressure:.2f} MPa is below the safe window ({lo}-{hi} MPa): voids may form"
                if low
                else f"Stack pressure {pressure:.2f} MPa is above the safe window ({lo}-{hi} MPa): Li may creep through"
            )
            advice = "Check the fixture and the load cell; re-tighten or adjust the stack pressure " + (
                "upward." if low else "downward before Li creeps into the separator."
            )
            return self.verdict(s.time, "warning", pressure, lo if low else hi, summary, evidence, advice)
        if self.state_name == "warning" and self.inside >= n:
            evidence["extreme_MPa"] = self.extreme
            self.extreme = None
            summary = f"Stack pressure back in the safe window ({pressure:.2f} MPa)"
            return self.verdict(s.time, "ok", pressure, None, summary, evidence, "")
        return None
