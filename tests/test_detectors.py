"""Each detector against hand-built signals: it must fire on the signature and stay quiet on
the confounders DOMAIN.md names."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shortwatch.daemon.pipeline import Pipeline
from shortwatch.detectors.charge_anomaly import ChargeAnomaly
from shortwatch.detectors.cv_rise import CvCurrentRise
from shortwatch.detectors.dpq import DpqDecline
from shortwatch.detectors.monitor import CellMonitor
from shortwatch.detectors.stale_data import StaleData
from shortwatch.detectors.stats import arrhenius_factor
from shortwatch.model import AlertEvent, CycleFeatures, RecordBatch, Sample, StepFeatures
from shortwatch.settings import CellSpec, parse_settings

T0 = 1_767_600_000.0
AREA = 0.785


def symmetric_run(
    asr_of_cycle,
    n_cycles: int,
    j_of_cycle=lambda c: 0.5,
    temp_of_cycle=lambda c: 25.0,
    ohmic_share_of_cycle=lambda c: 0.0,
    live: bool = False,
    detectors: dict | None = None,
    pressure_of_cycle=lambda c: 5.0,
    end_rise_of_cycle=lambda c: 0.3,
    period_s: float = 10.0,
    noise_V: float = 0.0,
    log_change_V: float | None = None,
    spikes: dict[tuple[int, int], float] | None = None,
    half_cycle_s: float = 1800.0,
    swing_C: float = 0.0,
) -> list[AlertEvent]:
    """Plating/stripping half-cycles of 30 min (10-s samples unless ``period_s``) through the full
    pipeline. ``ohmic_share`` fades the nucleation peak and end-of-strip rise (a flat, ohmic
    profile); ``end_rise`` is the end-of-strip rise as a share of the plateau (stripping voids);
    ``noise_V`` is the sigma of Gaussian voltage noise (fixed seed); ``log_change_V`` keeps only
    the samples EC-Lab would log (a change of that many volts, a new step, or 600 s since the last);
    ``spikes`` sets single readings of the plating half-cycles: {(cycle, sample): |V|};
    ``swing_C``: a daily temperature swing of this amplitude, which the ASR follows (0.4 eV)."""
    settings = parse_settings({"cells": {"S": {"kind": "symmetric", "area_cm2": AREA}}, "detectors": detectors or {}})
    p = Pipeline(settings, live=live)
    out = RecordBatch()
    rng = np.random.default_rng(7)
    t = T0
    n = round(half_cycle_s / period_s)
    for c in range(n_cycles):
        j, asr, temp = j_of_cycle(c), asr_of_cycle(c), temp_of_cycle(c)
        shape_scale, rise, pres = 1.0 - ohmic_share_of_cycle(c), end_rise_of_cycle(c), pressure_of_cycle(c)
        eta = j / 1000.0 * asr
        batch = []
        for sign in (1, -1):
            for k in range(n):
                frac = k / n
                shape = 1.0 + shape_scale * (
                    0.2 * math.exp(-frac / 0.02) + (rise * (frac - 0.9) / 0.1 if frac > 0.9 else 0)
                )
                t_now = temp + swing_C * math.sin(2.0 * math.pi * (t - T0) / 86400.0) if swing_C else temp
                warm = 1.0 / arrhenius_factor(t_now, temp, 0.4) if swing_C else 1.0
                v = sign * eta * warm * shape + (noise_V * float(rng.standard_normal()) if noise_V else 0.0)
                if spikes and sign == 1 and (c, k) in spikes:
                    v = spikes[(c, k)]
                last = batch[-1] if batch else None
                if (
                    log_change_V is None
                    or last is None
                    or k == 0
                    or abs(v - last.voltage_V) >= log_change_V
                    or t - last.time >= 600.0
                ):
                    batch.append(Sample(t, "S", v, sign * j / 1000.0 * AREA, pres, t_now, mode="cc"))
                t += period_s
        p.process(batch, "test", out)
    return out.alerts


def firing(alerts: list[AlertEvent], detector: str) -> list[AlertEvent]:
    return [a for a in alerts if a.detector == detector and a.state == "firing"]


# ------------------------------------------------------------------ overpotential_drop


def test_soft_breakdown_fires_with_evidence() -> None:
    # ASR rises slowly, then from cycle 15 an electronic path opens: R_eff = R_ion*R_e/(R_ion+R_e)
    def asr(c: int) -> float:
        r_ion = 60.0 * (1 + 0.003 * c)
        if c < 15:
            return r_ion
        r_e = 3000.0 * math.exp(-(c - 15) / 6.0)
        return r_ion * r_e / (r_ion + r_e)

    alerts = symmetric_run(asr, 40, ohmic_share_of_cycle=lambda c: 0.0 if c < 15 else min(0.9, (c - 15) / 10))
    fired = firing(alerts, "overpotential_drop")
    assert fired, "soft breakdown was not detected"
    a = fired[0]
    assert a.evidence["cycle"] > 15
    assert a.evidence["drop_pct"] < 15  # caught while the fall is still small
    assert a.severity == "warning" and a.kind == "cell"
    assert a.evidence["asr_ohm_cm2"] < a.evidence["baseline_asr_ohm_cm2"]
    assert a.evidence["statistic"] > 0 and a.evidence["threshold"] > 0
    assert "Soft breakdown suspected" in a.summary and "CV check" in a.advice


def test_a_soft_breakdown_warning_stands_across_a_current_step() -> None:
    # the ASR halves from cycle 12; at cycle 26 the current steps down: the fall is not undone
    alerts = symmetric_run(
        lambda c: 80.0 if c < 12 else 80.0 * max(0.5, 1 - 0.05 * (c - 11)),
        40,
        j_of_cycle=lambda c: 0.5 if c < 26 else 0.3,
    )
    events = [a.state for a in alerts if a.detector == "overpotential_drop"]
    assert events == ["firing"]


def test_quiet_on_slow_interphase_growth() -> None:
    alerts = symmetric_run(lambda c: 80.0 * (1 + 0.004 * c), 60)
    assert not [a for a in alerts if a.kind == "cell"]


def test_quiet_on_early_contact_improvement() -> None:
    # ASR falls 35 % over the first ~5 cycles as contact improves, then grows slowly
    alerts = symmetric_run(lambda c: 100.0 * (0.65 + 0.35 * math.exp(-c / 1.7)) * (1 + 0.002 * c), 50)
    assert not firing(alerts, "overpotential_drop")


def test_quiet_on_temperature_steps_with_learned_activation_energy() -> None:
    ea = 0.48  # not the default 0.4: it must be learned from the cell's own data

    def temp(c: int) -> float:
        return [25.0, 35.0, 45.0, 25.0][min(3, c // 10)]

    alerts = symmetric_run(lambda c: 70.0 / arrhenius_factor(temp(c), 25.0, ea), 45, temp_of_cycle=temp)
    assert not firing(alerts, "overpotential_drop")


def test_quiet_on_temperature_steps_with_a_wrong_activation_energy() -> None:
    # the correction uses 0.4 eV, the cell follows 0.5 eV: 13 % off at 45 C. The level is
    # re-learned at each oven step, so the error does not turn into a "fall" back at 25 C.
    def temp(c: int) -> float:
        return [25.0, 45.0, 25.0][min(2, c // 15)]

    alerts = symmetric_run(
        lambda c: 70.0 / arrhenius_factor(temp(c), 25.0, 0.5),
        45,
        temp_of_cycle=temp,
        detectors={"overpotential_drop": {"activation_energy_eV": 0.4}},
    )
    assert not firing(alerts, "overpotential_drop")


def test_quiet_on_current_density_steps() -> None:
    alerts = symmetric_run(lambda c: 90.0, 40, j_of_cycle=lambda c: [0.1, 0.2, 0.3, 0.5][min(3, c // 10)])
    assert not [a for a in alerts if a.kind == "cell"]


def test_unchanged_overpotential_at_higher_current_is_soft_breakdown() -> None:
    # J doubles at cycle 20 but eta stays where it was: ASR halves at once
    alerts = symmetric_run(lambda c: 90.0 if c < 20 else 45.0, 30, j_of_cycle=lambda c: 0.2 if c < 20 else 0.4)
    fired = firing(alerts, "overpotential_drop")
    assert fired and fired[0].evidence["cycle"] == 20
    assert fired[0].evidence["eta_after_V"] <= fired[0].evidence["eta_before_V"] * 1.02
    assert "did not rise with a higher current density" in fired[0].summary


def run_with_rests(tau_of_cycle, asr_of_cycle, n_cycles: int = 30) -> list[AlertEvent]:
    """30-min half-cycles at 0.5 mA/cm2, each followed by a 20-min rest in which |V| relaxes
    as exp(-t / tau)."""
    settings = parse_settings({"cells": {"S": {"kind": "symmetric", "area_cm2": AREA}}})
    p = Pipeline(settings)
    out = RecordBatch()
    t = T0
    i = 0.5e-3 * AREA
    for c in range(n_cycles):
        eta = 0.5e-3 * asr_of_cycle(c)
        batch = []
        for sign in (1, -1):
            for k in range(180):
                shape = 1.0 + 0.2 * math.exp(-k / 180 / 0.02)
                batch.append(Sample(t, "S", sign * eta * shape, sign * i, mode="cc"))
                t += 10.0
            for k in range(1, 121):
                batch.append(Sample(t, "S", sign * eta * math.exp(-10.0 * k / tau_of_cycle(c)), 0.0, mode="rest"))
                t += 10.0
        p.process(batch, "test", out)
    return out.alerts


def test_faster_relaxation_at_rest_corroborates_a_small_fall() -> None:
    asr = lambda c: 60.0 if c < 15 else 60.0 * 0.93  # noqa: E731  a 7 % fall: below min_drop alone
    assert not firing(run_with_rests(lambda c: 600.0, asr), "overpotential_drop")
    fired = firing(run_with_rests(lambda c: 600.0 if c < 15 else 150.0, asr), "overpotential_drop")
    assert fired and fired[0].evidence["rest_relaxes_faster"] is True
    assert fired[0].evidence["rest_tau_ratio"] == pytest.approx(0.25, rel=0.05)
    assert "faster at rest" in fired[0].summary


def test_higher_current_in_a_warmer_oven_is_not_soft_breakdown() -> None:
    # +15 % current and 25 -> 32 C at the same cycle: eta barely changes, because the ASR
    # fell with temperature (Ea 0.4 eV), not because of a leak
    def temp(c: int) -> float:
        return 25.0 if c < 20 else 32.0

    alerts = symmetric_run(
        lambda c: 100.0 / arrhenius_factor(temp(c), 25.0, 0.4),
        40,
        j_of_cycle=lambda c: 0.4 if c < 20 else 0.46,
        temp_of_cycle=temp,
    )
    assert not firing(alerts, "overpotential_drop")


def test_quiet_on_contact_settling_long_past_the_warm_up() -> None:
    # exponential settling with a 12-h time constant (1-h cycles): still falling at cycle 40
    alerts = symmetric_run(lambda c: 100.0 * (0.6 + 0.4 * math.exp(-c / 12.0)) * (1 + 0.001 * c), 80)
    assert not [a for a in alerts if a.kind == "cell"]


def test_quiet_on_contact_settling_with_a_time_constant_of_tens_of_hours() -> None:
    # an independent scenario set's healthy cell settled with tau 26 h (ASR 2.4x its final level
    # at the start): its settling outlasted an allowance decaying over 25 h, a warning at cycle
    # 22. The allowance now decays over 40 h; tau 35 h is quiet, and warned with the old 25 h
    def asr(c: int) -> float:
        return 60.0 * (1 + 1.4 * math.exp(-c / 35.0)) * (1 + 0.001 * c)

    assert not [a for a in symmetric_run(asr, 120) if a.kind == "cell"]
    assert firing(
        symmetric_run(asr, 120, detectors={"overpotential_drop": {"settling_tau_max_h": 25.0}}), "overpotential_drop"
    )


def test_soft_breakdown_after_a_long_settling_is_still_caught() -> None:
    def asr(c: int) -> float:
        r_ion = 100.0 * (0.6 + 0.4 * math.exp(-c / 8.0)) * (1 + 0.002 * c)
        if c < 60:
            return r_ion
        r_e = 4000.0 * math.exp(-(c - 60) / 6.0)
        return r_ion * r_e / (r_ion + r_e)

    fired = firing(symmetric_run(asr, 90), "overpotential_drop")
    assert fired and 60 < fired[0].evidence["cycle"] < 80


def test_quiet_on_a_pressure_raise_and_the_fall_is_explained() -> None:
    # the operator tightens the fixture at cycle 30: 5 -> 7 MPa, the ASR falls 30 % within 2 cycles
    def asr(c: int) -> float:
        return 80.0 * (1 + 0.002 * c) * (1.0 if c < 30 else 0.85 if c == 30 else 0.7)

    alerts = symmetric_run(asr, 60, pressure_of_cycle=lambda c: 5.0 if c < 30 else 7.0)
    assert not [a for a in alerts if a.kind == "cell"]
    # the same fall with the pressure unchanged is soft breakdown, and says what was checked
    fired = firing(symmetric_run(asr, 60), "overpotential_drop")
    assert fired
    cov = fired[0].evidence["covariates"]
    assert "pressure 5.00 -> 5.00 MPa" in cov and "temperature 25.0 -> 25.0 C" in cov
    assert "J 0.5 -> 0.5 mA/cm2" in cov and cov.endswith("unchanged over the fall")
    assert fired[0].evidence["pressure_before"] == fired[0].evidence["pressure_after"] == 5.0
    assert "unchanged over the fall" in fired[0].summary


# ------------------------------------------------------------------ polarization_rise


def test_polarization_rise_warns_early_and_escalates_on_growing_stripping_voids() -> None:
    # from cycle 20 voids grow: the end-of-strip rise and the plateau grow faster and faster
    def grow(c: int) -> float:
        return math.expm1(max(c - 20, 0) / 8.0)

    alerts = symmetric_run(
        lambda c: 80.0 * (1 + 0.002 * c) * (1 + 0.2 * grow(c)), 40, end_rise_of_cycle=lambda c: 0.3 * (1 + grow(c))
    )
    events = [a for a in alerts if a.detector == "polarization_rise" and a.state == "firing"]
    assert [a.severity for a in events][:2] == ["warning", "critical"]
    assert 20 < events[0].evidence["cycle"] < events[1].evidence["cycle"] < 40
    assert "lower the current density" in events[0].advice.lower() and "stack pressure" in events[0].advice
    assert not firing(alerts, "overpotential_drop")


def test_polarization_rise_quiet_on_a_pressure_drop_and_linear_growth() -> None:
    # the stack pressure drops 5 -> 3.5 MPa at cycle 25: the ASR rises 20 % at once, then grows slowly
    alerts = symmetric_run(
        lambda c: 80.0 * (1 + 0.004 * c) * (1.0 if c < 25 else 1.2),
        60,
        pressure_of_cycle=lambda c: 5.0 if c < 25 else 3.5,
    )
    assert not [a for a in alerts if a.kind == "cell"]


def test_polarization_running_away_within_one_step_is_critical_at_once() -> None:
    settings = parse_settings({"cells": {"S": {"kind": "symmetric", "area_cm2": AREA}}})
    p = Pipeline(settings)
    out = RecordBatch()
    i, t, samples = 0.5e-3 * AREA, T0, []
    for _ in range(12):  # healthy 1-h cycles: 40 mV plateau
        for sign in (1, -1):
            for k in range(180):
                samples.append(Sample(t, "S", sign * 0.04 * (1 + 0.2 * math.exp(-k / 4)), sign * i, 5.0, mode="cc"))
                t += 10.0
    t_run = t + 600.0
    for _ in range(180):  # then |V| climbs in one step: voids open faster than Li creeps back
        v = 0.04 if t < t_run else 0.04 * (1 + (t - t_run) / 120.0)
        samples.append(Sample(t, "S", v, i, 5.0, mode="cc"))
        t += 10.0
    p.process(samples, "test", out)
    crit = [a for a in firing(out.alerts, "polarization_rise") if a.severity == "critical"]
    assert crit and crit[0].time < t_run + 240.0  # within minutes, before the step ends
    assert crit[0].evidence["statistic"] >= 2.0 and "running away" in crit[0].summary


# ------------------------------------------------------------------ hard_short


def test_hard_short_symmetric_is_critical_within_two_samples() -> None:
    settings = parse_settings({"cells": {"S": {"kind": "symmetric", "area_cm2": AREA}}})
    p = Pipeline(settings)
    out = RecordBatch()
    i = 0.5e-3 * AREA
    t = T0
    samples = []
    for _ in range(4):
        for sign in (1, -1):
            for _k in range(180):
                samples.append(Sample(t, "S", sign * 0.04, sign * i, mode="cc"))
                t += 10.0
    t_short = t
    for k in range(20):
        samples.append(Sample(t + 10 * k, "S", 0.0008, i, mode="cc"))
    p.process(samples, "test", out)
    crit = firing(out.alerts, "hard_short")
    assert len(crit) == 1 and crit[0].severity == "critical"
    assert crit[0].time - t_short <= 10.0  # the second collapsed sample
    assert crit[0].evidence["expected_overpotential_V"] == pytest.approx(0.04, rel=0.01)


def test_low_resistance_healthy_cell_is_not_a_short() -> None:
    # ASR 4 ohm cm2 at 0.1 mA/cm2: eta = 0.4 mV, yet healthy
    alerts = symmetric_run(lambda c: 4.0, 20, j_of_cycle=lambda c: 0.1)
    assert not firing(alerts, "hard_short")


def full_steps(t: float, steps: list[tuple[float, float, float, int]]) -> list[Sample]:
    """Samples of a full cell every 10 s from ``t``: (current A, first V, last V, samples) per step."""
    out: list[Sample] = []
    for i, v0, v1, n in steps:
        out += [Sample(t + 10 * (len(out) + k), "F", v0 + (v1 - v0) * k / (n - 1), i) for k in range(n)]
    return out


def test_full_cell_that_cannot_hold_its_voltage_stays_critical_until_it_holds_a_rest() -> None:
    settings = parse_settings({"cells": {"F": {"kind": "full", "cathode_mass_g": 0.01}}})
    p = Pipeline(settings)
    out = RecordBatch()
    volts = [3.6 + 0.001 * k for k in range(200)] + [0.95] * 3 + [1.05 + 0.001 * k for k in range(50)]
    p.process([Sample(T0 + 10 * k, "F", v, 0.0 if k >= 200 else 1e-3) for k, v in enumerate(volts)], "t", out)
    assert [(a.state, a.severity) for a in out.alerts if a.detector == "hard_short"] == [("firing", "critical")]
    # charged back up: the charger drives any voltage up, so that is no recovery...
    out = RecordBatch()
    t = T0 + 10 * len(volts)
    p.process(full_steps(t, [(1e-3, 3.5, 4.1, 100), (0.0, 4.1, 4.08, 75)]), "t", out)
    assert not [a for a in out.alerts if a.detector == "hard_short"]  # (nor is a rest that sinks 20 mV)
    # ...holding the voltage at rest is (here after a discharge, once relaxed)
    rest = [(0.0, 3.2, 3.24, 20), (0.0, 3.24, 3.242, 70)]
    p.process(full_steps(t + 1750, [(-1e-3, 4.0, 3.0, 100), *rest, (1e-3, 3.4, 3.5, 5)]), "t", out)
    resolved = [a for a in out.alerts if a.detector == "hard_short"]
    assert [a.state for a in resolved] == ["resolved"] and "holds its voltage at rest" in resolved[0].summary


def test_a_leaking_full_cell_is_one_critical_not_one_per_cycle() -> None:
    # the demo's B3 (internal leak from cycle 11): after each discharge the rest sinks from the
    # 3.0-V cut-off to 2.4 V; charging drove it back over 3 V, which had resolved the critical,
    # and the next rest fired it again (three criticals in one afternoon). Also where the rest
    # first relaxes up for 10 minutes, which a one-sided hold took for holding
    settings = parse_settings({"cells": {"F": {"kind": "full", "cathode_mass_g": 0.01}}})
    cycle = [(1e-3, 3.4, 4.1, 200), (0.0, 4.1, 4.05, 60), (-1e-3, 4.0, 3.0, 200)]
    for leak in ([(0.0, 3.02, 2.4, 120)], [(0.0, 3.02, 3.08, 60), (0.0, 3.08, 2.4, 120)]):
        p = Pipeline(settings)
        out = RecordBatch()
        t = T0
        for rest in [[(0.0, 3.2, 3.25, 120)]] * 2 + [leak] * 3:
            samples = full_steps(t, [*cycle, *rest])
            p.process(samples, "t", out)
            t = samples[-1].time + 10.0
        events = [(a.state, a.severity) for a in out.alerts if a.detector == "hard_short"]
        assert events == [("firing", "critical")]


def test_full_cell_voltage_drop_while_charging_is_a_short() -> None:
    settings = parse_settings({"cells": {"F": {"kind": "full", "cathode_mass_g": 0.01}}})
    p = Pipeline(settings)
    out = RecordBatch()
    samples = [Sample(T0 + 10 * k, "F", 3.6 + 0.0005 * k, 1e-3, 5.0, mode="cc") for k in range(600)]
    t = samples[-1].time
    samples += [Sample(t + 10 * (k + 1), "F", 3.2 - 0.001 * k, 1e-3, 5.0, mode="cc") for k in range(10)]
    p.process(samples, "test", out)
    crit = firing(out.alerts, "hard_short")
    assert len(crit) == 1 and crit[0].time <= t + 20
    assert crit[0].evidence["drop_V"] > 0.25


def full_cycle_samples(t: float, v_of_k, i: float, n: int, mode: str = "cc") -> list[Sample]:
    return [Sample(t + 10.0 * k, "F", v_of_k(k), i, 5.0, mode=mode) for k in range(n)]


@pytest.mark.parametrize("where", ["discharge", "rest"])
def test_full_cell_short_mid_discharge_or_at_rest_is_critical_within_30_s(where: str) -> None:
    settings = parse_settings({"cells": {"F": {"kind": "full", "cathode_mass_g": 0.01}}})
    p = Pipeline(settings)
    out = RecordBatch()
    samples = full_cycle_samples(T0, lambda k: 3.6 + 0.0005 * k, 1e-3, 600)  # charge to 3.9 V
    t = samples[-1].time + 10.0
    i = -1e-3 if where == "discharge" else 0.0
    samples += full_cycle_samples(t, lambda k: 3.85 - 0.0002 * k, i, 200, "cc" if i else "rest")
    t_short = samples[-1].time + 5.0  # the short strikes between two samples: 0.57 V gone at once
    samples += full_cycle_samples(
        samples[-1].time + 10.0, lambda k: 3.81 - 0.57 - 0.002 * k, i, 30, "cc" if i else "rest"
    )
    p.process(samples, "test", out)
    crit = firing(out.alerts, "hard_short")
    assert len(crit) == 1 and crit[0].severity == "critical"
    assert crit[0].time - t_short <= 30.0
    assert crit[0].evidence["drop_V"] == pytest.approx(0.57, abs=0.01)
    assert ("at rest" if where == "rest" else "while discharging") in crit[0].summary


def test_full_cell_sinking_far_below_its_own_cut_off_cannot_hold_its_voltage() -> None:
    # healthy cycles between 3.0 and 4.2 V; then, charging, it slides to 2.3 V (a drained, leaking
    # cell): below its own end-of-discharge voltage by more than 0.5 V, though far above 1 V
    settings = parse_settings({"cells": {"F": {"kind": "full", "cathode_mass_g": 0.01}}})
    p = Pipeline(settings)
    out = RecordBatch()
    t, samples = T0, []
    for _ in range(4):
        samples += full_cycle_samples(t, lambda k: 3.5 + 0.001 * k, 1e-3, 700)
        samples += full_cycle_samples(samples[-1].time + 10, lambda k: 4.1 - 0.0011 * k, -1e-3, 1000)
        t = samples[-1].time + 10
    samples += full_cycle_samples(t, lambda k: max(3.3 - 0.002 * k, 2.3), 1e-3, 700)
    p.process(samples, "test", out)
    crit = firing(out.alerts, "hard_short")
    assert len(crit) == 1 and crit[0].evidence["threshold_V"] == pytest.approx(3.0 - 0.5, abs=0.01)
    assert crit[0].evidence["voltage_V"] < crit[0].evidence["threshold_V"]


def test_end_of_discharge_knee_is_not_a_short() -> None:
    settings = parse_settings({"cells": {"F": {"kind": "full", "cathode_mass_g": 0.01}}})
    p = Pipeline(settings)
    out = RecordBatch()
    samples = full_cycle_samples(T0, lambda k: 3.6 + 0.0005 * k, 1e-3, 600)
    t = samples[-1].time + 60.0  # logged every 60 s: the knee falls 0.05, 0.1, 0.2, 0.35 V per sample
    knee = [3.85 - 0.0005 * k for k in range(100)] + [3.75, 3.7, 3.6, 3.4, 3.05]
    samples += [Sample(t + 60.0 * k, "F", v, -1e-3, 5.0, mode="cc") for k, v in enumerate(knee)]
    t = samples[-1].time + 60.0
    samples += [Sample(t + 60.0 * k, "F", 3.3 + 0.001 * k, 0.0, 5.0, mode="rest") for k in range(30)]
    p.process(samples, "test", out)
    assert not firing(out.alerts, "hard_short")


# ------------------------------------------------------------------ pressure_window


def test_pressure_glitch_is_not_an_excursion_but_a_sustained_one_is() -> None:
    settings = parse_settings({"cells": {"S": {"kind": "symmetric"}}})
    p = Pipeline(settings)
    out = RecordBatch()
    pressures = [5.0] * 50 + [55.0] + [5.0] * 50 + [0.2] * 10 + [5.0] * 10
    p.process([Sample(T0 + 10 * k, "S", 0.01, 0.0, pr) for k, pr in enumerate(pressures)], "test", out)
    events = [(a.state, a.evidence["pressure_MPa"]) for a in out.alerts if a.detector == "pressure_window"]
    assert [e[0] for e in events] == ["firing", "resolved"]
    assert events[0][1] == pytest.approx(0.2)


def test_stuck_load_cell_is_a_data_alert_and_resolves_when_it_reads_again() -> None:
    p = Pipeline(parse_settings({"cells": {"F": {"kind": "full", "cathode_mass_g": 0.01}}}))
    out = RecordBatch()
    rng = np.random.default_rng(0)
    live = [Sample(T0 + 10 * k, "F", 3.7, 1e-3, 5.0 + 0.01 * rng.standard_normal()) for k in range(400)]
    stuck = [Sample(T0 + 4000 + 10 * k, "F", 3.8, 1e-3, 6.25) for k in range(400)]  # 4000 s frozen
    back = [Sample(T0 + 8000 + 10 * k, "F", 3.9, 1e-3, 6.3 + 0.01 * k) for k in range(5)]
    p.process(live + stuck + back, "t", out)
    events = [(a.state, a.kind, a.time - T0) for a in out.alerts if a.detector == "load_cell"]
    assert events == [("firing", "data", 4000 + 3600), ("resolved", "data", 8000)]
    assert "stuck or saturated" in next(a.summary for a in out.alerts if a.detector == "load_cell")


def test_a_quiet_load_cell_at_rest_is_not_stuck() -> None:
    p = Pipeline(parse_settings({"cells": {"F": {"kind": "full", "cathode_mass_g": 0.01}}}))
    out = RecordBatch()
    p.process([Sample(T0 + 10 * k, "F", 3.7, 1e-3, 5.0 + 0.001 * k) for k in range(10)], "t", out)
    p.process([Sample(T0 + 100 + 10 * k, "F", 3.7, 0.0, 5.2) for k in range(1000)], "t", out)  # a long rest
    assert not [a for a in out.alerts if a.detector == "load_cell"]


# ------------------------------------------------------------------ cv_current_rise


def cycle(c: int, **kw) -> CycleFeatures:
    base = dict(
        cell="X",
        cycle=c,
        t_start=T0 + c * 3600,
        t_end=T0 + (c + 1) * 3600,
        n_steps=2,
        q_charge_Ah=1e-3,
        q_discharge_Ah=1e-3,
        gap_s=0.0,
        ce=1.0,
        q_discharge_Ah_g=None,
        eta_charge_V=None,
        eta_discharge_V=None,
        asr_ohm_cm2=None,
        current_density_mA_cm2=None,
        p_start=None,
        p_max=None,
        p_min=None,
        dP_charge_MPa=None,
        dP_discharge_MPa=None,
        dpq_MPa_g_per_Ah=None,
        cv_peak_A=None,
        cv_linearity=None,
        v_charge_end=None,
        charge_v_dips=0,
        temperature_C=None,
    )
    base.update(kw)
    return CycleFeatures(**base)


def states(detector, items, hook: str = "on_cycle") -> list[str]:
    m = CellMonitor("X", detector.spec)
    out = []
    for it in items:
        v = getattr(detector, hook)(it, m)
        out.append(v.state if v else detector.state_name)
    return out


def test_cv_peak_trend_turning_up_warns_and_linear_cv_is_critical() -> None:
    peaks = [1.00, 0.96, 0.93, 0.91, 0.90, 0.95, 1.02, 1.10, 1.25, 2.6]
    lin = [0.98] * 9 + [0.9995]
    det = CvCurrentRise(CellSpec(kind="symmetric"), {"warmup_cycles": 0})  # the trend logic alone
    got = states(
        det, [cycle(k, cv_peak_A=p * 1e-3, cv_linearity=r) for k, (p, r) in enumerate(zip(peaks, lin, strict=True))]
    )
    assert got[:5] == ["ok"] * 5  # falling: interphase growth, healthy
    assert "warning" in got[5:9]
    assert got.index("warning") <= 7  # 0.90 -> 0.95 -> 1.02: two rises and +13 % above the low
    assert got[-1] == "critical"


def test_cv_peak_rising_with_early_contact_improvement_is_healthy() -> None:
    # a CV check every 6 cycles; contact improves over the first cycles (peak +20 % by the
    # second check), then interphase growth makes it shrink slowly
    items = []
    for k in range(48):
        peak = 1e-3 * (1.25 - 0.25 * math.exp(-k / 2.5)) * (1 - 0.003 * k) if k % 6 == 0 else None
        items.append(cycle(k, cv_peak_A=peak, cv_linearity=0.96 if peak else None))
    assert set(states(CvCurrentRise(CellSpec(kind="symmetric")), items)) == {"ok"}
    # judged from the very first check, the contact improvement looks like leakage
    assert "warning" in states(CvCurrentRise(CellSpec(kind="symmetric"), {"warmup_cycles": 0}), items)


def test_cv_peak_falling_is_healthy() -> None:
    det = CvCurrentRise(CellSpec(kind="symmetric"))
    peaks = 1e-3 * (0.7 + 0.3 * np.exp(-np.arange(15) / 4)) * (1 + 0.005 * np.random.default_rng(1).standard_normal(15))
    assert set(states(det, [cycle(k, cv_peak_A=float(p), cv_linearity=0.98) for k, p in enumerate(peaks)])) == {"ok"}


# ------------------------------------------------------------------ pressure_dpq_decline


def dpq_cycles(values: list[float]) -> list[CycleFeatures]:
    return [
        cycle(k, dpq_MPa_g_per_Ah=v, q_discharge_Ah_g=0.18, dP_discharge_MPa=-v * 0.18, p_max=8.0, p_min=5.0)
        for k, v in enumerate(values)
    ]


def test_dpq_rapid_decline_after_gradual_trend_warns_early() -> None:
    rng = np.random.default_rng(3)
    vals = [32.0 - 0.35 * k + 0.15 * rng.standard_normal() for k in range(14)]
    vals += [vals[-1] - 2.5 * (k + 1) for k in range(6)]  # from cycle 14: rapid, short at cycle 20
    det = DpqDecline(CellSpec(kind="full", cathode_mass_g=0.01))
    got = states(det, dpq_cycles(vals))
    first = got.index("warning")
    assert 14 <= first <= 16, got  # at least 4 of the 6 cycles before the short are warned
    assert all(s == "warning" for s in got[first:])


def test_dpq_gradual_decline_that_levels_off_is_quiet() -> None:
    rng = np.random.default_rng(4)
    k = np.arange(30)
    vals = 25.0 + 10.0 * np.exp(-k / 6.0) + 0.02 * (k - 20).clip(0) ** 1.5 + 0.2 * rng.standard_normal(30)
    det = DpqDecline(CellSpec(kind="full", cathode_mass_g=0.01))
    assert "warning" not in states(det, dpq_cycles([float(v) for v in vals]))


# ------------------------------------------------------------------ charge_anomaly


def charge_step(c: int, q: float = 2e-3, v_end: float = 4.25, dips: int = 0) -> StepFeatures:
    return StepFeatures(
        cell="X",
        step_index=c * 4,
        step_kind="charge",
        cycle=c,
        t_start=T0,
        t_end=T0 + c * 36000.0,
        n_samples=700,
        duration_s=7000.0,
        capacity_Ah=q,
        capacity_mAh_cm2=q * 1000,
        current_A=1e-3,
        current_density_mA_cm2=1.0,
        gap_s=0.0,
        v_start=3.6,
        v_end=v_end,
        v_min=3.6,
        v_max=v_end,
        eta_V=None,
        asr_ohm_cm2=None,
        nucleation_V=None,
        end_rise_V=None,
        flatness=None,
        v_dips=dips,
        max_dip_V=0.03 if dips else 0.0,
        rest_decay_V_per_h=None,
        rest_tau_s=None,
        p_start=None,
        p_end=None,
        p_min=None,
        p_max=None,
        dP_MPa=None,
        temperature_C=None,
        sweep_peak_A=None,
        sweep_linearity=None,
        sweep_rate_V_s=None,
    )


@pytest.mark.parametrize(
    ("late", "expected"),
    [
        (dict(dips=1), "warning"),  # dips in 2 of the last 3 charges
        (dict(q=2.6e-3, v_end=4.18), "warning"),  # over-charge without reaching cut-off
        (dict(), "ok"),
    ],
)
def test_charge_anomalies(late: dict, expected: str) -> None:
    det = ChargeAnomaly(CellSpec(kind="full"))
    steps = [charge_step(c) for c in range(8)] + [charge_step(c, **late) for c in (8, 9)]
    assert states(det, steps, "on_step")[-1] == expected


def test_falling_coulombic_efficiency_warns() -> None:
    det = ChargeAnomaly(CellSpec(kind="full"))
    ces = [0.99] * 8 + [0.94, 0.93]
    got = states(det, [cycle(k, ce=c) for k, c in enumerate(ces)])
    assert got[-2] != "warning" and got[-1] == "warning"


def test_anode_free_nucleation_dip_at_every_charge_start_is_no_anomaly() -> None:
    # every charge starts with a 60 mV nucleation spike that falls back within minutes
    settings = parse_settings({"cells": {"A": {"kind": "anode-free", "cathode_mass_g": 0.01}}})
    p = Pipeline(settings)
    out = RecordBatch()
    t, samples = T0, []
    for _ in range(15):
        for k in range(600):  # 100-min charge at 10 s
            v = 3.55 + 0.0011 * k + 0.06 * math.exp(-k / 12.0)
            samples.append(Sample(t, "A", v, 1e-3, 5.0, mode="cc"))
            t += 10.0
        for k in range(90):
            samples.append(Sample(t, "A", 4.2 - 0.05 * (1 - math.exp(-k / 10)), 0.0, 5.0, mode="rest"))
            t += 10.0
        for k in range(560):
            samples.append(Sample(t, "A", 4.1 - 0.0011 * k, -1e-3, 5.0, mode="cc"))
            t += 10.0
        for k in range(90):
            samples.append(Sample(t, "A", 3.5 + 0.05 * (1 - math.exp(-k / 10)), 0.0, 5.0, mode="rest"))
            t += 10.0
    p.process(samples, "test", out)
    assert not [a for a in out.alerts if a.kind == "cell"]
    charges = [f for f in out.steps if f.step_kind == "charge"]
    assert charges and all(f.v_dips == 0 for f in charges)


def rest_after_charge(c: int, fall_V_per_h: float) -> StepFeatures:
    f = charge_step(c)
    f.step_kind, f.duration_s, f.rest_fall_V_per_h = "rest", 3600.0, fall_V_per_h
    return f


def test_self_discharge_growing_at_rest_warns_next_to_the_ce() -> None:
    det = ChargeAnomaly(CellSpec(kind="full"))
    falls = [0.004, 0.005, 0.004, 0.005, 0.004, 0.012, 0.02]
    got = []
    for c, fall in enumerate(falls):
        det.on_step(charge_step(c), None)  # type: ignore[arg-type]
        v = det.on_step(rest_after_charge(c, fall), None)  # type: ignore[arg-type]
        got.append(det.state_name if v is None else v.state)
    assert got[-2] == "watch" and got[-1] == "warning"
    det.on_step(charge_step(7), None)  # type: ignore[arg-type]
    v = det.on_step(rest_after_charge(7, 0.03), None)  # type: ignore[arg-type]
    assert v is not None and "self_discharge" in v.evidence["signs"]
    assert v.evidence["usual_ocv_fall_mV_per_h"] == pytest.approx(4.5, abs=0.6)


# ------------------------------------------------------------------ stale_data


def test_stale_data_tells_silence_from_a_finished_test() -> None:
    spec = CellSpec(kind="symmetric")
    m = CellMonitor("X", spec)
    det = StaleData(spec)
    running = [Sample(T0 + 10 * k, "X", 0.04, 4e-4) for k in range(30)]
    for s in running:
        det.on_sample(s, None, m)
    now = det.last_arrival
    assert det.check(now + 30, m) is None  # 3 periods: not yet stale (min 60 s)
    v = det.check(now + 120, m)
    assert v is not None and v.state == "warning" and "while the test was running" in v.summary
    back = det.on_sample(Sample(T0 + 400, "X", 0.04, 4e-4), None, m)
    assert back is not None and back.state == "ok"

    ended = StaleData(spec)
    m.segmenter.max_abs_i = 4e-4
    for k in range(400):  # current off for > 30 min of data time before the silence
        ended.on_sample(Sample(T0 + 10 * k, "X", 0.0, 0.0 if k > 100 else 4e-4), None, m)
    v = ended.check(ended.last_arrival + 600, m)
    assert v is not None and v.state == "watch" and "test appears to have ended" in v.summary


def test_stale_alert_resolves_when_data_time_lags_the_wall_clock() -> None:
    """An exporter that flushes late: the samples that end the silence carry data times
    before the wall time the alert fired at. The alert must still resolve."""
    settings = parse_settings({})
    p = Pipeline(settings, live=True)
    out = RecordBatch()
    t_data = 1_000_000.0  # data time far behind the wall clock
    p.process([Sample(t_data + 10 * k, "L", 0.04, 4e-4) for k in range(30)], "x", out)
    det = p.monitors["L"].detectors["stale_data"]
    p.tick(det.last_arrival + 600, out)
    p.process([Sample(t_data + 400, "L", 0.04, 4e-4)], "x", out)
    assert [(a.detector, a.state) for a in out.alerts] == [("stale_data", "firing"), ("stale_data", "resolved")]
    assert not p.alerts.firing


def test_hard_short_before_anything_is_learned_can_recover() -> None:
    settings = parse_settings({"cells": {"S": {"kind": "symmetric", "area_cm2": AREA}}})
    p = Pipeline(settings)
    out = RecordBatch()
    i = 0.5e-3 * AREA
    samples = [Sample(T0 + 10 * k, "S", 0.00005, i, mode="cc") for k in range(3)]  # 0.05 mV: looks shorted
    samples += [Sample(T0 + 30 + 10 * k, "S", 0.04, i, mode="cc") for k in range(20)]  # then 40 mV: healthy
    p.process(samples, "t", out)
    assert [a.state for a in out.alerts if a.detector == "hard_short"] == ["firing", "resolved"]


def test_stale_data_only_runs_live() -> None:
    settings = parse_settings({})
    assert "stale_data" not in Pipeline(settings, live=False).monitor("A").detectors
    assert "stale_data" in Pipeline(settings, live=True).monitor("A").detectors


def test_detector_parameters_from_config_and_unknown_ones_rejected() -> None:
    from shortwatch.settings import ConfigError

    s = parse_settings(
        {
            "detectors": {"overpotential_drop": {"threshold": 0.9}},
            "cells": {
                "A": {"detectors": {"overpotential_drop": {"warmup_cycles": 2}, "stale_data": {"enabled": False}}}
            },
        }
    )
    m = Pipeline(s, live=True).monitor("A")
    assert m.detectors["overpotential_drop"].p["threshold"] == 0.9
    assert m.detectors["overpotential_drop"].p["warmup_cycles"] == 2
    assert "stale_data" not in m.detectors
    with pytest.raises(ConfigError) as exc:
        parse_settings({"detectors": {"overpotential_drop": {"treshold": 1}, "nope": {}}})
    text = str(exc.value)
    assert (
        "detectors.overpotential_drop.treshold: unknown parameter" in text
        and "detectors.nope: unknown detector" in text
    )


def test_slow_soft_breakdown_under_a_daily_temperature_swing_is_detected() -> None:
    # +-2.5 C over a day (24 cycles of 1 h) must not keep resetting the statistic
    def temp(c: int) -> float:
        return 25.0 + 2.5 * math.sin(2 * math.pi * c / 24)

    def asr(c: int) -> float:
        r_ion = 80.0 / arrhenius_factor(temp(c), 25.0, 0.4)
        if c < 15:
            return r_ion
        r_e = 4000.0 * math.exp(-(c - 15) / 15.0)
        return r_ion * r_e / (r_ion + r_e)

    fired = firing(symmetric_run(asr, 70, temp_of_cycle=temp), "overpotential_drop")
    assert fired and fired[0].evidence["cycle"] <= 55


def test_a_low_resistance_cell_recovers_from_an_early_false_short() -> None:
    settings = parse_settings({"cells": {"S": {"kind": "symmetric", "area_cm2": AREA}}})
    p = Pipeline(settings)
    out = RecordBatch()
    i = 0.5e-3 * AREA
    samples = [Sample(T0 + 10 * k, "S", 0.00001, i, mode="cc") for k in range(3)]
    samples += [Sample(T0 + 30 + 10 * k, "S", 0.0025, i, mode="cc") for k in range(20)]  # 5 ohm cm2: healthy
    p.process(samples, "t", out)
    assert [a.state for a in out.alerts if a.detector == "hard_short"] == ["firing", "resolved"]


def test_load_cell_detector_watches_full_cells_only() -> None:
    p = Pipeline(parse_settings({"cells": {"S": {"kind": "symmetric"}, "F": {"kind": "full"}}}))
    assert "load_cell" not in p.monitor("S").detectors
    assert "load_cell" in p.monitor("F").detectors


@pytest.mark.parametrize("scenario", ["sym_void_short", "sym_pressure_raise", "full_selfdischarge_short"])
def test_detectors_resume_from_a_checkpoint_with_the_same_alerts(scenario: str) -> None:
    """Everything the new detectors learn (settling rate, covariates, rates, scatter) survives
    a JSON checkpoint: a restart mid-run gives exactly the alerts of an uninterrupted run."""
    import json

    from shortwatch.sensors.simulator import SimulatedCell, default_spec

    sim = SimulatedCell("C", scenario, default_spec(scenario), seed=11, start=T0, period_s=30.0)
    spec = sim.spec
    cells = {"C": {"kind": spec.kind, "area_cm2": spec.area_cm2, "cathode_mass_g": spec.cathode_mass_g or 0.01}}
    settings = parse_settings({"cells": cells})
    samples = list(sim.samples())
    straight, out = Pipeline(settings), RecordBatch()
    straight.process(samples, "t", out)
    first, resumed = Pipeline(settings), RecordBatch()
    cut = len(samples) * 2 // 3
    first.process(samples[:cut], "t", resumed)
    second = Pipeline(settings)
    second.load(json.loads(json.dumps(first.state())))
    second.process(samples[cut:], "t", resumed)

    def key(b: RecordBatch) -> list[tuple]:
        return [(a.time, a.detector, a.severity, a.state, a.summary) for a in b.alerts]

    def stats(b: RecordBatch) -> list[tuple]:
        return [(d.time, d.detector, d.statistic, d.threshold, d.state) for d in b.detector_states]

    assert key(resumed) == key(out) and stats(resumed) == stats(out)
    assert any(d.detector in ("overpotential_drop", "polarization_rise", "charge_anomaly") for d in out.detector_states)
    assert any(a.kind == "cell" for a in out.alerts) == sim.truth.failing
