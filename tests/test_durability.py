"""Nothing lost, nothing repeated: the store's merge of channels, idempotent quarantine, the
bounds on local disk, alert keys that survive any cell id, and one writer per state_dir."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon_process import start_run
from shortwatch.alerts.jsonl import JsonlAlertWriter
from shortwatch.alerts.manager import AlertManager
from shortwatch.cli import main
from shortwatch.daemon.pipeline import Pipeline
from shortwatch.detectors.base import Verdict
from shortwatch.model import RecordBatch, Rejected
from shortwatch.settings import parse_settings
from shortwatch.storage.sqlite import SqliteStore

T0 = 1_700_000_000


def write_config(tmp_path: Path, extra: str = "") -> Path:
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(f'[daemon]\nhttp = ""\nstate_dir = "{tmp_path / "state"}"\n{extra}')
    return cfg


def open_store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path / "state" / "shortwatch.sqlite").open()


def test_a_pressure_only_row_at_the_time_of_a_vi_row_is_merged_not_lost(tmp_path: Path) -> None:
    data = tmp_path / "a.csv"
    data.write_text(
        "time,cell,voltage_V,current_A,pressure_MPa\n"
        f"{T0},A1,0.01,0.0005,\n{T0},A1,,,5.0\n{T0 + 10},A1,0.011,0.0005,\n{T0 + 10},A1,,,5.1\n"
    )
    assert main(["replay", "--config", str(write_config(tmp_path)), "--alerts-out", os.devnull, str(data)]) == 0
    store = open_store(tmp_path)
    rows = [(s.time, s.voltage_V, s.current_A, s.pressure_MPa) for s in store.read_samples("A1")]
    assert rows == [(T0, 0.01, 0.0005, 5.0), (T0 + 10, 0.011, 0.0005, 5.1)]
    # the merged rows are in the log again, so a reader that had the V/I row gets the pressure too
    logged = store.log_read("sample", 0, 100)
    assert [(r["time"], r["pressure_MPa"]) for r in logged] == [(T0, 5.0), (T0 + 10, 5.1)]
    store.close()


def test_a_separate_load_cell_file_merges_into_the_same_samples(tmp_path: Path) -> None:
    vi = tmp_path / "A1.csv"
    vi.write_text("time,voltage_V,current_A\n" + "".join(f"{T0 + 10 * k},0.01,0.0005\n" for k in range(5)))
    lc = tmp_path / "A1_load.csv"
    lc.write_text("time,cell,pressure_MPa\n" + "".join(f"{T0 + 10 * k},A1,5.{k}\n" for k in range(5)))
    cfg = write_config(tmp_path)
    assert main(["replay", "--config", str(cfg), "--alerts-out", os.devnull, str(vi), str(lc)]) == 0
    store = open_store(tmp_path)
    samples = list(store.read_samples("A1"))
    assert [(s.voltage_V, s.pressure_MPa) for s in samples] == [(0.01, 5.0 + k / 10) for k in range(5)]
    store.close()


def test_quarantine_is_idempotent_and_bounded_per_reason(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite", quarantine_rows_per_reason=3).open()
    bad = [Rejected("f.csv", "unparseable", f"garbage {k}", time=float(k)) for k in range(5)]
    other = [Rejected("f.csv", "out_of_order", "1,A,0.1", cell="A", time=1.0)]
    store.write_sync(RecordBatch(rejected=bad[:2] + other))
    store.write_sync(RecordBatch(rejected=bad[:2] + other))  # read again after a restart
    assert store.count("quarantine") == 3
    store.write_sync(RecordBatch(rejected=bad))
    assert store.quarantine_summary() == [
        {"reason": "out_of_order", "kept": 1, "dropped": 0},
        {"reason": "unparseable", "kept": 3, "dropped": 2},
    ]
    store.close()
    store = SqliteStore(tmp_path / "s.sqlite", quarantine_rows_per_reason=3).open()  # the bound holds across opens
    store.write_sync(RecordBatch(rejected=[Rejected("f.csv", "unparseable", "more garbage")]))
    assert store.quarantine_summary()[1] == {"reason": "unparseable", "kept": 3, "dropped": 3}
    store.close()


def verdict(t: float, state: str) -> Verdict:
    return Verdict(time=t, state=state, statistic=1.0, threshold=0.5, summary=f"{state} at {t}", evidence={}, advice="")


def test_alert_state_survives_any_printable_cell_id() -> None:
    """A cell id with '|' used to split into the wrong (cell, detector) on restart."""
    cell = "rig|3 A/B"
    am = AlertManager()
    out = RecordBatch()
    am.handle(cell, {"hard_short": "cell"}, [("hard_short", verdict(T0, "critical"))], out)
    restored = AlertManager()
    restored.load(json.loads(json.dumps(am.state())))
    assert set(restored.firing) == {(cell, "hard_short")}
    out2 = RecordBatch()
    restored.resolve_orphans({cell: {"hard_short"}}, {"hard_short": "cell"}, out2)
    assert out2.alerts == []
    restored.handle(cell, {"hard_short": "cell"}, [("hard_short", verdict(T0 + 10, "ok"))], out2)
    assert [(a.state, a.episode) for a in out2.alerts] == [("resolved", out.alerts[0].episode)]


def test_no_bogus_resolve_for_a_cell_that_fired_before_its_first_checkpoint() -> None:
    """kill -9 before the cell's first checkpoint: its samples are read again and its detectors
    decide again; the log only keeps them from repeating the firing."""
    settings = parse_settings({"cells": {"P9": {"kind": "symmetric"}}})
    p = Pipeline(settings)
    out = RecordBatch()
    p.alerts.handle("P9", {"hard_short": "cell"}, [("hard_short", verdict(T0, "critical"))], out)
    log_rows = [dict(e.to_json_dict(), time_s=e.time) for e in out.alerts]
    restarted = Pipeline(settings)  # no checkpoint held P9
    restarted.alerts.replay_log(log_rows)
    resolutions = RecordBatch()
    watched = {c: set(m.detectors) for c, m in restarted.monitors.items()}
    restarted.alerts.resolve_orphans(watched, {"hard_short": "cell"}, resolutions)
    assert resolutions.alerts == []
    again = RecordBatch()  # the same decision, made again from the same samples
    restarted.alerts.handle("P9", {"hard_short": "cell"}, [("hard_short", verdict(T0, "critical"))], again)
    assert again.alerts == []


def test_retention_removes_only_rows_every_reader_has_passed(tmp_path: Path) -> None:
    from shortwatch.model import Sample

    store = SqliteStore(tmp_path / "s.sqlite").open()
    now = 2_000_000_000.0
    old = [Sample(now - 400 * 86400 + k, "A", 0.01, 0.001, 5.0) for k in range(10)]
    new = [Sample(now - 86400 + k, "A", 0.01, 0.001, 5.0) for k in range(10)]
    store.write_sync(RecordBatch(samples=old + new))
    store.ack("influx:sample", "sample", 5)  # a reader that has sent the first five rows only
    assert store.enforce_retention(365, now=now)["sample"] == 5
    assert store.count("sample") == 15
    store.ack("influx:sample", "sample", 20)
    assert store.enforce_retention(365, now=now)["sample"] == 5
    assert [s.time for s in store.read_samples("A")] == [s.time for s in new]
    # a reader removed from the config (its cursor stuck at 0) holds nothing back once it is not named
    store.write_sync(RecordBatch(samples=[Sample(now - 500 * 86400 + k, "B", 0.01, 0.001, 5.0) for k in range(3)]))
    store.ack("notify:removed", "sample", 0)
    store.ack("influx:sample", "sample", store.log_position("sample"))
    assert store.enforce_retention(365, now=now)["sample"] == 0
    assert store.enforce_retention(365, now=now, readers={"influx:sample"})["sample"] == 3
    store.close()


async def test_jsonl_rotates_by_size_and_keeps_a_few_files(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    writer = JsonlAlertWriter(path, max_bytes=300, keep=2, fsync=False)
    rows = [{"id": str(k), "summary": "x" * 100, "seq": k, "time_s": 0.0} for k in range(12)]
    for k in range(0, 12, 2):
        await writer.deliver(rows[k : k + 2])
    writer.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["alerts.jsonl", "alerts.jsonl.1", "alerts.jsonl.2"]
    ids = [
        json.loads(x)["id"]
        for f in ("alerts.jsonl.2", "alerts.jsonl.1", "alerts.jsonl")
        for x in (tmp_path / f).read_text().splitlines()
    ]
    assert ids == [str(k) for k in range(12 - len(ids), 12)]  # the newest, in order, none twice
    assert all(p.stat().st_size <= 300 + 250 for p in tmp_path.iterdir())


@pytest.mark.slow
def test_replay_into_a_running_daemons_state_dir_is_refused(tmp_path: Path, capsys) -> None:
    (tmp_path / "data").mkdir()
    cfg = write_config(tmp_path, f'[[sources]]\ntype = "file"\npaths = ["{tmp_path / "data"}/*.csv"]\n')
    f = tmp_path / "x.csv"
    f.write_text(f"time,cell,voltage_V,current_A\n{T0},A,0.01,0.001\n")
    proc = start_run(cfg)
    try:
        assert main(["replay", "--config", str(cfg), str(f)]) == 2
        err = capsys.readouterr().err
        assert "in use by shortwatch run" in err and str(proc.pid) in err and "another daemon.state_dir" in err
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    assert main(["replay", "--config", str(cfg), "--alerts-out", os.devnull, str(f)]) == 0  # free again


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 2 MiB tmpfs: a disk that fills up."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.slow
def test_sigterm_with_a_full_disk_ends_in_bounded_time_with_an_error(tmp_path: Path, tiny_disk: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    rows = "".join(f"{T0 + 10 * k},D1,{0.01 + k * 1e-6},0.0005,5.0\n" for k in range(60_000))
    (data / "D1.csv").write_text("time,cell,voltage_V,current_A,pressure_MPa\n" + rows)
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(
        f'[daemon]\nhttp = ""\nstate_dir = "{tiny_disk / "state"}"\nshutdown_timeout_s = 3\n'
        f'[[sources]]\ntype = "file"\npaths = ["{data}/*.csv"]\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "shortwatch.cli", "run", "--config", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while "disk is full" not in _stderr_so_far(proc) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "disk is full" in _stderr_so_far(proc)
        checkpoint = tiny_disk / "state" / "checkpoint.json"
        before = checkpoint.read_bytes() if checkpoint.exists() else None
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
        took = time.monotonic() - t0
    finally:
        proc.kill()
    err = proc.stderr.read() if proc.stderr else ""
    assert rc == 1, err
    assert took < 30
    assert "could not be written" in _STDERR[proc.pid] + err
    assert (checkpoint.read_bytes() if checkpoint.exists() else None) == before  # left at the last committed point


_STDERR: dict[int, str] = {}


def _stderr_so_far(proc: subprocess.Popen) -> str:
    """Read what the daemon has logged so far without blocking."""
    import fcntl

    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
    try:
        chunk = os.read(fd, 1 << 20).decode("utf-8", "replace")
    except BlockingIOError:
        chunk = ""
    _STDERR[proc.pid] = _STDERR.get(proc.pid, "") + chunk
    return _STDERR[proc.pid]


def run_live(state: Path, source, settings_extra: dict | None = None) -> None:
    """One `run` of the daemon's runner over ``source``, stopped when the source ends."""
    import asyncio

    from shortwatch.daemon.runner import Runner

    settings = parse_settings({"daemon": {"state_dir": str(state), "http": ""}, **(settings_extra or {})})
    store = SqliteStore(settings.store_path).open()
    try:
        asyncio.run(Runner(settings, [source], store, live=True, use_checkpoints=True).run())
    finally:
        store.close()


