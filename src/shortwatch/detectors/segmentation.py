"""Split a cell's sample stream into steps and cycles, one sample at a time.

A step is a stretch of one kind of control: a constant-current half-cycle (``charge`` /
``discharge``), a constant-voltage hold (``cv_charge`` / ``cv_discharge``), a ``rest``, or
one direction of a voltammetry ``sweep``. The cycler's own ``mode``/``step``/``cycle``
columns are used when present; otherwise the kind is inferred from the current and
voltage. A cycle starts with the first charge-direction step after a discharge-direction
step (the same rule EC-Lab uses for its cycle number).
"""

from __future__ import annotations

from shortwatch.state import Stateful

CHARGE_KINDS = frozenset({"charge", "cv_charge"})
DISCHARGE_KINDS = frozenset({"discharge", "cv_discharge"})
CC_KINDS = frozenset({"charge", "discharge"})

#: relative and absolute (share of the largest |I| seen) tolerance of "constant current"
_CC_REL_TOL = 0.03
_CC_ABS_TOL = 0.002
#: voltage moves below this per sample count as "held" (V)
_HOLD_V = 0.002
#: a sweep reverses when V comes back this far from its extreme (V): above the noise
_SWEEP_REVERSAL_V = 0.003
#: a ramp needs at least this smoothed voltage move per sample (V)
_RAMP_MIN_V = 0.0003
_EMA_ALPHA = 0.5
#: "the current holds still" between two samples, tighter than the CC tolerance because a
#: sweep's current changes by only a few per cent per sample near a vertex
_STEADY_REL_TOL = 0.005


