"""Simulated all-solid-state lithium-metal cells: the demo's data, the tests' and the benchmark's.

Each scenario is a labelled story (healthy with a confounder, or failing by one of the
mechanisms in DOMAIN.md) with its parameters drawn from a seed, so ten cells of one scenario
differ but every run of one (seed, cell, scenario) is identical. A cell is simulated in two
passes: ``plan`` lays out the cycler protocol step by step (durations, cut-offs, the cell's
state at each step start, the failure times that go into :class:`Truth`), then ``samples``
renders each step with numpy and yields :class:`Sample` objects. Rendering a step is a pure
function of the plan plus noise, which keeps generation at about a microsecond per sample.

Physics, in brief (DOMAIN.md, seeds 000 and 003):

* symmetric Li|SE|Li: V = sign(I) * J * R_eff, R_eff = R_ion * R_e / (R_ion + R_e); R_ion is
  the ASR (Arrhenius in temperature, slow interphase growth) times a half-cycle shape
  (nucleation peak, plateau, end-of-strip rise); R_e is the electronic path of soft
  breakdown (infinite when healthy, falls over tens of hours, ~1 ohm cm2 at a hard short);
  CV sweeps give I = I_ion(V) + V / R_e.
* full NCM|SE|Li: V = OCV(SOC) + I * R with CC charge / rest / CC discharge / rest; the
  stack pressure in a fixed-gap fixture follows the Li plated into the bulk layer,
  P = P0 + k * thickness * (1 - f), f being the share of Li that penetrates cracks and pores.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import itertools
import json
import math
import zlib
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any, Literal

import numpy as np

from shortwatch.model import Sample
from shortwatch.settings import CellSpec, SimulatorSource

K_B_EV = 8.617333e-5  # Boltzmann constant, eV/K
LI_UM_PER_MAH_CM2 = 4.85  # Li metal thickness per areal capacity


@dataclass(frozen=True, slots=True)
class ScenarioInfo:
    """What a scenario is, for listings and for scoring detectors against it."""

    family: str  # the failure mechanism, or "healthy"
    kind: Literal["symmetric", "full", "anode-free"]
    failing: bool
    description: str
    confounders: tuple[str, ...] = ()


@dataclass(slots=True)
class Truth:
    """The label of one simulated cell: what happened and when (data time, Unix seconds).

    Times that fall after the end of the generated data (a short ``duration_h``) are None.
    """

    cell: str
    scenario: str
    family: str
    failing: bool
    soft_onset_time: float | None
    hard_short_time: float | None
    confounders: list[str] = field(default_factory=list)


SCENARIOS: dict[str, ScenarioInfo] = {
    "sym_healthy": ScenarioInfo(
        "healthy", "symmetric", False, "Li|SE|Li at 0.5 mA/cm2, slow interphase growth", ("interphase_growth",)
    ),
    "sym_contact": ScenarioInfo(
        "healthy",
        "symmetric",
        False,
        "ASR falls 20-40 % over the first cycles (contact improves), then grows slowly",
        ("contact_improvement", "interphase_growth"),
    ),
    "sym_temperature": ScenarioInfo(
        "healthy",
        "symmetric",
        False,
        "oven steps 25 -> 35 -> 45 -> 25 C; ASR follows Arrhenius",
        ("temperature_steps",),
    ),
    "sym_ccd": ScenarioInfo(
        "healthy",
        "symmetric",
        False,
        "current-density ladder 0.1-0.5 mA/cm2 up and down, below the CCD",
        ("current_steps",),
    ),
    "sym_rests": ScenarioInfo(
        "healthy",
        "symmetric",
        False,
        "rests after each half-cycle and a 24-48 h rest mid-test",
        ("rests", "long_rest"),
    ),
    "sym_glitches": ScenarioInfo(
        "healthy",
        "symmetric",
        False,
        "healthy cell, glitchy stream: wild pressure, NaN voltage, gaps, duplicates, swaps",
        ("sensor_glitches", "nan_values", "data_gaps", "duplicates", "out_of_order"),
    ),
    "sym_cv_healthy": ScenarioInfo(
        "healthy",
        "symmetric",
        False,
        "periodic CV sweeps on a healthy cell; early contact improvement, then interphase growth",
        ("cv_sweeps", "contact_improvement", "interphase_growth"),
    ),
    "sym_soft_hard": ScenarioInfo(
        "soft_breakdown",
        "symmetric",
        True,
        "soft breakdown after 20-60 h (overpotential falls), hard short at 100-250 h",
        ("interphase_growth",),
    ),
    "sym_soft_stable": ScenarioInfo(
        "soft_breakdown",
        "symmetric",
        True,
        "soft breakdown that stabilises (seed 000 Fig. 3A), rests show the leak, no hard short",
        ("rests",),
    ),
    "sym_sudden_short": ScenarioInfo(
        "hard_short", "symmetric", True, "abrupt hard short at 60-200 h with no soft phase", ()
    ),
    "sym_cv_rise": ScenarioInfo(
        "cv_rise",
        "symmetric",
        True,
        "periodic CV sweeps: peak current falls (interphase), then rises (R_e), then hard short",
        ("cv_sweeps", "interphase_growth"),
    ),
    "sym_ccd_soft": ScenarioInfo(
        "soft_breakdown",
        "symmetric",
        True,
        "current ladder up to 1 mA/cm2; soft breakdown at a high step (eta stops scaling), hard short",
        ("current_steps",),
    ),
    "full_healthy": ScenarioInfo(
        "healthy",
        "full",
        False,
        "NCM|LPSCl|Li fixed gap: d(dP)_Q declines gradually and levels off",
        ("dpq_gradual_decline", "first_cycle_loss"),
    ),
    "full_constant_pressure": ScenarioInfo(
        "healthy",
        "full",
        False,
        "NCM|LPSCl|Li in a constant-pressure fixture: small pressure swing",
        ("constant_pressure_fixture", "dpq_gradual_decline", "first_cycle_loss"),
    ),
    "full_dpq_short": ScenarioInfo(
        "dpq_decline",
        "full",
        True,
        "d(dP)_Q falls fast after cycle ~13 (Li penetration), hard short at cycle ~17-22",
        ("dpq_gradual_decline", "first_cycle_loss"),
    ),
    "full_charge_fluct_short": ScenarioInfo(
        "charge_anomaly",
        "full",
        True,
        "charge-curve dips, over-long charges and falling CE, then a hard short",
        ("first_cycle_loss",),
    ),
    # -- the families of issue 10 (other labs' protocols and confounders); protocols drawn at
    # random when SimulatedCell(randomize=True)
    "sym_long_settling": ScenarioInfo(
        "healthy",
        "symmetric",
        False,
        "contact settles exponentially with a time constant of 5-20 h, far past any warm-up",
        ("long_contact_settling", "interphase_growth"),
    ),
    "sym_pressure_raise": ScenarioInfo(
        "healthy",
        "symmetric",
        False,
        "the operator raises the stack pressure mid-test: ASR falls 25-35 % within a cycle or two",
        ("pressure_raise",),
    ),
    "sym_pressure_drop": ScenarioInfo(
        "healthy",
        "symmetric",
        False,
        "the stack pressure drops 1-2 MPa mid-test (still in the window): ASR rises 10-25 %",
        ("pressure_drop",),
    ),
    "sym_ccd_noshort": ScenarioInfo(
        "healthy",
        "symmetric",
        False,
        "CCD ladder (x1.5 every 3-6 cycles) that ends below the CCD, without a short",
        ("current_steps",),
    ),
    "sym_long_pause": ScenarioInfo(
        "healthy",
        "symmetric",
        False,
        "a 12-72 h pause mid-test: the ASR jumps (interphase growth at rest) and partly recovers",
        ("long_pause",),
    ),
    "sym_ccd_breakdown": ScenarioInfo(
        "ccd_breakdown",
        "symmetric",
        True,
        "CCD ladder to soft breakdown at the critical J, then a hard short (electronic path: "
        "exponential, linear or stepwise filament growth)",
        ("current_steps",),
    ),
    "sym_void_short": ScenarioInfo(
        "void_polarization",
        "symmetric",
        True,
        "stripping voids: end-of-strip and plateau polarization grow from cycle to cycle (and run "
        "away within a step in one variant), then a hard short",
        ("interphase_growth",),
    ),
    "af_formation": ScenarioInfo(
        "healthy",
        "anode-free",
        False,
        "anode-free cell: a nucleation spike at the start of every charge, low and noisy CE in formation",
        ("nucleation", "formation"),
    ),
    "full_selfdischarge_short": ScenarioInfo(
        "self_discharge",
        "full",
        True,
        "an internal leak grows: the OCV after charge falls faster, CE drops; then a short at rest or "
        "mid-discharge (NCM or LFP-like OCV)",
        ("first_cycle_loss",),
    ),
    "full_void_short": ScenarioInfo(
        "void_polarization",
        "full",
        True,
        "stripping voids at the Li anode: the discharge polarization grows from cycle to cycle, most "
        "towards the end of each discharge; then a short mid-discharge (NCM or LFP-like OCV)",
        ("first_cycle_loss",),
    ),
    "full_sudden_short": ScenarioInfo(
        "sudden_short",
        "full",
        True,
        "a short with no precursor, mid-discharge or at rest: the voltage drops 0.3-0.8 V within a "
        "sample and cannot be held",
        ("first_cycle_loss",),
    ),
}

#: the scenarios of the original set (fixed protocol); the rest are issue 10's families
NEW_SCENARIOS = (
    "sym_long_settling",
    "sym_pressure_raise",
    "sym_pressure_drop",
    "sym_ccd_noshort",
    "sym_long_pause",
    "sym_ccd_breakdown",
    "sym_void_short",
    "af_formation",
    "full_selfdischarge_short",
    "full_void_short",
    "full_sudden_short",
)


def _check_scenario(scenario: str) -> ScenarioInfo:
    try:
        return SCENARIOS[scenario]
    except KeyError:
        raise ValueError(f"unknown scenario {scenario!r}; valid: {', '.join(sorted(SCENARIOS))}") from None


def default_spec(scenario: str) -> CellSpec:
    """A CellSpec matching the scenario, so scenarios run without a [cells] section."""
    info = _check_scenario(scenario)
    if info.kind != "symmetric":
        fixture = "constant-pressure" if scenario == "full_constant_pressure" else "fixed-gap"
        return CellSpec(
            kind=info.kind,
            area_cm2=0.785,
            cathode_mass_g=0.0126,
            fixture=fixture,
            nominal_pressure_MPa=5.0,
            temperature_C=60.0,
        )
    return CellSpec(kind="symmetric", area_cm2=0.785, fixture="fixed-gap", nominal_pressure_MPa=5.0, temperature_C=25.0)


def _resolve_spec(cell: str, scenario: str, spec: CellSpec) -> CellSpec:
    """The scenario's default spec overridden by what the user set explicitly.

    A cell with no [cells] section comes as a bare ``CellSpec()``; its defaults (symmetric, no
    cathode mass) must not turn a full-cell scenario into nonsense.
    """
    base = default_spec(scenario)
    explicit = spec.model_fields_set
    if "kind" in explicit and spec.kind != base.kind:
        raise ValueError(
            f"cell {cell}: scenario {scenario} simulates a {base.kind} cell but its spec says kind={spec.kind}"
        )
    return base.model_copy(update={name: getattr(spec, name) for name in explicit})


@dataclass(slots=True)
class _Step:
    """One cycler step of the plan, with the cell state the renderer needs at its start.

    Times are seconds from the cell's start. ``kind`` is cc / rest / sweep / stop (the test
    stopped after a hard short; recorded as mode "rest").
    """

    kind: str
    t0: float
    t1: float
    cycle: int
    step: int = 0
    current_A: float = 0.0  # signed set current (cc); 0 otherwise
    j: float = 0.0  # symmetric: current density, mA/cm2
    jitter: float = 1.0  # symmetric: step-to-step ASR scatter
    v_rel0: float = 0.0  # rests: relaxing overpotential at the start
    p0: float = 0.0  # symmetric: pressure offset at the start (plating asymmetry)
    x0: float = 0.0  # full: state of charge at the start
    dxdt: float = 0.0  # full: SOC change per second
    bulk0: float = 0.0  # full: bulk Li thickness (um) at the start
    um_per_x: float = 0.0  # full: bulk Li thickness per unit SOC (um), already times (1 - f)
    r_ohm: float = 0.0  # full: cell resistance (ohm) at the reference temperature
    voids: float = 0.0  # full, discharge: void growth at the Li anode being stripped
    nominal_s: float = 3600.0  # full: the step's nominal duration (where the end-of-strip rise peaks)
    dip_rate_h: float = 0.0  # full: micro-short voltage dips per hour while charging
    t_short: float | None = None  # full: hard short inside this step
    v_short: float = 0.0  # full: model voltage at the short
    v_floor: float = 0.0  # full: where the shorted cell sinks to (at least 0.5 V below the short)


@dataclass(slots=True)
class _Rendered:
    """A step rendered as channel arrays: voltage, current, pressure, temperature."""

    v: np.ndarray
    i: np.ndarray
    p: np.ndarray
    t: np.ndarray


def _temperature(
    th: np.ndarray, base: float, steps: tuple[tuple[float, float], ...], tau_h: float, amp: float, phase: float
) -> np.ndarray:
    """Oven temperature: set-point steps with a first-order lag, plus a small daily wobble."""
    temp = base + amp * np.sin(2.0 * np.pi * th / 24.0 + phase)
    for at_h, delta in steps:
        dt = np.maximum(th - at_h, 0.0)
        temp = temp + np.where(th >= at_h, delta * (1.0 - np.exp(-dt / tau_h)), 0.0)
    return temp


def _arrhenius(temp_c: np.ndarray, ref_c: float, ea_ev: float) -> np.ndarray:
    """Resistance factor relative to the reference temperature."""
    return np.exp(ea_ev / K_B_EV * (1.0 / (temp_c + 273.15) - 1.0 / (ref_c + 273.15)))


# ---------------------------------------------------------------- symmetric cells


@dataclass(slots=True)
class _SymParams:
    """Everything that defines one symmetric cell's run; drawn per scenario from the seed."""

    asr0: float  # ohm cm2 at the base temperature
    growth_h: float  # interphase growth, fraction of asr0 per hour
    ea_ev: float
    nuc_amp: float  # nucleation peak, fraction of the plateau
    nuc_frac: float  # its e-folding, fraction of the half-cycle
    void_amp: float  # end-of-strip rise, fraction of the plateau
    void_frac: float  # the last fraction of the half-cycle where it rises
    rest_tau_s: float  # relaxation time at rest with no leak
    diurnal_C: float
    diurnal_phase: float
    p_offset: float  # load-cell offset from the nominal pressure, MPa
    p_creep_h: float  # baseline creep, MPa/h
    p_swing: float  # pressure change per mAh/cm2 plated on the working side, MPa
    v_noise: float
    p_noise: float
    jitter_sd: float
    j: float = 0.5  # mA/cm2
    ladder: tuple[float, ...] = ()  # current-density steps (mA/cm2), empty = constant j
    ladder_cycles: int = 5
    ladder_hold: bool = False  # hold the last step (True) or go down and up again (False)
    half_h: float = 1.0
    contact_drop: float = 0.0
    contact_tau_h: float = 1.0
    temp_steps: tuple[tuple[float, float], ...] = ()  # (hour, change in C)
    temp_tau_h: float = 0.4
    rest_min: float = 0.0  # rest after each half-cycle
    long_rest_at_h: float | None = None
    long_rest_h: float = 0.0
    long_rest_jump: float = 0.0  # ASR rise from interphase growth during the long rest
    rest_keep: float = 0.4  # share of the overpotential that relaxes slowly (the rest is ohmic)
    sweep_every: int = 0  # cycles between CV sweeps, 0 = none
    sweep_vmax: float = 0.1
    sweep_rate: float = 2e-4  # V/s
    sweep_v0: float = 0.05  # curvature of the ionic I(V), V
    soft_h: float | None = None
    re_start: float = 1e4  # ohm cm2 at the soft onset
    re_floor: float = 100.0  # ohm cm2 it tends to
    re_tau_h: float = 30.0
    hard_h: float | None = None
    re_hard: float = 0.5  # ohm cm2
    hold_h: float = 6.0  # cycling goes on this long after the hard short
    stop_h: float = 4.0  # then the test is stopped (I = 0) this long
    length_h: float | None = 300.0  # None: until the natural end after the hard short
    re_law: str = "exp"  # electronic path: exp (R_e falls log-linearly), linear (conductance grows
    # linearly), steps (filaments connect one at a time)
    re_jumps: int = 6  # steps: number of filaments
    p_step_at_h: float | None = None  # the operator changes the stack pressure at this hour...
    p_step_MPa: float = 0.0  # ...by this much...
    p_step_asr: float = 0.0  # ...and the ASR follows by this share (contact)...
    p_step_tau_h: float = 0.5  # ...with this time constant
    long_rest_recover: float = 0.0  # share of the jump after a long rest that recovers...
    long_rest_recover_tau_h: float = 3.0  # ...with this time constant
    void_on_h: float | None = None  # stripping voids start to grow at this hour...
    void_tau_h: float = 30.0  # ...e-folding of their growth
    void_plateau: float = 0.3  # plateau ASR growth per unit of void growth
    void_end: float = 1.5  # end-of-strip rise growth per unit of void growth
    void_frac_max: float = 0.15  # the rise starts this early in the step when voids are large
    noise_model: str = "gauss"  # gauss | spiky (rare outliers) | quantized (0.1 mV resolution)

    def j_at(self, cycle: int) -> float:
        if not self.ladder:
            return self.j
        i = (cycle - 1) // self.ladder_cycles
        if self.ladder_hold:
            return self.ladder[min(i, len(self.ladder) - 1)]
        pattern = self.ladder + self.ladder[-2:0:-1]
        return pattern[i % len(pattern)]


