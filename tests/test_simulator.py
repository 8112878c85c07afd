"""The simulator must look like the papers: these tests check the physics, not just shapes."""

from __future__ import annotations

import asyncio
import math
import time
from collections import defaultdict
from dataclasses import replace
from itertools import islice

import numpy as np
import pytest

from shortwatch.model import MODES, Sample
from shortwatch.sensors.simulator import (
    SCENARIOS,
    SimulatedCell,
    SimulatorSourceRunner,
    default_spec,
)
from shortwatch.settings import CellSpec, SimulatorSource

START = 1_767_600_000.0


def _cell(scenario: str, seed: int = 1, **kw) -> SimulatedCell:
    return SimulatedCell("c1", scenario, default_spec(scenario), seed=seed, start=START, **kw)


def _steps(samples: list[Sample]) -> dict[int, list[Sample]]:
    out: dict[int, list[Sample]] = defaultdict(list)
    for s in samples:
        out[s.step].append(s)
    return out


def _arr(ss: list[Sample], attr: str) -> np.ndarray:
    return np.array([getattr(s, attr) for s in ss], dtype=float)


def _plateau(ss: list[Sample]) -> float:
    v = np.abs(_arr(ss, "voltage_V"))
    return float(np.median(v[len(v) // 4 : 3 * len(v) // 4]))


def _half_cycles(samples: list[Sample]) -> list[list[Sample]]:
    return [ss for ss in _steps(samples).values() if ss[0].mode == "cc" and len(ss) > 100]


# ---------------------------------------------------------------- basics


def test_registry_and_unknown_scenario() -> None:
    assert {"sym_soft_hard", "sym_cv_rise", "full_dpq_short", "sym_glitches"} <= set(SCENARIOS)
    for name, info in SCENARIOS.items():
        assert info.kind in ("symmetric", "full", "anode-free")
        assert default_spec(name).kind == info.kind
    with pytest.raises(ValueError, match="sym_healthy"):
        _cell("no_such_scenario")
    with pytest.raises(ValueError, match="full_healthy"):
        default_spec("nope")


def test_deterministic_and_reiterable() -> None:
    a = list(islice(_cell("sym_soft_hard", seed=7).samples(), 3000))
    b = list(islice(_cell("sym_soft_hard", seed=7).samples(), 3000))
    assert a == b
    c = _cell("sym_soft_hard", seed=8)
    assert list(islice(c.samples(), 3000)) != a
    assert list(islice(c.samples(), 50)) == list(islice(c.samples(), 50))
    # ten cells of one scenario differ in their parameters
    spec = default_spec("sym_healthy")
    asr = {SimulatedCell(f"c{k}", "sym_healthy", spec, 0, START).params["asr0"] for k in range(10)}
    assert len(asr) == 10


def test_period_duration_and_fields() -> None:
    cell = _cell("sym_rests", period_s=30.0, duration_h=20.0)
    ss = list(cell.samples())
    t = _arr(ss, "time")
    assert t[0] == START
    assert np.allclose(np.diff(t), 30.0)
    assert t[-1] < START + 20 * 3600
    assert len(ss) == cell.n_samples
    assert {s.mode for s in ss} <= set(MODES)
    assert {s.mode for s in ss} == {"cc", "rest"}
    assert all(s.cell == "c1" for s in ss)
    assert np.all(np.diff(_arr(ss, "cycle")) >= 0) and np.all(np.diff(_arr(ss, "step")) >= 0)


def test_spec_resolution() -> None:
    spec = default_spec("full_healthy")
    assert spec.cathode_mass_g == pytest.approx(0.0126) and spec.nominal_pressure_MPa == 5.0
    # a cell without a [cells] section comes as a bare CellSpec(): the scenario fills it in
    cell = SimulatedCell("x", "full_healthy", CellSpec(), 0, START)
    assert cell.spec.kind == "full" and cell.spec.cathode_mass_g == pytest.approx(0.0126)
    cell = SimulatedCell("x", "full_healthy", CellSpec(area_cm2=1.33), 0, START)
    assert cell.spec.area_cm2 == 1.33
    with pytest.raises(ValueError, match="kind"):
        SimulatedCell("x", "full_healthy", CellSpec(kind="symmetric"), 0, START)


def test_truth_labels_and_truncation() -> None:
    cell = _cell("sym_soft_hard")
    tr = cell.truth
    assert tr.failing and tr.family == "soft_breakdown" and tr.scenario == "sym_soft_hard"
    assert tr.soft_onset_time is not None and tr.hard_short_time is not None
    assert 20 * 3600 <= tr.soft_onset_time - START <= 60 * 3600
    assert 100 * 3600 <= tr.hard_short_time - START <= 250 * 3600
    short = _cell("sym_soft_hard", duration_h=10.0).truth
    assert short.soft_onset_time is None and short.hard_short_time is None
    sudden = _cell("sym_sudden_short").truth
    assert sudden.soft_onset_time == sudden.hard_short_time
    assert _cell("sym_temperature").truth.confounders == ["temperature_steps"]
    assert _cell("sym_healthy").truth.hard_short_time is None


# ---------------------------------------------------------------- symmetric cells


def test_sym_healthy_overpotential_is_j_times_asr() -> None:
    cell = _cell("sym_healthy", duration_h=30.0)
    p = cell.params
    ss = list(cell.samples())
    for half in _half_cycles(ss)[:10]:
        i = _arr(half, "current_A")
        v = _arr(half, "voltage_V")
        j = abs(i.mean()) / cell.spec.area_cm2
        assert j * 1e3 == pytest.approx(0.5, rel=1e-3)
        th = (half[0].time - START) / 3600
        eta = j * p["asr0"] * (1 + p["growth_h"] * th)
        assert _plateau(half) == pytest.approx(eta, rel=0.05)
        big = np.abs(v) > 5 * p["v_noise"]
        assert np.all(np.sign(v[big]) == np.sign(i[big]))


def test_nucleation_peak_and_end_rise_in_healthy_half_cycles() -> None:
    ss = list(_cell("sym_healthy", seed=3, duration_h=40.0).samples())
    for half in _half_cycles(ss):
        v = np.abs(_arr(half, "voltage_V"))
        plateau = _plateau(half)
        assert v[:3].max() > 1.1 * plateau  # nucleation peak
        assert v[-3:].mean() > 1.04 * plateau  # voids at the end of stripping


def test_soft_breakdown_then_hard_short() -> None:
    cell = _cell("sym_soft_hard", seed=2)
    soft, hard = cell.truth.soft_onset_time, cell.truth.hard_short_time
    halves = _half_cycles(list(cell.samples()))
    at_onset = [h for h in halves if h[-1].time < soft][-1]
    before_hard = [h for h in halves if h[-1].time < hard][-1]
    assert _plateau(before_hard) < 0.75 * _plateau(at_onset)

    def nucleation(group: list[list[Sample]]) -> float:
        """Mean relative nucleation peak: the electronic share is ohmic, so it shrinks."""
        return float(np.mean([np.abs(_arr(h, "voltage_V"))[:3].max() / _plateau(h) - 1 for h in group]))

    healthy = [h for h in halves if h[-1].time < soft][-6:]
    leaky = [h for h in halves if h[-1].time < hard][-6:]
    assert nucleation(leaky) < 0.85 * nucleation(healthy)
    after = [s for h in halves for s in h if s.time > hard + 600]
    assert after and max(abs(s.voltage_V) for s in after) < 0.01
    ss = list(cell.samples())
    assert ss[-1].mode == "rest" and ss[-1].current_A == 0.0  # the test was stopped
    assert ss[-1].time > hard


def test_sudden_short_has_no_soft_phase() -> None:
    cell = _cell("sym_sudden_short", seed=4)
    hard = cell.truth.hard_short_time
    halves = _half_cycles(list(cell.samples()))
    first, last_ok = halves[0], [h for h in halves if h[-1].time < hard][-1]
    assert _plateau(last_ok) > 0.95 * _plateau(first)  # interphase growth only
    after = [abs(s.voltage_V) for h in halves for s in h if s.time > hard + 60]
    assert max(after) < 0.01
    assert 60 * 3600 <= hard - START <= 200 * 3600


def test_leak_makes_rests_relax_faster() -> None:
    cell = _cell("sym_soft_stable", seed=5)
    soft = cell.truth.soft_onset_time
    rests = [ss for ss in _steps(list(cell.samples())).values() if ss[0].mode == "rest"]

    def ratio(ss: list[Sample]) -> float:
        v = np.abs(_arr(ss, "voltage_V"))
        return float(v[-3:].mean() / v[:3].mean())

    early = np.median([ratio(r) for r in rests if r[-1].time < soft])
    late = np.median([ratio(r) for r in rests if r[0].time > soft + 100 * 3600])
    assert late < 0.75 * early
    assert cell.truth.hard_short_time is None


def test_contact_improvement_lowers_asr_early() -> None:
    halves = _half_cycles(list(_cell("sym_contact", seed=6, duration_h=60.0).samples()))
    drop = 1 - _plateau(halves[16]) / _plateau(halves[0])
    assert 0.12 < drop < 0.45


def test_temperature_steps_follow_arrhenius() -> None:
    cell = _cell("sym_temperature", seed=2)
    ea = cell.params["ea_ev"]
    halves = _half_cycles(list(cell.samples()))
    t_mean = [float(_arr(h, "temperature_C").mean()) for h in halves]
    hot = max(range(len(halves)), key=lambda k: t_mean[k])
    assert t_mean[hot] == pytest.approx(45.0, abs=0.6) and t_mean[0] == pytest.approx(25.0, abs=0.6)
    expected = math.exp(ea / 8.617333e-5 * (1 / (t_mean[hot] + 273.15) - 1 / (t_mean[0] + 273.15)))
    hours = (halves[hot][0].time - START) / 3600
    expected *= 1 + cell.params["growth_h"] * hours  # interphase growth meanwhile
    assert _plateau(halves[hot]) / _plateau(halves[0]) == pytest.approx(expected, rel=0.05)


def test_ccd_overpotential_scales_with_current() -> None:
    cell = _cell("sym_ccd", seed=3, duration_h=80.0)
    halves = _half_cycles(list(cell.samples()))
    growth = cell.params["growth_h"]
    asr = [
        _plateau(h) / (abs(_arr(h, "current_A").mean()) / 0.785) / (1 + growth * (h[0].time - START) / 3600)
        for h in halves
    ]
    js = sorted({round(abs(_arr(h, "current_A").mean()) / 0.785 * 1e3, 2) for h in halves})
    assert js == [0.1, 0.2, 0.3, 0.5]
    assert max(asr) / min(asr) < 1.12  # eta / J stays put while J steps


def test_cv_sweeps_fall_then_rise_then_turn_linear() -> None:
    cell = _cell("sym_cv_rise", seed=3)
    soft, hard = cell.truth.soft_onset_time, cell.truth.hard_short_time
    sweeps = [ss for ss in _steps(list(cell.samples())).values() if ss[0].mode == "sweep"]
    assert all(len(s) >= 40 for s in sweeps)
    v = _arr(sweeps[0], "voltage_V")
    assert v.max() == pytest.approx(0.1, abs=0.002) and v.min() == pytest.approx(-0.1, abs=0.002)
    peaks = [(s[0].time, np.abs(_arr(s, "current_A")).max()) for s in sweeps]
    pre = [p for t, p in peaks if t < soft]
    mid = [p for t, p in peaks if soft + 30 * 3600 < t < hard]
    assert len(pre) >= 4 and np.polyfit(np.arange(len(pre)), pre, 1)[0] < 0
    assert max(mid) > 1.3 * min(pre)

    def r2(ss: list[Sample]) -> float:
        x, y = _arr(ss, "voltage_V"), _arr(ss, "current_A")
        return float(np.corrcoef(x, y)[0, 1] ** 2)

    assert r2(sweeps[0]) < 0.99
    assert sweeps[-1][0].time > hard and r2(sweeps[-1]) > 0.999  # a resistor


def test_glitches_are_really_there() -> None:
    cell = _cell("sym_glitches", seed=4)
    ss = list(cell.samples())
    t = _arr(ss, "time")
    d = np.diff(t)
    assert np.count_nonzero(d == 0) >= 2  # duplicates
    assert np.count_nonzero(d < 0) >= 2  # swapped neighbours
    assert np.count_nonzero(d > 3600) >= 2  # gaps
    assert any(math.isnan(s.voltage_V) for s in ss)
    assert any(s.pressure_MPa in (0.0, 50.0) for s in ss)
    assert cell.truth.confounders and not cell.truth.failing


# ---------------------------------------------------------------- full cells


def _full_cycles(cell: SimulatedCell, until: float | None = None) -> dict[int, dict[str, float]]:
    """Per cycle: charge and discharge capacity (Ah), pressure change (MPa), charge hours."""
    out: dict[int, dict[str, float]] = defaultdict(dict)
    for ss in _steps(list(cell.samples())).values():
        if ss[0].mode != "cc" or (until is not None and ss[-1].time >= until):
            continue
        i, p = _arr(ss, "current_A"), _arr(ss, "pressure_MPa")
        q = float(np.abs(i).sum() * cell.period_s / 3600)
        key = "ch" if i.mean() > 0 else "dis"
        out[ss[0].cycle].update({f"q_{key}": q, f"dp_{key}": float(p[-3:].mean() - p[:3].mean())})
        out[ss[0].cycle][f"h_{key}"] = len(ss) * cell.period_s / 3600
    return {n: c for n, c in out.items() if "q_dis" in c}


def _dpq(cell: SimulatedCell, cycles: dict[int, dict[str, float]]) -> list[float]:
    m = cell.spec.cathode_mass_g
    return [-c["dp_dis"] / (c["q_dis"] / m) for _, c in sorted(cycles.items())]


def test_full_healthy_pressure_follows_plating() -> None:
    cell = _cell("full_healthy", seed=2)
    cycles = _full_cycles(cell)
    assert 25 <= len(cycles) <= 30
    for c in cycles.values():
        assert c["dp_ch"] > 1.0 and c["dp_dis"] < -1.0
    m = cell.spec.cathode_mass_g
    q_g = [c["q_dis"] / m for c in cycles.values()]
    assert min(q_g) > 0.17 and max(q_g) < 0.21
    ce = [c["q_dis"] / c["q_ch"] for _, c in sorted(cycles.items())]
    assert ce[0] < 0.92 and min(ce[1:]) > 0.98  # first-cycle loss, then ~99.5 %
    dpq = _dpq(cell, cycles)
    assert all(10 <= d <= 45 for d in dpq)
    assert dpq[-1] < dpq[0] and dpq[-1] > 0.8 * dpq[len(dpq) // 2]  # declines, then levels off


def test_constant_pressure_fixture_has_small_swing() -> None:
    fixed = SimulatedCell("c", "full_healthy", default_spec("full_healthy"), 3, START, duration_h=30)
    spec = default_spec("full_healthy").model_copy(update={"fixture": "constant-pressure"})
    spring = SimulatedCell("c", "full_healthy", spec, 3, START, duration_h=30)
    ratio = _full_cycles(spring)[2]["dp_dis"] / _full_cycles(fixed)[2]["dp_dis"]
    assert 0.05 < ratio < 0.25


def test_dpq_declines_fast_before_the_short() -> None:
    cell = _cell("full_dpq_short", seed=1)
    hard = cell.truth.hard_short_time
    dpq = _dpq(cell, _full_cycles(cell, until=hard))
    assert 16 <= len(dpq) + 1 <= 22  # shorts at cycle 17-22
    assert all(10 <= d <= 45 for d in dpq[:11])
    assert dpq[-1] < 0.6 * dpq[10]
    # the short: the voltage drops during charge and is not held
    ss = list(cell.samples())
    after = [s for s in ss if hard + 300 < s.time and s.mode == "cc"]
    assert after and max(s.voltage_V for s in after) < 3.0
    assert all(s.current_A > 0 for s in after)
    assert ss[-1].current_A == 0.0 and ss[-1].time > hard


def test_charge_fluctuation_overcharge_and_falling_ce() -> None:
    cell = _cell("full_charge_fluct_short", seed=2)
    hard = cell.truth.hard_short_time
    soft = cell.truth.soft_onset_time
    cycles = _full_cycles(cell, until=hard)
    ce = [c["q_dis"] / c["q_ch"] for _, c in sorted(cycles.items())]
    hours = [c["h_ch"] for _, c in sorted(cycles.items())]
    assert ce[-1] < 0.8 < min(ce[1:5])
    assert max(hours[-3:]) > 1.3 * hours[2]  # the charge runs long
    dips: dict[bool, int] = {True: 0, False: 0}
    for ss in _steps(list(cell.samples())).values():
        if ss[0].mode == "cc" and ss[0].current_A > 0 and ss[-1].time < hard:
            v = _arr(ss, "voltage_V")
            dips[ss[0].time >= soft] += int(np.count_nonzero(np.diff(v) < -0.008))
    assert dips[False] == 0 and dips[True] >= 5


# ---------------------------------------------------------------- the source


def _bare(cell: str) -> CellSpec:
    """What Settings.cell_spec gives a cell with no [cells] section."""
    return CellSpec()


def _source(**kw) -> SimulatorSource:
    cfg = {"type": "simulator", "cells": {"a": "sym_healthy", "b": "full_healthy", "c": "sym_glitches"}, "seed": 3}
    return SimulatorSource.model_validate(cfg | kw)


async def test_runner_merges_cells_in_time_order() -> None:
    runner = SimulatorSourceRunner(_source(cells={"a": "sym_healthy", "b": "full_healthy"}, duration_h=6.0), _bare)
    got: list[Sample] = []

    async def emit(batch: list[Sample]) -> None:
        assert 0 < len(batch) <= runner.batch_size
        got.extend(batch)

    await runner.run(emit)
    assert len(got) == sum(c.n_samples for c in runner.cells.values()) == 2 * 6 * 360
    assert np.all(np.diff(_arr(got, "time")) >= 0)
    assert {s.cell for s in got} == {"a", "b"}
    assert set(runner.truths) == {"a", "b"} and runner.specs["b"].kind == "full"


async def test_runner_paces_at_speedup() -> None:
    runner = SimulatorSourceRunner(_source(duration_h=2 / 60, speedup=600.0), _bare)
    n = 0

    async def emit(batch: list[Sample]) -> None:
        nonlocal n
        n += len(batch)

    t0 = time.monotonic()
    await runner.run(emit)
    elapsed = time.monotonic() - t0
    assert n == 3 * 12
    assert 0.1 < elapsed < 2.0  # 110 s of data at 600x: ~0.18 s


async def test_runner_checkpoint_restore_and_cancel() -> None:
    cfg = _source(duration_h=5.0)
    full: list[Sample] = []

    async def collect(batch: list[Sample]) -> None:
        full.extend(batch)

    await SimulatorSourceRunner(cfg, _bare).run(collect)

    first = SimulatorSourceRunner(cfg, _bare)
    part: list[Sample] = []
    states: list[dict] = []

    async def stop_early(batch: list[Sample]) -> None:
        part.extend(batch)
        states.append(first.checkpoint())
        if len(part) >= 2000:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await first.run(stop_early)
    resumed = SimulatorSourceRunner(cfg, _bare)
    resumed.restore(states[-1])
    rest: list[Sample] = []

    async def collect_rest(batch: list[Sample]) -> None:
        rest.extend(batch)

    await resumed.run(collect_rest)
    assert part + rest == full


async def test_runner_task_cancels_cleanly() -> None:
    runner = SimulatorSourceRunner(_source(speedup=60.0), _bare)

    async def emit(batch: list[Sample]) -> None:
        return None

    task = asyncio.create_task(runner.run(emit))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# ---------------------------------------------------------------- issue 10: other labs' protocols


def test_randomised_protocols_stay_in_the_ranges_other_labs_use() -> None:
    js, halves, temps = [], [], []
    for seed in range(12):
        sim = _cell("sym_healthy", seed=seed, randomize=True, duration_h=1)
        js.append(sim.params["j"])
        halves.append(sim.params["half_h"])
        temps.append(sim.spec.temperature_C)
        assert 2.0 <= sim.spec.nominal_pressure_MPa <= 7.0
        assert 0.5 <= sim.params["diurnal_C"] <= 2.5
    assert min(js) >= 0.05 and max(js) <= 3.0 and max(js) / min(js) > 5
    assert min(halves) >= 0.25 and max(halves) <= 3.0
    assert min(temps) >= 25.0 and max(temps) <= 80.0 and max(temps) - min(temps) > 20
    # the original scenarios keep their fixed protocol
    assert _cell("sym_healthy").params["j"] == 0.5 and _cell("sym_healthy").spec.temperature_C == 25.0


def test_change_triggered_logging_thins_the_plateau_but_keeps_every_step() -> None:
    full = list(_cell("sym_healthy", duration_h=12).samples())
    logged = list(_cell("sym_healthy", duration_h=12, log_change_V=0.002, log_max_s=600.0).samples())
    assert len(logged) < len(full) / 3
    gaps = np.diff([s.time for s in logged])
    assert gaps.max() <= 600.0 and {s.step for s in logged} == {s.step for s in full}


def test_pressure_raise_lowers_the_asr_within_a_cycle_or_two() -> None:
    sim = _cell("sym_pressure_raise", seed=3)
    p = sim.params
    at = START + p["p_step_at_h"] * 3600.0
    samples = list(sim.samples())
    before = [s for s in samples if at - 7200 <= s.time < at]
    after = [s for s in samples if at + 4 * 3600 <= s.time < at + 6 * 3600]
    dp = np.median(_arr(after, "pressure_MPa")) - np.median(_arr(before, "pressure_MPa"))
    assert dp == pytest.approx(p["p_step_MPa"], abs=0.1) and dp >= 1.0
    r_before = [abs(s.voltage_V / s.current_A) for s in before if s.mode == "cc"]
    r_after = [abs(s.voltage_V / s.current_A) for s in after if s.mode == "cc"]
    assert np.median(r_after) / np.median(r_before) == pytest.approx(1 + p["p_step_asr"], abs=0.05)


def test_stripping_voids_grow_the_end_of_strip_rise_before_the_short() -> None:
    sim = _cell("sym_void_short", seed=4)
    tr = sim.truth
    samples = list(sim.samples())
    halves = _half_cycles([s for s in samples if s.time < tr.hard_short_time])

    def end_share(ss: list[Sample]) -> float:
        v = np.abs(_arr(ss, "voltage_V"))
        return float(v[-3:].mean() / np.median(v[len(v) // 4 : 3 * len(v) // 4]) - 1.0)

    early = [end_share(ss) for ss in halves if ss[-1].time < tr.soft_onset_time][-4:]
    late = [end_share(ss) for ss in halves][-4:]
    assert np.mean(late) > 2.0 * np.mean(early) > 0


@pytest.mark.parametrize("law", ["exp", "linear", "steps"])
def test_electronic_path_laws_all_end_far_below_the_ionic_path(law: str) -> None:
    seeds = [s for s in range(60) if _cell("sym_ccd_breakdown", seed=s, duration_h=1).params["re_law"] == law]
    sim = _cell("sym_ccd_breakdown", seed=seeds[0])
    p, m = sim.params, sim._model
    late = np.array([(p["soft_h"] + 2.5 * p["re_tau_h"])])
    assert m.g_e(np.array([p["soft_h"] - 1.0]))[0] == 0.0
    assert 1.0 / m.g_e(late)[0] < 2.0 * p["re_floor"]


@pytest.mark.parametrize("seed", range(4))
def test_full_cell_shorts_at_rest_or_mid_discharge_drop_at_once(seed: int) -> None:
    sim = _cell("full_sudden_short", seed=seed, period_s=10.0)
    p, ts = sim.params, sim.truth.hard_short_time
    samples = list(sim.samples())
    before = [s for s in samples if s.time <= ts][-1]
    after = next(s for s in samples if s.time > ts)
    assert before.voltage_V - after.voltage_V > 0.25
    assert (after.current_A < 0) == (p["short_step"] == "discharge")
    later = [s.voltage_V for s in samples if ts + 60 <= s.time <= ts + 600]
    assert max(later) < before.voltage_V - 0.2  # it cannot hold its voltage
    assert min(s.voltage_V for s in samples) > -0.1  # no unphysical values


def test_anode_free_charges_start_with_a_nucleation_spike() -> None:
    sim = _cell("af_formation", seed=1)
    assert sim.spec.kind == "anode-free"
    m, p = sim._model, sim.params
    charge = next(st for st in m.steps if st.kind == "cc" and st.current_A > 0 and st.cycle == 3)
    tr = np.array([charge.t0 + 5.0, charge.t0 + 3600.0])
    with_spike = m.model_v(charge, tr)
    m.p = replace(m.p, nuc_V=0.0)
    without = m.model_v(charge, tr)
    assert with_spike[0] - without[0] == pytest.approx(p["nuc_V"] * math.exp(-5.0 / p["nuc_tau_s"]), rel=1e-6)
    assert with_spike[1] - without[1] < 1e-6  # gone an hour into the charge
