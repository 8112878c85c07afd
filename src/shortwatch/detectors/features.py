"""Incremental per-step and per-cycle features.

Each accumulator takes one sample at a time in O(1) and holds bounded state, so a cell
can run for months without the monitor growing. The only per-step memory that grows with
the step is a decimating trace of |V| (at most ``TRACE_POINTS`` points): it lets the
plateau overpotential and the half-cycle shape (nucleation peak, end-of-strip rise) be
measured robustly when the step ends, whatever its length.
"""

from __future__ import annotations

import numpy as np

from shortwatch.detectors.segmentation import CHARGE_KINDS, DISCHARGE_KINDS
from shortwatch.model import CycleFeatures, StepFeatures
from shortwatch.settings import CellSpec
from shortwatch.state import Stateful

TRACE_POINTS = 64
#: a voltage dip while charging at constant current counts when V falls this far below its
#: running maximum (V); well above cycler noise, well below a micro-short's 10-50 mV
DIP_THRESHOLD_V = 0.005
#: an interval longer than this between two samples is a data gap, not a logging interval
#: (cyclers log at least every few minutes; EC-Lab's longest default is 10 min)
GAP_S = 1800.0
#: the first part of a charge is Li nucleation (on a bare current collector in anode-free
#: cells): the voltage spikes and falls back, a dip that is normal. Dips count only after
#: this long and this much charge per cm2 (at 0.05-3 mA/cm2 nucleation takes 0.01-0.05 mAh/cm2)
NUCLEATION_S = 600.0
NUCLEATION_MAH_CM2 = 0.05
_INV_E = 0.36787944117144233


