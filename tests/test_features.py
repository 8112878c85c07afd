"""Segmentation and features against hand-computed values."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shortwatch.detectors.monitor import CellMonitor
from shortwatch.model import RecordBatch, Sample
from shortwatch.settings import CellSpec

T0 = 1_767_600_000.0  # 2026-01-05


def run(cell_spec: CellSpec, samples: list[Sample], finish: bool = True) -> RecordBatch:
    m = CellMonitor("X", cell_spec)
    out = RecordBatch()
    for s in samples:
        m.update(s, out, [])
    if finish:
        m.finish(out)
    return out


def square_wave(
    asr: float, j_mA_cm2: float, area: float, cycles: int, half_h: float = 1.0, with_mode: bool = True
) -> list[Sample]:
    """Galvanostatic plating/stripping: +J then -J, 10-s samples, with a nucleation peak
    (+20 % decaying over the first 5 %) and an end-of-strip rise (last 10 %, up to +30 %)."""
    i = j_mA_cm2 / 1000.0 * area
    eta = j_mA_cm2 / 1000.0 * asr
    n = int(half_h * 3600 / 10)
    out = []
    t = T0
    for _ in range(cycles):
        for sign in (1, -1):
            for k in range(n):
                frac = k / n
                shape = 1.0 + 0.2 * np.exp(-frac / 0.01) + (0.3 * (frac - 0.9) / 0.1 if frac > 0.9 else 0.0)
                out.append(Sample(t, "X", sign * eta * shape, sign * i, 5.0, 25.0, mode="cc" if with_mode else None))
                t += 10.0
    return out


@pytest.mark.parametrize("with_mode", [True, False])
def test_symmetric_square_wave_asr_and_capacity(with_mode: bool) -> None:
    spec = CellSpec(kind="symmetric", area_cm2=0.785)
    out = run(spec, square_wave(asr=80.0, j_mA_cm2=0.5, area=0.785, cycles=5, with_mode=with_mode))
    steps = out.steps
    assert [s.step_kind for s in steps] == ["charge", "discharge"] * 5
    assert [s.cycle for s in steps] == [c for c in range(5) for _ in (0, 1)]
    for s in steps[1:]:
        # 360 samples of 10 s at 0.3925 mA = 0.3925 mAh = 0.5 mAh/cm2 (the first step has
        # one interval fewer: nothing came before its first sample)
        assert s.capacity_Ah == pytest.approx(0.5e-3 * 0.785, rel=1e-9)
        assert s.capacity_mAh_cm2 == pytest.approx(0.5, rel=1e-9)
        assert s.current_density_mA_cm2 == pytest.approx(0.5, rel=1e-9)
        assert s.eta_V == pytest.approx(0.04, rel=1e-3)  # 0.5 mA/cm2 * 80 ohm cm2
        assert s.asr_ohm_cm2 == pytest.approx(80.0, rel=1e-3)
        assert s.nucleation_V == pytest.approx(0.2 * 0.04, rel=0.05)
        assert s.end_rise_V == pytest.approx(0.3 * 0.04, rel=0.05)
        assert s.end_last_rise_V == pytest.approx(0.3 * 0.04 / 36, rel=1e-6)  # the linear rise's last step of 36
        assert s.flatness == pytest.approx(0.0, abs=1e-6)
    cycles = out.cycles
    assert [c.cycle for c in cycles] == [0, 1, 2, 3, 4]
    for c in cycles[1:]:
        assert c.q_charge_Ah == pytest.approx(0.3925e-3, rel=1e-9)
        assert c.q_discharge_Ah == pytest.approx(0.3925e-3, rel=1e-9)
        assert c.ce == pytest.approx(1.0)
        assert c.asr_ohm_cm2 == pytest.approx(80.0, rel=1e-3)


def full_cell_cycles(n_cycles: int, with_mode: bool = True) -> list[Sample]:
    """CC charge 1 mA for 2 h (3.6 -> 4.2 V, P +3 MPa), 10 min rest, CC discharge -1 mA for
    1.8 h (4.1 -> 3.0 V, P -2.7 MPa), 10 min rest. 10-s samples."""
    out = []
    t = T0
    p = 5.0

    def seg(n: int, i: float, v0: float, v1: float, dp: float, mode: str) -> None:
        nonlocal t, p
        p_start = p
        for k in range(n):
            out.append(Sample(t, "F", v0 + (v1 - v0) * k / (n - 1), i, p_start + dp * (k + 1) / n, mode=mode))
            t += 10.0
        p = p_start + dp

    for _ in range(n_cycles):
        seg(720, 1e-3, 3.6, 4.2, 3.0, "cc")
        seg(60, 0.0, 4.15, 4.14, 0.0, "rest")
        seg(648, -1e-3, 4.1, 3.0, -2.7, "cc")
        seg(60, 0.0, 3.2, 3.25, 0.0, "rest")
    if not with_mode:
        for s in out:
            s.mode = None
    return out


@pytest.mark.parametrize("with_mode", [True, False])
def test_full_cell_capacity_ce_and_dpq(with_mode: bool) -> None:
    spec = CellSpec(kind="full", area_cm2=1.33, cathode_mass_g=0.01)
    out = run(spec, full_cell_cycles(4, with_mode))
    kinds = [s.step_kind for s in out.steps]
    assert kinds == ["charge", "rest", "discharge", "rest"] * 4
    charge = out.steps[4]
    assert charge.capacity_Ah == pytest.approx(2e-3, rel=1e-9)  # 1 mA for 720 x 10 s
    assert charge.dP_MPa == pytest.approx(3.0 * 719 / 720, rel=1e-9)
    assert charge.v_dips == 0
    discharge = out.steps[6]
    assert discharge.capacity_Ah == pytest.approx(1.8e-3, rel=1e-9)
    for c in out.cycles[1:]:
        assert c.q_charge_Ah == pytest.approx(2e-3, rel=1e-9)
        assert c.q_discharge_Ah == pytest.approx(1.8e-3, rel=1e-9)
        assert c.ce == pytest.approx(0.9, rel=1e-9)
        assert c.q_discharge_Ah_g == pytest.approx(0.18, rel=1e-9)  # Ah per g of cathode
        # d(dP) over the discharge (first sample to last: 647/648 of 2.7 MPa) / 0.18 Ah/g
        assert c.dP_discharge_MPa == pytest.approx(-2.7 * 647 / 648, rel=1e-9)
        assert c.dpq_MPa_g_per_Ah == pytest.approx(2.7 * 647 / 648 / 0.18, rel=1e-9)
        assert c.p_max == pytest.approx(5.0 + 0.3 * c.cycle + 3.0, abs=0.01)  # baseline creeps 0.3/cycle
        assert c.v_charge_end == pytest.approx(4.2)


def test_charge_dips_are_counted() -> None:
    samples = full_cell_cycles(1)
    for k in (100, 101, 300, 500):  # three dips of 30 mV during the CC charge (one 2 samples long)
        samples[k].voltage_V -= 0.03
    out = run(CellSpec(kind="full", cathode_mass_g=0.01), samples)
    assert out.steps[0].v_dips == 3
    assert out.steps[0].max_dip_V == pytest.approx(0.03, abs=0.002)


def cv_sweeps(resistance: float, n_periods: int, with_mode: bool = True) -> list[Sample]:
    """Triangular sweeps 0 -> +0.1 -> -0.1 -> 0 V at 1 mV per 10-s sample; I = V/R + a
    small cubic term (a non-linear interface), so the peak current is known."""
    vs = np.concatenate([np.arange(0, 100), np.arange(100, -100, -1), np.arange(-100, 0)]) / 1000.0
    out = []
    t = T0
    for _ in range(n_periods):
        for v in vs:
            i = v / resistance + 0.5 * (v / resistance) * (v / 0.1) ** 2
            out.append(Sample(t, "C", float(v), float(i), mode="sweep" if with_mode else None))
            t += 10.0
    return out


@pytest.mark.parametrize("with_mode", [True, False])
def test_cv_sweep_peak_current(with_mode: bool) -> None:
    r = 200.0
    out = run(CellSpec(kind="symmetric"), cv_sweeps(r, 3, with_mode))
    sweeps = [s for s in out.steps if s.step_kind == "sweep"][:-1]  # the last is cut short
    assert len(sweeps) == 6  # 3 periods: up 0 -> +0.1, down to -0.1, up ... (vertices split)
    expected_peak = 0.1 / r * 1.5  # at the vertex: V/R * (1 + 0.5)
    for s in sweeps:
        assert s.sweep_peak_A == pytest.approx(expected_peak, rel=0.02)
        assert 0.9 < s.sweep_linearity < 1.0  # the cubic term bends it a little
        assert s.sweep_rate_V_s == pytest.approx(1e-4, rel=0.05)
    peaks = [c.cv_peak_A for c in out.cycles if c.cv_peak_A is not None]
    assert len(peaks) == 4  # three full CV periods and the partial last one
    assert all(p == pytest.approx(expected_peak, rel=0.02) for p in peaks[:-1])


def test_resistor_sweep_is_linear() -> None:
    samples = cv_sweeps(50.0, 1)
    for s in samples:
        s.current_A = s.voltage_V / 50.0
    out = run(CellSpec(kind="symmetric"), samples)
    lin = [s.sweep_linearity for s in out.steps if s.sweep_linearity is not None]
    assert lin and min(lin) > 0.9999


def test_checkpoint_mid_step_resumes_identically() -> None:
    """A monitor restored from its JSON state mid-step produces exactly the same features."""
    spec = CellSpec(kind="symmetric")
    samples = square_wave(asr=120.0, j_mA_cm2=0.3, area=0.785, cycles=3)
    straight = run(spec, samples)
    m = CellMonitor("X", spec)
    out = RecordBatch()
    cut = 1000  # in the middle of the third half-cycle
    for s in samples[:cut]:
        m.update(s, out, [])
    state = json.loads(json.dumps(m.state()))
    m2 = CellMonitor("X", spec)
    m2.load(state)
    for s in samples[cut:]:
        m2.update(s, out, [])
    m2.finish(out)
    assert [s.to_dict() for s in out.steps] == [s.to_dict() for s in straight.steps]
    assert [c.to_dict() for c in out.cycles] == [c.to_dict() for c in straight.cycles]


def test_pressure_glitch_does_not_move_extremes() -> None:
    samples = full_cell_cycles(1)
    samples[200].pressure_MPa = 55.0  # one wild load-cell sample
    samples[400].pressure_MPa = 0.0
    out = run(CellSpec(kind="full", cathode_mass_g=0.01), samples)
    assert out.steps[0].p_max < 9.0
    assert out.steps[0].p_min > 4.9


def test_memory_is_bounded_for_a_very_long_step() -> None:
    """A 30-day rest keeps at most TRACE_POINTS trace points."""
    m = CellMonitor("X", CellSpec())
    out = RecordBatch()
    for k in range(30 * 8640):
        m.update(Sample(T0 + 10 * k, "X", 0.001, 0.0), out, [])
    assert len(m.step.trace_t) <= 64
    assert len(json.dumps(m.state())) < 10_000


def test_a_data_gap_is_not_integrated_as_charge() -> None:
    """A 3-h pause in the data during a discharge: the charge that flowed meanwhile is
    unknown, so it is not counted, and the step and cycle say how long the gap was."""
    samples = full_cell_cycles(2)
    gap = 3 * 3600.0
    for s in samples[1100:]:  # inside the first discharge
        s.time += gap
    out = run(CellSpec(kind="full", cathode_mass_g=0.01), samples)
    discharge = out.steps[2]
    assert discharge.gap_s == pytest.approx(gap + 10.0)
    assert discharge.capacity_Ah == pytest.approx(1.8e-3 - 1e-3 * 10 / 3600, rel=1e-6)
    assert out.cycles[0].gap_s == pytest.approx(gap + 10.0) and out.cycles[1].gap_s == 0.0


def test_a_rest_logged_hourly_is_not_a_data_gap() -> None:
    samples = [Sample(T0 + 10 * k, "F", 3.6 + 0.0008 * k, 1e-3, 5.0, mode="cc") for k in range(720)]
    t = samples[-1].time
    samples += [Sample(t + 3600 * (k + 1), "F", 4.1, 0.0, 5.0, mode="rest") for k in range(6)]  # hourly
    t = samples[-1].time
    samples += [Sample(t + 10 * (k + 1), "F", 4.0 - 0.001 * k, -1e-3, 5.0, mode="cc") for k in range(600)]
    out = run(CellSpec(kind="full", cathode_mass_g=0.01), samples)
    assert [s.step_kind for s in out.steps] == ["charge", "rest", "discharge"]
    assert all(s.gap_s == 0.0 for s in out.steps) and out.cycles[0].gap_s == 0.0
