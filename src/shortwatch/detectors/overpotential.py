"""overpotential_drop: soft breakdown in symmetric cells (Wang et al., Joule 2022, Fig. 3A/3D).

Li filaments open an electronic path R_e in parallel with the ionic path, so the plateau
overpotential of every half-cycle slowly falls, often after a rise. The detector follows
the area-specific resistance ASR = eta / J of each constant-current half-cycle:
- normalised by current density (ASR, not eta), and referred to a reference temperature
  with an Arrhenius factor whose activation energy is learned from the cell's own
  temperature changes (or set in config);
- judged after a warm-up of a few cycles; contact settling that goes on longer (an
  exponential with a time constant of up to ~40 h) is told from breakdown by its shape: the
  reference level the fall is measured from may sink at the rate the cell settled at during
  its learning window, and that allowance decays with ``settling_tau_max_h``. Settling
  decelerates and stays inside it; soft breakdown starts from a level (no allowance) and
  accelerates out of it. This is a causal model comparison, O(1) per half-cycle;
- covariates before physics: a step in stack pressure (the operator tightens the fixture), a
  long pause, an oven step or a current step starts a new regime whose level is re-learned;
  every alert names the pressure, temperature and J at the reference level and now;
- a one-sided CUSUM of the fall below that reference, weighted by the half-cycle's length in
  hours (so 15-min and 3-h half-cycles accumulate alike per hour) with an allowance no
  smaller than the cell's own half-cycle-to-half-cycle scatter: a sustained fall adds up,
  noise and single odd half-cycles do not;
- corroborated by the shape of the half-cycle: when the nucleation peak and the end-of-strip
  rise fade (the trace turns flat and ohmic), or when the voltage relaxes much faster at rest
  (the leak short-circuits the relaxation), a smaller fall suffices; and when a higher
  current density gives no higher overpotential, soft breakdown is flagged at once.
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np

from shortwatch.detectors.base import Detector, Verdict, covariates
from shortwatch.detectors.stats import (
    K_B_EV,
    Cusum,
    Ewma,
    RobustWindow,
    arrhenius_factor,
    temperature_allowance,
    temperature_step_C,
)
from shortwatch.model import StepFeatures
from shortwatch.settings import CellSpec

if TYPE_CHECKING:
    from shortwatch.detectors.monitor import CellMonitor


ADVICE = (
    "Run a CV check (e.g. ±0.1 V at 0.1-1 mV/s) to confirm electronic leakage: a peak current that "
    "rises from one check to the next confirms soft breakdown (Wang et al., Joule 2022). Treat this "
    "cell's capacity and cycle-life data as suspect from this cycle on."
)


#: regimes after which a cell may settle (its settling rate is learned); never J or T steps
SETTLING_REGIMES = ("warm-up", "pressure step", "pause")


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
        "shape_fade": (0.5, "profile counts as flat when its shape index falls below this share..."),
        "shape_noise_sigmas": (3.0, "...and by this many sigmas of its own half-cycle-to-half-cycle scatter"),
        "smoothing": (0.3, "EWMA weight of the newest half-cycle in the level"),
        "activation_energy_eV": (None, "None: learned from the cell's temperature changes"),
        "default_activation_energy_eV": (0.4, "used until one is learned"),
        "activation_energy_uncertainty_eV": (0.15, "how far off the default may be (a third of it once learned)"),
        "reference_temperature_C": (25.0, "ASR is referred to this temperature"),
        "min_temperature_step_C": (2.0, "a change this large teaches the activation energy..."),
        "daily_swing_C": (4.0, "...and is a new regime, if beyond what a daily swing of this amplitude moves"),
        "rest_tau_fade": (0.5, "rests relax 'faster' when their time constant falls below this share"),
        "current_relearn_half_cycles": (2, "after a current-density step, half-cycles re-learned, not judged"),
        "temperature_relearn_half_cycles": (4, "after a temperature step (the cell warms slowly), the same"),
        "j_step_ratio": (1.1, "a current-density change beyond this is a new regime (CCD step)"),
        "min_half_cycle_s": (300.0, "shorter half-cycles are not judged"),
        "settling_tau_max_h": (40.0, "slowest contact settling told from breakdown (its allowance decays this fast)"),
        "pressure_step_MPa": (0.3, "a stack-pressure change beyond this (and 5 %) is a new regime..."),
        "pressure_relearn_half_cycles": (
            4,
            "...re-learned over this many half-cycles (contact follows within 1-2 cycles)",
        ),
        "pause_h": (2.0, "a pause (rest or data gap) this long between half-cycles is a new regime"),
        "settling_window_h": (8.0, "the warm-up, and learning after a pressure step or pause, last at least this long"),
        "noise_factor": (2.0, "the CUSUM allowance is at least this many sigmas of the cell's own scatter"),
    }

    def __init__(self, spec: CellSpec, overrides: dict[str, Any] | None = None):
        super().__init__(spec, overrides)
        p = self.p
        self.cusum = Cusum(k=0.0)  # the allowance is applied per half-cycle (noise-scaled)
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
        # covariates (pressure MPa, temperature C, J mA/cm2) at the reference level, and now
        self.ref_cov: list[float | None] = [None, None, None]
        self.p_regime: float | None = None  # stack pressure of the previous half-cycle
        self.t_cc_end: float | None = None  # end of the previous half-cycle (pauses)
        self.regime_kind = "warm-up"  # what started the current regime
        self.regime_t0: float | None = None  # when it started (h)
        # settling allowance: ln-ASR per hour the reference may sink, decaying from t_settle
        self.settle_rate = 0.0
        self.t_settle = 0.0
        self.t_prev: float | None = None  # end of the previous judged half-cycle
        self.learn_pts: deque[list[float]] = deque(maxlen=32)  # (t_h, x) of the learning window
        self.last_x: dict[str, float] = {}  # direction -> x, for the scatter
        self.scatter = Ewma(alpha=0.1)  # mean |x - x of the previous same-direction half-cycle|
        self.last_shape: dict[str, float] = {}  # direction -> shape index, for its scatter
        self.shape_scatter = Ewma(alpha=0.1)  # mean |shape - shape of the previous same-direction one|

    @property
    def activation_energy(self) -> float:
        if self.p["activation_energy_eV"] is not None:
            return float(self.p["activation_energy_eV"])
        if len(self.ea_learned) < 2:  # one step could be a fluke
            return float(self.p["default_activation_energy_eV"])
        return self.ea_learned.median()  # type: ignore[return-value]

    @property
    def ea_uncertainty(self) -> float:
        """How far off the activation energy may be (eV): ``activation_energy_uncertainty_eV``
        while the default is used, a third of it once set in config or learned."""
        unc = float(self.p["activation_energy_uncertainty_eV"])
        if self.p["activation_energy_eV"] is not None or len(self.ea_learned) >= 2:
            unc /= 3.0
        return unc

    def _temperature_stepped(self, temp: float | None, f: StepFeatures) -> bool:
        """An oven step since the half-cycle before: beyond ``min_temperature_step_C`` and beyond
        what a daily swing of ``daily_swing_C`` moves the temperature in the time between them (a
        +-3 C day read over 3-h half-cycles made a step of every third one, and a leaking cell
        was re-learned all the time)."""
        if temp is None or self.t_regime is None or self.t_cc_end is None:
            return False
        step = temperature_step_C(self.p["min_temperature_step_C"], self.p["daily_swing_C"], f.t_end - self.t_cc_end)
        return abs(temp - self.t_regime) >= step

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
        temp = f.temperature_C
        abrupt = (
            self._temperature_stepped(temp, f)
            # ...from one half-cycle to the very next: across a pause the ASR moved for other reasons
            and f.t_start - self.t_cc_end < 3600.0 * self.p["pause_h"]  # type: ignore[operator]
        )
        if abrupt:  # only an oven step teaches Ea: a daily swing mixes it up with growth and noise
            self._learn_activation_energy(f, j)
        elif temp is not None:
            self.prev_by_dir[f.step_kind] = [temp, f.asr_ohm_cm2, j]
        asr = f.asr_ohm_cm2
        factor = 1.0
        if temp is not None:
            factor = arrhenius_factor(temp, self.p["reference_temperature_C"], self.activation_energy)
        asr *= factor
        eta_c = f.eta_V * factor if f.eta_V is not None else None  # eta referred to the reference temperature
        x = math.log(asr)
        shape = ((f.nucleation_V or 0.0) + (f.end_rise_V or 0.0)) / f.eta_V if f.eta_V else 0.0
        self.half_cycles += 1
        self.since_regime += 1
        pres = f.p_end
        t_h = f.t_end / 3600.0
        prev_x = self.last_x.get(f.step_kind)
        self.last_x[f.step_kind] = x
        if prev_x is not None:
            self.scatter.update(abs(x - prev_x))
        prev_shape = self.last_shape.get(f.step_kind)
        self.last_shape[f.step_kind] = shape
        if prev_shape is not None:
            self.shape_scatter.update(abs(shape - prev_shape))
        if self.j_ref is None:
            self.j_ref, self.eta_ref = j, eta_c
        elif abs(math.log(j / self.j_ref)) > math.log(self.p["j_step_ratio"]):
            self._new_current_regime(j, eta_c)
        elif self.t_cc_end is not None and f.t_start - self.t_cc_end >= 3600.0 * self.p["pause_h"]:
            # first: across a pause the temperature (a daily swing) and the pressure may have
            # moved too, but the cell may also recover from the pause for hours: only a pause
            # regime learns that settling
            self._new_regime(self.p["pressure_relearn_half_cycles"], "pause")
        elif self._temperature_stepped(temp, f):
            # an abrupt oven step (from one half-cycle to the next, not a slow daily swing):
            # the Arrhenius correction is only as good as the activation energy (0.05 eV off is
            # 13 % over 20 K), so the level is re-learned at the new temperature
            self._new_regime(self.p["temperature_relearn_half_cycles"], "temperature step")
        elif self._pressure_step(f):
            # the fixture was tightened or loosened: contact changes the ASR within a cycle or
            # two; the settling that follows is learned like the first one
            self._new_regime(self.p["pressure_relearn_half_cycles"], "pressure step")
        if temp is not None:
            self.t_regime = temp  # the previous half-cycle's temperature, for the next comparison
        if pres is not None:
            self.p_regime = pres
        self.t_cc_end = f.t_end
        cov = [pres, temp, j]
        if self.regime_t0 is None:
            self.regime_t0 = t_h
        # learning lasts a number of half-cycles and, where the cell may settle (the start, a
        # pressure step, a pause), a minimum time: 6 cycles of 15 min are no settling window
        settling_window = self.regime_kind in SETTLING_REGIMES and t_h - self.regime_t0 < self.p["settling_window_h"]
        warm = self.half_cycles <= 2 * self.p["warmup_cycles"] or self.since_regime <= self.relearn or settling_window
        level = self.level.update(x)
        shape_level = self.shape.update(shape)
        if warm and self.eta_unscaled is None:
            # learning: the level follows the newest value without lag, so a healthy early
            # decrease (contact improvement) leaves no stale high level behind
            self.level.value = level = x
            self.peak, self.peak_cycle = level, f.cycle
            self.ref_cov = cov
            self.shape_ref = shape_level
            self.eta_ref = eta_c
            self.learn_pts.append([t_h, x])
            self.t_prev = t_h
            if self.state_name == "warning":
                return None  # re-learning after a step does not undo a fall: the warning stands
            return self.verdict(f.t_end, "ok", 0.0, self.p["threshold"]) if self.state_name != "ok" else None
        if self.learn_pts:
            # the fall is measured from the learning window's end level, not from its last
            # half-cycle: one noisy value (and one direction) is no reference. Where the cell
            # may settle, the fitted end; after a J or T step, the mean of the last few
            if self.regime_kind in SETTLING_REGIMES:
                x_end = self._learn_settling(t_h)
            else:
                x_end = float(np.mean([pt[1] for pt in list(self.learn_pts)[-4:]]))
                self.learn_pts.clear()
            if x_end is not None:
                self.peak = x_end
                self.level.value = level = x_end + self.p["smoothing"] * (x - x_end)
        # the reference sinks at the settling rate the cell showed, decaying with tau_max
        dt_h = t_h - self.t_prev if self.t_prev is not None else 0.0
        self.t_prev = t_h
        allow = self.settle_rate * math.exp(-(t_h - self.t_settle) / self.p["settling_tau_max_h"])
        if self.peak is not None:
            self.peak -= allow * dt_h
        if self.peak is None or level > self.peak:
            self.peak, self.peak_cycle = level, f.cycle
            self.ref_cov = cov
        fall = self.peak - x  # type: ignore[operator]
        sigma = 0.627 * (self.scatter.value or 0.0)  # mean |difference| of two -> one value's sigma
        # ...and no less than how finely the plateau is read: the voltage steps between logged
        # points (noise, or EC-Lab's dE) over the plateau, averaged over its points. A 3-mV
        # plateau logged on 2-mV changes reads its ASR to tens of per cent, whatever the
        # half-cycle-to-half-cycle scatter says (the points fall alike from cycle to cycle)
        hs = m.detectors.get("hard_short")
        step_v = getattr(hs, "v_sigma", 0.0) if hs is not None else 0.0
        if step_v and f.eta_V:
            sigma = max(sigma, step_v / f.eta_V / math.sqrt(max(0.6 * f.n_samples, 1.0)))
        # the peak of a noisy level sits about one sigma high: the allowance covers that and more
        k = max(self.p["allowance"], self.p["noise_factor"] * sigma)
        # covariates first: the part of the fall that the temperature change since the
        # reference level explains within the activation energy's uncertainty is no fall
        # (a daily swing of 2 C read with Ea 0.1 eV off makes a 3 % fall, day after day)
        k_temp = temperature_allowance(self.ref_cov[1], temp, self.ea_uncertainty)
        k += k_temp
        weight = min(max(f.duration_s / 3600.0, 0.25), 3.0)  # CUSUM per hour of cycling
        s = self.cusum.update(weight * (fall - k))
        if s == 0.0:
            self.fall_start_cycle = None
            self.shape_ref = shape_level if self.shape_ref is None else max(self.shape_ref, shape_level)
            self.eta_ref = eta_c
        elif self.fall_start_cycle is None:
            self.fall_start_cycle = f.cycle
        shape_ratio = shape_level / self.shape_ref if self.shape_ref else None
        # the profile has turned flat only when its shape index fell well beyond its own
        # scatter: a few-mV plateau logged at 1 min misses the nucleation peak, and a shape
        # index made of noise (whose reference is the running maximum of that noise) "fades"
        shape_sigma = 0.627 * (self.shape_scatter.value or 0.0)
        flat = (
            shape_ratio is not None
            and shape_ratio < self.p["shape_fade"]
            and self.shape_ref - shape_level > self.p["shape_noise_sigmas"] * shape_sigma  # type: ignore[operator]
        )
        tau_ref = self.rest_taus.median() if len(self.rest_taus) >= 2 else None
        tau_ratio = self.rest_tau / tau_ref if tau_ref and self.rest_tau else None
        fast_rest = tau_ratio is not None and tau_ratio < self.p["rest_tau_fade"]
        corroborated = flat or fast_rest
        h = self.p["corroborated_threshold"] if corroborated else self.p["threshold"]
        min_fall = -math.log(1.0 - (self.p["corroborated_min_drop"] if corroborated else self.p["min_drop"]))
        min_fall = max(min_fall, 3.0 * sigma) + k_temp
        # the fall that warns is the level's (smoothed), not one half-cycle's: a single low
        # value under a peak that is itself the maximum of a noisy level is no sustained fall
        sustained = s > h and min(fall, self.peak - level) > min_fall  # type: ignore[operator]
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
            "settling_allowance_per_h": round(allow, 5),
            "noise_sigma": round(sigma, 4),
            "temperature_allowance": round(k_temp, 4),
            "regime": self.regime_kind,
            **covariates(self.ref_cov, cov, "the fall"),
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
            summary += f" ({evidence['covariates']})"
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
        self._new_regime(self.p["current_relearn_half_cycles"], "current step")

    def _new_regime(self, relearn: int, why: str) -> None:
        """A current, temperature or pressure step, or a pause: the level is re-anchored after
        ``relearn`` half-cycles; the fall accumulated so far (the CUSUM) is kept, so steps
        cannot hide a slow fall. After a pressure step or a pause the cell may settle again:
        that settling rate is learned from the new window (never after J or T steps, where
        a settling allowance would only excuse a fall)."""
        self.relearn = relearn
        self.since_regime = 0
        self.regime_t0 = None
        self.level = Ewma(alpha=self.p["smoothing"])
        self.peak = None
        if self.learn_pts and self.regime_kind in SETTLING_REGIMES:
            self._learn_settling(self.learn_pts[-1][0])  # the settling seen until the step
        self.learn_pts.clear()
        self.regime_kind = why

    def _pressure_step(self, f: StepFeatures) -> bool:
        """Stack pressure changed beyond ``pressure_step_MPa`` and 5 % since the previous
        half-cycle, or within this one (end against start: the range would count noise)."""
        prev, now = self.p_regime, f.p_end
        if prev is None or now is None:
            return False
        step = max(self.p["pressure_step_MPa"], 0.05 * abs(prev))
        inside = abs(now - f.p_start) if f.p_start is not None else 0.0
        return abs(now - prev) >= step or inside >= step

    def _learn_settling(self, t_h: float) -> float | None:
        """End of a learning window: the rate at which the cell was still settling (the
        slope of ln ASR over the window's second half, plus its standard error: a few noisy
        half-cycles can hide a settling that goes on; 0 when level or rising). Returns the
        fitted ln ASR at the window's end (None when there are too few points to fit)."""
        pts = np.asarray(self.learn_pts)
        self.learn_pts.clear()
        late = pts[pts[:, 0] >= pts[0, 0] + 0.5 * (pts[-1, 0] - pts[0, 0])]
        if len(late) < 2 or late[-1, 0] <= late[0, 0]:
            return None
        slope, icpt = (float(c) for c in np.polyfit(late[:, 0], late[:, 1], 1))
        x_end = slope * float(late[-1, 0]) + icpt
        rate = -slope
        if len(late) >= 4:
            resid = late[:, 1] - (slope * late[:, 0] + icpt)
            sxx = float(((late[:, 0] - late[:, 0].mean()) ** 2).sum())
            rate += math.sqrt(float((resid**2).sum()) / (len(late) - 2) / sxx)
        now = self.settle_rate * math.exp(-(t_h - self.t_settle) / self.p["settling_tau_max_h"])
        if rate > now:
            self.settle_rate, self.t_settle = rate, float(late[-1, 0])
        return x_end