class StepAccumulator(Stateful):
    """Running sums and extremes of the open step."""

    _transient = ("nucleation_Ah",)

    def __init__(self, area_cm2: float = 1.0) -> None:
        self.nucleation_Ah = NUCLEATION_MAH_CM2 * area_cm2 / 1000.0
        self.t_last = 0.0
        self.i_prev: float | None = None
        self.reset()

    def reset(self) -> None:
        """Start a new step. ``t_last``/``i_prev`` carry over, so the charge passed between the
        previous step's last sample and this step's first is credited to this step."""
        self.t0 = self.t_last
        self.n = 0
        self.gap_s = 0.0
        self.q_pos = 0.0  # Ah passed with positive current
        self.q_neg = 0.0  # Ah passed with negative current
        self.i_sum = 0.0
        self.v0: float | None = None
        self.v_last: float | None = None
        self.v_before_last: float | None = None
        self.v_min = float("inf")
        self.v_max = float("-inf")
        self.p0: float | None = None
        self.p_last: float | None = None
        self.p_min = float("inf")
        self.p_max = float("-inf")
        self.temp_sum = 0.0
        self.temp_n = 0
        # decimating trace of (t, |V|): keep every `stride`-th sample, halve when full
        self.trace_t: list[float] = []
        self.trace_v: list[float] = []
        self.stride = 1
        self.since_kept = 0
        self.rest_tau: float | None = None  # rests: when |V| fell to 1/e of its start
        # voltage dips while charging
        self.run_max = float("-inf")
        self.in_dip = False
        self.dips = 0
        self.max_dip = 0.0
        # sweep: peak |I| and sums for the linear fit of I on V
        self.peak_abs_i = 0.0
        self.sx = self.sy = self.sxx = self.syy = self.sxy = 0.0

    def add(self, t: float, v: float, i: float, p: float | None, temp: float | None, kind: str) -> None:
        if self.n == 0:
            self.t0 = t
            self.v0 = v
        if self.i_prev is not None:
            # a cycler's logged current is the average since the previous record (EC-Lab's
            # <I>), so it is held over the interval before it; this reproduces EC-Lab's own
            # Q charge/discharge exactly, where the trapezoid rule is 0.7 % off
            dt = t - self.t_last
            if dt > GAP_S and kind != "rest":  # a rest logged hourly loses no charge
                self.gap_s += dt  # the data stopped: what flowed meanwhile is unknown
            else:
                q = i * dt / 3600.0
                if q >= 0:
                    self.q_pos += q
                else:
                    self.q_neg -= q
        self.n += 1
        self.t_last = t
        self.i_prev = i
        self.i_sum += i
        self.v_before_last, self.v_last = self.v_last, v
        if v < self.v_min:
            self.v_min = v
        if v > self.v_max:
            self.v_max = v
        if p is not None:
            if self.p0 is None:
                self.p0 = p
            self.p_last = p
            if p < self.p_min:
                self.p_min = p
            if p > self.p_max:
                self.p_max = p
        if temp is not None:
            self.temp_sum += temp
            self.temp_n += 1
        self.since_kept += 1
        if self.since_kept >= self.stride:
            self.since_kept = 0
            self.trace_t.append(t)
            self.trace_v.append(-v if v < 0 else v)
            if len(self.trace_t) >= TRACE_POINTS:
                self.trace_t = self.trace_t[::2]
                self.trace_v = self.trace_v[::2]
                self.stride *= 2
        if kind == "charge":
            if t - self.t0 < NUCLEATION_S or self.q_pos < self.nucleation_Ah:
                self.run_max = v  # nucleation: the voltage spikes and falls back
            elif v > self.run_max:
                self.run_max = v
                self.in_dip = False
            else:
                depth = self.run_max - v
                if depth > DIP_THRESHOLD_V and not self.in_dip:
                    self.in_dip = True
                    self.dips += 1
                if depth > self.max_dip:
                    self.max_dip = depth
        elif kind == "rest":
            if self.rest_tau is None and self.v0 is not None and abs(v) < _INV_E * abs(self.v0):
                self.rest_tau = t - self.t0
        elif kind == "sweep":
            ai = -i if i < 0 else i
            if ai > self.peak_abs_i:
                self.peak_abs_i = ai
            self.sx += v
            self.sy += i
            self.sxx += v * v
            self.syy += i * i
            self.sxy += v * i

    def features(self, cell: str, index: int, kind: str, cycle: int, spec: CellSpec) -> StepFeatures:
        n = self.n
        duration = self.t_last - self.t0
        capacity = self.q_pos + self.q_neg
        area = spec.area_cm2
        mean_i = self.i_sum / n if n else None
        j = abs(mean_i) / area * 1000.0 if mean_i is not None else None
        eta = asr = nucleation = end_rise = flatness = end_last_rise = None
        if kind in ("charge", "discharge") and spec.kind == "symmetric":
            eta, nucleation, end_rise, flatness = self._shape()
            if eta is not None and j:
                asr = eta / (j / 1000.0)
            if eta is not None and self.v_last is not None and self.v_before_last is not None:
                end_last_rise = max(abs(self.v_last) - abs(self.v_before_last), 0.0)
        rest_decay = rest_fall = None
        if kind == "rest" and duration > 0 and self.v0 is not None and self.v_last is not None:
            rest_decay = (abs(self.v0) - abs(self.v_last)) / (duration / 3600.0)
            rest_fall = self._late_slope(0.5)
            rest_fall = None if rest_fall is None else -rest_fall
        sweep_peak = sweep_lin = sweep_rate = None
        if kind == "sweep" and n >= 3:
            sweep_peak = self.peak_abs_i
            sweep_lin = self._linearity()
            if duration > 0 and self.v0 is not None and self.v_last is not None:
                sweep_rate = abs(self.v_last - self.v0) / duration
        has_p = self.p0 is not None
        return StepFeatures(
            cell=cell,
            step_index=index,
            step_kind=kind,
            cycle=cycle,
            t_start=self.t0,
            t_end=self.t_last,
            n_samples=n,
            duration_s=duration,
            capacity_Ah=capacity,
            gap_s=self.gap_s,
            capacity_mAh_cm2=capacity * 1000.0 / area,
            current_A=mean_i,
            current_density_mA_cm2=j,
            v_start=self.v0,
            v_end=self.v_last,
            v_min=self.v_min if n else None,
            v_max=self.v_max if n else None,
            eta_V=eta,
            asr_ohm_cm2=asr,
            nucleation_V=nucleation,
            end_rise_V=end_rise,
            flatness=flatness,
            v_dips=self.dips,
            max_dip_V=self.max_dip,
            rest_decay_V_per_h=rest_decay,
            rest_tau_s=self.rest_tau if kind == "rest" else None,
            p_start=self.p0,
            p_end=self.p_last,
            p_min=self.p_min if has_p else None,
            p_max=self.p_max if has_p else None,
            dP_MPa=(self.p_last - self.p0) if has_p else None,  # type: ignore[operator]
            temperature_C=self.temp_sum / self.temp_n if self.temp_n else None,
            sweep_peak_A=sweep_peak,
            sweep_linearity=sweep_lin,
            sweep_rate_V_s=sweep_rate,
            rest_fall_V_per_h=rest_fall,
            end_last_rise_V=end_last_rise,
        )

    def _late_slope(self, from_frac: float) -> float | None:
        """Slope of |V| (V/h) over the step's part after ``from_frac`` of its duration."""
        span = self.t_last - self.t0
        if span <= 0 or len(self.trace_t) < 6:
            return None
        t = np.asarray(self.trace_t)
        sel = t >= self.t0 + from_frac * span
        if int(sel.sum()) < 3:
            return None
        return float(np.polyfit((t[sel] - self.t0) / 3600.0, np.asarray(self.trace_v)[sel], 1)[0])

    def _shape(self) -> tuple[float | None, float | None, float | None, float | None]:
        """Plateau |V| (median of the middle 20-80 %) and the shape around it."""
        if len(self.trace_t) < 3:
            return None, None, None, None
        t = np.asarray(self.trace_t)
        v = np.asarray(self.trace_v)
        span = self.t_last - self.t0
        if span <= 0:
            return None, None, None, None
        frac = (t - self.t0) / span
        sel = (frac >= 0.2) & (frac <= 0.8)
        if int(sel.sum()) < 3:
            # sparse points (EC-Lab logs a still plateau every 600 s at most): the few that
            # fall inside are true readings of the plateau; the first point (the nucleation
            # peak) held "until the next one" minutes later would weigh the peak as plateau
            wide = (frac > 0.05) & (frac < 0.95)
            sel = wide if wide.any() else np.ones(v.size, dtype=bool)
        mid = v[sel]
        few = mid.size < 3  # a few true readings: their plain median
        eta = float(np.median(mid)) if few else _time_weighted_median(mid, np.diff(t, append=self.t_last)[sel])
        if eta <= 0:
            return None, None, None, None
        head = v[frac <= 0.1]
        tail = v[frac >= 0.9]
        nucleation = float(head.max()) - eta if head.size else 0.0
        end_last = abs(self.v_last) if self.v_last is not None else eta
        end_rise = max(float(tail.max()) if tail.size else eta, end_last) - eta
        lo, hi = np.percentile(mid, [10, 90])
        return eta, nucleation, end_rise, float(hi - lo) / eta

    def _linearity(self) -> float | None:
        n = self.n
        vx = self.sxx - self.sx * self.sx / n
        vy = self.syy - self.sy * self.sy / n
        if vx <= 0 or vy <= 0:
            return None
        cov = self.sxy - self.sx * self.sy / n
        return min(1.0, cov * cov / (vx * vy))