def records(state: Path, cell: str) -> dict:
    """What the detectors made of the cell's samples (stale_data, which reads the wall clock, left out)."""
    with SqliteStore(state / "shortwatch.sqlite").open() as store:
        drop = {"seq"}
        return {
            "samples": store.count("sample"),
            "steps": [{k: v for k, v in r.items() if k not in drop} for r in store.read_steps(cell)],
            "cycles": [{k: v for k, v in r.items() if k not in drop} for r in store.read_cycles(cell)],
            "alerts": [
                (a["time_s"], a["detector"], a["state"], a["severity"])
                for a in store.read_alerts(cell)
                if a["detector"] != "stale_data"
            ],
            "quarantined": store.count("quarantine"),
        }


def test_rows_a_file_source_reads_again_after_a_kill_9_are_neither_stored_twice_nor_quarantined(
    tmp_path: Path,
) -> None:
    """A followed file is read again from the checkpointed offset after a kill -9: the detectors
    see those rows once more (their state is the checkpoint's) and the store merges them, so the
    run's steps, cycles and alerts equal those of a run that was never killed."""
    from shortwatch.cli import build_sources

    rows = [f"{T0 + 10 * k},F1,{0.02 if (k // 30) % 2 == 0 else -0.02},{0.0004 if (k // 30) % 2 == 0 else -0.0004}\n"
            for k in range(600)]  # fmt: skip
    data = tmp_path / "data.csv"
    header = "time,cell,voltage_V,current_A\n"
    config = {"sources": [{"type": "file", "paths": [str(data)], "follow": False}]}

    def run(state: Path) -> None:
        settings = parse_settings({"daemon": {"state_dir": str(state), "http": ""}, **config})
        run_live(state, build_sources(settings)[0], config)

    data.write_text(header + "".join(rows))
    run(tmp_path / "ref")
    ref = records(tmp_path / "ref", "F1")

    state = tmp_path / "killed"
    data.write_text(header + "".join(rows[:200]))
    run(state)
    at_checkpoint = (state / "checkpoint.json").read_bytes()
    data.write_text(header + "".join(rows[:400]))
    run(state)
    (state / "checkpoint.json").write_bytes(at_checkpoint)  # killed after committing rows 200-399
    data.write_text(header + "".join(rows))
    run(state)  # reads rows 200-599 again from the checkpointed offset
    assert records(state, "F1") == ref
    assert ref["quarantined"] == 0 and ref["samples"] == 600