class Segmenter(Stateful):
    """Online step/cycle segmentation for one cell: O(1) work and state per sample."""

    _transient = ("rest_current_A",)  # from config, which may have changed since a checkpoint

    def __init__(self, rest_current_A: float | None = None):
        self.rest_current_A = rest_current_A
        self.max_abs_i = 0.0
        self.kind: str | None = None
        self.step_no: int | None = None  # the data's own step number, when given
        self.i_ref = 0.0  # current at the start of a CC step
        self.v_ref = 0.0  # voltage at the start of a CV hold
        self.v_prev: float | None = None
        self.ema_dv = 0.0  # smoothed dV per sample: a ramp stands out of the noise
        self.i_prev = 0.0
        self.steady_count = 0  # consecutive samples with the current held still
        self.n_in_step = 0
        self.sweep_dir = 0  # +1 up, -1 down
        self.sweep_extreme = 0.0
        self.cycle = 0
        self.cycle_given: int | None = None
        self.seen_discharge = False
        self.direction = 0  # +1 charge-like, -1 discharge-like, for cycle counting

    def rest_threshold(self) -> float:
        if self.rest_current_A is not None:
            return self.rest_current_A
        return max(1e-9, 0.01 * self.max_abs_i)

    def update(self, v: float, i: float, mode: str | None, step: int | None, cycle: int | None) -> tuple[bool, bool]:
        """Classify one sample; returns (new_step, new_cycle). ``self.kind`` is its step kind."""
        ai = -i if i < 0 else i
        if ai > self.max_abs_i:
            self.max_abs_i = ai
        dv = 0.0 if self.v_prev is None else v - self.v_prev
        self.ema_dv += _EMA_ALPHA * (dv - self.ema_dv)
        if abs(i - self.i_prev) <= _STEADY_REL_TOL * ai + _CC_ABS_TOL * self.max_abs_i:
            self.steady_count += 1
        else:
            self.steady_count = 0
        self.i_prev = i
        if mode is None:
            kind, new_step = self._infer(v, i, ai, dv)
        else:
            kind, new_step = self._from_mode(mode, v, i, dv)
        if step is not None and step != self.step_no:
            new_step = self.step_no is not None or new_step
            self.step_no = step
        if self.kind is None:
            new_step = True
        new_cycle = False
        if cycle is not None:  # the cycler's own number is kept, so alerts name the cycle it shows
            if self.cycle_given is not None and cycle != self.cycle_given:
                new_cycle = new_step = True
            self.cycle = cycle
            self.cycle_given = cycle
        if new_step:
            direction = self._direction(kind)
            if cycle is None and direction > 0 and self.seen_discharge:
                self.cycle += 1
                new_cycle = True
            if new_cycle:
                self.seen_discharge = False
            if direction < 0:
                self.seen_discharge = True
            self.n_in_step = 0
            self.i_ref = i
            self.v_ref = v
            if kind == "sweep":
                self.sweep_extreme = v
        self.kind = kind
        self.n_in_step += 1
        self.v_prev = v
        return new_step, new_cycle

    def _direction(self, kind: str) -> int:
        if kind in CHARGE_KINDS:
            return 1
        if kind in DISCHARGE_KINDS:
            return -1
        if kind == "sweep":
            return self.sweep_dir
        return 0

    def _from_mode(self, mode: str, v: float, i: float, dv: float) -> tuple[str, bool]:
        if mode == "rest":
            return "rest", self.kind != "rest"
        if mode == "sweep":
            return "sweep", self._sweep_boundary(v, dv)
        prefix = "cv_" if mode == "cv" else ""
        kind = prefix + ("charge" if i >= 0 else "discharge")
        return kind, kind != self.kind

    def _sweep_boundary(self, v: float, dv: float) -> bool:
        """True at a vertex: the voltage has turned back from its extreme by more than noise."""
        if self.kind != "sweep":
            self.sweep_dir = 1 if dv >= 0 else -1
            self.sweep_extreme = v
            return True
        if self.sweep_dir == 0:
            self.sweep_dir = 1 if dv >= 0 else -1
        if self.sweep_dir > 0:
            if v > self.sweep_extreme:
                self.sweep_extreme = v
            elif self.sweep_extreme - v > _SWEEP_REVERSAL_V:
                self.sweep_dir = -1
                return True
        else:
            if v < self.sweep_extreme:
                self.sweep_extreme = v
            elif v - self.sweep_extreme > _SWEEP_REVERSAL_V:
                self.sweep_dir = 1
                return True
        return False

    def _infer(self, v: float, i: float, ai: float, dv: float) -> tuple[str, bool]:
        kind = self.kind
        rest_thr = self.rest_threshold()
        ramping = abs(self.ema_dv) >= _RAMP_MIN_V
        if kind == "sweep":
            # a sweep passes through zero current on its way: it ends when the voltage stops
            # ramping at zero current (rest), or when the current holds still (CC)
            if self.steady_count >= 3 and ai > rest_thr:
                return ("charge" if i > 0 else "discharge"), True
            if ai <= rest_thr and not ramping:
                return "rest", True
            return "sweep", self._sweep_boundary(v, dv)
        if ai <= rest_thr:
            return "rest", kind != "rest"
        cc_kind = "charge" if i > 0 else "discharge"
        same_sign = (i > 0) == (self.i_ref > 0)
        steady_i = abs(i - self.i_ref) <= _CC_REL_TOL * abs(self.i_ref) + _CC_ABS_TOL * self.max_abs_i
        if kind in CC_KINDS and same_sign:
            if steady_i:
                return kind, False
            if abs(dv) < _HOLD_V and ai < abs(self.i_ref):
                return ("cv_charge" if i > 0 else "cv_discharge"), True
            if ramping and self.steady_count == 0:
                # the current varies while the voltage ramps: a sweep we first took for CC
                self.sweep_dir = 1 if self.ema_dv > 0 else -1
                self.sweep_extreme = v
                return "sweep", self.n_in_step > 2
            return cc_kind, True  # a new current level (e.g. a CCD step)
        if kind in ("cv_charge", "cv_discharge") and same_sign and abs(v - self.v_ref) < 5 * _HOLD_V:
            return kind, False
        return cc_kind, kind != cc_kind or not same_sign