class _SymModel:
    """Li|SE|Li galvanostatic cycling, rests and CV sweeps."""

    def __init__(self, p: _SymParams, spec: CellSpec, end_s: float | None, rng: np.random.Generator):
        self.p = p
        self.area = spec.area_cm2
        self.t_base = spec.temperature_C if spec.temperature_C is not None else 25.0
        self.p_nominal = (spec.nominal_pressure_MPa or 5.0) + p.p_offset
        if p.p_step_MPa < 0:  # a drop that stays in the window (above 1.5 MPa)
            self.p = p = replace(p, p_step_MPa=max(p.p_step_MPa, min(0.0, 1.5 - self.p_nominal)))
        elif p.p_step_MPa > 0:  # an operator's raise stays in the window too (below 9 MPa, noise and creep on top)
            self.p = p = replace(p, p_step_MPa=min(p.p_step_MPa, max(0.0, 9.0 - self.p_nominal)))
        onset = p.soft_h if p.soft_h is not None else p.void_on_h
        self.soft_s = onset * 3600.0 if onset is not None else None
        self.hard_s = p.hard_h * 3600.0 if p.hard_h is not None else None
        if end_s is None:
            end_s = p.length_h * 3600.0 if p.length_h is not None else math.inf
        self._long_rest_end_h = math.inf
        self.steps = self._plan(end_s)
        self._fill_state(rng)

    # -- the cell's state as functions of time (hours from the start)
    def temp(self, th: np.ndarray) -> np.ndarray:
        p = self.p
        return _temperature(th, self.t_base, p.temp_steps, p.temp_tau_h, p.diurnal_C, p.diurnal_phase)

    def r_ion(self, th: np.ndarray) -> np.ndarray:
        """ASR of the ionic path (ohm cm2) without the half-cycle shape."""
        p = self.p
        r = p.asr0 * (1.0 + p.growth_h * th) * _arrhenius(self.temp(th), self.t_base, p.ea_ev)
        if p.contact_drop:
            r = r * (1.0 - p.contact_drop * (1.0 - np.exp(-th / p.contact_tau_h)))
        if p.long_rest_at_h is not None and p.long_rest_jump:
            after = np.maximum(th - self._long_rest_end_h, 0.0)
            kept = 1.0 - p.long_rest_recover * (1.0 - np.exp(-after / p.long_rest_recover_tau_h))
            r = r * np.where(th >= self._long_rest_end_h, 1.0 + p.long_rest_jump * kept, 1.0)
        if p.p_step_at_h is not None:
            since = np.maximum(th - p.p_step_at_h, 0.0)
            r = r * (1.0 + p.p_step_asr * np.where(th >= p.p_step_at_h, 1.0 - np.exp(-since / p.p_step_tau_h), 0.0))
        if p.void_on_h is not None:
            r = r * (1.0 + p.void_plateau * self.voids(th))
        return r

    def voids(self, th: np.ndarray) -> np.ndarray:
        """Void growth (0 before the onset): exponential, since a void concentrates the current."""
        p = self.p
        if p.void_on_h is None:
            return np.zeros_like(th)
        return np.where(th >= p.void_on_h, np.expm1(np.maximum(th - p.void_on_h, 0.0) / p.void_tau_h), 0.0)

    def pressure_step(self, th: np.ndarray) -> np.ndarray:
        p = self.p
        if p.p_step_at_h is None:
            return np.zeros_like(th)
        return np.where(th >= p.p_step_at_h, p.p_step_MPa, 0.0)

    def g_e(self, th: np.ndarray) -> np.ndarray:
        """Conductance of the electronic path, 1/(ohm cm2); 0 while healthy."""
        p = self.p
        g = np.zeros_like(th)
        if p.soft_h is not None:
            if p.re_law == "exp":
                prog = 1.0 - np.exp(-np.maximum(th - p.soft_h, 0.0) / p.re_tau_h)
                g_soft = 1.0 / (p.re_start * (p.re_floor / p.re_start) ** prog)
            else:
                prog = np.clip((th - p.soft_h) / (2.0 * p.re_tau_h), 0.0, 1.0)
                if p.re_law == "steps":
                    prog = np.floor(prog * p.re_jumps) / p.re_jumps
                g_soft = 1.0 / p.re_start + (1.0 / p.re_floor - 1.0 / p.re_start) * prog
            g = np.where(th >= p.soft_h, g_soft, 0.0)
        if p.hard_h is not None:
            g = np.where(th >= p.hard_h, 1.0 / p.re_hard, g)
        return g

    def cc_eta(self, st: _Step, tr: np.ndarray) -> np.ndarray:
        """|V| of a galvanostatic half-cycle: the shaped ionic path in parallel with R_e."""
        p = self.p
        th = tr / 3600.0
        x = (tr - st.t0) / (p.half_h * 3600.0)
        shape = 1.0 + p.nuc_amp * np.exp(-x / p.nuc_frac)
        amp, frac = p.void_amp, p.void_frac
        if p.void_on_h is not None:
            g = float(self.voids(np.array([st.t0 / 3600.0]))[0])
            amp = amp * (1.0 + p.void_end * g)
            frac = min(frac * (1.0 + g), p.void_frac_max)
        shape += amp * np.maximum((x - 1.0 + frac) / frac, 0.0) ** 2
        r_eff = 1.0 / (1.0 / (self.r_ion(th) * shape * st.jitter) + self.g_e(th))
        return st.j * 1e-3 * r_eff

    # -- the protocol
    def _plan(self, end_s: float) -> list[_Step]:
        p = self.p
        stop_s = math.inf if p.hard_h is None else (p.hard_h + p.hold_h) * 3600.0
        limit = min(stop_s, end_s)
        sweep_s = 4.0 * p.sweep_vmax / p.sweep_rate
        steps: list[_Step] = []
        t, cycle = 0.0, 1
        long_rest_due = p.long_rest_at_h

        def push(kind: str, dur: float, **kw: float) -> None:
            nonlocal t
            steps.append(_Step(kind, t, t + dur, cycle, **kw))
            t += dur

        while t < limit:
            if p.sweep_every and (cycle - 1) % p.sweep_every == 0:
                push("sweep", sweep_s)
            j = p.j_at(cycle)
            for sign in (1.0, -1.0):
                push("cc", p.half_h * 3600.0, j=j, current_A=sign * j * 1e-3 * self.area)
                if p.rest_min:
                    push("rest", p.rest_min * 60.0)
            if long_rest_due is not None and t >= long_rest_due * 3600.0:
                push("rest", p.long_rest_h * 3600.0)
                self._long_rest_end_h = t / 3600.0
                long_rest_due = None
            cycle += 1
        steps = [s for s in steps if s.t0 < limit]
        steps[-1].t1 = min(steps[-1].t1, limit)
        if stop_s <= end_s:  # the hard short happened: a last check, then the test is stopped
            t, cycle = limit, steps[-1].cycle
            if p.sweep_every:
                push("sweep", sweep_s)
            push("stop", p.stop_h * 3600.0)
            steps = [s for s in steps if s.t0 < end_s]
            steps[-1].t1 = min(steps[-1].t1, end_s)
        return steps

    def _fill_state(self, rng: np.random.Generator) -> None:
        """Step numbers, step-to-step ASR scatter and what carries over from one step to the next."""
        v_end, p_off = 0.0, 0.0
        for n, st in enumerate(self.steps, start=1):
            st.step = n
            if st.kind == "cc":
                st.jitter = 1.0 + self.p.jitter_sd * float(rng.standard_normal())
                st.p0 = p_off
                sign = 1.0 if st.current_A > 0 else -1.0
                p_off += sign * self.p.p_swing * st.j * (st.t1 - st.t0) / 3600.0
                v_end = sign * float(self.cc_eta(st, np.array([st.t1]))[0])
            elif st.kind in ("rest", "stop"):
                st.v_rel0 = v_end * self.p.rest_keep
                st.p0 = p_off
                v_end = 0.0
            else:
                st.p0 = p_off
                v_end = 0.0

    # -- rendering
    def render(self, st: _Step, tr: np.ndarray, rng: np.random.Generator) -> _Rendered:
        p = self.p
        th = tr / 3600.0
        noise = rng.standard_normal((4, tr.size))
        temp = self.temp(th)
        if st.kind == "cc":
            sign = 1.0 if st.current_A > 0 else -1.0
            v = sign * self.cc_eta(st, tr) + _v_noise(p.noise_model, p.v_noise, noise[0], rng)
            if p.noise_model == "quantized":
                v = np.round(v, 4)
            i = st.current_A * (1.0 + 1e-3 * noise[1])
            pres = st.p0 + sign * p.p_swing * st.j * (tr - st.t0) / 3600.0
        elif st.kind == "sweep":
            u = (tr - st.t0) * p.sweep_rate
            vm = p.sweep_vmax
            v = np.where(u < vm, u, np.where(u < 3.0 * vm, 2.0 * vm - u, u - 4.0 * vm))
            i_ion = p.sweep_v0 / self.r_ion(th) * np.sinh(v / p.sweep_v0)
            i = self.area * (i_ion + v * self.g_e(th))
            i = i + 1e-3 * p.j * 1e-3 * self.area * noise[1]
            v = v + 1e-4 * noise[0]
            pres = np.full(tr.size, st.p0)
        else:
            g = float(self.g_e(np.array([st.t0 / 3600.0]))[0])
            r = float(self.r_ion(np.array([st.t0 / 3600.0]))[0])
            tau = p.rest_tau_s / (1.0 + r * g)
            v = st.v_rel0 * np.exp(-(tr - st.t0) / tau) + p.v_noise * noise[0]
            i = np.zeros(tr.size)
            pres = np.full(tr.size, st.p0)
        pres = self.p_nominal + self.pressure_step(th) + p.p_creep_h * th + pres + p.p_noise * noise[2]
        return _Rendered(v, i, pres, temp + 0.05 * noise[3])


