"""Validation, quarantine and the alert state machine, through the shared pipeline core."""

from __future__ import annotations

import math

import pytest

from shortwatch.alerts.manager import AlertManager
from shortwatch.daemon.pipeline import Pipeline
from shortwatch.detectors.base import Verdict
from shortwatch.model import RecordBatch, Rejected, Sample
from shortwatch.settings import parse_settings

T0 = 1_767_600_000.0


def pipeline(**daemon) -> Pipeline:
    return Pipeline(parse_settings({"daemon": daemon, "cells": {"A1": {"kind": "symmetric"}}}))


def test_bad_samples_are_quarantined_and_good_channels_kept() -> None:
    p = pipeline()
    out = RecordBatch()
    items = [
        Sample(T0, "A1", 0.05, 0.4e-3, 5.0),
        Sample(T0 + 10, "A1", 0.05, 0.4e-3, 5.0),
        Sample(T0 + 10, "A1", 0.05, 0.4e-3, 5.0),  # exact duplicate
        Sample(T0 + 10, "A1", 0.06, 0.4e-3, 5.0),  # same time, other values
        Sample(T0 + 5, "A1", 0.05, 0.4e-3, 5.0),  # out of order
        Sample(T0 + 20, "A1", float("nan"), 0.4e-3, 5.0),  # NaN voltage: keep I and P
        Sample(T0 + 30, "A1", 50.0, 0.4e-3, 5.0),  # mV read as V
        Sample(T0 + 40, "A1", 0.05, 4.0, 5.0),  # 4 mA read as A: 5100 mA/cm2
        Sample(T0 + 50, "A1", 0.05, 0.4e-3, 393.0),  # force in N read as MPa
        Sample(T0 + 60, "A1", 0.05, 0.4e-3, 5.0, temperature_C=-2500.0),  # open thermocouple
        Sample(float("inf"), "A1", 0.05, 0.4e-3, 5.0),
        Rejected(source="file", reason="parse_error", raw="garbage,\x00\xff", detail="time: not a number"),
    ]
    p.process(items, "test", out)
    reasons = [r.reason for r in out.rejected]
    assert reasons == [
        "duplicate",
        "duplicate_time",
        "out_of_order",
        "non_finite",
        "out_of_range",
        "out_of_range",
        "out_of_range",
        "out_of_range",
        "non_finite",
        "parse_error",
    ]
    assert p.rejects.counts["out_of_range"] == 4
    assert "in mV?" in out.rejected[4].detail
    assert "mA/cm2" in out.rejected[5].detail
    assert "force in N?" in out.rejected[6].detail
    # the raw sample as received is kept, not the cleaned one
    assert out.rejected[3].raw.split(",")[2] == "nan"
    # accepted: the 2 good ones + 5 with one channel dropped
    times = [s.time - T0 for s in out.samples]
    assert times == [0, 10, 20, 30, 40, 50, 60]
    nan_sample = out.samples[2]
    assert nan_sample.voltage_V is None and nan_sample.current_A == 0.4e-3 and nan_sample.pressure_MPa == 5.0
    assert out.samples[3].voltage_V is None
    assert out.samples[4].current_A is None
    assert out.samples[5].pressure_MPa is None
    assert out.samples[6].temperature_C is None and out.samples[6].voltage_V == 0.05


def test_unknown_cell_gets_defaults_or_quarantine() -> None:
    p = pipeline()
    out = RecordBatch()
    p.process([Sample(T0, "Z9", 0.05, 1e-4)], "test", out)
    assert len(out.samples) == 1 and p.rejects.counts["unknown_cell"] == 1
    assert p.monitors["Z9"].spec.kind == "symmetric"

    strict = pipeline(accept_unknown_cells=False)
    out = RecordBatch()
    strict.process([Sample(T0, "Z9", 0.05, 1e-4)], "test", out)
    assert not out.samples and out.rejected[0].reason == "unknown_cell"


def test_pipeline_state_round_trip_keeps_duplicate_detection() -> None:
    p = pipeline()
    p.process([Sample(T0, "A1", 0.05, 1e-4)], "test", RecordBatch())
    p2 = pipeline()
    p2.load(p.state())
    out = RecordBatch()
    p2.process([Sample(T0, "A1", 0.05, 1e-4), Sample(T0 + 10, "A1", 0.05, 1e-4)], "test", out)
    assert [r.reason for r in out.rejected] == ["duplicate"]
    assert len(out.samples) == 1


