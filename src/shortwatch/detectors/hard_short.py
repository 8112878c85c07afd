"""hard_short: the cell has shorted. Critical at once, within one or two samples.

Symmetric cells: under current, the overpotential collapses toward 0 and stays there: judged
against the one the cell's recent half-cycles showed at this current density, so a healthy
low-resistance cell is not taken for a short. Read with its sign (a shorted cell reads 0 +-
noise), by single readings where the plateau stands well above the noise, and by the mean of
the run of low readings where it is a few noise sigmas. Full cells: the voltage drops suddenly between
two samples (or over two, from a steady voltage) at an unchanged current (charge, discharge or
rest) and does not come back at the next sample, or it collapses below a floor. So a short
is critical at the sample after the one that shows it: within 20-30 s at 10-s logging, at the
next sample where logged less often. The end-of-discharge knee is no short: there the voltage
was already falling faster and faster (and relaxes up once the cut-off stops the current),
while a short strikes a voltage that was steady and holds it down. A full cell is back to health
only when it holds its voltage at rest (a charger drives any voltage up), or when its voltage
comes back up at rest (no cell charges itself: the low reading was a lost contact).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from shortwatch.detectors.base import Detector, Verdict
from shortwatch.detectors.stats import Ewma, RobustWindow, arrhenius_factor
from shortwatch.model import Sample, StepFeatures
from shortwatch.settings import CellSpec

if TYPE_CHECKING:
    from shortwatch.detectors.monitor import CellMonitor

_JUDGED_KINDS = frozenset({"charge", "discharge", "rest"})

ADVICE = (
    "Stop the test on this channel: the cell is shorted and further cycling only heats it. "
    "Record the time and disassemble for post-mortem."
)


class HardShort(Detector):
    name = "hard_short"
    per_sample = True
    params = {
        "collapse_fraction": (0.15, "symmetric: |V| below this share of the expected overpotential..."),
        "collapse_max_V": (0.02, "...and below this absolute value"),
        "collapse_noise_sigmas": (3.0, "symmetric: or below this many sigmas of the cell's voltage noise..."),
        "collapse_noise_cap": (0.4, "...but never above this share of the expected overpotential"),
        "min_asr_ohm_cm2": (1.0, "before any half-cycle is known: |V|/J below this (no real cell is)"),
        "min_current_density_mA_cm2": (0.02, "|I| / area at or above this counts as under current"),
        "confirm_samples": (2, "consecutive samples that confirm..."),
        "low_snr_extra_samples": (2, "...and this many more where the plateau is under 5 noise sigmas..."),
        "mean_fraction": (0.3, "symmetric: or 2+ readings below half the plateau, their mean below this share..."),
        "mean_sigmas": (6.0, "...and this many of its own sigmas (noise / sqrt(n)) below the plateau"),
        "recover_samples": (6, "symmetric: consecutive healthy samples that resolve"),
        "warming_deadband_C": (4.0, "symmetric: a cell this much warmer than its recent half-cycles (a swing)..."),
        "max_activation_energy_eV": (0.7, "...and beyond: expects a plateau lowered at this (high) activation energy"),
        "sweep_min_V": (0.005, "symmetric, during a sweep: |V|/|I| below collapse_fraction of the cell's ASR..."),
        "sweep_max_V": (0.1, "...judged for |V| in this range (above the noise, below strong curvature)"),
        "full_drop_V": (0.25, "full cells: a sudden drop this large between two samples at unchanged current..."),
        "full_knee_ratio": (4.0, "...and this many times the previous sample's fall (not the end-of-discharge knee)"),
        "full_floor_V": (1.0, "...or a voltage below this after the cell was charged..."),
        "full_below_cutoff_V": (0.5, "...or this far below the cell's own end-of-discharge voltage (it cannot hold)"),
        "full_working_V": (3.0, "a full cell above this voltage is charged, in its working range"),
        "full_recover_rest_s": (600.0, "a full cell is back to health once it holds its voltage at rest this long..."),
        "full_hold_V": (0.005, "...falling less than this over that time (a leaking cell sinks faster)"),
    }

    _transient = (
        *Detector._transient,
        *("symmetric", "i_min", "collapse", "max_v", "r_floor", "noise_sigmas", "noise_cap"),
    )

    def __init__(self, spec: CellSpec, overrides: dict[str, Any] | None = None):
        super().__init__(spec, overrides)
        p = self.p
        # per-sample constants, so the hot path compares plain floats
        self.symmetric = spec.kind == "symmetric"
        self.i_min = p["min_current_density_mA_cm2"] * spec.area_cm2 / 1000.0  # A
        self.collapse = p["collapse_fraction"]
        self.max_v = p["collapse_max_V"]
        self.noise_sigmas = p["collapse_noise_sigmas"]
        self.noise_cap = p["collapse_noise_cap"]
        self.v_sigma = 0.0  # symmetric: voltage noise under constant current (V)...
        self.n_noise = 0  # ...from this many steps between samples (counted up to 100)
        # symmetric: the sign of V against I on healthy plateaus (+1 in most exports; -1 where
        # the lab wired or exports the cell the other way round), as a running mean of +-1
        self.polarity = 0.0
        self.r_floor = p["min_asr_ohm_cm2"] / spec.area_cm2  # ohm
        self.asr = Ewma(alpha=0.5)
        self.r_cell: float | None = None  # expected |V|/|I| (ohm) from recent half-cycles...
        self.t_cell = Ewma(alpha=0.5)  # ...at their temperature (C)
        self.t_warm, self.warm = math.nan, 1.0  # the last temperature read, and its _warming factor
        self.bad = 0
        self.good = 0
        self.v_prev: float | None = None
        self.i_prev: float | None = None
        self.v_before: float | None = None  # full cells: voltage before a suspicious drop
        self.fall1 = self.fall0 = 0.0  # full cells: the last two falls between samples at steady current (V)
        # full cells: was the current also steady over the interval before? Right after the current
        # changes (a charge ends, a rest begins) the voltage relaxes fastest, and with no interval
        # before it to compare with, that first relaxation looked like a sudden drop (real Neware
        # exports logged each minute, healthy, fell 0.46 V over the first two samples of a rest)
        self.steady_before = False
        self.v_drop = math.inf  # full cells: the voltage right after a suspicious drop
        self.drop_current: float | None = None  # the current when the drop came
        self.drop_samples = 1  # over how many samples it came
        self.confirmed = False  # the drop (full) or the collapse (symmetric) needs no further sample
        self.n_low = 0  # symmetric: readings in a row below half the expected plateau...
        self.x_sum = 0.0  # ...and the sum of them (signed)
        # symmetric: the last two signed readings under current, and the largest isolated outlier
        # (one reading far off both its neighbours: contact bounce, EMI) the cell has shown (V)
        self.x1 = self.x2 = math.nan
        self.max_outlier = 0.0
        self.need = self.p["confirm_samples"]  # consecutive samples that confirm a short now
        self.t_sample = -math.inf  # time of the previous sample
        self.was_charged = False
        self.cutoff = RobustWindow(5)  # full cells: lowest voltage of recent discharges
        self.floor = self.p["full_floor_V"]  # full cells: below this a charged cell has collapsed
        self.hold_from: tuple[float, float] | None = None  # full cells, critical: (t, V) a rest holds from

    def load(self, state: dict[str, Any]) -> None:
        super().load(state)
        if state.get("outliers"):  # a checkpoint from before max_outlier: the cell had shown outliers
            self.max_outlier = math.inf

    def on_step(self, f: StepFeatures, m: CellMonitor) -> Verdict | None:
        if f.step_kind in ("charge", "discharge") and f.asr_ohm_cm2 and f.duration_s > 300 and self.state_name == "ok":
            self.r_cell = self.asr.update(f.asr_ohm_cm2) / self.spec.area_cm2
            if f.temperature_C is not None:
                self.t_cell.update(f.temperature_C)
                self.t_warm = math.nan
        if not self.symmetric and f.step_kind == "discharge" and f.v_min is not None and self.state_name == "ok":
            # the cell's own discharge cut-off: a charged cell far below it cannot hold its voltage
            self.cutoff.add(f.v_min)
            self.floor = max(self.p["full_floor_V"], self.cutoff.median() - self.p["full_below_cutoff_V"])  # type: ignore[operator]
        return None

    def on_sample(self, s: Sample, pressure: float | None, m: CellMonitor) -> Verdict | None:
        v, i = s.voltage_V, s.current_A
        kind = m.segmenter.kind
        if v is None or i is None:
            return None
        if kind not in _JUDGED_KINDS and not (kind == "sweep" and self.symmetric):
            return None  # a CV hold imposes the voltage: a low one is no short
        if self.symmetric:
            if m.kind_mismatch:
                return None
            ai = i if i > 0 else -i
            self.confirmed = False
            if kind == "sweep" or ai < self.i_min:
                self.n_low = 0
                self.x1 = self.x2 = math.nan
            r = self.r_cell  # the expected |V|/|I| (ohm), lower for a warmer cell
            if r is not None and (kind == "sweep" or ai >= self.i_min):
                r *= self._warming(s.temperature_C)
            if kind == "sweep":
                shorted, healthy = self._sweep(v, ai, r)
            elif ai < self.i_min:
                shorted = healthy = False
            else:
                av = v if v > 0 else -v
                i_prev, v_prev = self.i_prev, self.v_prev
                steady = i_prev is not None and -0.03 * ai <= i - i_prev <= 0.03 * ai
                # the overpotential in the current's direction: a shorted cell reads 0 +- noise,
                # and a reading of the wrong sign is as collapsed as one of 0 (|V| folded it up,
                # so that a short read through noise of a third of the plateau took twice as
                # many samples to confirm). Signed only at a steady current (not in the sample
                # where the current reverses) and once the cell's polarity is plain (three in
                # four healthy readings agree: a short's noise and outliers do not flip it).
                pol = self.polarity
                x = (v if i > 0 else -v) * (1.0 if pol > 0 else -1.0) if steady and (pol > 0.5 or pol < -0.5) else av
                if r is None:  # nothing learned yet: judged against the physical floor
                    shorted, healthy = x < self.r_floor * ai, av > 3.0 * self.r_floor * ai
                else:
                    expected = r * ai
                    limit = self.collapse * expected
                    # a plateau of a few noise sigmas dips below 15 % of itself now and then:
                    # two such readings in a row are no short there, four are (where they come
                    # within a minute; a cell logged on a voltage change, every 600 s on a still
                    # plateau, has its noise sigma set by dE and is judged as before)
                    low_snr = expected < 5.0 * self.v_sigma and s.time - self.t_sample <= 60.0
                    # two outliers in a row look like a short for two readings: where the cell
                    # has shown one that reaches 70 % of the way down this plateau (where two in a
                    # row can average below 30 % of it), a third confirms (a healthy 3-mV plateau
                    # read through 0.4-mV noise with 0.2 % spikes of up to 15 sigmas read -0.4,
                    # -1.6 mV); the same spikes on a 15-mV plateau are no such risk
                    spiky = 1 if self.max_outlier > 0.7 * expected else 0
                    self.need = self.p["confirm_samples"] + (self.p["low_snr_extra_samples"] if low_snr else spiky)
                    x1, x2 = self.x1, self.x2
                    # how far one reading fell below both its neighbours (NaN before two: none);
                    # a spike up cannot pull readings below the limit
                    off = min(x2 - x1, x - x1)
                    if self.n_noise >= 30 and off > 6.0 * self.v_sigma and abs(x - x2) < 0.5 * off:
                        self.max_outlier = max(self.max_outlier, off)
                    # (a reading as the current reverses is none: its nucleation peak, read at a high
                    # rung of a current ladder, is no spike of the noise)
                    self.x1, self.x2 = (x if steady else math.nan), x1
                    noisy = self.noise_sigmas * self.v_sigma
                    if low_snr and noisy > limit:
                        # a few-mV plateau read through mV noise: a short reads 0 +- noise. Where
                        # four readings confirm, the limit rises to 3 sigmas, as long as healthy
                        # readings stay 2.5 sigmas above it (so four never all fall below it);
                        # with two, 15 % of the plateau stays the limit (a healthy 3-mV plateau
                        # read through 0.5-mV spiky noise dipped to 0.9 mV twice in a row)
                        margin = expected - 2.5 * self.v_sigma
                        limit = min(noisy, self.noise_cap * expected, max(limit, margin))
                    shorted = x < (limit if limit < self.max_v else self.max_v)
                    healthy = x > 0.5 * expected
                    if healthy or self.n_noise < 30:  # (judged by the mean once the noise is known)
                        self.n_low = 0
                    else:
                        # where the plateau is a few noise sigmas, a short's readings (0 +- noise)
                        # straddle any limit low enough for single readings to be sure, and the
                        # count restarts at each one above it; the mean of the run is surer: a
                        # collapse confirms once it is well below the plateau and as many of its
                        # own sigmas below it as two single readings below the limit would be (a
                        # 2.7-mV plateau, 0.46-mV noise, read 0.79, 0.62 mV after its short: each
                        # above 15 % of it, their mean 6.1 sigmas below it, confirmed at the 2nd)
                        self.x_sum = x + (self.x_sum if self.n_low else 0.0)
                        self.n_low += 1
                        n = self.n_low
                        # (and under the absolute limit that single readings have: a mean of 55 mV
                        # is no short, whatever the cell's plateau was)
                        self.confirmed = (
                            n >= 2 + spiky
                            and self.x_sum <= min(self.p["mean_fraction"] * expected, self.max_v) * n
                            and expected * n - self.x_sum >= self.p["mean_sigmas"] * self.v_sigma * math.sqrt(n)
                        )
                        shorted = shorted or self.confirmed
                    if steady and av > 0.5 * expected:
                        self.polarity += 0.01 * ((1.0 if (v > 0) == (i > 0) else -1.0) - self.polarity)
                    # the voltage noise, from sample-to-sample steps at constant current
                    # (the mean |dV| of two readings is 1.128 sigma)
                    if healthy and steady and v_prev is not None:
                        # clipped at 3 sigmas: the nucleation peak and the end-of-strip rise
                        # are steps of the signal, not of the noise
                        d = 0.886 * abs(v - v_prev)
                        if self.n_noise >= 10 and d > 3.0 * self.v_sigma:
                            d = 3.0 * self.v_sigma
                        # a running mean over the first 100 steps, then a moving one (an EWMA
                        # from 0 read the noise a quarter of its size after 30 steps)
                        if self.n_noise < 100:
                            self.n_noise += 1
                        self.v_sigma += (d - self.v_sigma) / self.n_noise
        else:
            shorted, healthy = self._full(v, i)
            if self.state_name == "critical" and self._back_at_rest(v, i):
                summary = (
                    f"The voltage came back at rest, without current ({self.v_prev:.3f} -> {v:.3f} V): "
                    "the low reading was not the cell's (a lost contact?)"
                )
                self.v_prev, self.i_prev, self.t_sample = v, i, s.time
                self.bad = self.good = 0
                self.hold_from = None
                return self.verdict(s.time, "ok", v, self.floor, summary)
        self.v_prev, self.i_prev, self.t_sample = v, i, s.time
        if shorted:
            # a fall at constant charging current seen in two samples in a row is its own
            # confirmation (no end-of-discharge knee while charging, no one-sample glitch)
            self.bad = self.need if self.confirmed else self.bad + 1
            self.good = 0
        elif healthy:
            self.good += 1
            self.bad = 0
        else:
            self.bad = 0
        if self.state_name != "critical" and self.bad >= self.need:
            self.hold_from = None
            # the hot path above only compares numbers; the explanation is built once, here
            what, evidence = self._explain(v, i)
            cycle = m.segmenter.cycle
            evidence["cycle"] = cycle
            summary = f"Hard short in cycle {cycle}: {what}"
            return self.verdict(s.time, "critical", abs(v), evidence.get("threshold_V"), summary, evidence, ADVICE)
        if self.state_name == "critical" and self.symmetric and self.good >= self.p["recover_samples"]:
            return self.verdict(s.time, "ok", abs(v), None, f"Voltage recovered ({v:.4f} V under {i * 1e3:.4g} mA)")
        if self.state_name == "critical" and not self.symmetric:
            v0 = self._held_from(s.time, v, i)
            if v0 is not None:
                minutes = self.p["full_recover_rest_s"] / 60.0
                summary = f"The cell holds its voltage at rest: {v0:.4f} -> {v:.4f} V over {minutes:.0f} min"
                return self.verdict(s.time, "ok", v, self.floor, summary)
        return None

    def _warming(self, temp: float | None) -> float:
        """The share (<= 1) of its recent half-cycles' resistance that a symmetric cell warmer
        than they were may have now, at the highest plausible activation energy: an oven step
        within a half-cycle (30 -> 58 C) shrank a healthy 224-mV plateau to 55 mV, which is no
        short. A daily swing (``warming_deadband_C``) is left alone."""
        if temp != self.t_warm:  # (the exponential only where the temperature reading changed)
            self.t_warm, t0, dead = temp, self.t_cell.value, self.p["warming_deadband_C"]
            if temp is None or t0 is None or not temp > t0 + dead:
                self.warm = 1.0
            else:
                self.warm = arrhenius_factor(t0 + dead, temp, self.p["max_activation_energy_eV"])
        return self.warm

    def _back_at_rest(self, v: float, i: float) -> bool:
        """A full cell's voltage jumped back up into its working range at rest: no cell charges
        itself, so the low reading before was the connection, not the cell (a real Neware export
        read 4.166 V, 1.72 V, then after 4.7 h without data 4.158 V, all at rest)."""
        v_prev, i_prev = self.v_prev, self.i_prev
        if v_prev is None or i_prev is None:
            return False
        at_rest = (i if i > 0 else -i) < self.i_min and (i_prev if i_prev > 0 else -i_prev) < self.i_min
        return at_rest and v > self.p["full_working_V"] and v - v_prev > self.p["full_drop_V"]

    def _held_from(self, t: float, v: float, i: float) -> float | None:
        """The voltage a critical full cell has held at rest, above its floor and within
        ``full_hold_V``, for ``full_recover_rest_s`` (None: not yet). Under current a charger
        drives any voltage up (a leaking cell "recovered" at each charge and collapsed again at
        the next rest: three criticals in one afternoon), and at rest a leaking cell sinks (12 mV
        in 10 min at 4.1 V, where a healthy one settles to a tenth of that)."""
        if (i if i > 0 else -i) >= self.i_min or v <= self.floor:
            self.hold_from = None
            return None
        if self.hold_from is None:
            self.hold_from = (t, v)
            return None
        t0, v0 = self.hold_from
        # two-sided: a rest after a discharge relaxes up, and that rise can hide a leak's first minutes
        if abs(v0 - v) > self.p["full_hold_V"]:
            self.hold_from = (t, v)  # still settling or sinking: judged again from here
            return None
        if t - t0 < self.p["full_recover_rest_s"]:
            return None
        self.hold_from = None
        return v0

    def _sweep(self, v: float, ai: float, r: float | None) -> tuple[bool, bool]:
        """(shorted, healthy) of a symmetric cell during a voltammetry sweep, which imposes
        the voltage: a short shows as a current far above what the cell's own resistance
        passes. Judged between ``sweep_min_V`` and ``sweep_max_V``, where Butler-Volmer
        curvature lowers a healthy |V|/|I| to no less than about half its ohmic value."""
        av = v if v > 0 else -v
        if r is None or ai < self.i_min or not self.p["sweep_min_V"] <= av <= self.p["sweep_max_V"]:
            return False, False
        return av < self.collapse * r * ai, av > 0.5 * r * ai

    def _symmetric_limit(self, j: float) -> tuple[float, float | None]:
        """(|V| below which the cell counts as shorted, the expected overpotential)."""
        asr = self.asr.value
        if asr is None:
            return self.p["min_asr_ohm_cm2"] * j / 1000.0, None
        expected = asr * j / 1000.0 * self.warm
        return min(self.p["collapse_fraction"] * expected, self.p["collapse_max_V"]), expected

    def _full(self, v: float, i: float) -> tuple[bool, bool]:
        """(shorted, healthy) for a full cell. Healthy means back in the working range (it
        ends a run of suspicious samples; a critical resolves only as ``_held_from`` and
        ``_back_at_rest`` say)."""
        working = self.p["full_working_V"]
        if v > working:
            self.was_charged = True
        i_prev, v_prev = self.i_prev, self.v_prev
        self.confirmed = False
        # the current held still (any direction, or at rest): a voltage step is not an IR jump
        # relative to the larger of the two currents, so that a current step (a rest after a
        # charge) is a change also when the configured area makes every current look small
        steady = i_prev is not None and abs(i - i_prev) <= 0.05 * max(abs(i), abs(i_prev)) + 0.1 * self.i_min
        fall = (v_prev - v) if (steady and v_prev is not None) else 0.0
        f1, f0 = self.fall1, self.fall0
        self.fall1, self.fall0 = fall, f1
        steady_before, self.steady_before = self.steady_before, steady
        big = self.p["full_drop_V"]
        if self.v_before is not None:
            before, v_drop = self.v_before, self.v_drop
            self.v_before, self.v_drop = None, math.inf
            # still down, and (at the first look) not coming back: after the end-of-discharge
            # knee the cut-off stops the current and the voltage relaxes up; a short holds it down
            if v < before - 0.5 * big and v <= v_drop + 0.02:
                self.v_before = before  # the cell cannot hold its voltage
                return True, False
        elif steady and steady_before and v_prev is not None:
            # a drop within one sample that did not build up over the samples before (the knee
            # does), or one split over two samples of a voltage that was steady before
            single = fall > big and fall > self.p["full_knee_ratio"] * max(f1, 0.0)
            split = f1 > 0 and fall > 0 and fall + f1 > big and f0 < 0.1 * big  # not falling before (a knee)
            if single or split:
                # over two samples, each a plain fall (a single drop after a fall of noise
                # still waits for the next sample: it may be a one-sample glitch)
                two = split and (not single or f1 >= 0.2 * big)
                self.v_before = v_prev + f1 if two else v_prev
                self.v_drop = v
                self.drop_current = i
                self.drop_samples = 2 if two else 1
                self.confirmed = two and i > self.i_min
                return True, False
        # below the floor is checked after the drops, which it would otherwise hide: a charging
        # cell that fell 0.21 V, then 1.36 V to below its floor, is confirmed by the two falls
        if self.was_charged and v < self.floor:
            return True, False
        return False, v > working

    def _explain(self, v: float, i: float) -> tuple[str, dict[str, Any]]:
        if self.spec.kind == "symmetric":
            j = abs(i) / self.spec.area_cm2 * 1000.0
            limit, expected = self._symmetric_limit(j)
            what = f"|V| = {abs(v) * 1e3:.2f} mV under {j:.3g} mA/cm2"
            pol = self.polarity
            if (pol > 0.5 or pol < -0.5) and v != 0.0 and ((v > 0) == (i > 0)) != (pol > 0):
                what += " (of the wrong sign for its current)"
            if expected is not None:
                what += f", expected about {expected * 1e3:.1f} mV"
                if self.warm < 0.95:
                    what += f" (lowered to {100 * self.warm:.0f} % for a cell at {self.t_warm:.1f} C)"
            evidence: dict[str, Any] = {
                "voltage_V": v,
                "current_density_mA_cm2": round(j, 4),
                "expected_overpotential_V": expected,
                "threshold_V": limit,
            }
            if self.n_low >= 2:  # the run of low readings, by whose mean a noisy plateau is judged
                mean = self.x_sum / self.n_low
                what += (
                    f"; {self.n_low} readings in a row below half of it, mean {mean * 1e3:.2f} mV"
                    f" (noise {self.v_sigma * 1e3:.2f} mV)"
                )
                evidence.update(low_readings=self.n_low, low_mean_V=round(mean, 7), noise_V=round(self.v_sigma, 7))
            return what, evidence
        if v < self.floor:
            return f"cell voltage collapsed to {v:.3f} V, below what it holds after a discharge", {
                "voltage_V": v,
                "threshold_V": round(self.floor, 4),
            }
        before = self.v_before if self.v_before is not None else v
        drop = before - v
        i_drop = self.drop_current if self.drop_current is not None else i
        j = abs(i_drop) / self.spec.area_cm2 * 1000.0
        if j < self.p["min_current_density_mA_cm2"]:
            where = "at rest"
        else:
            where = f"while {'charging' if i_drop > 0 else 'discharging'} at {j:.3g} mA/cm2"
        within = "one sample" if self.drop_samples == 1 else f"{self.drop_samples} samples"
        return f"voltage dropped {drop:.3f} V within {within} {where} and does not recover", {
            "voltage_V": v,
            "voltage_before_V": before,
            "drop_V": round(drop, 4),
            "current_density_mA_cm2": round(j, 4),
            "threshold_V": self.p["full_drop_V"],
        }