def _v_noise(model: str, sd: float, z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Voltage noise: gaussian; gaussian with rare outliers (contact bounce, EMI); or a coarse
    0.1 mV converter (the caller rounds)."""
    if model == "spiky":
        spikes = (rng.random(z.size) < 0.002) * rng.uniform(-15.0, 15.0, z.size)
        return sd * (z + spikes)
    if model == "quantized":
        return 0.3 * sd * z
    return sd * z


def _sym_base(rng: np.random.Generator, **over: Any) -> _SymParams:
    """A healthy symmetric cell; scenarios override fields (drawn after these, in order)."""
    p = _SymParams(
        asr0=rng.uniform(40.0, 150.0),
        growth_h=rng.uniform(0.0005, 0.0015),
        ea_ev=rng.uniform(0.3, 0.5),
        nuc_amp=rng.uniform(0.15, 0.3),
        nuc_frac=rng.uniform(0.012, 0.02),
        void_amp=rng.uniform(0.1, 0.25),
        void_frac=rng.uniform(0.10, 0.15),
        rest_tau_s=rng.uniform(600.0, 1200.0),
        diurnal_C=rng.uniform(0.05, 0.3),
        diurnal_phase=rng.uniform(0.0, 2.0 * np.pi),
        p_offset=rng.uniform(-0.3, 0.3),
        p_creep_h=rng.uniform(0.0, 0.002),
        p_swing=rng.uniform(0.01, 0.04),
        v_noise=rng.uniform(2e-4, 1e-3),
        p_noise=rng.uniform(0.01, 0.03),
        jitter_sd=0.005,
    )
    return replace(p, **over)


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _build_sym(scenario: str, rng: np.random.Generator, protocol: np.random.Generator | None = None) -> _SymParams:
    p = _sym_base(rng)
    if protocol is not None:
        p = _randomize_sym(p, protocol)
    if scenario in ("sym_healthy", "sym_glitches"):
        return p
    if scenario == "sym_contact":
        return replace(p, contact_drop=_u(rng, 0.2, 0.4), contact_tau_h=_u(rng, 3, 8) * 2.0 * p.half_h / 3.0)
    if scenario == "sym_temperature":
        h1 = _u(rng, 40, 60)
        h2 = h1 + _u(rng, 50, 70)
        h3 = h2 + _u(rng, 50, 70)
        return replace(p, temp_steps=((h1, 10.0), (h2, 10.0), (h3, -20.0)), temp_tau_h=_u(rng, 0.3, 0.8))
    if scenario == "sym_ccd":
        return replace(p, ladder=(0.1, 0.2, 0.3, 0.5), ladder_cycles=int(rng.integers(4, 9)))
    if scenario == "sym_rests":
        return replace(
            p,
            rest_min=_u(rng, 10, 30),
            long_rest_at_h=_u(rng, 120, 160),
            long_rest_h=_u(rng, 24, 48),
            long_rest_jump=_u(rng, 0.05, 0.15),
        )
    if scenario == "sym_cv_healthy":
        return replace(
            p,
            sweep_every=int(rng.integers(4, 7)),
            contact_drop=_u(rng, 0.15, 0.3),
            contact_tau_h=_u(rng, 3, 6),
            growth_h=_u(rng, 0.001, 0.003),
        )
    if scenario == "sym_soft_hard":
        asr = p.asr0
        soft = _u(rng, 20, 60)
        return replace(
            p,
            growth_h=_u(rng, 0.001, 0.003),
            soft_h=soft,
            re_start=asr * _u(rng, 20, 50),
            re_floor=asr * _u(rng, 0.3, 0.9),
            re_tau_h=_u(rng, 15, 40),
            hard_h=max(_u(rng, 100, 250), soft + 40.0),
            re_hard=_u(rng, 0.2, 1.0),
            hold_h=_u(rng, 4, 12),
            stop_h=_u(rng, 2, 6),
            length_h=None,
        )
    if scenario == "sym_soft_stable":
        asr = p.asr0
        return replace(
            p,
            growth_h=_u(rng, 0.001, 0.003),
            rest_min=_u(rng, 10, 20),
            soft_h=_u(rng, 20, 60),
            re_start=asr * _u(rng, 20, 50),
            re_floor=asr * _u(rng, 0.5, 1.5),
            re_tau_h=_u(rng, 20, 35),
        )
    if scenario == "sym_sudden_short":
        hard = _u(rng, 60, 200)
        return replace(
            p,
            soft_h=hard,
            re_start=_u(rng, 0.2, 1.0),
            re_floor=0.5,
            hard_h=hard,
            re_hard=_u(rng, 0.2, 1.0),
            hold_h=_u(rng, 4, 12),
            stop_h=_u(rng, 2, 6),
            length_h=None,
        )
    if scenario == "sym_cv_rise":
        asr = p.asr0
        soft = _u(rng, 60, 120)
        tau = _u(rng, 30, 60)
        return replace(
            p,
            sweep_every=int(rng.integers(4, 7)),
            growth_h=_u(rng, 0.002, 0.004),
            soft_h=soft,
            re_start=asr * _u(rng, 30, 60),
            re_floor=asr * _u(rng, 0.3, 0.8),
            re_tau_h=tau,
            hard_h=max(_u(rng, 180, 260), soft + 2.5 * tau),  # the rise shows before the short
            re_hard=_u(rng, 0.5, 2.0),
            hold_h=_u(rng, 4, 12),
            stop_h=_u(rng, 2, 6),
            length_h=None,
        )
    if scenario in NEW_SCENARIOS:
        return _build_sym_new(scenario, p, rng)
    if scenario == "sym_ccd_soft":
        n = int(rng.integers(5, 8))
        at_step = int(rng.integers(3, 5))  # soft breakdown at the 0.5 or 0.8 mA/cm2 step
        soft = (at_step * n + _u(rng, 0.0, 0.5 * n)) * 2.0 * p.half_h
        asr = p.asr0
        return replace(
            p,
            ladder=(0.1, 0.2, 0.3, 0.5, 0.8, 1.0),
            ladder_cycles=n,
            ladder_hold=True,
            soft_h=soft,
            re_start=asr * _u(rng, 10, 20),
            re_floor=asr * _u(rng, 0.2, 0.6),
            re_tau_h=_u(rng, 5, 15),
            hard_h=soft + _u(rng, 30, 80),
            re_hard=_u(rng, 0.2, 1.0),
            hold_h=_u(rng, 4, 12),
            stop_h=_u(rng, 2, 6),
            length_h=None,
        )
    raise AssertionError(scenario)


def _ladder(j0: float, steps: int) -> tuple[float, ...]:
    """A CCD ladder: x1.5 per step from j0 (mA/cm2)."""
    return tuple(round(j0 * 1.5**k, 4) for k in range(steps))


def _build_sym_new(scenario: str, p: _SymParams, rng: np.random.Generator) -> _SymParams:
    """Issue 10's symmetric families. Times scale with the half-cycle (``p.half_h``, drawn by
    the protocol) where the story is counted in cycles; physics times are in hours."""
    cyc_h = 2.0 * p.half_h
    end = {"hold_h": _u(rng, 2, 6), "stop_h": _u(rng, 2, 6), "length_h": None}
    noise = str(rng.choice(["gauss", "spiky", "quantized"]))
    if scenario == "sym_long_settling":
        return replace(p, contact_drop=_u(rng, 0.2, 0.45), contact_tau_h=_u(rng, 5, 20), noise_model=noise)
    if scenario in ("sym_pressure_raise", "sym_pressure_drop"):
        raise_ = scenario == "sym_pressure_raise"
        return replace(
            p,
            p_step_at_h=_u(rng, 40, 120),
            p_step_MPa=_u(rng, 1.0, 2.5) if raise_ else -_u(rng, 1.0, 2.0),
            p_step_asr=-_u(rng, 0.25, 0.35) if raise_ else _u(rng, 0.1, 0.25),
            p_step_tau_h=_u(rng, 0.3, 1.0) * cyc_h,
            noise_model=noise,
        )
    if scenario == "sym_ccd_noshort":
        return replace(
            p,
            ladder=_ladder(min(p.j, 0.5), int(rng.integers(3, 6))),
            ladder_cycles=int(rng.integers(3, 7)),
            ladder_hold=True,
        )
    if scenario == "sym_long_pause":
        return replace(
            p,
            long_rest_at_h=_u(rng, 60, 150),
            long_rest_h=_u(rng, 12, 72),
            long_rest_jump=_u(rng, 0.1, 0.4),
            long_rest_recover=_u(rng, 0.2, 0.6),
            long_rest_recover_tau_h=_u(rng, 1.0, 5.0),
        )
    if scenario == "sym_ccd_breakdown":
        n = int(rng.integers(3, 7))
        steps = int(rng.integers(4, 7))
        at_step = int(rng.integers(2, steps))  # the critical J is reached at this step
        soft = (at_step * n + _u(rng, 0.3, 0.8) * n) * cyc_h
        asr = p.asr0
        law = str(rng.choice(["exp", "linear", "steps"]))
        tau = _u(rng, 5, 20)
        return replace(
            p,
            ladder=_ladder(min(p.j, 0.5), steps),
            ladder_cycles=n,
            ladder_hold=True,
            soft_h=soft,
            re_law=law,
            re_jumps=int(rng.integers(3, 9)),
            re_start=asr * _u(rng, 10, 30),
            re_floor=asr * _u(rng, 0.2, 0.6),
            re_tau_h=tau,
            hard_h=soft + max(_u(rng, 2.0, 4.0) * tau, 6.0 * cyc_h),
            re_hard=_u(rng, 0.2, 1.0),
            noise_model=noise,
            **end,
        )
    if scenario == "sym_void_short":
        on = _u(rng, 30, 100)
        runaway = bool(rng.integers(0, 2))
        g_end = _u(rng, 1.5, 4.0)
        tau = max(_u(rng, 10, 40), 4.0 * cyc_h)  # voids grow over several cycles
        return replace(
            p,
            void_on_h=on,
            void_tau_h=tau,
            void_plateau=_u(rng, 0.15, 0.4),
            void_end=_u(rng, 3.0, 6.0) if runaway else _u(rng, 0.8, 2.0),
            void_frac_max=0.45 if runaway else 0.2,
            hard_h=on + tau * math.log1p(g_end),
            re_hard=_u(rng, 0.2, 1.0),
            noise_model=noise,
            **end,
        )
    raise AssertionError(scenario)


def _randomize_sym(p: _SymParams, rng: np.random.Generator) -> _SymParams:
    """Another lab's protocol: current density, half-cycle length, daily temperature swing."""
    return replace(
        p,
        j=float(np.exp(rng.uniform(math.log(0.05), math.log(3.0)))),
        half_h=float(np.exp(rng.uniform(math.log(0.25), math.log(3.0)))),
        diurnal_C=_u(rng, 0.5, 2.5),
        v_noise=_u(rng, 5e-5, 5e-4),
        length_h=_u(rng, 250, 450) if p.length_h is not None else None,
    )