def v(t: float, state: str, stat: float = 1.0) -> Verdict:
    return Verdict(time=T0 + t, state=state, statistic=stat, threshold=5.0, summary=f"s {state}", advice="a")


def test_alert_transitions_fire_escalate_resolve_once() -> None:
    am = AlertManager()
    out = RecordBatch()
    kinds = {"overpotential_drop": "cell"}
    seq = ["ok", "watch", "warning", "warning", "critical", "critical", "ok", "ok"]
    for k, state in enumerate(seq):
        am.handle("A1", kinds, [("overpotential_drop", v(k, state))], out)
    assert [(e.state, e.severity) for e in out.alerts] == [
        ("firing", "warning"),
        ("firing", "critical"),
        ("resolved", "critical"),
    ]
    assert len(out.detector_states) == len(seq)
    d = out.alerts[0].to_json_dict()
    assert d["time"].endswith("+00:00") and d["kind"] == "cell" and d["evidence"] == {}


def test_alert_log_replay_suppresses_resent_transitions() -> None:
    """After a crash, samples re-processed from the last checkpoint must not re-send."""
    first = AlertManager()
    out = RecordBatch()
    first.handle("A1", {}, [("hard_short", v(100, "critical"))], out)
    log = [dict(e.to_json_dict(), time_s=e.time) for e in out.alerts]

    restarted = AlertManager()  # checkpoint was older than the alert
    restarted.replay_log(log)
    out2 = RecordBatch()
    restarted.handle("A1", {}, [("hard_short", v(100, "critical"))], out2)
    restarted.handle("A1", {}, [("hard_short", v(110, "critical"))], out2)
    assert out2.alerts == []
    restarted.handle("A1", {}, [("hard_short", v(120, "ok"))], out2)
    assert [e.state for e in out2.alerts] == ["resolved"]
    assert math.isclose(out2.alerts[0].time, T0 + 120)


def test_nan_in_a_file_row_drops_only_that_channel(tmp_path) -> None:
    from shortwatch.sensors.files import iter_file

    f = tmp_path / "A1.csv"
    f.write_text("time,voltage_V,current_A,pressure_MPa\n1,0.05,0.0004,5.0\n11,nan,0.0004,5.1\n21,0.05,0.0004,5.2\n")
    p = pipeline()
    out = RecordBatch()
    p.process(iter_file(f), "file", out)
    assert [(s.voltage_V, s.pressure_MPa) for s in out.samples] == [(0.05, 5.0), (None, 5.1), (0.05, 5.2)]
    assert [(r.reason, r.time) for r in out.rejected] == [("non_finite", 11.0)]
    assert "voltage" in out.rejected[0].detail and ",nan," in out.rejected[0].raw


def test_cell_status_changes_are_stored_with_detector_statistics() -> None:
    p = pipeline()
    out = RecordBatch()
    pressures = [5.0] * 5 + [0.2] * 6 + [5.0] * 6  # a pressure excursion and back
    p.process([Sample(T0 + 10 * k, "A1", 0.01, 0.0, pr) for k, pr in enumerate(pressures)], "t", out)
    status = [(d.state, d.time - T0) for d in out.detector_states if d.detector == "cell_status"]
    assert status == [("warning", 80.0), ("ok", 140.0)]  # 3rd filtered sample outside, 3rd back inside
    assert p.monitors["A1"].status == "ok"


def test_cycler_and_load_cell_streams_feed_one_cell() -> None:
    """V/I from a cycler file and P from a load cell, in separate streams and batches: both are
    accepted (time order is per stream) and the pressure reaches the step features."""
    p = Pipeline(parse_settings({"cells": {"F": {"kind": "full", "cathode_mass_g": 0.01}}}))
    out = RecordBatch()
    n = 720
    vi = [Sample(T0 + 10 * k, "F", 3.6 + 0.6 * k / n, 1e-3, mode="cc") for k in range(n)]
    vi += [Sample(T0 + 10 * (n + k), "F", 4.1 - 1.0 * k / n, -1e-3, mode="cc") for k in range(n)]
    pr = [Sample(T0 + 10 * k + 3, "F", pressure_MPa=5.0 + 3.0 * min(k, 2 * n - k) / n) for k in range(2 * n)]
    for k in range(0, 2 * n, 6):  # live streams arrive interleaved, a minute at a time
        p.process(vi[k : k + 6], "cycler.csv", out)
        p.process(pr[k : k + 6], "loadcell", out)
    p.finish(out)
    assert not out.rejected and len(out.samples) == 4 * n
    charge, discharge = out.steps[0], out.steps[1]
    assert charge.dP_MPa == pytest.approx(3.0, abs=0.05)
    assert discharge.dP_MPa == pytest.approx(-3.0, abs=0.05)
    assert out.cycles[0].dpq_MPa_g_per_Ah is not None


