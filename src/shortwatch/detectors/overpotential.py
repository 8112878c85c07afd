"""overpotential_drop: soft breakdown in symmetric cells (Wang et al., Joule 2022, Fig. 3A/3D).

Li filaments open an electronic path R_e in parallel with the ionic path, so the plateau
overpotential of every half-cycle slowly falls, often after a rise. The detector follows
the area-specific resistance ASR = eta / J of each constant-current half-cycle:
- normalised by current density (ASR, not eta), and referred to a reference temperature
  with an Arrhenius factor whose activation energy is learned from the cell's own
  temperature changes (or set in config);
- judged only after a warm-up of a few cycles, so the healthy early decrease from contact
  improvement is learned into the baseline instead of alarming;
- a one-sided CUSUM of the fall below the highest smoothed level since warm-up: a sustained
  fall adds up, noise and single odd half-cycles do not;
- corroborated by the shape of the half-cycle: when the nucleation peak and the end-of-strip
  rise fade (the trace turns flat and ohmic), or when the voltage relaxes much faster at rest
  (the leak short-circuits the relaxation), a smaller fall suffices; and when a higher
  current density gives no higher overpotential, soft breakdown is flagged at once.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from shortwatch.detectors.base import Detector, Verdict
from shortwatch.detectors.stats import K_B_EV, Cusum, Ewma, RobustWindow, arrhenius_factor
from shortwatch.model import StepFeatures
from shortwatch.settings import CellSpec

if TYPE_CHECKING:
    from shortwatch.detectors.monitor import CellMonitor


ADVICE = (
    "Run a CV check (e.g. ±0.1 V at 0.1-1 mV/s) to confirm electronic leakage: a peak current that "
    "rises from one check to the next confirms soft breakdown (Wang et al., Joule 2022). Treat this "
    "cell's capacity and cycle-life data as suspect from this cycle on."
)


class OverpotentialDrop(Detector):
    name = "overpotential_drop"
    cell_kinds = ("symmetric",)
    params = {
        "warmup_cycles": (6, "cycles of interface stabilisation learned, not judged"),
        "allowance": (0.025, "tolerated fall below the peak ASR (fraction; CUSUM k, in ln units)"),
        "threshold": (0.4, "CUSUM h (ln units x half-cycles)"),
        "corroborated_threshold": (0.15, "h when the half-cycle profile has turned flat/ohmic"),
        "min_drop": (0.08, "and the ASR must be at least this far below its peak to warn..."),
        "corroborated_min_drop": (0.05, "...or this far with a flat, ohmic profile"),
        "shape_fade": (0.5, "profile counts as flat when its shape index falls below this share"),
        "smoothing": (0.3, "EWMA weight of the newest half-cycle in the level"),
        "activation_energy_eV": (None, "None: learned from the cell's temperature changes"),
        "default_activation_energy_eV": (0.4, "used until one is learned"),
        "reference_temperature_C": (25.0, "ASR is referred to this temperature"),
        "min_temperature_step_C": (2.0, "a change this large teaches the activation energy"),
        "rest_tau_fade": (0.5, "rests relax 'faster' when their time constant falls below this share"),
        "current_relearn_half_cycles": (2, "after a current-density step, half-cycles re-learned, not judged"),
        "temperature_relearn_half_cycles": (4, "after a temperature step (the cell warms slowly), the same"),
        "j_step_ratio": (1.1, "a current-density change beyond this is a new regime (CCD step)"),
        "min_half_cycle_s": (300.0, "shorter half-cycles are not judged"),
    }

    def __init__(self, spec: CellSpec, overrides: dict[str, Any] | None = None):
        super().__init__(spec, overrides)
        p = self.p
        self.cusum = Cusum(k=p["allowance"])
        self.level = Ewma(alpha=p["smoothing"])
        self.shape = Ewma(alpha=p["smoothing"])
        self.shape_ref: float | None = None
        self.peak: float | None = None  # highest smoothed ln ASR since warm-up
        self.peak_cycle: int | None = None
        self.half_cycles = 0
        self.since_regime = 0
        self.relearn = 2  # half-cycles re-learned after the last regime change
        self.warned_at: float | None = None  # ln ASR peak the fall was measured from when it warned
        self.t_regime: float | None = None  # temperature of the previous CC half-cycle
        self.j_ref: float | None = None
        self.eta_ref: float | None = None
        self.eta_unscaled: dict[str, float] | None = None
        self.ea_learned = RobustWindow(9)
        self.prev_by_dir: dict[str, list[float]] = {}  # direction -> [T, asr, J]
        self.fall_start_cycle: int | None = None
        self.rest_taus = RobustWindow(5)  # relaxation time constants of the early rests (s)
        self.rest_tau: float | None = None  # the latest one

    @property
    def activation_energy(self) -> float:
        if self.p["activation_energy_eV"] is not None:
            return float(self.p["activation_energy_eV"])
        learned = self.ea_learned.median()
        return learned if learned is not None else float(self.p["default_activation_energy_eV"])

    def _learn_activation_energy(self, f: StepFeatures, j: float) -> None:
        t, asr = f.temperature_C, f.asr_ohm_cm2
        prev = self.prev_by_dir.get(f.step_kind)
        if t is None or asr is None:
            return
        self.prev_by_dir[f.step_kind] = [t, asr, j]
        if prev is None or abs(t - prev[0]) < self.p["min_temperature_step_C"] or abs(math.log(j / prev[2])) > 0.05:
            return
        inv = 1.0 / (prev[0] + 273.15) - 1.0 / (t + 273.15)
        ea = K_B_EV * math.log(prev[1] / asr) / inv
        if 0.05 <= ea <= 1.5:  # a physical value; anything else is not a clean temperature step
            self.ea_learned.add(ea)

    def _learn_rest(self, f: StepFeatures) -> None:
        """Relaxation time constant of a rest after a half-cycle (time to 1/e of |V0|)."""
        if f.rest_tau_s is None or abs(f.v_start or 0.0) < 0.005:
            return  # no clear relaxation to time (or it outlasted the rest)
        self.rest_tau = f.rest_tau_s
        if len(self.rest_taus) < self.rest_taus.values.maxlen:  # type: ignore[operator]
            self.rest_taus.add(f.rest_tau_s)

    def on_step(self, f: StepFeatures, m: CellMonitor) -> Verdict | None:
        if f.step_kind == "rest" and not m.kind_mismatch:
            self._learn_rest(f)
            return None
        if f.step_kind not in ("charge", "discharge") or f.asr_ohm_cm2 is None or f.asr_ohm_cm2 <= 0:
            return None
        if m.kind_mismatch:
            return None
        if f.duration_s < self.p["min_half_cycle_s"] or not f.current_density_mA_cm2:
            return None
        j = f.current_density_mA_cm2
        self._learn_activation_energy(f, j)
        asr = f.asr_ohm_cm2
        temp = f.temperature_C
        factor = 1.0
        if temp is not None:
            factor = arrhenius_factor(temp, self.p["reference_temperature_C"], self.activation_energy)
        asr *= factor
        eta_c = f.eta_V * factor if f.eta_V is not None else None  # eta referred to the reference temperature
        x = math.log(asr)
        shape = ((f.nucleation_V or 0.0) + (f.end_rise_V or 0.0)) / f.eta_V if f.eta_V else 0.0
        self.half_cycles += 1
        self.since_regime += 1
        if self.j_ref is None:
            self.j_ref, self.eta_ref = j, eta_c
        elif abs(math.log(j / self.j_ref)) > math.log(self.p["j_step_ratio"]):
            self._new_current_regime(j, eta_c)
        elif (
            temp is not None
            and self.t_regime is not None
            and abs(temp - self.t_regime) >= self.p["min_temperature_step_C"]
        ):
            # an abrupt oven step (from one half-cycle to the next, not a slow daily swing):
            # the Arrhenius correction is only as good as the activation energy (0.05 eV off is
            # 13 % over 20 K), so the level is re-learned at the new temperature
            self._new_regime(self.p["temperature_relearn_half_cycles"])
        if temp is not None:
            self.t_regime = temp  # the previous half-cycle's temperature, for the next comparison
        warm = self.half_cycles <= 2 * self.p["warmup_cycles"] or self.since_regime <= self.relearn
        level = self.level.update(x)
        shape_level = self.shape.update(shape)
        if warm and self.eta_unscaled is None:
            # learning: the level follows the newest value without lag, so a healthy early
            # decrease (contact improvement) leaves no stale high level behind
            self.level.value = level = x
            self.peak, self.peak_cycle = level, f.cycle
            self.shape_ref = shape_level
            self.eta_ref = eta_c
            if self.state_name == "warning":
                return None  # re-learning after a step does not undo a fall: the warning stands
            return self.verdict(f.t_end, "ok", 0.0, self.p["threshold"]) if self.state_name != "ok" else None
        if self.peak is None or level > self.peak:
            self.peak, self.peak_cycle = level, f.cycle
        fall = self.peak - x  # type: ignore[operator]
        s = self.cusum.update(fall)
        if s == 0.0:
            self.fall_start_cycle = None
            self.shape_ref = shape_level if self.shape_ref is None else max(self.shape_ref, shape_level)
            self.eta_ref = eta_c
        elif self.fall_start_cycle is None:
            self.fall_start_cycle = f.cycle
        shape_ratio = shape_level / self.shape_ref if self.shape_ref else None
        flat = shape_ratio is not None and shape_ratio < self.p["shape_fade"]
        tau_ref = self.rest_taus.median() if len(self.rest_taus) >= 2 else None
        tau_ratio = self.rest_tau / tau_ref if tau_ref and self.rest_tau else None
        fast_rest = tau_ratio is not None and tau_ratio < self.p["rest_tau_fade"]
        corroborated = flat or fast_rest
        h = self.p["corroborated_threshold"] if corroborated else self.p["threshold"]
        min_fall = -math.log(1.0 - (self.p["corroborated_min_drop"] if corroborated else self.p["min_drop"]))
        sustained = s > h and fall > min_fall
        if self.state_name == "warning" and self.warned_at is not None and x < self.warned_at - self.p["allowance"]:
            sustained = True  # a warning stands until the ASR is back near the level it fell from
        if self.eta_unscaled is not None or sustained:
            state = "warning"
            if self.state_name != "warning":
                self.warned_at = self.peak  # the level the ASR fell from
        elif s > h / 3 or fall > 2 * self.p["allowance"]:
            state = "watch"
        else:
            state = "ok"
        peak_asr = math.exp(self.peak)  # type: ignore[arg-type]
        drop_pct = 100.0 * (1.0 - asr / peak_asr)
        evidence = {
            "cycle": f.cycle,
            "half_cycle": f.step_index,
            "baseline_asr_ohm_cm2": round(peak_asr, 3),
            "asr_ohm_cm2": round(asr, 3),
            "asr_raw_ohm_cm2": round(f.asr_ohm_cm2, 3),
            "drop_pct": round(drop_pct, 1),
            "statistic": round(s, 4),
            "threshold": h,
            "peak_cycle": self.peak_cycle,
            "falling_since_cycle": self.fall_start_cycle,
            "current_density_mA_cm2": round(j, 4),
            "temperature_C": temp,
            "activation_energy_eV": round(self.activation_energy, 3),
            "profile_shape_ratio": None if shape_ratio is None else round(shape_ratio, 3),
            "profile_flat": flat,
            "rest_tau_ratio": None if tau_ratio is None else round(tau_ratio, 3),
            "rest_relaxes_faster": fast_rest,
        }
        if self.eta_unscaled:
            evidence.update(self.eta_unscaled)
        if state == "warning":
            why = []
            if sustained:
                why.append(f"ASR fell {drop_pct:.0f}% below its peak ({peak_asr:.1f} -> {asr:.1f} ohm cm2")
                why[-1] += f" at {self.p['reference_temperature_C']:.0f} C) since cycle {self.fall_start_cycle}"
            if flat:
                why.append("the half-cycle profile has turned flat and ohmic")
            if fast_rest:
                why.append(f"the voltage relaxes {1 / tau_ratio:.1f}x faster at rest")  # type: ignore[operator]
            if self.eta_unscaled:
                why.append("the overpotential did not rise with a higher current density")
            summary = f"Soft breakdown suspected in cycle {f.cycle}: " + "; ".join(why)
        elif state == "watch":
            summary = f"ASR {drop_pct:.0f}% below its peak at cycle {f.cycle}; watching"
        else:
            summary = f"ASR back within {100 * self.p['allowance']:.0f}% of its peak at cycle {f.cycle}"
        return self.verdict(f.t_end, state, s, h, summary, evidence, ADVICE)

    def _new_current_regime(self, j: float, eta_c: float | None) -> None:
        """A current-density step (e.g. a CCD test): healthy eta scales with J, so a higher J
        with an unchanged or lower eta is itself a sign of soft breakdown (seed 000). Both
        etas are referred to the reference temperature: a warmer oven lowers eta too."""
        ratio = j / self.j_ref  # type: ignore[operator]
        if ratio >= self.p["j_step_ratio"] and self.eta_ref and eta_c is not None and eta_c <= self.eta_ref * 1.02:
            self.eta_unscaled = {
                "eta_before_V": round(self.eta_ref, 5),
                "eta_after_V": round(eta_c, 5),
                "j_before_mA_cm2": round(self.j_ref, 4),  # type: ignore[arg-type]
                "j_after_mA_cm2": round(j, 4),
            }
        self.j_ref = j
        self._new_regime(self.p["current_relearn_half_cycles"])

    def _new_regime(self, relearn: int) -> None:
        """A current or temperature step: the level is re-anchored after ``relearn``
        half-cycles; the fall accumulated so far (the CUSUM) is kept, so steps cannot hide a
        slow fall."""
        self.relearn = relearn
        self.since_regime = 0
        self.level = Ewma(alpha=self.p["smoothing"])
        self.peak = None