# ---------------------------------------------------------------- full cells


def _ocv(x: np.ndarray, kind: str = "ncm") -> np.ndarray:
    """Open-circuit voltage vs. state of charge (0 = discharged), steep at both ends: NCM-like
    (sloping, 3.55-4.2 V) or LFP-like (flat at 3.4 V: a leak hardly moves it)."""
    if kind == "lfp":
        x = np.clip(x, -0.05, 1.05)
        return 3.38 + 0.06 * x - 0.35 * np.exp(-x / 0.04) + 0.2 * np.exp((x - 1.0) / 0.02)
    x = np.clip(x, -0.03, 1.1)  # a leaking cell drained below empty sinks to ~2 V, not to -10 V
    return 3.55 + 0.62 * x + 0.04 * np.sin(np.pi * x) - 0.45 * np.exp(-x / 0.025) + 0.3 * np.exp((x - 1.0) / 0.025)


_OCV_X_TOP = 0.955  # SOC where a typical charge reaches its cut-off


@dataclass(slots=True)
class _FullParams:
    """Everything that defines one full cell's run; drawn per scenario from the seed."""

    q_spec: float  # discharge capacity, Ah/g
    fade: float  # capacity fade per cycle
    r_asr: float  # ohm cm2 at the base temperature
    r_growth: float  # per cycle
    ea_ev: float
    first_loss: float  # irreversible share of the first charge
    loss: float  # irreversible share of later charges
    k_um: float  # fixed-gap stiffness, MPa per um of bulk Li
    cp_factor: float  # constant-pressure fixture: share of the fixed-gap swing
    f_inf: float  # gradual penetration share it levels off at
    f_tau: float  # in cycles
    upturn_at: float  # cycle after which f eases back (d(dP)_Q turns slightly up)
    upturn: float  # per cycle
    creep_h: float  # pressure baseline creep, MPa/h
    p_offset: float
    diurnal_C: float
    diurnal_phase: float
    v_noise: float
    p_noise: float
    n_cycles: int | None
    c_rate: float = 0.2
    v_max: float = 4.25
    v_min: float = 3.0
    rest_h: float = 0.5
    pol: float = 0.3  # share of the IR drop that builds up over tau_pol
    tau_pol_s: float = 600.0
    rest_keep: float = 0.5
    rest_tau_s: float = 1200.0
    pen_on: int | None = None  # cycle where penetration accelerates
    pen_rate: float = 0.0
    leak_on: int | None = None  # cycle where micro-shorts start
    leak0: float = 0.05
    leak_growth: float = 0.45
    dip_rate0: float = 0.5  # dips per hour in the first leaky cycle
    short_cycle: int | None = None
    short_after_capped: int | None = None  # or: the short comes this many cycles after a capped charge
    short_frac: float = 0.5  # of the charge's duration
    short_step: str = "charge"  # the short comes in the charge, the rest after it, or the discharge
    short_drop: float = 0.0  # V lost at once at the short; then it sinks to v_floor...
    short_tau_s: float = 40.0  # ...with this time constant
    v_floor: float = 1.5
    ocv_kind: str = "ncm"  # ncm | lfp
    void_on: int | None = None  # cycle where stripping voids start to grow at the Li anode...
    void_growth: float = 0.3  # ...e-folding per cycle
    void_plateau: float = 0.3  # discharge resistance growth per unit of void growth...
    void_end: float = 2.0  # ...and towards the end of each discharge (the Li runs out where voids are)
    nuc_V: float = 0.0  # anode-free: nucleation spike at the start of each charge (V)...
    nuc_tau_s: float = 120.0  # ...decaying with this time constant
    loss_sd: float = 0.0  # cycle-to-cycle scatter of the irreversible loss (anode-free formation)
    formation_cycles: int = 0  # cycles of extra (decaying) loss
    loss_seed: int = 0
    hold_h: float = 2.0
    stop_h: float = 4.0

    def f_at(self, n: int) -> float:
        f = self.f_inf * (1.0 - math.exp(-(n - 1) / self.f_tau))
        if n > self.upturn_at:
            f -= self.upturn * (n - self.upturn_at)
        if self.pen_on is not None and n >= self.pen_on:
            f += (1.0 - f) * (1.0 - math.exp(-(n - self.pen_on + 1) * self.pen_rate))
        return min(max(f, 0.0), 0.97)

    def loss_at(self, n: int) -> float:
        """Irreversible share of charge n: high in the first charge (and in formation), scattered."""
        if n == 1:
            return self.first_loss
        loss = self.loss
        if self.formation_cycles:
            loss += 4.0 * self.loss * math.exp(-(n - 2) / max(self.formation_cycles / 2.0, 1.0))
        if self.loss_sd:
            loss += self.loss_sd * float(np.random.default_rng([self.loss_seed, n]).standard_normal())
        return min(max(loss, 0.0), 0.5)

    def leak_at(self, n: int) -> float:
        """Internal leak current as a share of the set current."""
        if self.leak_on is None or n < self.leak_on:
            return 0.0
        return min(self.leak0 * (math.exp((n - self.leak_on + 1) * self.leak_growth) - 1.0), 0.9)

    def voids_at(self, n: int) -> float:
        """Void growth at cycle n (0 before the onset): exponential, as a void concentrates the current."""
        if self.void_on is None or n < self.void_on:
            return 0.0
        return math.expm1((n - self.void_on + 1) * self.void_growth)

    def dips_at(self, n: int) -> float:
        if self.leak_on is None or n < self.leak_on:
            return 0.0
        return self.dip_rate0 * 2.0 ** (n - self.leak_on)