def _time_weighted_median(v: np.ndarray, w: np.ndarray) -> float:
    """Median of values each held for its weight in seconds. Regular logging gives the plain
    median; EC-Lab's change-triggered logging (a point when V moved by dE) records many points
    where V moves and few on a plateau: weighting by how long each value held undoes that."""
    if w.sum() <= 0:
        return float(np.median(v))
    order = np.argsort(v)
    cum = np.cumsum(w[order])
    return float(v[order][np.searchsorted(cum, 0.5 * cum[-1])])


class CycleAccumulator(Stateful):
    """Sums over the finished steps of the open cycle."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.t0 = 0.0
        self.t_last = 0.0
        self.n_steps = 0
        self.q_charge = 0.0
        self.q_discharge = 0.0
        self.gap_s = 0.0
        self.eta_c_sum = self.eta_d_sum = 0.0
        self.eta_c_n = self.eta_d_n = 0
        self.asr_sum = 0.0
        self.asr_n = 0
        self.j_sum = 0.0
        self.j_n = 0
        self.p0: float | None = None
        self.p_max = float("-inf")
        self.p_min = float("inf")
        self.dp_charge: float | None = None
        self.dp_discharge: float | None = None
        self.cv_peak: float | None = None
        self.cv_lin: float | None = None
        self.v_charge_end: float | None = None
        self.dips = 0
        self.temp_sum = 0.0
        self.temp_n = 0

    def add_step(self, acc: StepAccumulator, f: StepFeatures) -> None:
        if self.n_steps == 0:
            self.t0 = f.t_start
        self.n_steps += 1
        self.t_last = f.t_end
        self.q_charge += acc.q_pos
        self.q_discharge += acc.q_neg
        self.gap_s += f.gap_s
        kind = f.step_kind
        if f.eta_V is not None:
            if kind in CHARGE_KINDS:
                self.eta_c_sum += f.eta_V
                self.eta_c_n += 1
            else:
                self.eta_d_sum += f.eta_V
                self.eta_d_n += 1
        if f.asr_ohm_cm2 is not None:
            self.asr_sum += f.asr_ohm_cm2
            self.asr_n += 1
        if f.current_density_mA_cm2 is not None and kind in ("charge", "discharge"):
            self.j_sum += f.current_density_mA_cm2
            self.j_n += 1
        if f.p_start is not None:
            if self.p0 is None:
                self.p0 = f.p_start
            self.p_max = max(self.p_max, f.p_max)  # type: ignore[type-var]
            self.p_min = min(self.p_min, f.p_min)  # type: ignore[type-var]
            if kind in CHARGE_KINDS:
                self.dp_charge = (self.dp_charge or 0.0) + f.dP_MPa  # type: ignore[operator]
            elif kind in DISCHARGE_KINDS:
                self.dp_discharge = (self.dp_discharge or 0.0) + f.dP_MPa  # type: ignore[operator]
        if f.sweep_peak_A is not None:
            self.cv_peak = max(self.cv_peak or 0.0, f.sweep_peak_A)
            if f.sweep_linearity is not None:
                self.cv_lin = min(self.cv_lin if self.cv_lin is not None else 1.0, f.sweep_linearity)
        if kind == "charge":
            self.v_charge_end = f.v_end
            self.dips += f.v_dips
        if f.temperature_C is not None:
            self.temp_sum += f.temperature_C
            self.temp_n += 1

    def features(self, cell: str, cycle: int, spec: CellSpec) -> CycleFeatures:
        ce = self.q_discharge / self.q_charge if self.q_charge > 0 and self.q_discharge > 0 else None
        q_g = None
        if spec.cathode_mass_g and self.q_discharge > 0:
            q_g = self.q_discharge / spec.cathode_mass_g
        dpq = None
        if q_g and self.dp_discharge is not None:
            dpq = abs(self.dp_discharge) / q_g
        has_p = self.p0 is not None
        return CycleFeatures(
            cell=cell,
            cycle=cycle,
            t_start=self.t0,
            t_end=self.t_last,
            n_steps=self.n_steps,
            q_charge_Ah=self.q_charge,
            q_discharge_Ah=self.q_discharge,
            gap_s=self.gap_s,
            ce=ce,
            q_discharge_Ah_g=q_g,
            eta_charge_V=self.eta_c_sum / self.eta_c_n if self.eta_c_n else None,
            eta_discharge_V=self.eta_d_sum / self.eta_d_n if self.eta_d_n else None,
            asr_ohm_cm2=self.asr_sum / self.asr_n if self.asr_n else None,
            current_density_mA_cm2=self.j_sum / self.j_n if self.j_n else None,
            p_start=self.p0,
            p_max=self.p_max if has_p else None,
            p_min=self.p_min if has_p else None,
            dP_charge_MPa=self.dp_charge,
            dP_discharge_MPa=self.dp_discharge,
            dpq_MPa_g_per_Ah=dpq,
            cv_peak_A=self.cv_peak,
            cv_linearity=self.cv_lin,
            v_charge_end=self.v_charge_end,
            charge_v_dips=self.dips,
            temperature_C=self.temp_sum / self.temp_n if self.temp_n else None,
        )
