"""The demo report: PNGs per cell and an index.html that lists cells and alerts."""

from __future__ import annotations

import dataclasses
import html
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from shortwatch.model import AlertEvent, CycleFeatures, RecordBatch, Sample
from shortwatch.report import build_report, final_status
from shortwatch.settings import CellSpec
from shortwatch.storage.sqlite import SqliteStore

T0 = 1_767_600_000.0
HOURS = 48


def cell_samples(cell: str, pressure: bool, volts: float) -> list[Sample]:
    t = np.arange(0, HOURS * 3600, 10.0)
    sign = np.where((t // 3600) % 2 == 0, 1.0, -1.0)
    v = volts + 0.02 * sign * (1 - 0.3 * t / t[-1])
    p = 5 + 0.2 * np.sin(t / 5000) if pressure else [None] * len(t)
    return [
        Sample(T0 + ti, cell, vi, 1e-3 * si, pi, 25.0, int(ti // 7200), int(ti // 3600), "cc")
        for ti, vi, si, pi in zip(t.tolist(), v.tolist(), sign.tolist(), list(p), strict=True)
    ]


def cycles(cell: str, full: bool) -> list[CycleFeatures]:
    blank = dict.fromkeys((f.name for f in dataclasses.fields(CycleFeatures)), None)
    out = []
    for k in range(HOURS // 2):
        values = blank | {
            "cell": cell,
            "cycle": k,
            "t_start": T0 + k * 7200,
            "t_end": T0 + (k + 1) * 7200,
            "n_steps": 2,
            "q_charge_Ah": 1e-3,
            "q_discharge_Ah": 0.99e-3,
            "charge_v_dips": 0,
        }
        if full:
            values |= {"ce": 0.99 - 0.001 * k, "dpq_MPa_g_per_Ah": 12.0 - 0.2 * k}
        else:
            values |= {"asr_ohm_cm2": 50.0 - 0.5 * k, "cv_peak_A": 1e-5 * (1 + k) if k % 6 == 0 else None}
        out.append(CycleFeatures(**values))
    return out


def alert(cell: str, hours: float, detector: str, severity: str, state: str, summary: str) -> AlertEvent:
    return AlertEvent(
        time=T0 + hours * 3600,
        cell=cell,
        detector=detector,
        kind="cell",
        severity=severity,  # type: ignore[arg-type]
        state=state,  # type: ignore[arg-type]
        summary=summary,
        evidence={"statistic": 7.9},
        advice="Run a CV check <now> & compare",
    )


ALERTS = [
    alert("S1", 20, "overpotential_drop", "warning", "firing", "Overpotential fell 38% <soft breakdown>"),
    alert("S1", 30, "overpotential_drop", "warning", "resolved", "Overpotential recovered"),
    alert("S1", 40, "hard_short", "critical", "firing", "Voltage collapsed to 0 V & stayed"),
    alert("F1", 24, "pressure_dpq_decline", "warning", "firing", 'd(dP)_Q fell "40%" in 10 cycles'),
    alert("F1", 25, "stale_data", "info", "firing", "No data for 10 min"),
]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("report")
    with SqliteStore(tmp / "store.sqlite") as store:
        store.write_sync(
            RecordBatch(
                samples=cell_samples("S1", True, 0.0) + cell_samples("F1", False, 3.8),
                cycles=cycles("S1", full=False) + cycles("F1", full=True),
                alerts=ALERTS,
            )
        )
        store.write_sync(RecordBatch(samples=cell_samples("E/1", False, 0.0)[:500]))
        specs = {"S1": CellSpec(kind="symmetric"), "F1": CellSpec(kind="full")}
        return build_report(store, tmp / "out", specs=lambda c: specs.get(c, CellSpec()), title="Lab <1>")


def test_one_valid_png_per_cell(report: Path) -> None:
    pngs = sorted(p.name for p in report.parent.glob("*.png"))
    cells = ["E_1.png", "F1.png", "S1.png"]
    # one evidence image per alert that fired
    evidence = ["F1-pressure_dpq_decline.png", "F1-stale_data.png", "S1-hard_short.png", "S1-overpotential_drop.png"]
    assert pngs == sorted(cells + evidence)
    for name in pngs:
        path = report.parent / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 10_000
        assert imread(path).shape == ((900, 1200, 4) if name in cells else (650, 1000, 4))
    text = report.read_text(encoding="utf-8")
    for name in evidence:
        assert f'src="{name}"' in text


def test_index_lists_cells_and_escaped_alerts(report: Path) -> None:
    text = report.read_text(encoding="utf-8")
    assert "<title>Lab &lt;1&gt;</title>" in text
    for cell, image in (("S1", "S1.png"), ("F1", "F1.png"), ("E/1", "E_1.png")):
        assert f">{cell}</a>" in text
        assert f'src="{image}"' in text
    for a in ALERTS:
        assert html.escape(a.summary) in text
    assert "<soft breakdown>" not in text and "Run a CV check &lt;now&gt; &amp; compare" in text
    row = text[text.index(">S1</a>") : text.index("</tr>", text.index(">S1</a>"))]
    assert "symmetric" in row and "17,280" in row and ">24<" in row and ">2<" in row
    assert 'class="critical">critical<' in row  # worst fired and status at the end
    row = text[text.index(">E/1</a>") : text.index("</tr>", text.index(">E/1</a>"))]
    assert ">500<" in row and ">0<" in row and ">ok<" in row


def test_final_status() -> None:
    dicts = [e.to_json_dict() | {"time_s": e.time} for e in ALERTS]
    assert final_status(d for d in dicts if d["cell"] == "S1") == "critical"
    assert final_status(d for d in dicts if d["cell"] == "F1") == "warning"
    assert final_status(dicts[:2]) == "ok"
    assert final_status([]) == "ok"


def test_the_envelope_keeps_a_40_s_excursion_that_decimation_loses(tmp_path: Path) -> None:
    t = np.arange(0, 7 * 86400, 10.0)  # a week of 10-s samples
    p = np.full(len(t), 5.0)
    k = len(t) // 2 + 37
    p[k : k + 4] = 12.0  # 40 s at 12 MPa
    samples = [Sample(T0 + ti, "P", 0.05, 1e-3, pi) for ti, pi in zip(t.tolist(), p.tolist(), strict=True)]
    with SqliteStore(tmp_path / "s.sqlite") as store:
        store.write_sync(RecordBatch(samples=samples))
        assert np.nanmax(store.read_samples_decimated("P", 2000)["pressure_MPa"]) == 5.0  # the old way
        env = store.read_samples_envelope("P", 2000)
        assert len(env["time"]) <= 2000 and env["n"].sum() == len(t)
        assert np.nanmax(env["pressure_MPa_max"]) == 12.0 and np.nanmin(env["pressure_MPa_min"]) == 5.0
        part = store.read_samples_envelope("P", 100, since=T0 + 86400, until=T0 + 2 * 86400)
        assert part["n"].sum() == 8640 and part["time"][0] == T0 + 86400


def test_robust_limits_ignore_a_lone_spike_but_keep_the_marks() -> None:
    from shortwatch.report import robust_limits

    peaks = np.array([0.9, 0.85, 0.82, 0.84, 0.9, 0.96, 1.0, 56.5])  # CV peaks (mA), then a short
    lo, hi = robust_limits(peaks)
    assert hi < 1.2 and lo > 0.7
    lo, hi = robust_limits(peaks, include=[1.18])  # the threshold stays on the panel
    assert hi > 1.18
    assert robust_limits(np.array([np.nan])) is None
    ce_failing = np.array([0.87] + [0.998] * 9 + [0.94, 0.86, 0.75, 0.59, 0.39])  # CE falls before a short
    assert robust_limits(ce_failing)[0] < 0.39  # the decline is evidence: all of it in view
    ce_healthy = np.array([0.87] + [0.998, 0.999, 0.997] * 9)  # a formation cycle, then steady
    assert robust_limits(ce_healthy)[0] > 0.99


def test_one_line_style_per_detector_on_every_cell() -> None:
    from shortwatch.report import detector_style

    styles = {d: detector_style(d) for d in ("overpotential_drop", "cv_current_rise", "hard_short", "custom")}
    assert styles == {d: detector_style(d) for d in styles}
    assert styles["overpotential_drop"] != styles["cv_current_rise"]


def test_report_command_for_one_cell_and_a_time_range(tmp_path: Path, report: Path, capsys) -> None:
    from shortwatch.cli import main

    store_path = report.parent.parent / "store.sqlite"
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[daemon]\nstate_dir = "{tmp_path}"\n[storage]\npath = "{store_path}"\n')
    out = tmp_path / "out"
    since = T0 + 35 * 3600
    assert main(["report", "--config", str(cfg), "--cell", "S1", "--since", str(since), str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["S1-hard_short.png", "S1.png"]  # the 20 h alert is before
    text = (out / "index.html").read_text()
    assert "F1" not in text and "13 cycles" not in text
    row = text[text.index(">S1</a>") : text.index("</tr>", text.index(">S1</a>"))]
    assert f">{13 * 3600 // 10:,}<" in row  # samples from 35 h to 48 h
    assert main(["report", "--config", str(cfg), "--cell", "nope", str(out)]) == 2
    assert "no samples for cell(s) nope" in capsys.readouterr().err


def test_a_cv_rise_plot_draws_the_rule_that_fired() -> None:
    """The rise rule (a rise from the lowest check, seen twice running) fired, not omega: the
    line drawn is the lowest peak times (1 + rise fraction), and both lines say they are
    referred to 25 C, since the points are as measured."""
    from shortwatch.report import feature_trend

    cycles = [{"cycle": c, "cv_peak_A": i} for c, i in ((41, 8.2e-4), (49, 8.3e-4), (69, 9.6e-4), (73, 1.007e-3))]
    ev = {"cycle": 73, "peak_current_A": 1.007e-3, "initial_peak_A": 9.9e-4, "threshold": 0.2, "omega": 0.02,
          "lowest_peak_A": 8.28e-4, "rise_fraction": 0.15, "rising_checks": 2}  # fmt: skip
    t = feature_trend("cv_current_rise", ev, [], cycles)
    assert t is not None and t.threshold == pytest.approx(8.28e-4 * 1.15 * 1e3)
    assert "25 °C" in t.baseline_label and "25 °C" in t.threshold_label and "1.15" in t.threshold_label
    omega = feature_trend("cv_current_rise", {**ev, "omega": 0.25, "peak_current_A": 1.24e-3}, [], cycles)
    assert omega is not None and omega.threshold == pytest.approx(9.9e-4 * 1.2 * 1e3)