class _FullModel:
    """NCM|SE|Li: CC charge, rest, CC discharge, rest; pressure from the plated bulk Li."""

    def __init__(self, p: _FullParams, spec: CellSpec, end_s: float | None):
        self.p = p
        self.area = spec.area_cm2
        self.mass = spec.cathode_mass_g or 0.0126
        self.t_base = spec.temperature_C if spec.temperature_C is not None else 25.0
        self.k_p = p.k_um * (1.0 if spec.fixture == "fixed-gap" else p.cp_factor)
        self.creep = p.creep_h * (1.0 if spec.fixture == "fixed-gap" else 0.2)
        self.p_nominal = (spec.nominal_pressure_MPa or 5.0) + p.p_offset
        self.i_set = p.c_rate * p.q_spec * self.mass
        self.soft_s: float | None = None
        self.hard_s: float | None = None
        self.steps = self._plan(math.inf if end_s is None else end_s, end_s is None)

    def temp(self, th: np.ndarray) -> np.ndarray:
        return _temperature(th, self.t_base, (), 1.0, self.p.diurnal_C, self.p.diurnal_phase)

    def model_v(self, st: _Step, tr: np.ndarray) -> np.ndarray:
        """Noise-free terminal voltage of a cc or rest step (before any short)."""
        tau = tr - st.t0
        ocv = _ocv(st.x0 + st.dxdt * tau, self.p.ocv_kind)
        if st.kind == "cc":
            arr = _arrhenius(self.temp(tr / 3600.0), self.t_base, self.p.ea_ev)
            r = st.r_ohm
            if st.voids:  # stripping the Li anode: the interface loses contact where voids open
                r = r * (1.0 + st.voids * (self.p.void_plateau + self.p.void_end * (tau / st.nominal_s) ** 3))
            v = ocv + st.current_A * r * arr * (1.0 - self.p.pol * np.exp(-tau / self.p.tau_pol_s))
            if self.p.nuc_V and st.current_A > 0:  # Li nucleates on the bare collector
                v = v + self.p.nuc_V * np.exp(-tau / self.p.nuc_tau_s)
            return v
        return ocv + st.v_rel0 * np.exp(-tau / self.p.rest_tau_s)

    def _cc_duration(self, st: _Step, cap_s: float) -> float:
        """Time to the voltage cut-off, or the cycler's safety cap."""
        tau = np.arange(0.0, cap_s + 10.0, 10.0)
        v = self.model_v(st, st.t0 + tau)
        hit = np.flatnonzero(v >= self.p.v_max) if st.current_A > 0 else np.flatnonzero(v <= self.p.v_min)
        if hit.size == 0:
            return cap_s
        k = int(hit[0])
        if k == 0:
            return 10.0
        lim = self.p.v_max if st.current_A > 0 else self.p.v_min
        frac = (lim - v[k - 1]) / (v[k] - v[k - 1])
        return min(float(tau[k - 1] + frac * 10.0), cap_s)

    def _plan(self, end_s: float, natural: bool) -> list[_Step]:
        p = self.p
        steps: list[_Step] = []
        nominal_s = 3600.0 / p.c_rate
        cap_s = 1.5 * nominal_s
        i_set = self.i_set
        x, bulk, t = 0.0, 0.0, 0.0
        steps.append(_Step("rest", 0.0, p.rest_h * 3600.0, 1))
        t = steps[0].t1
        n_max = p.n_cycles if (natural and p.n_cycles is not None) else 10_000
        short_cycle = p.short_cycle
        for n in range(1, n_max + 1):
            if t >= end_s:
                break
            q = p.q_spec * self.mass / _OCV_X_TOP * (1.0 - p.fade * (n - 1))  # Ah per unit SOC
            r_ohm = p.r_asr * (1.0 + p.r_growth * (n - 1)) / self.area
            loss = p.loss_at(n)
            leak = p.leak_at(n) * i_set
            um_per_x = q * 1000.0 / self.area * LI_UM_PER_MAH_CM2 * (1.0 - p.f_at(n))
            if n in (p.pen_on, p.leak_on, p.void_on):
                self.soft_s = t
            common = {"um_per_x": um_per_x, "r_ohm": r_ohm}
            # CC charge
            st = _Step(
                "cc",
                t,
                t + cap_s,
                n,
                current_A=i_set,
                x0=x,
                dxdt=(i_set * (1.0 - loss) - leak) / q / 3600.0,
                bulk0=bulk,
                dip_rate_h=p.dips_at(n),
                **common,
            )
            dur = self._cc_duration(st, cap_s)
            if n == short_cycle and p.short_step == "charge":
                ts = t + p.short_frac * dur
                st.t_short, st.v_short = ts, float(self.model_v(st, np.array([ts]))[0])
                st.v_floor = min(p.v_floor, st.v_short - p.short_drop - 0.5)
                st.t1 = min(t + cap_s, ts + p.hold_h * 3600.0)
                self.hard_s = ts
                steps.append(st)
                stop = _Step("stop", st.t1, st.t1 + p.stop_h * 3600.0, n, v_floor=st.v_floor)
                stop.bulk0 = bulk + um_per_x * st.dxdt * (ts - t)
                steps.append(stop)
                break
            if dur >= cap_s and short_cycle is None and p.short_after_capped is not None:
                short_cycle = n + p.short_after_capped
            st.t1 = t + dur
            steps.append(st)
            t, x, bulk, v_end = self._advance(st)
            # rest, CC discharge, rest
            for current in (0.0, -i_set, 0.0):
                if current:
                    st = _Step(
                        "cc",
                        t,
                        t + cap_s,
                        n,
                        current_A=current,
                        x0=x,
                        dxdt=-(i_set + leak) / q / 3600.0,
                        voids=p.voids_at(n),
                        nominal_s=nominal_s,
                        **common,
                    )
                    st.bulk0 = bulk
                    st.t1 = t + self._cc_duration(st, cap_s)
                else:
                    st = _Step("rest", t, t + p.rest_h * 3600.0, n, x0=x, dxdt=-leak / q / 3600.0, **common)
                    st.bulk0, st.v_rel0 = bulk, (v_end - float(_ocv(np.array([x]), p.ocv_kind)[0])) * p.rest_keep
                if n == short_cycle and (p.short_step == "discharge") == bool(current) and st.t_short is None:
                    # the short strikes in this step (the first rest: the one after the charge)
                    ts = st.t0 + p.short_frac * (st.t1 - st.t0)
                    st.t_short, st.v_short = ts, float(self.model_v(st, np.array([ts]))[0])
                    st.v_floor = min(p.v_floor, st.v_short - p.short_drop - 0.5)
                    st.t1 = min(st.t1, ts + p.hold_h * 3600.0)
                    self.hard_s = ts
                    steps.append(st)
                    stop = _Step("stop", st.t1, st.t1 + p.stop_h * 3600.0, n, v_floor=st.v_floor)
                    stop.bulk0 = st.bulk0
                    steps.append(stop)
                    break
                steps.append(st)
                t, x, bulk, v_end = self._advance(st)
            if self.hard_s is not None:
                break
        steps = [s for s in steps if s.t0 < end_s]
        steps[-1].t1 = min(steps[-1].t1, end_s)
        for k, st in enumerate(steps, start=1):
            st.step = k
        return steps

    def _advance(self, st: _Step) -> tuple[float, float, float, float]:
        """The state at the end of a step: time, SOC, bulk Li, model voltage."""
        x = st.x0 + st.dxdt * (st.t1 - st.t0)
        bulk = st.bulk0 + st.um_per_x * (x - st.x0)
        return st.t1, x, bulk, float(self.model_v(st, np.array([st.t1]))[0])

    def render(self, st: _Step, tr: np.ndarray, rng: np.random.Generator) -> _Rendered:
        p = self.p
        th = tr / 3600.0
        noise = rng.standard_normal((4, tr.size))
        temp = self.temp(th)
        if st.kind == "stop":
            v = (st.v_floor or p.v_floor) * np.exp(-(tr - st.t0) / 3600.0)
            i = np.zeros(tr.size)
            bulk = np.full(tr.size, st.bulk0)
        else:
            v = self.model_v(st, tr)
            tau = tr - st.t0
            if st.t_short is not None:  # no more plating into the bulk once the short carries the current
                tau = np.minimum(tau, st.t_short - st.t0)
            bulk = st.bulk0 + st.um_per_x * st.dxdt * tau
            i = st.current_A * (1.0 + 1e-3 * noise[1]) if st.kind == "cc" else np.zeros(tr.size)
            if st.dip_rate_h:
                self._add_dips(v, st, tr, rng)
            if st.t_short is not None:
                after = tr >= st.t_short
                dt = tr[after] - st.t_short
                wander = np.cumsum(0.002 * rng.standard_normal(dt.size))
                v0 = st.v_short - p.short_drop  # what is lost at once, then it sinks on
                v[after] = st.v_floor + (v0 - st.v_floor) * np.exp(-dt / p.short_tau_s) + wander
        v = v + p.v_noise * noise[0]
        pres = self.p_nominal + self.creep * th + self.k_p * bulk + p.p_noise * noise[2]
        return _Rendered(v, i, pres, temp + 0.05 * noise[3])

    def _add_dips(self, v: np.ndarray, st: _Step, tr: np.ndarray, rng: np.random.Generator) -> None:
        """Micro-shorts: the voltage dips 10-50 mV for one to three samples while charging."""
        n = tr.size
        if st.t_short is not None:
            n = int(np.searchsorted(tr, st.t_short))
        if n < 4:
            return
        count = rng.poisson(st.dip_rate_h * (tr[n - 1] - tr[0]) / 3600.0)
        for at, length, depth in zip(
            rng.integers(0, n - 3, count), rng.integers(1, 4, count), rng.uniform(0.01, 0.05, count), strict=True
        ):
            v[at : at + length] -= depth


