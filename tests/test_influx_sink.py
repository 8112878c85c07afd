"""The InfluxDB sink end to end, on a real influxd 1.6 (and victoria-metrics for v2): backfill
through an outage, kill -9 while writing, a day streamed with InfluxDB down, and a point
InfluxDB refuses. The data comes from the simulator (sensors/simulator.py)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from influx_servers import Influxd, VictoriaMetrics
from shortwatch.cli import main
from shortwatch.sensors.canonical_csv import write_csv
from shortwatch.sensors.simulator import SimulatedCell, default_spec
from shortwatch.storage.sqlite import SqliteStore

START = 1_767_600_000.0
DB = "sw"
#: the demo's eight cells (config/demo.toml): every scenario family
CELLS = {
    "A1": "sym_healthy",
    "A2": "sym_contact",
    "A3": "sym_temperature",
    "A4": "sym_soft_hard",
    "A5": "sym_cv_rise",
    "B1": "full_healthy",
    "B2": "full_dpq_short",
    "B3": "full_charge_fluct_short",
}
#: per log table: the InfluxDB measurement's always-present field, and the SQLite key columns
TABLES = {"sample": "voltage_V", "step": "duration_s", "cycle": "q_charge_Ah"}

pytestmark = pytest.mark.skipif(not Influxd.available(), reason="influxd is not installed")


@pytest.fixture
def influxd(tmp_path: Path):
    server = Influxd(tmp_path / "influxd").start()
    server.query(f"CREATE DATABASE {DB}")
    yield server
    server.stop()


def _config(tmp_path: Path, url: str, extra: str = "", storage: str = "", cell_extra: dict | None = None) -> Path:
    text = f'[daemon]\nhttp = ""\nstation = "t"\nstate_dir = "{tmp_path / "state"}"\ncheckpoint_interval_s = 0.5\n'
    text += f'[storage]\nbackend = "influxdb"\nurl = "{url}"\napi = "v1"\ndatabase = "{DB}"\n{storage}'
    for cell, scenario in CELLS.items():
        spec = default_spec(scenario)
        text += f'[cells.{cell}]\nkind = "{spec.kind}"\narea_cm2 = {spec.area_cm2}\n'
        if spec.cathode_mass_g:
            text += f"cathode_mass_g = {spec.cathode_mass_g}\n"
        text += (cell_extra or {}).get(cell, "")
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(text + extra)
    return cfg


def _sim_csvs(folder: Path, hours: float, cells: dict[str, str] = CELLS) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for cell, scenario in cells.items():
        sim = SimulatedCell(cell, scenario, default_spec(scenario), seed=7, start=START, duration_h=hours)
        path = folder / f"{cell}.csv"
        with open(path, "w", encoding="utf-8") as fh:
            write_csv(sim.samples(), fh)
        paths.append(path)
    return paths


def _sqlite(tmp_path: Path):
    store = SqliteStore(tmp_path / "state" / "shortwatch.sqlite")
    store.open()
    return store


def _sqlite_keys(tmp_path: Path) -> dict[str, dict[str, int]]:
    """Per table and cell: rows in SQLite."""
    store = _sqlite(tmp_path)
    try:
        return {t: {c: store.count(t, c) for c in CELLS} for t in TABLES}
    finally:
        store.close()


def _influx_keys(server: Influxd) -> dict[str, dict[str, int]]:
    """Per measurement and cell: points in InfluxDB (InfluxQL count of an always-present field)."""
    out: dict[str, dict[str, int]] = {}
    for m, f in TABLES.items():
        series = server.query(f'SELECT count("{f}") FROM "{m}" GROUP BY "cell"', DB)
        counts = {s["tags"]["cell"]: int(s["values"][0][1]) for s in series}
        out[m] = {c: counts.get(c, 0) for c in CELLS}
    return out


def _wait_for(pred, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _shortwatch(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "shortwatch.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.slow
def test_backfill_a_week_of_8_cells_through_an_influxd_outage(tmp_path: Path, influxd: Influxd) -> None:
    files = _sim_csvs(tmp_path / "data", hours=168)
    cfg = _config(tmp_path, influxd.url, storage="retry_max_s = 1\n")
    proc = _shortwatch(
        "replay",
        "--config",
        str(cfg),
        "--alerts-out",
        str(tmp_path / "a.jsonl"),
        "--influx-timeout",
        "120",
        *map(str, files),
    )
    try:
        _wait_for(lambda: influxd.count(DB, "sample", "voltage_V") > 20_000, what="the first samples in InfluxDB")
        influxd.stop()  # an upgrade, a restart: in the middle of the backfill
        time.sleep(4)
        influxd.start()
        _, err = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "write of" in err and "failed" in err, "the outage was not noticed: " + err
    assert "is writable again" in err
    assert "confirmed every row" in err
    sqlite = _sqlite_keys(tmp_path)
    assert sum(sqlite["sample"].values()) == 8 * 168 * 360
    assert all(n > 0 for n in sqlite["cycle"].values())
    assert _influx_keys(influxd) == sqlite  # exactly what SQLite holds, per cell: none lost, none twice
    # and the same steps, not just as many: every (cell, step_index) once
    series = influxd.query('SELECT "step_index" FROM "step" GROUP BY "cell"', DB)
    influx_steps = sorted((s["tags"]["cell"], int(v[1])) for s in series for v in s["values"])
    store = _sqlite(tmp_path)
    try:
        sqlite_steps = sorted((c, r["step_index"]) for c in CELLS for r in store.read_steps(c))
        backlog = {t: store.log_backlog(t, f"influx:{t}") for t in ("sample", "step", "cycle", "detector", "alert")}
    finally:
        store.close()
    assert influx_steps == sqlite_steps
    assert all(rows == 0 for rows, _ in backlog.values())


def test_replay_with_influxdb_unreachable_says_what_is_pending_and_the_next_run_sends_it(
    tmp_path: Path, influxd: Influxd, capsys
) -> None:
    files = _sim_csvs(tmp_path / "data", hours=6, cells={"A1": "sym_healthy"})
    influxd.stop()
    cfg = _config(tmp_path, influxd.url, storage="retry_max_s = 0.5\n")
    args = ["replay", "--config", str(cfg), "--alerts-out", str(tmp_path / "a.jsonl"), "--no-progress"]
    assert main([*args, "--influx-timeout", "2", *map(str, files)]) == 3
    err = capsys.readouterr().err
    assert re.search(r"has not confirmed \d+ rows yet \(sample 2160, step \d+, cycle \d+\): .*Connection refused", err)
    assert "the next `shortwatch run` or `shortwatch replay` sends them" in err
    influxd.start()
    assert main([*args, *map(str, files)]) == 0  # the same files again: nothing new, the backlog goes out
    assert "confirmed every row" in capsys.readouterr().err
    assert influxd.count(DB, "sample", "voltage_V") == 2160


def _daemon_config(tmp_path: Path, url: str, hours: float, speedup: float, extra: str = "", **kw) -> Path:
    """The simulator streams ``hours`` of 8 cells; a followed (empty) export folder keeps the
    daemon running after that, as a lab's would."""
    (tmp_path / "exports").mkdir(exist_ok=True)
    cells = "".join(f'{c} = "{s}"\n' for c, s in CELLS.items())
    src = f'[[sources]]\ntype = "file"\npaths = ["{tmp_path / "exports"}/*.csv"]\n'
    src += f'[[sources]]\ntype = "simulator"\nseed = 3\nspeedup = {speedup}\nperiod_s = 10\nduration_h = {hours}\n'
    return _config(tmp_path, url, extra=extra + src + "[sources.cells]\n" + cells, **kw)


