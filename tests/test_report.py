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