def _collapse(rng: np.random.Generator) -> dict[str, float]:
    """How a shorted full cell's voltage falls: a drop at once, then a sink with a time constant."""
    return {"short_drop": _u(rng, 0.3, 0.8), "short_tau_s": _u(rng, 60, 900)}


def _build_full(scenario: str, rng: np.random.Generator, protocol: np.random.Generator | None = None) -> _FullParams:
    p = _FullParams(
        q_spec=_u(rng, 0.18, 0.20),
        fade=_u(rng, 0.0005, 0.0015),
        r_asr=_u(rng, 50.0, 100.0),
        r_growth=_u(rng, 0.003, 0.008),
        ea_ev=_u(rng, 0.3, 0.5),
        first_loss=_u(rng, 0.10, 0.16),
        loss=_u(rng, 0.002, 0.006),
        k_um=_u(rng, 0.22, 0.28),
        cp_factor=_u(rng, 0.1, 0.2),
        f_inf=_u(rng, 0.25, 0.35),
        f_tau=_u(rng, 5.0, 9.0),
        upturn_at=_u(rng, 22.0, 28.0),
        upturn=_u(rng, 0.002, 0.006),
        creep_h=_u(rng, 0.0005, 0.002),
        p_offset=_u(rng, -0.3, 0.1),  # keeps the top of charge below the 10 MPa creep limit
        diurnal_C=_u(rng, 0.05, 0.3),
        diurnal_phase=_u(rng, 0.0, 2.0 * np.pi),
        v_noise=_u(rng, 3e-4, 8e-4),
        p_noise=_u(rng, 0.01, 0.03),
        n_cycles=int(rng.integers(25, 31)),
    )
    if protocol is not None:  # another lab's protocol: C-rate, rests, daily temperature swing
        p = replace(
            p,
            c_rate=float(np.exp(protocol.uniform(math.log(0.1), math.log(1.0)))),
            rest_h=_u(protocol, 0.25, 2.0),
            diurnal_C=_u(protocol, 0.5, 2.5),
        )
        p = replace(p, n_cycles=int(_u(protocol, 250, 450) / (2.4 / p.c_rate + 2 * p.rest_h)) + 1)
    if scenario in ("full_healthy", "full_constant_pressure"):
        return p
    if scenario == "af_formation":
        return replace(
            p,
            first_loss=_u(rng, 0.2, 0.35),
            loss=_u(rng, 0.005, 0.015),
            loss_sd=_u(rng, 0.003, 0.01),
            formation_cycles=int(rng.integers(3, 8)),
            loss_seed=int(rng.integers(0, 2**31)),
            nuc_V=_u(rng, 0.02, 0.1),
            nuc_tau_s=_u(rng, 30, 300),
            f_inf=0.1,
        )
    end = {
        "short_frac": _u(rng, 0.2, 0.8),
        "v_floor": _u(rng, 0.5, 2.5),
        "hold_h": _u(rng, 1.0, 3.0),
        "stop_h": _u(rng, 2.0, 6.0),
        "n_cycles": None,
    }
    if scenario == "full_dpq_short":
        on = int(rng.integers(12, 15))
        return replace(p, pen_on=on, pen_rate=_u(rng, 0.12, 0.2), short_cycle=on + int(rng.integers(5, 9)), **end)
    if scenario == "full_charge_fluct_short":
        on = int(rng.integers(8, 13))
        return replace(
            p,
            leak_on=on,
            leak0=_u(rng, 0.03, 0.06),
            leak_growth=_u(rng, 0.4, 0.5),
            dip_rate0=_u(rng, 0.3, 1.0),
            short_after_capped=int(rng.integers(1, 3)),
            **end,
        )
    lfp = bool(rng.integers(0, 2))
    ocv = {"ocv_kind": "lfp", "v_max": 3.65, "v_min": 2.5} if lfp else {}
    if scenario == "full_selfdischarge_short":
        on = int(rng.integers(6, 12))
        return replace(
            p,
            leak_on=on,
            leak0=_u(rng, 0.01, 0.03),
            leak_growth=_u(rng, 0.25, 0.45),
            dip_rate0=0.0 if rng.integers(0, 2) else _u(rng, 0.1, 0.5),
            short_cycle=on + int(rng.integers(5, 9)),
            short_step=str(rng.choice(["rest", "discharge"])),
            **_collapse(rng),
            **ocv,
            **end,
        )
    if scenario == "full_void_short":
        on = int(rng.integers(10, 16))
        return replace(
            p,
            void_on=on,
            void_growth=_u(rng, 0.2, 0.4),
            void_plateau=_u(rng, 0.1, 0.3),
            void_end=_u(rng, 1.0, 3.0),
            short_cycle=on + int(rng.integers(6, 10)),
            short_step="discharge",
            **_collapse(rng),
            **ocv,
            **end,
        )
    if scenario == "full_sudden_short":
        return replace(
            p,
            short_cycle=int(rng.integers(6, 20)),
            short_step=str(rng.choice(["rest", "discharge"])),
            **_collapse(rng),
            **ocv,
            **end,
        )
    raise AssertionError(scenario)


