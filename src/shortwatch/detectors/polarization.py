"""polarization_rise: stripping voids that grow towards a short (seeds 002 and 004).

When Li is stripped faster than creep refills the interface, voids open: the stripping
half-cycle's |V| rises more and more towards its end, and from one cycle to the next, and
dendrites then grow "with the increasing polarization" until the cell shorts. The sign is
the opposite of soft breakdown (a rise, not a fall), so this detector watches what
``overpotential_drop`` cannot:

- per half-cycle, the end-of-strip polarization normalised by J and referred to 25 C,
  y = ln((plateau |V| + end-of-strip rise) / J), against the cell's own recent linear trend
  (healthy interphase growth is a slow, linear rise and is part of the trend; a settling
  cell's falling trend is taken as level). A one-sided CUSUM of the excess over the trend,
  per hour of cycling, with an allowance no smaller than the trend's own scatter, warns;
  an excess of ``critical_rise`` escalates;
- per sample, within one galvanostatic step: |V| running away to ``runaway_ratio`` times the
  step's own plateau and beyond what the trend expects at this J and temperature is
  critical at once (voids can build up in minutes before the voltage collapses).

Current, temperature and pressure steps and long pauses re-anchor the trend's level (its
slope is kept): contact and kinetics change at a step, voids do not appear in one.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from shortwatch.detectors.base import Detector, Verdict
from shortwatch.detectors.segmentation import CC_KINDS
from shortwatch.detectors.stats import Cusum, TrendResidual, arrhenius_factor
from shortwatch.model import Sample, StepFeatures
from shortwatch.settings import CellSpec

if TYPE_CHECKING:
    from shortwatch.detectors.monitor import CellMonitor

ADVICE = (
    "Stripping polarization is growing: voids are opening at the Li interface and dendrites tend to grow "
    "with it (Deysher et al.; Liu et al., Adv. Energy Mater. 2021). Lower the current density, check the "
    "stack pressure (too little lets voids form), and expect dendrites: a short may follow."
)


class PolarizationRise(Detector):
    name = "polarization_rise"
    per_sample = True
    cell_kinds = ("symmetric",)
    params = {
        "warmup_cycles": (6, "cycles learned, not judged"),
        "allowance": (0.03, "tolerated excess over the trend (ln units; CUSUM k)"),
        "threshold": (0.3, "CUSUM h (ln units x hours of cycling)"),
        "min_rise": (0.1, "and the polarization must be at least this far above its trend to warn"),
        "critical_rise": (0.5, "this far above its trend is critical"),
        "runaway_ratio": (2.0, "within a step: |V| this many times the step's own plateau..."),
        "runaway_expected_ratio": (1.5, "...and this many times the end-of-strip |V| the trend expects"),
        "runaway_samples": (3, "consecutive samples that confirm a runaway"),
        "relearn_half_cycles": (3, "after a J, temperature or pressure step or a pause, half-cycles re-anchored"),
        "j_step_ratio": (1.1, "a current-density change beyond this is a new regime"),
        "min_temperature_step_C": (2.0, "a temperature change this large is a new regime"),
        "pressure_step_MPa": (0.3, "a stack-pressure change beyond this (and 5 %) is a new regime"),
        "pause_h": (2.0, "a pause this long between half-cycles is a new regime"),
        "activation_energy_eV": (0.4, "Arrhenius correction to 25 C (overpotential_drop's learned one when it runs)"),
        "min_half_cycle_s": (300.0, "shorter half-cycles are not judged"),
    }

    _transient = (*Detector._transient, "runaway_ratio", "expected_ratio")

    def __init__(self, spec: CellSpec, overrides: dict[str, Any] | None = None):
        super().__init__(spec, overrides)
        self.runaway_ratio = self.p["runaway_ratio"]
        self.expected_ratio = self.p["runaway_expected_ratio"]
        self.trend = TrendResidual(size=16, min_ref=6)
        self.cusum = Cusum(k=0.0)
        self.half_cycles = 0
        self.since_regime = 0
        self.relearn = 0
        self.pending: list[float] = []  # residuals of the re-anchoring half-cycles
        self.prev: list[float | None] = [None, None, None, None]  # J, T, P, t_end of the last half-cycle
        self.rise_start_cycle: int | None = None
        self.base_y: float | None = None  # the trend's value when the rise began
        # within-step runaway (per sample): expected end-of-strip |V|/|I| (ohm) at 25 C
        self.r_ref = 0.0
        self.r_expected: float | None = None
        self.step_id = -1
        self.step_min = math.inf
        self.step_n = 0
        self.over = 0

    # ---------------------------------------------------------------- per half-cycle
    def _factor(self, temp: float | None, m: CellMonitor) -> float:
        if temp is None:
            return 1.0
        od = m.detectors.get("overpotential_drop")
        ea = od.activation_energy if od is not None else self.p["activation_energy_eV"]  # type: ignore[attr-defined]
        return arrhenius_factor(temp, 25.0, ea)

    def on_step(self, f: StepFeatures, m: CellMonitor) -> Verdict | None:
        if f.step_kind not in CC_KINDS or m.kind_mismatch or f.eta_V is None or f.eta_V <= 0:
            return None
        j = f.current_density_mA_cm2
        if not j or f.duration_s < self.p["min_half_cycle_s"] or f.gap_s > 0:
            return None
        factor = self._factor(f.temperature_C, m)
        v_end = f.eta_V + max(f.end_rise_V or 0.0, 0.0)
        y = math.log(v_end * factor / (j / 1000.0))
        t_h = f.t_end / 3600.0
        self.half_cycles += 1
        self.since_regime += 1
        if self._regime_changed(f, j):
            self.relearn = self.p["relearn_half_cycles"]
            self.since_regime = 0
            self.pending = []
        self.prev = [j, f.temperature_C, f.p_end, f.t_end]
        if self.half_cycles <= 2 * self.p["warmup_cycles"]:
            self.trend.add(t_h, y)
            return None
        pred = self._predict(t_h)
        if pred is None:
            self.trend.add(t_h, y)
            return None
        yhat, sigma = pred
        if self.since_regime < self.relearn:
            # a step moved the level: re-anchor the trend by the offset these half-cycles show
            self.pending.append(y - yhat)
            if len(self.pending) >= self.relearn:
                off = sorted(self.pending)[len(self.pending) // 2]
                self.trend.shift(off)
                self.relearn = 0
            return None
        excess = y - yhat
        k = max(self.p["allowance"], 2.0 * sigma)
        weight = min(max(f.duration_s / 3600.0, 0.25), 3.0)
        s = self.cusum.update(weight * (excess - k))
        if s == 0.0:
            self.trend.add(t_h, y)
            self.rise_start_cycle = self.base_y = None
        elif self.rise_start_cycle is None:
            self.rise_start_cycle, self.base_y = f.cycle, yhat
        rise = y - (self.base_y if self.base_y is not None else yhat)
        self.r_ref = math.exp(yhat) / self.spec.area_cm2  # ohm at 25 C
        self.r_expected = self.r_ref / factor  # ohm at this half-cycle's temperature
        if rise >= math.log(1.0 + self.p["critical_rise"]) and s > self.p["threshold"]:
            state = "critical"
        elif s > self.p["threshold"] and rise >= math.log(1.0 + self.p["min_rise"]):
            state = "warning"
        elif self.state_name == "critical" and s > 0:
            state = "critical"  # escalated: stands until the polarization is back on its trend
        elif self.state_name == "warning" and s > 0:
            state = "warning"
        elif s > self.p["threshold"] / 3:
            state = "watch"
        else:
            state = "ok"
        if state == self.state_name == "ok":
            return None
        end_share = (f.end_rise_V or 0.0) / f.eta_V
        rise_pct = 100.0 * (math.exp(rise) - 1.0)
        evidence = {
            "cycle": f.cycle,
            "half_cycle": f.step_index,
            "polarization_ohm_cm2": round(math.exp(y), 3),
            "trend_ohm_cm2": round(math.exp(yhat), 3),
            "rise_pct": round(rise_pct, 1),
            "end_of_strip_share": round(end_share, 3),
            "statistic": round(s, 4),
            "threshold": self.p["threshold"],
            "rising_since_cycle": self.rise_start_cycle,
            "current_density_mA_cm2": round(j, 4),
            "temperature_C": f.temperature_C,
            "pressure_MPa": f.p_end,
        }
        if state in ("warning", "critical"):
            summary = (
                f"Stripping polarization rising in cycle {f.cycle}: end-of-strip |V|/J {rise_pct:.0f}% above its "
                f"trend ({math.exp(yhat):.1f} -> {math.exp(y):.1f} ohm cm2 at 25 C) since cycle {self.rise_start_cycle}"
                f"; end-of-strip rise {100 * end_share:.0f}% of the plateau"
            )
        elif state == "watch":
            summary = f"Polarization {rise_pct:.0f}% above its trend at cycle {f.cycle}; watching"
        else:
            summary = f"Polarization back on its trend at cycle {f.cycle}"
        return self.verdict(f.t_end, state, s, self.p["threshold"], summary, evidence, ADVICE)

    def _predict(self, t_h: float) -> tuple[float, float] | None:
        """The trend's value now and its scatter; a falling trend (settling) counts as level."""
        pred = self.trend.predict(t_h)
        if pred is None:
            return None
        yhat, slope, sigma = pred
        if slope < 0:
            yhat = float(np.median(self.trend.ys))
        return yhat, sigma

    def _regime_changed(self, f: StepFeatures, j: float) -> bool:
        j0, t0, p0, end0 = self.prev
        if j0 is None:
            return False
        if abs(math.log(j / j0)) > math.log(self.p["j_step_ratio"]):
            return True
        if (
            t0 is not None
            and f.temperature_C is not None
            and abs(f.temperature_C - t0) >= self.p["min_temperature_step_C"]
        ):
            return True
        if p0 is not None and f.p_end is not None:
            step = max(self.p["pressure_step_MPa"], 0.05 * abs(p0))
            if abs(f.p_end - p0) >= step or (f.p_start is not None and abs(f.p_end - f.p_start) >= step):
                return True
        return end0 is not None and f.t_start - end0 >= 3600.0 * self.p["pause_h"]

    # ---------------------------------------------------------------- per sample
    def on_sample(self, s: Sample, pressure: float | None, m: CellMonitor) -> Verdict | None:
        """Runaway within one galvanostatic step: two comparisons per sample."""
        r_exp = self.r_expected
        if r_exp is None or m.segmenter.kind not in CC_KINDS or s.voltage_V is None or s.current_A is None:
            return None
        if m.step_index != self.step_id:
            self.step_id, self.step_min, self.step_n, self.over = m.step_index, math.inf, 0, 0
        v, i = s.voltage_V, s.current_A
        av = v if v > 0 else -v
        ai = i if i > 0 else -i
        self.step_n += 1
        if self.step_n > 3 and av < self.step_min:  # after the nucleation peak
            self.step_min = av
        if av > self.runaway_ratio * self.step_min and av > self.expected_ratio * r_exp * ai:
            # rare: only now is the temperature correction worth its exp()
            factor = self._factor(s.temperature_C, m)
            if av * factor > self.expected_ratio * self.r_ref * ai:
                self.over += 1
        else:
            self.over = 0
        if self.over >= self.p["runaway_samples"] and self.state_name != "critical":
            j = ai / self.spec.area_cm2 * 1000.0
            summary = (
                f"Polarization running away in cycle {m.segmenter.cycle}: |V| = {1e3 * av:.1f} mV under "
                f"{j:.3g} mA/cm2, {av / self.step_min:.1f}x this step's plateau ({1e3 * self.step_min:.1f} mV)"
            )
            evidence = {
                "cycle": m.segmenter.cycle,
                "voltage_V": v,
                "step_plateau_V": round(self.step_min, 6),
                "expected_end_of_strip_V": round(self.r_ref / self._factor(s.temperature_C, m) * ai, 6),
                "current_density_mA_cm2": round(j, 4),
                "statistic": round(av / self.step_min, 3),
                "threshold": self.runaway_ratio,
            }
            return self.verdict(s.time, "critical", av / self.step_min, self.runaway_ratio, summary, evidence, ADVICE)
        return None