def test_restart_after_a_config_fix_resolves_the_stale_alert_and_relearns() -> None:
    """cell_config advises setting the right kind and restarting; after that restart the cell
    must not stay in warning, its detectors re-learn, and step/cycle numbering carries on (the
    store keys rows by them)."""
    before = Pipeline(parse_settings({"cells": {"H": {"kind": "symmetric"}}}))
    out = RecordBatch()
    before.process([Sample(T0 + 10 * k, "H", 3.5, 1e-3, mode="cc") for k in range(5)], "f", out)
    before.process([Sample(T0 + 50 + 10 * k, "H", 2.3, 0.0, mode="rest") for k in range(10)], "f", out)
    assert [(a.detector, a.state) for a in out.alerts] == [("cell_config", "firing")]
    log = [dict(a.to_json_dict(), time_s=a.time) for a in out.alerts]
    step_index = before.monitors["H"].step_index

    after = Pipeline(parse_settings({"cells": {"H": {"kind": "full", "cathode_mass_g": 0.01}}}))
    after.load(before.state())
    after.alerts.replay_log(log)
    resolved = RecordBatch()
    watched = {c: set() if m.relearning else set(m.detectors) for c, m in after.monitors.items()}
    after.alerts.resolve_orphans(watched, {"cell_config": "data"}, resolved)
    assert [(a.detector, a.kind, a.state) for a in resolved.alerts] == [("cell_config", "data", "resolved")]
    m = after.monitors["H"]
    assert m.status == "ok" and not m.kind_mismatch and m.relearning
    assert m.step_index == step_index and m.step_index > 0  # numbering carries on
    assert not after.alerts.firing


def test_a_channel_that_keeps_reading_impossible_values_is_a_data_alert() -> None:
    p = pipeline()
    out = RecordBatch()
    samples = [Sample(T0 + 10 * k, "A1", 0.05, 4e-4, 5.0, 25.0) for k in range(5)]
    samples.append(Sample(T0 + 50, "A1", float("nan"), 4e-4, 5.0, 25.0))  # one glitch: no alert
    samples += [Sample(T0 + 60 + 10 * k, "A1", 0.05, 4e-4, 5.0, -2500.0) for k in range(12)]  # open thermocouple
    samples += [Sample(T0 + 200 + 10 * k, "A1", 0.05, 4e-4, 5.0, 25.0) for k in range(12)]  # repaired
    p.process(samples, "t", out)
    events = [(a.detector, a.kind, a.state, a.time - T0) for a in out.alerts]
    assert events == [("channel_fault", "data", "firing", 150.0), ("channel_fault", "data", "resolved", 290.0)]
    assert out.alerts[0].evidence["channels"] == ["temperature_C"]
    assert len(out.samples) == 5 + 1 + 12 + 12  # the good channels were kept throughout


def test_a_load_cell_stream_in_newtons_is_a_data_alert_though_no_sample_survives() -> None:
    p = pipeline()
    out = RecordBatch()
    p.process([Sample(T0 + 10 * k, "A1", pressure_MPa=393.0) for k in range(12)], "loadcell", out)
    assert not out.samples and len(out.rejected) == 12
    assert [(a.detector, a.state) for a in out.alerts] == [("channel_fault", "firing")]
    assert "force in N?" in out.alerts[0].evidence["example"]


def test_a_renamed_copy_of_a_cycler_export_is_a_repeat_not_new_data() -> None:
    p = pipeline()
    out = RecordBatch()
    rows = [Sample(T0 + 10 * k, "A1", 0.05, 4e-4, 5.0) for k in range(50)]
    p.process(rows, "/data/A1.csv", out)
    copy = [Sample(x.time, x.cell, x.voltage_V, x.current_A, x.pressure_MPa) for x in rows]
    p.process(copy, "/data/A1-0301.csv", out)  # the exporter renamed the finished file
    assert len(out.samples) == 50  # the copy is set aside: older than the cell's last sample, or equal to it
    assert {r.reason for r in out.rejected} == {"out_of_order", "duplicate"} and len(out.rejected) == 50
