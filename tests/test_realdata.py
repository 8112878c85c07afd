"""Real instrument exports from ../shared/realdata, read end to end through the pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shortwatch.daemon.pipeline import Pipeline
from shortwatch.model import RecordBatch
from shortwatch.sensors.files import iter_file
from shortwatch.settings import parse_settings

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
MPT = REALDATA / "gcpl.pr_182.1.mpt"
pytestmark = pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata is not beside the checkout")


def file_q_columns(path: Path) -> dict[int, tuple[float, float]]:
    """The file's own per-cycle Q charge / Q discharge (mAh), read straight from its columns."""
    lines = path.read_text(encoding="latin-1").splitlines()
    n_header = int(lines[1].split(":")[1])
    names = lines[n_header - 1].split("\t")
    rows = np.array([[float(x) for x in ln.split("\t")[: len(names) - 1]] for ln in lines[n_header:]])
    col = {n: i for i, n in enumerate(names)}
    out = {}
    for c in np.unique(rows[:, col["cycle number"]]):
        m = rows[:, col["cycle number"]] == c
        out[int(c)] = (rows[m, col["Q charge/mA.h"]].max(), rows[m, col["Q discharge/mA.h"]].max())
    return out


def run_pipeline(path: Path, cells: dict) -> tuple[Pipeline, RecordBatch]:
    p = Pipeline(parse_settings({"cells": cells}))
    out = RecordBatch()
    p.process(iter_file(path), "test", out)
    p.finish(out)
    return p, out


def test_biologic_gcpl_cycles_and_capacities_match_the_file() -> None:
    _, out = run_pipeline(MPT, {"gcpl.pr_182.1": {"kind": "full", "area_cm2": 1.0}})
    assert len(out.samples) == 2533 and not out.rejected
    expected = file_q_columns(MPT)
    assert [c.cycle for c in out.cycles] == sorted(expected) == [0, 1, 2, 3, 4]
    for c in out.cycles:
        q_ch, q_dis = expected[c.cycle]
        assert c.q_charge_Ah * 1000 == pytest.approx(q_ch, rel=1e-4, abs=1e-6)
        assert c.q_discharge_Ah * 1000 == pytest.approx(q_dis, rel=1e-4, abs=1e-6)
    kinds = [s.step_kind for s in out.steps]
    assert kinds[:5] == ["rest", "discharge", "cv_discharge", "rest", "charge"]
    assert out.cycles[2].ce == pytest.approx(expected[2][1] / expected[2][0], rel=1e-4)


@pytest.mark.parametrize("kind", ["full", "symmetric"])
def test_healthy_real_export_gives_no_cell_alerts(kind: str) -> None:
    _, out = run_pipeline(MPT, {"gcpl.pr_182.1": {"kind": kind, "area_cm2": 1.0}})
    assert [a.summary for a in out.alerts if a.kind == "cell"] == []
    data = [a.detector for a in out.alerts if a.kind == "data"]
    # a half cell taken for symmetric rests at volts: said once, as a data alert
    assert data == (["cell_config"] if kind == "symmetric" else [])


def test_replay_command_on_the_real_export_gives_no_cell_alerts(tmp_path: Path) -> None:
    from shortwatch.cli import main

    cfg = tmp_path / "cfg.toml"
    cfg.write_text(
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n[cells."gcpl.pr_182.1"]\nkind = "full"\narea_cm2 = 1.0\n'
    )
    alerts = tmp_path / "alerts.jsonl"
    assert main(["replay", "--config", str(cfg), "--alerts-out", str(alerts), str(MPT)]) == 0
    assert alerts.read_text() == ""  # no alert of any kind on a healthy cell

    from shortwatch.storage.sqlite import SqliteStore

    store = SqliteStore(tmp_path / "state" / "shortwatch.sqlite")
    store.open()
    try:
        assert store.count("sample") == 2533 and store.count("cycle") == 5
    finally:
        store.close()


@pytest.mark.parametrize("path", sorted(REALDATA.glob("*.mpt")), ids=lambda p: p.name)
@pytest.mark.parametrize("kind", ["full", "anode-free"])
def test_every_readable_real_export_gives_no_cell_alerts(path: Path, kind: str) -> None:
    """Healthy real cells, whatever their protocol: no detector may cry wolf on them."""
    _, out = run_pipeline(path, {path.stem: {"kind": kind, "area_cm2": 1.0}})
    assert len(out.samples) > 100
    assert [a.summary for a in out.alerts if a.kind == "cell"] == []