# ---------------------------------------------------------------- the sample stream


def _with_glitches(samples: Iterable[Sample], n: int, period_s: float, rng: np.random.Generator) -> Iterator[Sample]:
    """What a flaky acquisition chain does to a clean stream (data-health confounders).

    Wild pressure readings (0 or 50 MPa), NaN voltages, 1-3 h gaps, duplicated samples and
    neighbours swapped out of order, at positions drawn from ``rng``.
    """
    gaps: list[tuple[int, int]] = []
    n_gaps = int(rng.integers(2, 4))
    part = n // n_gaps
    for g in range(n_gaps):
        length = int(_u(rng, 1.0, 3.0) * 3600.0 / period_s)
        if length < part // 2:
            lo = g * part + part // 4
            at = int(rng.integers(lo, lo + part // 2 - length))
            gaps.append((at, at + length))
    actions: dict[int, str] = {}
    if n > 40:
        for action, count in (
            ("pressure", max(3, n // 6000)),
            ("nan", max(2, n // 10000)),
            ("duplicate", int(rng.integers(4, 9))),
            ("swap", int(rng.integers(4, 9))),
        ):
            for k in rng.integers(10, n - 10, count).tolist():
                if not any(a - 2 <= k < b + 2 for a, b in gaps):
                    actions[k] = action
    gaps.append((n + 1, n + 1))
    gi = 0
    g0, g1 = gaps[0]
    held: Sample | None = None
    for k, s in enumerate(samples):
        while k >= g1:
            gi += 1
            g0, g1 = gaps[gi]
        if k >= g0:
            continue
        if held is not None:
            yield s
            yield held
            held = None
            continue
        action = actions.get(k)
        if action is None:
            yield s
        elif action == "pressure":
            s.pressure_MPa = 0.0 if k % 2 else 50.0
            yield s
        elif action == "nan":
            s.voltage_V = math.nan
            yield s
        elif action == "duplicate":
            yield s
            yield replace(s)
        else:
            held = s
    if held is not None:
        yield held


_MODES = {"cc": "cc", "rest": "rest", "sweep": "sweep", "stop": "rest"}


class SimulatedCell:
    """One simulated cell: its effective spec, its label (``truth``) and its sample stream.

    ``samples()`` may be called more than once; every call yields the same samples.
    """

    def __init__(
        self,
        cell: str,
        scenario: str,
        spec: CellSpec,
        seed: int,
        start: float,
        period_s: float = 10.0,
        duration_h: float | None = None,
        randomize: bool = False,
        log_change_V: float | None = None,
        log_max_s: float = 600.0,
    ):
        """``randomize``: draw another lab's protocol from the seed (current density,
        half-cycle or C-rate, temperature 25-80 C and its daily swing, stack pressure, noise).
        ``log_change_V``: log like EC-Lab on a voltage change of this size, or every
        ``log_max_s`` (``period_s`` is then the instrument's internal sampling)."""
        info = _check_scenario(scenario)
        if period_s <= 0:
            raise ValueError(f"period_s must be positive (got {period_s})")
        if duration_h is not None and duration_h <= 0:
            raise ValueError(f"duration_h must be positive (got {duration_h})")
        self.cell, self.scenario, self.info = cell, scenario, info
        self.spec = _resolve_spec(cell, scenario, spec)
        self.start, self.period_s = float(start), float(period_s)
        self.log_change_V, self.log_max_s = log_change_V, log_max_s
        self._seed = [seed % 2**63, zlib.crc32(cell.encode()), zlib.crc32(scenario.encode())]
        end_s = duration_h * 3600.0 if duration_h is not None else None
        protocol = self._rng(3) if randomize else None
        if protocol is not None:
            drawn = {
                "temperature_C": round(_u(protocol, 25.0, 80.0), 1),
                "nominal_pressure_MPa": round(_u(protocol, 2.0, 7.0 if info.kind == "symmetric" else 5.0), 2),
            }
            self.spec = self.spec.model_copy(update=drawn)
        model: _SymModel | _FullModel
        if info.kind == "symmetric":
            rng = self._rng(0)
            model = _SymModel(_build_sym(scenario, rng, protocol), self.spec, end_s, rng)
        else:
            model = _FullModel(_build_full(scenario, self._rng(0), protocol), self.spec, end_s)
        self._model = model
        last = model.steps[-1].t1
        self.end_time = self.start + last
        self._ranges = [
            (st, math.ceil(st.t0 / period_s - 1e-9), math.ceil(st.t1 / period_s - 1e-9)) for st in model.steps
        ]
        self.n_samples = sum(k1 - k0 for _, k0, k1 in self._ranges)

        def label(at: float | None) -> float | None:
            return self.start + at if at is not None and at < last else None

        self.truth = Truth(
            cell, scenario, info.family, info.failing, label(model.soft_s), label(model.hard_s), list(info.confounders)
        )

    @property
    def params(self) -> dict[str, Any]:
        """The parameters drawn for this cell (ASR, onset times, ...), for reports and tests."""
        return asdict(self._model.p)

    def _rng(self, stream: int) -> np.random.Generator:
        """Independent streams for parameters (0), noise (1) and glitches (2)."""
        return np.random.default_rng([*self._seed, stream])

    def samples(self) -> Iterator[Sample]:
        stream = self._render()
        if self.scenario == "sym_glitches":
            return _with_glitches(stream, self.n_samples, self.period_s, self._rng(2))
        return stream

    def _render(self) -> Iterator[Sample]:
        rng = self._rng(1)
        cell, start, period, render = self.cell, self.start, self.period_s, self._model.render
        for st, k0, k1 in self._ranges:
            if k1 <= k0:
                continue
            tr = np.arange(k0, k1) * period
            out = render(st, tr, rng)
            cycle, step, mode = st.cycle, st.step, _MODES[st.kind]
            if self.log_change_V is not None:
                keep = _change_logged(out.v, tr, self.log_change_V, self.log_max_s)
                tr, out = tr[keep], _Rendered(out.v[keep], out.i[keep], out.p[keep], out.t[keep])
            for t, v, i, p, temp in zip(
                (start + tr).tolist(),
                np.round(out.v, 6).tolist(),
                np.round(out.i, 9).tolist(),
                np.round(out.p, 4).tolist(),
                np.round(out.t, 3).tolist(),
                strict=True,
            ):
                yield Sample(t, cell, v, i, p, temp, cycle, step, mode)


def _change_logged(v: np.ndarray, tr: np.ndarray, dv: float, max_s: float) -> np.ndarray:
    """Indices EC-Lab would record with "dE > dv or dt > max_s", plus every step's first and
    last point (EC-Lab records a point when the sequence changes)."""
    keep = [0]
    v_last, t_last = v[0], tr[0]
    for k in range(1, v.size):
        if abs(v[k] - v_last) >= dv or tr[k] - t_last >= max_s:
            keep.append(k)
            v_last, t_last = v[k], tr[k]
    if keep[-1] != v.size - 1:
        keep.append(v.size - 1)
    return np.asarray(keep, dtype=np.intp)


def _parse_start(text: str) -> float:
    at = datetime.fromisoformat(text)
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.timestamp()


class SimulatorSourceRunner:
    """The simulator as a daemon source: all cells merged in data-time order, optionally paced.

    Re-generation is deterministic, so a checkpoint is just how many merged samples have been
    handed over; a restore skips them (or, if the config changed, skips up to the last time).
    """

    batch_size = 1000
    tick_s = 0.05  # samples due within this many wall seconds go out together

    def __init__(self, settings: SimulatorSource, cell_specs: Callable[[str], CellSpec]):
        self.settings = settings
        self.name = "simulator"
        start = _parse_start(settings.start)
        self.cells = {
            cell: SimulatedCell(
                cell, scenario, cell_specs(cell), settings.seed, start, settings.period_s, settings.duration_h
            )
            for cell, scenario in settings.cells.items()
        }
        self.truths: dict[str, Truth] = {c: sim.truth for c, sim in self.cells.items()}
        self.specs: dict[str, CellSpec] = {c: sim.spec for c, sim in self.cells.items()}
        ident = {
            "source": settings.model_dump(exclude={"speedup"}),
            "specs": {c: s.model_dump() for c, s in self.specs.items()},
        }
        self._fingerprint = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self._emitted = 0
        self._last_time: float | None = None
        self._skip = 0
        self._skip_until: float | None = None

    def checkpoint(self) -> dict[str, Any]:
        return {"emitted": self._emitted, "last_time": self._last_time, "fingerprint": self._fingerprint}

    def restore(self, state: dict[str, Any]) -> None:
        self._last_time = state.get("last_time")
        if state.get("fingerprint") == self._fingerprint:
            self._emitted = self._skip = int(state.get("emitted", 0))
        else:
            self._emitted, self._skip, self._skip_until = 0, 0, self._last_time

    def _stream(self) -> Iterator[Sample]:
        merged = heapq.merge(*(sim.samples() for sim in self.cells.values()), key=attrgetter("time"))
        if self._skip:
            return itertools.islice(merged, self._skip, None)
        if self._skip_until is not None:
            return self._after(merged, self._skip_until)
        return merged

    def _after(self, merged: Iterator[Sample], until: float) -> Iterator[Sample]:
        for s in merged:
            if s.time <= until:
                self._emitted += 1  # consumed, so a later checkpoint counts it
            else:
                yield s

    async def run(self, emit: Callable[[list[Sample]], Awaitable[None]]) -> None:
        loop = asyncio.get_running_loop()
        speed = self.settings.speedup
        batch: list[Sample] = []
        t_data0: float | None = None
        wall0 = 0.0
        for s in self._stream():
            if speed > 0:
                if t_data0 is None:
                    t_data0, wall0 = s.time, loop.time()
                due = wall0 + (s.time - t_data0) / speed
                if due - loop.time() > self.tick_s:
                    if batch:
                        await self._flush(emit, batch)
                        batch = []
                    await asyncio.sleep(max(due - loop.time(), 0.0))
            batch.append(s)
            if len(batch) >= self.batch_size:
                await self._flush(emit, batch)
                batch = []
                await asyncio.sleep(0)
        if batch:
            await self._flush(emit, batch)

    async def _flush(self, emit: Callable[[list[Sample]], Awaitable[None]], batch: list[Sample]) -> None:
        # the position is advanced first: emit() may capture checkpoint() along with the batch
        self._emitted += len(batch)
        last = max(s.time for s in batch)
        self._last_time = last if self._last_time is None else max(self._last_time, last)
        await emit(batch)
