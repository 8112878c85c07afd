"""hard_short: the cell has shorted. Critical at once, within one or two samples.

Symmetric cells: under current, |V| collapses toward 0 and stays there: judged against the
overpotential the cell's recent half-cycles showed at this current density, so a healthy
low-resistance cell is not taken for a short. Full cells: while charging at constant
current the voltage drops suddenly and does not recover, or it collapses below a floor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shortwatch.detectors.base import Detector, Verdict
from shortwatch.detectors.stats import Ewma
from shortwatch.model import Sample, StepFeatures
from shortwatch.settings import CellSpec

if TYPE_CHECKING:
    from shortwatch.detectors.monitor import CellMonitor

ADVICE = (
    "Stop the test on this channel: the cell is shorted and further cycling only heats it. "
    "Record the time and disassemble for post-mortem."
)


class HardShort(Detector):
    name = "hard_short"
    per_sample = True
    params = {
        "collapse_fraction": 0.15,  # symmetric: |V| below this share of the expected overpotential...
        "collapse_max_V": 0.02,  # ...and below this absolute value
        "min_asr_ohm_cm2": 1.0,  # before any half-cycle is known: |V|/J below this (no real cell is)
        "min_current_density_mA_cm2": 0.02,  # "under current"
        "confirm_samples": 2,  # consecutive samples that confirm
        "recover_samples": 6,  # consecutive healthy samples that resolve
        "full_drop_V": 0.25,  # full cells: a sudden drop this large while charging...
        "full_floor_V": 1.0,  # ...or a voltage below this after the cell was charged
    }

    def __init__(self, spec: CellSpec, overrides: dict[str, Any] | None = None):
        super().__init__(spec, overrides)
        self.asr = Ewma(alpha=0.5)
        self.bad = 0
        self.good = 0
        self.v_prev: float | None = None
        self.i_prev: float | None = None
        self.v_before: float | None = None  # full cells: voltage before a suspicious drop
        self.was_charged = False

    def on_step(self, f: StepFeatures, m: CellMonitor) -> Verdict | None:
        if f.step_kind in ("charge", "discharge") and f.asr_ohm_cm2 and f.duration_s > 300 and self.state_name == "ok":
            self.asr.update(f.asr_ohm_cm2)
        return None

    def on_sample(self, s: Sample, pressure: float | None, m: CellMonitor) -> Verdict | None:
        v, i = s.voltage_V, s.current_A
        if v is None or i is None:
            return None
        if m.segmenter.kind not in ("charge", "discharge", "rest"):
            return None  # a CV hold or sweep imposes the voltage: a low one is no short
        if self.spec.kind == "symmetric":
            if m.kind_mismatch:
                return None
            shorted, healthy, detail = self._symmetric(v, i)
        else:
            shorted, healthy, detail = self._full(v, i)
        self.v_prev, self.i_prev = v, i
        if shorted:
            self.bad += 1
            self.good = 0
        elif healthy:
            self.good += 1
            self.bad = 0
        else:
            self.bad = 0
        if self.state_name != "critical" and self.bad >= self.p["confirm_samples"]:
            cycle = m.segmenter.cycle
            summary = f"Hard short in cycle {cycle}: {detail['what']}"
            evidence = {"cycle": cycle, **{k: v for k, v in detail.items() if k != "what"}}
            return self.verdict(s.time, "critical", abs(v), detail.get("threshold_V"), summary, evidence, ADVICE)
        if self.state_name == "critical" and self.good >= self.p["recover_samples"]:
            return self.verdict(
                s.time, "ok", abs(v), None, f"Voltage recovered ({v:.4f} V under {i * 1e3:.4g} mA)", {}, ""
            )
        return None

    def _symmetric(self, v: float, i: float) -> tuple[bool, bool, dict[str, Any]]:
        j = abs(i) / self.spec.area_cm2 * 1000.0
        if j < self.p["min_current_density_mA_cm2"]:
            return False, False, {}
        asr = self.asr.value
        if asr is None:
            limit = self.p["min_asr_ohm_cm2"] * j / 1000.0
            expected = None
        else:
            expected = asr * j / 1000.0
            limit = min(self.p["collapse_fraction"] * expected, self.p["collapse_max_V"])
        av = abs(v)
        detail = {
            "what": f"|V| = {av * 1e3:.2f} mV under {j:.3g} mA/cm2"
            + (f", expected about {expected * 1e3:.1f} mV" if expected else ""),
            "voltage_V": v,
            "current_density_mA_cm2": round(j, 4),
            "expected_overpotential_V": expected,
            "threshold_V": limit,
        }
        return av < limit, expected is not None and av > 0.5 * expected, detail

    def _full(self, v: float, i: float) -> tuple[bool, bool, dict[str, Any]]:
        if v > 3.0:
            self.was_charged = True
        floor = self.p["full_floor_V"]
        if self.was_charged and v < floor:
            return True, False, {"what": f"cell voltage collapsed to {v:.3f} V", "voltage_V": v, "threshold_V": floor}
        charging = i > 0 and self.i_prev is not None and self.i_prev > 0 and abs(i - self.i_prev) < 0.05 * abs(i)
        if self.v_before is not None:
            if charging and v < self.v_before - 0.5 * self.p["full_drop_V"]:
                drop = self.v_before - v
                return (
                    True,
                    False,
                    {
                        "what": f"voltage dropped {drop:.3f} V while charging at constant current and does not recover",
                        "voltage_V": v,
                        "voltage_before_V": self.v_before,
                        "drop_V": round(drop, 4),
                        "threshold_V": self.p["full_drop_V"],
                    },
                )
            self.v_before = None
            return False, True, {}
        if charging and self.v_prev is not None and self.v_prev - v > self.p["full_drop_V"]:
            self.v_before = self.v_prev
            drop = self.v_prev - v
            return (
                True,
                False,
                {
                    "what": f"voltage dropped {drop:.3f} V while charging at constant current",
                    "voltage_V": v,
                    "voltage_before_V": self.v_prev,
                    "drop_V": round(drop, 4),
                    "threshold_V": self.p["full_drop_V"],
                },
            )
        return False, charging, {}