def _stored(tmp_path: Path, table: str = "sample") -> int:
    db = tmp_path / "state" / "shortwatch.sqlite"
    if not db.exists():
        return 0
    store = _sqlite(tmp_path)
    try:
        return store.count(table)
    finally:
        store.close()


@pytest.mark.slow
def test_kill_9_while_writing_then_influxdb_holds_exactly_what_was_accepted(tmp_path: Path, influxd: Influxd) -> None:
    hours = 24
    total = 8 * hours * 360
    cfg = _daemon_config(tmp_path, influxd.url, hours, speedup=8000, storage="batch_rows = 500\n")
    proc = _shortwatch("run", "--config", str(cfg))
    try:
        _wait_for(lambda: influxd.count(DB, "sample", "voltage_V") > 3000, what="samples in InfluxDB")
        os.kill(proc.pid, signal.SIGKILL)  # while it writes
        proc.wait(timeout=10)
    finally:
        proc.kill()
    before = influxd.count(DB, "sample", "voltage_V")
    assert 0 < before < total
    proc = _shortwatch("run", "--config", str(cfg))
    try:
        _wait_for(lambda: _stored(tmp_path) >= total, timeout=120, what="the whole day stored")
        _wait_for(lambda: influxd.count(DB, "sample", "voltage_V") >= total, timeout=120, what="InfluxDB caught up")
        time.sleep(2.0)  # the last steps and cycles
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert _stored(tmp_path) == total
    assert _influx_keys(influxd) == _sqlite_keys(tmp_path)


