"""polarization_rise: stripping voids that grow towards a short (seeds 002 and 004).

When Li is stripped faster than creep refills the interface, voids open: the stripping
half-cycle's |V| rises more and more towards its end, and from one cycle to the next, and
dendrites then grow "with the increasing polarization" until the cell shorts. The sign is
the opposite of soft breakdown (a rise, not a fall), so this detector watches what
``overpotential_drop`` cannot:

- per half-cycle, the end-of-strip polarization normalised by J and referred to 25 C,
  y = ln((plateau |V| + end-of-strip rise) / J). Healthy interphase growth is a slow, linear
  rise: its rate (per hour: the smoothed series' rise over all the time since the first
  half-cycle, at most ``max_rate_per_h``) is the baseline. A one-sided CUSUM adds up the
  rise beyond that rate plus an allowance:
  S = max(0, S + dy - (r0 + k) dt). The sum telescopes, so the noise of single half-cycles
  does not add up, and a linear rise never alarms while an accelerating one does. y is
  smoothed per direction (EWMA) and the threshold is at least ``noise_sigmas`` times the
  smoothed series' own scatter (a 5-mV plateau read to 0.3 mV is noisy). Voids change the
  shape, not only the level: the end-of-strip rise must also have grown as a share of the
  plateau (a pressure drop, a pause or a colder day scale the whole trace and leave the shape
  alone). Three consecutive half-cycles over the threshold warn, two where the rise is twice
  the threshold (voids that run away give no third); ``critical_rise`` escalates;
- per sample, within one galvanostatic step: |V| running away to ``runaway_ratio`` times the
  step's own plateau and beyond what the trend expects at this J and temperature is
  critical at once (voids can build up in minutes before the voltage collapses).

Current, temperature and pressure steps and long pauses re-anchor the trend's level and start
the sum again (the slope is kept): contact and kinetics change at a step, voids do not appear
in one. So does a plateau that comes out of a warm-up's worth of half-cycles too noisy to judge
(a temperature step is 2 C and beyond what a daily swing moves the temperature between two
half-cycles). The end-of-strip rise over the last logged interval, beyond the healthy half-cycles',
is the sampling phase's to decide: so much of y is allowed for.

Full and anode-free cells strip their Li anode while discharging: the same CUSUM runs once per
discharge on the resistance it ends with (the relaxation over the rest after it, per |I|),
and its shape gate is that resistance over the IR step at the discharge's start.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from shortwatch.detectors.base import Detector, Verdict, covariates
from shortwatch.detectors.segmentation import CC_KINDS
from shortwatch.detectors.stats import (
    Cusum,
    Ewma,
    RobustWindow,
    arrhenius_factor,
    temperature_allowance,
    temperature_step_C,
)
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
    cell_kinds = ("symmetric", "full", "anode-free")
    params = {
        "warmup_cycles": (6, "cycles learned, not judged"),
        "max_rate_per_h": (0.01, "the healthy trend's rate is at most this (ln units per hour: 27 % a day)"),
        "allowance_per_h": (0.004, "tolerated rise beyond the cell's own rate (ln units per hour; CUSUM k)"),
        "threshold": (0.15, "CUSUM h: rise beyond the healthy trend (ln units) that warns..."),
        "confirm_half_cycles": (3, "...in this many consecutive half-cycles (full cells: discharges, at most 2)"),
        "fast_confirm_factor": (2.0, "a rise of this many thresholds confirms a half-cycle sooner (not below 2)"),
        "noise_sigmas": (7.0, "the threshold is at least this many sigmas of the smoothed series"),
        "smoothing": (0.3, "EWMA weight of the newest half-cycle"),
        "end_share_growth": (0.05, "the end-of-strip rise / plateau must have grown by this much (absolute)"),
        "full_unshaped_factor": (1.5, "full cells: a rise this many thresholds beyond the trend needs no new shape"),
        "sampling_allowance": (
            1.0,
            "share of the end-of-strip rise over the last logged interval, beyond the healthy half-cycles', that "
            "counts as unknown (the sampling phase decides it)",
        ),
        "critical_rise": (0.5, "a rise of this share beyond the trend is critical"),
        "runaway_ratio": (2.0, "within a step: |V| this many times the step's own plateau..."),
        "runaway_expected_ratio": (1.5, "...and this many times the end-of-strip |V| the trend expects"),
        "runaway_samples": (3, "consecutive samples that confirm a runaway..."),
        "runaway_noise_sigmas": (6.0, "...rising this many sigmas of the voltage noise above the plateau"),
        "relearn_half_cycles": (
            6,
            "after a J, temperature or pressure step, a pause or a warm-up's worth unjudged, half-cycles re-anchored "
            "(contact settles in 1-2 cycles; full cells: half as many discharges)",
        ),
        "j_step_ratio": (1.1, "a current-density change beyond this is a new regime"),
        "min_temperature_step_C": (2.0, "a temperature change this large is a new regime..."),
        "daily_swing_C": (4.0, "...if beyond what a daily swing of this amplitude moves (symmetric cells)"),
        "full_temperature_step_C": (
            5.0,
            "...between two discharges of a full cell (hours apart: beyond a daily swing)",
        ),
        "pressure_step_MPa": (0.3, "a stack-pressure change beyond this (and 5 %) is a new regime"),
        "min_rest_s": (600.0, "full cells: the rest after a discharge that shows its polarization relaxing"),
        "pause_h": (2.0, "a pause this long between half-cycles is a new regime"),
        "activation_energy_eV": (0.4, "Arrhenius correction to 25 C (overpotential_drop's learned one when it runs)"),
        "activation_energy_uncertainty_eV": (0.15, "how far off it may be (overpotential_drop's when it runs)"),
        "min_half_cycle_s": (300.0, "shorter half-cycles are not judged"),
        "min_samples": (4, "half-cycles logged more sparsely are not judged (the end of strip is a few points)"),
        "max_flatness": (0.25, "nor cells whose plateau usually spreads this share of itself (noise ~ the rise)"),
        "min_plateau_sigmas": (25.0, "nor half-cycles whose plateau is under this many sigmas of the voltage noise"),
    }

    _transient = (*Detector._transient, "runaway_ratio", "expected_ratio", "symmetric")

    def __init__(self, spec: CellSpec, overrides: dict[str, Any] | None = None):
        super().__init__(spec, overrides)
        self.symmetric = spec.kind == "symmetric"
        self.runaway_ratio = self.p["runaway_ratio"]
        self.expected_ratio = self.p["runaway_expected_ratio"]
        # the healthy rate (ln units per hour): the smoothed series' rise over all the time since the
        # first half-cycle (regime steps left out; a rise of the CUSUM counted once it is back at 0,
        # so a rise under way does not raise the trend it is judged against). Not the median of
        # recent changes: where the sampling phase drifts through the end of strip, y is a sawtooth
        # whose many small rises made that median several times the true rate, and a window of
        # recent changes followed an accelerating rise closely enough that the CUSUM never gathered it
        self.rise = [0.0, 0.0]  # [sum of dy, sum of dt (h)]
        self.excursion = [0.0, 0.0]  # ...of the half-cycles since the CUSUM was last at 0: counted once it is back
        self.prev_y: dict[str, list[float]] = {}  # direction -> [t_h, smoothed y, raw y]
        self.scatter = Ewma(alpha=0.1)  # mean |raw dy - r0 dt| of healthy half-cycles
        self.share = Ewma(alpha=0.3)  # end-of-strip rise / plateau, smoothed
        self.share_ref = RobustWindow(15)  # ...of healthy half-cycles
        self.flat_ref = RobustWindow(15)  # plateau spread / plateau of the early half-cycles
        self.noise_ref = RobustWindow(15)  # ...and the voltage noise it shows (V)
        self.last_rise_ref = RobustWindow(15)  # rise over the last logged interval / end |V|, healthy half-cycles
        self.y_ref: float | None = None  # the latest y judged healthy
        self.t_ref: float | None = None  # ...and its temperature
        self.ref_cov: list[float | None] = [None, None, None]  # ...its pressure, temperature and J
        self.over_hc = 0  # consecutive half-cycles over the threshold
        self.cusum = Cusum(k=0.0)
        self.half_cycles = 0  # symmetric: CC half-cycles seen...
        self.unjudged = 0  # ...and in a row too sparse or noisy to judge
        # half-cycles (full: discharges) judged: a cell whose plateau rises out of the noise late learns then
        self.judged = 0
        self.since_regime = 0
        self.relearn = 0
        self.prev: list[float | None] = [None, None, None, None]  # J, T, P, t_end of the last half-cycle
        self.rise_start_cycle: int | None = None
        # within-step runaway (per sample): expected end-of-strip |V|/|I| (ohm) at 25 C
        self.r_ref = 0.0
        self.r_expected: float | None = None
        self.step_id = -1
        # the step's plateau: its lowest |V| held over two readings in a row (a low spike is no
        # plateau, however many the step has: a logger on a voltage change writes every spike)
        self.step_min = math.inf
        self.prev_av = math.inf  # ...the reading before
        self.step_n = 0
        self.over = 0
        # full cells: the last rest's end (t, V), where the next discharge's IR step starts from,
        # and the discharge waiting for the rest after it (its features, its start resistance)
        self.rest_end: tuple[float, float] | None = None
        self.pending: tuple[dict[str, Any], float] | None = None  # plain values: checkpointed

    def load(self, state: dict[str, Any]) -> None:
        super().load(state)
        if "judged" not in state:  # a checkpoint from before the healthy rate was an average
            self.judged = self.half_cycles
            rates = (state.get("rates") or {}).get("values") or []
            if rates:  # the old window's median rate, weighted as ten hours of it
                r0 = max(sorted(rates)[len(rates) // 2], 0.0)
                self.rise = [10.0 * r0, 10.0]

    # ---------------------------------------------------------------- per half-cycle
    def _factor(self, temp: float | None, m: CellMonitor) -> float:
        if temp is None:
            return 1.0
        od = m.detectors.get("overpotential_drop")
        ea = od.activation_energy if od is not None else self.p["activation_energy_eV"]  # type: ignore[attr-defined]
        return arrhenius_factor(temp, 25.0, ea)

    def on_step(self, f: StepFeatures, m: CellMonitor) -> Verdict | None:
        if m.kind_mismatch:
            return None
        if not self.symmetric:
            return self._full_discharge(f, m)
        if f.step_kind not in CC_KINDS or f.eta_V is None or f.eta_V <= 0:
            return None
        j = f.current_density_mA_cm2
        if not j or f.duration_s < self.p["min_half_cycle_s"] or f.gap_s > 0:
            return None
        factor = self._factor(f.temperature_C, m)
        v_end = f.eta_V + max(f.end_rise_V or 0.0, 0.0)
        y = math.log(v_end * factor / (j / 1000.0))
        if f.flatness is not None and self.half_cycles <= 2 * self.p["warmup_cycles"]:
            self.flat_ref.add(f.flatness)
            self.noise_ref.add(f.flatness * f.eta_V / 2.56)  # p90 - p10 of a normal is 2.56 sigma
        flat0 = self.flat_ref.median()
        # the end-of-strip rise is read as the tail's highest |V|: on a plateau of a few noise sigmas
        # that maximum is mostly noise, and a plateau that shrinks (a warmer cell) makes it look like
        # a growing end of strip. The noise is the early plateaus' spread: the steps between logged
        # samples would overstate it where a logger writes only changes of dE
        too_noisy = f.eta_V < self.p["min_plateau_sigmas"] * (self.noise_ref.median() or 0.0)
        if f.n_samples < self.p["min_samples"] or too_noisy or (flat0 is not None and flat0 > self.p["max_flatness"]):
            # too sparse (or noisy) to judge the end of strip, but enough to arm the within-step runaway check
            # with the level of the early, healthy half-cycles (a growing end of strip must not
            # raise what is expected of it)
            if 2 <= self.half_cycles <= 2 * self.p["warmup_cycles"]:
                self.r_ref = math.exp(y) / self.spec.area_cm2
                self.r_expected = self.r_ref / factor
            self.half_cycles += 1
            self.unjudged += 1
            return None
        self.half_cycles += 1
        # where the end of strip rises within a few samples, the last interval's rise is how much
        # of it the sampling phase decides (on a healthy cell logged every 48 s, the end-of-strip
        # rise quadrupled as the phase slid by one sample): its excess over the healthy
        # half-cycles' counts as unknown (a logger on a voltage change writes steps of dE anyway)
        last = (f.end_last_rise_V or 0.0) / v_end  # (a share of the end-of-strip |V|: J steps move both)
        ref = self.last_rise_ref.median()
        excess = max(last - (last if ref is None else ref), 0.0)
        aliased = -math.log(max(1.0 - self.p["sampling_allowance"] * excess, 0.5))
        verdict = self._judge(f, m, y, max(f.end_rise_V or 0.0, 0.0) / f.eta_V, j, factor, aliased)
        if self.cusum.s == 0.0:
            self.last_rise_ref.add(last)
        return verdict

    def _full_discharge(self, f: StepFeatures, m: CellMonitor) -> Verdict | None:
        """Full and anode-free cells strip their Li anode while discharging. Their stripping
        polarization is read where it is not mixed with the cathode's OCV: at the end of the
        discharge, as the relaxation over the rest after it (from its first sample to its last: the
        polarization the discharge ended with, whatever the cathode's OCV curve; the cut-off itself
        lies on the knee, where a sparse log misses it by tens of mV), and at its start, as the
        step from the rest before it to its first sample. Voids raise the end more than the start:
        their ratio is the shape the symmetric cells' end-of-strip share is."""
        if f.step_kind == "discharge":
            self.pending = None
            rest, self.rest_end = self.rest_end, None
            i = abs(f.current_A or 0.0)
            if rest is None or f.v_start is None or not i or f.gap_s > 0 or f.n_samples < 2:
                return None
            r_start = (rest[1] - f.v_start) / i
            if f.duration_s >= self.p["min_half_cycle_s"] and f.t_start - rest[0] <= 2.5 * _interval(f) and r_start > 0:
                self.pending = (f.to_dict(), r_start)
            return None
        if f.step_kind != "rest" or f.v_end is None:
            self.pending = self.rest_end = None
            return None
        self.rest_end = (f.t_end, f.v_end)
        pending, self.pending = self.pending, None
        if pending is None:
            return None
        fd, r_start = pending
        d = StepFeatures(**fd)
        i, j = abs(d.current_A or 0.0), d.current_density_mA_cm2
        if f.t_start - d.t_end > 2.5 * _interval(d) or f.duration_s < self.p["min_rest_s"] or f.gap_s > 0 or not j:
            return None
        r_end = (f.v_end - f.v_start) / i  # type: ignore[operator]
        if r_end <= 0:
            return None
        factor = self._factor(d.temperature_C, m)
        y = math.log(r_end * self.spec.area_cm2 * factor)
        return self._judge(replace(d, t_end=f.t_end), m, y, r_end / r_start - 1.0, j, factor)

    def _judge(
        self, f: StepFeatures, m: CellMonitor, y: float, end_share: float, j: float, factor: float, aliased: float = 0.0
    ) -> Verdict | None:
        """One CUSUM over the stripping polarization y = ln(ohm cm2 at 25 C), gated by its shape."""
        share = self.share.update(end_share)
        t_h = f.t_end / 3600.0
        warmup = self.p["warmup_cycles"] * (2 if self.symmetric else 1)
        # out of a warm-up's worth of half-cycles too noisy to judge (its plateau in the noise), a
        # cell has settled but shows a new level: it re-anchors as after a step, not over a fresh
        # cell's warm-up (a void cell rose out of the noise 9 h before its short, and was missed)
        resumed, self.unjudged = self.unjudged >= warmup, 0
        if resumed:
            self.judged = max(self.judged, warmup)
        self.since_regime += 1
        self.judged += 1
        if resumed or self._regime_changed(f, j):
            # a step moves the level (contact, kinetics), and the sum starts again from the new level
            # (carried over, what was left of each step's settling added up over a current ladder)
            self.cusum.reset()
            self.excursion = [0.0, 0.0]
            self.over_hc = 0
            self.rise_start_cycle = None
            self.relearn = self.p["relearn_half_cycles"] // (1 if self.symmetric else 2)  # (full: discharges)
            self.since_regime = 0
            self.prev_y.clear()
        self.prev = [j, f.temperature_C, f.p_end, f.t_end]
        prev = self.prev_y.get(f.step_kind)
        if prev is None or t_h <= prev[0]:
            self.prev_y[f.step_kind] = [t_h, y, y]
            return None
        learning = self.judged <= warmup or self.since_regime < self.relearn
        # while it learns (re-anchors after a step) the series follows the raw values: smoothed,
        # it would still be catching up with the step when judging resumes, and the CUSUM would
        # take the rest of the step for a rise (a current ladder's steps added up to a warning)
        a = 1.0 if learning else self.p["smoothing"]
        y_s = prev[1] + a * (y - prev[1])
        self.prev_y[f.step_kind] = [t_h, y_s, y]
        dy, dt, dy_raw = y_s - prev[1], t_h - prev[0], y - prev[2]
        # a settling cell's fall counts as level, and no faster rise is healthy interphase growth (a
        # cell judged only once voids had raised its plateau above the noise had learned them as its trend)
        r0 = min(max(self.rise[0] / self.rise[1], 0.0), self.p["max_rate_per_h"]) if self.rise[1] else 0.0
        self.excursion[0] += dy
        self.excursion[1] += dt
        s = 0.0 if learning else self.cusum.update(dy - (r0 + self.p["allowance_per_h"]) * dt)
        if s == 0.0:  # healthy: the reference, and the rise since the sum was last at 0 was the cell's own
            self.rise = [self.rise[0] + self.excursion[0], self.rise[1] + self.excursion[1]]
            self.excursion = [0.0, 0.0]
            self.scatter.update(abs(dy_raw - r0 * dt))
            self.share_ref.add(share)
            self.y_ref, self.t_ref = y, f.temperature_C
            self.ref_cov = [f.p_end, f.temperature_C, j]
            if learning:
                return None
            self.rise_start_cycle = None
        elif self.rise_start_cycle is None:
            self.rise_start_cycle = f.cycle
        # sigma of one raw value from the mean |difference| of two, then of the EWMA of them
        sigma = 0.627 * (self.scatter.value or 0.0) * math.sqrt(a / (2.0 - a))
        h = max(self.p["threshold"], self.p["noise_sigmas"] * sigma)
        share0 = self.share_ref.median() or 0.0
        reshaped = share >= share0 + self.p["end_share_growth"]
        # covariates first: the rise since the reference that the temperature change explains
        # within the activation energy's uncertainty does not count (a daily swing)
        od = m.detectors.get("overpotential_drop")
        unc = od.ea_uncertainty if od is not None else self.p["activation_energy_uncertainty_eV"]  # type: ignore[attr-defined]
        k_temp = temperature_allowance(self.t_ref, f.temperature_C, unc)
        # a full cell's discharge ends at its cut-off: as its resistance grows the cut-off comes
        # earlier, before the end of discharge where voids weigh most, and the shape stays; a rise
        # of ``full_unshaped_factor`` thresholds at an unchanged pressure and temperature (steps re-anchor)
        # is no slow interphase growth whatever its shape
        reshaped = reshaped or (not self.symmetric and s - k_temp > self.p["full_unshaped_factor"] * h)
        beyond = s - k_temp - aliased
        self.over_hc = self.over_hc + 1 if beyond > h and reshaped else 0
        if self.y_ref is not None and self.symmetric:
            self.r_ref = math.exp(self.y_ref) / self.spec.area_cm2  # ohm at 25 C
            self.r_expected = self.r_ref / factor  # ohm at this half-cycle's temperature
        # a full cell's discharges are a whole cycle apart: two in a row confirm
        need = self.p["confirm_half_cycles"] if self.symmetric else min(self.p["confirm_half_cycles"], 2)
        if beyond > self.p["fast_confirm_factor"] * h and need > 2:  # (voids that run away give no third)
            need -= 1
        confirmed = self.over_hc >= need
        if confirmed and s >= math.log(1.0 + self.p["critical_rise"]):
            state = "critical"
        elif confirmed:
            state = "warning" if self.state_name != "critical" else "critical"
        elif self.state_name in ("warning", "critical") and s > 0:
            state = self.state_name  # stands until the polarization is back on its trend
        elif s > h / 3:
            state = "watch"
        else:
            state = "ok"
        if state == self.state_name == "ok":
            return None
        rise_pct = 100.0 * math.expm1(s)
        evidence = {
            "cycle": f.cycle,
            "half_cycle": f.step_index,
            "polarization_ohm_cm2": round(math.exp(y), 3),
            "healthy_rate_pct_per_h": round(100.0 * r0, 3),
            "rise_beyond_trend_pct": round(rise_pct, 1),
            "end_of_strip_share": round(share, 3),
            "usual_end_of_strip_share": round(share0, 3),
            "statistic": round(s, 4),
            "threshold": round(h, 4),
            "temperature_allowance": round(k_temp, 4),
            "sampling_allowance": round(aliased, 4),
            "rising_since_cycle": self.rise_start_cycle,
            "current_density_mA_cm2": round(j, 4),
            "temperature_C": f.temperature_C,
            "pressure_MPa": f.p_end,
        }
        if state in ("warning", "critical"):
            if self.symmetric:
                summary = (
                    f"Stripping polarization rising in cycle {f.cycle}: end-of-strip |V|/J rose {rise_pct:.0f}% "
                    f"beyond its healthy trend ({100 * r0:.2f}%/h) since cycle {self.rise_start_cycle}, now "
                    f"{math.exp(y):.1f} ohm cm2 at 25 C; end-of-strip rise {100 * share:.0f}% of the plateau "
                    f"(usually {100 * share0:.0f}%)"
                )
            else:
                summary = (
                    f"Stripping polarization rising in cycle {f.cycle}: the resistance at the end of discharge (Li "
                    f"stripped from the anode) rose {rise_pct:.0f}% beyond its healthy trend ({100 * r0:.2f}%/h) "
                    f"since cycle {self.rise_start_cycle}, now {math.exp(y):.1f} ohm cm2 at 25 C, {1 + share:.2f}x "
                    f"the IR step at the start of discharge (usually {1 + share0:.2f}x)"
                )
                if share < share0 + self.p["end_share_growth"]:
                    summary += "; the whole discharge's resistance rose, and the cut-off comes earlier"
            evidence.update(covariates(self.ref_cov, [f.p_end, f.temperature_C, j], "the rise"))
            summary += f" ({evidence['covariates']})"
        elif state == "watch":
            summary = f"Polarization {rise_pct:.0f}% above its trend at cycle {f.cycle}; watching"
        else:
            summary = f"Polarization back on its trend at cycle {f.cycle}"
        return self.verdict(f.t_end, state, s, h, summary, evidence, ADVICE)

    def _regime_changed(self, f: StepFeatures, j: float) -> bool:
        j0, t0, p0, end0 = self.prev
        if j0 is None:
            return False
        if abs(math.log(j / j0)) > math.log(self.p["j_step_ratio"]):
            return True
        # a full cell's discharges lie hours apart: a daily swing is not a step (the Arrhenius
        # correction and the temperature allowance cover it)
        t_step = self.p["min_temperature_step_C" if self.symmetric else "full_temperature_step_C"]
        if self.symmetric and end0 is not None:
            t_step = temperature_step_C(t_step, self.p["daily_swing_C"], f.t_end - end0)
        if t0 is not None and f.temperature_C is not None and abs(f.temperature_C - t0) >= t_step:
            return True
        # a full cell's stack pressure swings within every cycle as Li plates and strips (by MPa,
        # more or less with the charge passed), and a charge and two rests lie between two
        # discharges: only the pressure they end at is compared (the Li stripped back, where the
        # fixture's preload shows: an operator's step moves it, breathing does not), and no pause
        if p0 is not None and f.p_end is not None:
            step = max(self.p["pressure_step_MPa"], 0.05 * abs(p0))
            if abs(f.p_end - p0) >= step:
                return True
            if self.symmetric and f.p_start is not None and abs(f.p_end - f.p_start) >= step:
                return True
        return self.symmetric and end0 is not None and f.t_start - end0 >= 3600.0 * self.p["pause_h"]

    # ---------------------------------------------------------------- per sample
    def on_sample(self, s: Sample, pressure: float | None, m: CellMonitor) -> Verdict | None:
        """Runaway within one galvanostatic step: two comparisons per sample (symmetric cells)."""
        r_exp = self.r_expected
        v, i = s.voltage_V, s.current_A
        if r_exp is None or v is None or i is None or m.segmenter.kind not in CC_KINDS:
            return None
        if m.step_index != self.step_id:
            self.step_id, self.step_min, self.prev_av, self.step_n, self.over = m.step_index, math.inf, math.inf, 0, 0
        av = v if v > 0 else -v
        self.step_n += 1
        held = av if av > self.prev_av else self.prev_av
        self.prev_av = av
        if self.step_n > 3 and held < self.step_min:  # after the nucleation peak
            self.step_min = held
        if av <= self.runaway_ratio * self.step_min:
            self.over = 0
            return None
        ai = i if i > 0 else -i
        hs = m.detectors.get("hard_short")
        noise = getattr(hs, "v_sigma", 0.0) if hs is not None else 0.0
        if (
            av > self.expected_ratio * r_exp * ai
            and av * self._factor(s.temperature_C, m) > self.expected_ratio * self.r_ref * ai
            and av - self.step_min > self.p["runaway_noise_sigmas"] * noise
        ):  # rare: only now is the temperature correction worth its exp()
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


def _interval(f: StepFeatures) -> float:
    """A step's mean sampling interval (s): a gap of more than ~2 at its ends means a reading missed."""
    return f.duration_s / (f.n_samples - 1)