@pytest.mark.slow
def test_a_day_streams_in_while_influxd_is_down_and_the_backlog_drains_after(tmp_path: Path, influxd: Influxd) -> None:
    hours = 24
    total = 8 * hours * 360
    jsonl = tmp_path / "alerts.jsonl"
    influxd.stop()
    cfg = _daemon_config(
        tmp_path,
        influxd.url,
        hours,
        speedup=20000,
        extra=f'[alerts]\njsonl_path = "{jsonl}"\n',
        storage="retry_max_s = 1\nbacklog_alert_age_s = 2\nhealth_interval_s = 0.5\n",
        # B1 runs at ~5 MPa: a window that ends at 2 MPa makes a cell alert early in the day
        cell_extra={"B1": "pressure_window = { min_MPa = 0.5, max_MPa = 2.0 }\n"},
    )
    proc = _shortwatch("run", "--config", str(cfg))
    try:
        _wait_for(lambda: _stored(tmp_path) >= total, timeout=120, what="the day stored with InfluxDB down")

        def events() -> list[dict]:
            return [json.loads(x) for x in jsonl.read_text().splitlines()] if jsonl.exists() else []

        # alerts and the JSONL file flowed meanwhile: the cells' alerts, and the backlog's own
        _wait_for(lambda: any(e["detector"] == "influx_backlog" for e in events()), what="the backlog alert")
        cell_alerts = [e for e in events() if e["cell"] is not None]
        assert len(cell_alerts) == _stored(tmp_path, "alert") - sum(e["cell"] is None for e in events())
        assert any(e["detector"] == "pressure_window" and e["cell"] == "B1" for e in cell_alerts)
        fired = next(e for e in events() if e["detector"] == "influx_backlog")
        assert fired["state"] == "firing" and fired["kind"] == "data" and fired["source"] == "influxdb"
        assert fired["cell"] is None and fired["evidence"]["rows_pending"] > 0
        influxd.start()
        _wait_for(lambda: influxd.count(DB, "sample", "voltage_V") >= total, timeout=120, what="the backlog drained")
        _wait_for(
            lambda: any(e["detector"] == "influx_backlog" and e["state"] == "resolved" for e in events()),
            what="the backlog alert resolved",
        )
        time.sleep(1.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert _influx_keys(influxd) == _sqlite_keys(tmp_path)
    resolved = [e for e in events() if e["detector"] == "influx_backlog" and e["state"] == "resolved"]
    assert resolved[0]["episode"] == fired["episode"]
    backlog_points = influxd.query('SELECT "state", "severity" FROM "alert" WHERE "cell" = \'_station\'', DB)
    assert [v[1] for v in backlog_points[0]["values"]] == ["firing", "resolved"]
    # the daemon's health points: the backlog rose while influxd was down, and drained (the
    # last point may still count the newest rows, on their way)
    (health,) = influxd.query('SELECT "influx_backlog_rows", "samples_accepted" FROM "daemon"', DB)
    backlog = [v[1] for v in health["values"]]
    assert max(backlog) > 0.5 * total and backlog[-1] < 0.01 * max(backlog)
    assert max(v[2] for v in health["values"]) == total


def test_a_point_with_a_wrong_field_type_goes_to_quarantine_and_the_rest_is_stored(
    tmp_path: Path, influxd: Influxd
) -> None:
    # another writer (an old logger) already stored temperature_C as text in this shard
    urlopen_write(influxd, f'sample,cell=legacy,station=t temperature_C="25 C" {int(START * 1e6)}')
    rows = ["time,cell,voltage_V,current_A,pressure_MPa,temperature_C"]
    for k in range(300):
        temp = "25.0" if k == 150 else ""
        rows.append(f"{START + 10 * k},T1,0.01,0.0,5.0,{temp}")
    csv = tmp_path / "T1.csv"
    csv.write_text("\n".join(rows) + "\n")
    cfg = _config(tmp_path, influxd.url)
    assert main(["replay", "--config", str(cfg), "--alerts-out", str(tmp_path / "a.jsonl"), str(csv)]) == 0
    assert influxd.count(DB, "sample", "voltage_V") == 299  # all but the refused point
    store = _sqlite(tmp_path)
    try:
        (q,) = [r for r in store.read_rejected() if r["reason"] == "influx_rejected"]
        assert store.count("sample") == 300  # SQLite keeps it, of course
    finally:
        store.close()
    assert q["cell"] == "T1" and q["time"] == START + 1500
    assert q["raw"].startswith("sample,cell=T1,station=t ") and "temperature_C=25" in q["raw"]
    assert q["detail"].startswith("HTTP 400: partial write: field type conflict")
    assert (
        'input field "temperature_C" on measurement "sample" is type float, already exists as type string'
        in (q["detail"])
    )


def urlopen_write(server: Influxd, line: str) -> None:
    import urllib.request

    req = urllib.request.Request(f"{server.url}/write?db={DB}&precision=u", data=line.encode())
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 204


def test_replay_into_the_v2_api_of_victoria_metrics(tmp_path: Path, monkeypatch) -> None:
    if not VictoriaMetrics.available():
        pytest.skip("victoria-metrics is not installed")
    vm = VictoriaMetrics(tmp_path / "vm").start()
    monkeypatch.setenv("SW_TOKEN", "t0ken")
    try:
        files = _sim_csvs(tmp_path / "data", hours=12, cells={"B1": "full_healthy"})
        cfg = tmp_path / "v2.toml"
        cfg.write_text(
            f'[daemon]\nstation = "t"\nstate_dir = "{tmp_path / "state"}"\n[storage]\nbackend = "influxdb"\n'
            f'url = "{vm.url}"\napi = "v2"\norg = "lab"\nbucket = "sw"\ntoken_env = "SW_TOKEN"\nprecision = "ms"\n'
        )
        assert main(["replay", "--config", str(cfg), "--alerts-out", str(tmp_path / "a.jsonl"), *map(str, files)]) == 0
        store = _sqlite(tmp_path)
        try:
            want = {"sample": store.count("sample"), "cycle": store.count("cycle")}
        finally:
            store.close()
        got_samples = vm.export('{__name__="sample_voltage_V"}')
        got_cycles = vm.export('{__name__="cycle_q_charge_Ah"}')
        assert sum(len(s["values"]) for s in got_samples) == want["sample"] == 12 * 360
        assert sum(len(s["values"]) for s in got_cycles) == want["cycle"] > 0
        assert {s["metric"]["cell"] for s in got_samples} == {"B1"}
    finally:
        vm.stop()


def test_sending_everything_again_overwrites_and_never_duplicates(tmp_path: Path, influxd: Influxd) -> None:
    """Points are keyed by measurement + tags + timestamp: the whole log sent a second time
    (cursors forgotten, as docs/influxdb.md describes) leaves InfluxDB as it was."""
    import sqlite3

    files = _sim_csvs(tmp_path / "data", hours=12, cells={"A4": "sym_soft_hard", "B2": "full_dpq_short"})
    cfg = _config(tmp_path, influxd.url)
    args = ["replay", "--config", str(cfg), "--alerts-out", str(tmp_path / "a.jsonl"), *map(str, files)]
    assert main(args) == 0
    first = {m: influxd.query(f'SELECT count(*) FROM "{m}"', DB) for m in ("sample", "step", "cycle", "detector")}
    with sqlite3.connect(tmp_path / "state" / "shortwatch.sqlite") as db:
        db.execute("DELETE FROM cursor WHERE name LIKE 'influx:%'")
    assert main(args) == 0
    again = {m: influxd.query(f'SELECT count(*) FROM "{m}"', DB) for m in first}
    assert again == first
    store = _sqlite(tmp_path)
    try:
        assert influxd.count(DB, "sample", "voltage_V") == store.count("sample") == 2 * 12 * 360
        assert influxd.count(DB, "step", "duration_s") == store.count("step") > 0
    finally:
        store.close()
