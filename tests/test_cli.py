"""End to end through the `shortwatch` command: replay, export, run (SIGTERM and kill -9)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest

from daemon_process import start_run, wait_for
from shortwatch.cli import main
from shortwatch.sensors.canonical_csv import write_csv
from shortwatch.sensors.files import iter_file
from shortwatch.sensors.simulator import SimulatedCell, default_spec
from shortwatch.storage.sqlite import SqliteStore

START = 1_767_600_000.0


def sim_csv(path: Path, cell: str, scenario: str, seed: int = 1, hours: float | None = None) -> SimulatedCell:
    sim = SimulatedCell(cell, scenario, default_spec(scenario), seed=seed, start=START, duration_h=hours)
    with open(path, "w", encoding="utf-8") as fh:
        write_csv(sim.samples(), fh)
    return sim


def config(tmp_path: Path, extra: str = "", **cells: str) -> Path:
    # http off: daemons of tests running in parallel would all want the default port 9108
    text = f'[daemon]\nstation = "t"\nstate_dir = "{tmp_path / "state"}"\ncheckpoint_interval_s = 0.5\nhttp = ""\n'
    for cell, scenario in cells.items():
        spec = default_spec(scenario)
        text += f'[cells.{cell}]\nkind = "{spec.kind}"\narea_cm2 = {spec.area_cm2}\n'
        if spec.cathode_mass_g:
            text += f"cathode_mass_g = {spec.cathode_mass_g}\n"
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(text + extra)
    return cfg


def test_replay_stores_alerts_and_export_round_trips(tmp_path: Path) -> None:
    sim = sim_csv(tmp_path / "S1.csv", "S1", "sym_sudden_short")
    cfg = config(tmp_path, S1="sym_sudden_short")
    alerts_out = tmp_path / "alerts.jsonl"
    assert main(["replay", "--config", str(cfg), "--alerts-out", str(alerts_out), str(tmp_path / "S1.csv")]) == 0
    events = [json.loads(x) for x in alerts_out.read_text().splitlines()]
    crit = [e for e in events if e["detector"] == "hard_short" and e["state"] == "firing"]
    assert len(crit) == 1 and crit[0]["severity"] == "critical"
    assert set(crit[0]) == {
        "id",
        "episode",
        "time",
        "station",
        "cell",
        "source",
        "detector",
        "kind",
        "severity",
        "state",
        "reminder",
        "summary",
        "evidence",
        "advice",
    }
    assert crit[0]["episode"] == f"S1/hard_short/{crit[0]['time']}"
    assert crit[0]["station"] == "t"
    t_alert = time.mktime(time.strptime(crit[0]["time"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    assert 0 <= t_alert - sim.truth.hard_short_time <= 30  # critical within 30 s of data time

    store = SqliteStore(tmp_path / "state" / "shortwatch.sqlite")
    store.open()
    try:
        n = store.count("sample")
        assert n == sum(1 for _ in iter_file(tmp_path / "S1.csv"))
        assert store.count("cycle") > 10 and store.count("step") > 20
        assert [a["detector"] for a in store.read_alerts("S1") if a["state"] == "firing"] == ["hard_short"]
    finally:
        store.close()
    out = tmp_path / "export.csv"
    assert main(["export", "--config", str(cfg), "--cell", "S1", str(out)]) == 0
    original = [s for s in iter_file(tmp_path / "S1.csv")]
    exported = [s for s in iter_file(out)]
    assert exported == original
    # a time window
    window = ["--since", str(START + 3600), "--until", str(START + 7200)]
    assert main(["export", "--config", str(cfg), *window, str(out)]) == 0
    assert len(list(iter_file(out))) == 360  # [since, until): 10-s samples in one hour


def test_replay_survives_garbage_and_quarantines_it(tmp_path: Path) -> None:
    good = tmp_path / "G1.csv"
    sim_csv(good, "G1", "sym_healthy", hours=20)
    lines = good.read_bytes().splitlines(keepends=True)
    bad = tmp_path / "G2.csv"
    garbage = [b"\x00\xff\xfe garbage\n", b"not,a,number,at,all,,,,\n", lines[5].replace(b"G1", b"G2")]
    bad.write_bytes(lines[0] + b"".join(garbage) + lines[10].replace(b"G1", b"G2")[:20])  # truncated last line
    cfg = config(tmp_path, G1="sym_healthy")
    assert main(["replay", "--config", str(cfg), "--alerts-out", str(tmp_path / "a.jsonl"), str(good), str(bad)]) == 0
    store = SqliteStore(tmp_path / "state" / "shortwatch.sqlite")
    store.open()
    try:
        reasons = sorted(r["reason"] for r in store.read_rejected())
        assert "truncated_line" in reasons and len(reasons) >= 3
        assert store.count("sample") == len(lines) - 1 + 1  # all of G1 and the one good G2 row
    finally:
        store.close()


def test_replay_missing_file_is_a_clear_error(tmp_path: Path, capsys) -> None:
    cfg = config(tmp_path)
    assert main(["replay", "--config", str(cfg), str(tmp_path / "nope.csv")]) == 2
    assert "no such file" in capsys.readouterr().err


def _stored_samples(db: Path) -> int:
    if not db.exists():
        return 0
    store = SqliteStore(db)
    store.open()
    try:
        return store.count("sample")
    finally:
        store.close()


@pytest.mark.slow
def test_daemon_follows_files_stops_cleanly_and_resumes_after_kill_9(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    full = tmp_path / "K1.full.csv"
    sim_csv(full, "K1", "sym_sudden_short", seed=3)
    lines = full.read_bytes().splitlines(keepends=True)
    total = len(lines) - 1
    live = data / "K1.csv"
    live.write_bytes(b"".join(lines[: total // 3]))  # the cycler has written a third so far
    alerts = tmp_path / "alerts.jsonl"
    cfg = config(
        tmp_path,
        extra=f'[alerts]\njsonl_path = "{alerts}"\n'
        f'[[sources]]\ntype = "file"\npaths = ["{data}/*.csv"]\npoll_s = 0.2\n',
        K1="sym_sudden_short",
    )
    db = tmp_path / "state" / "shortwatch.sqlite"

    proc = start_run(cfg)
    try:
        wait_for(lambda: _stored_samples(db) >= total // 3 - 1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
    assert (tmp_path / "state" / "checkpoint.json").exists()

    with open(live, "ab") as fh:  # the cycler writes on, up to and past the short
        fh.write(b"".join(lines[total // 3 :]))
    proc = start_run(cfg)
    try:
        wait_for(lambda: alerts.exists() and "hard_short" in alerts.read_text())
        time.sleep(1.5)  # let a checkpoint land after the alert
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.kill()

    proc = start_run(cfg)  # after kill -9: resume, re-read from the checkpoint, no re-sent alert
    try:
        wait_for(lambda: _stored_samples(db) >= total)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
    assert _stored_samples(db) == total  # every sample once: none lost, none twice
    events = [json.loads(x) for x in alerts.read_text().splitlines()]
    firing = [(e["detector"], e["severity"]) for e in events if e["state"] == "firing"]
    assert firing.count(("hard_short", "critical")) == 1
    assert len(firing) == len(set(firing))


def test_replay_reads_the_good_files_when_one_is_unreadable(tmp_path: Path, capsys) -> None:
    good = tmp_path / "G1.csv"
    sim_csv(good, "G1", "sym_healthy", hours=5)
    cr_only = tmp_path / "CR.csv"  # classic Mac line endings: no line break the reader knows
    cr_only.write_bytes(b"time,cell,voltage_V\r" + b"".join(b"%d,CR,0.05\r" % k for k in range(200_000)))
    cfg = config(tmp_path, G1="sym_healthy")
    assert (
        main(["replay", "--config", str(cfg), "--alerts-out", str(tmp_path / "a.jsonl"), str(cr_only), str(good)]) == 1
    )
    err = capsys.readouterr().err
    assert f"could not read {cr_only}" in err and "CR-only" in err
    assert f"replayed {sum(1 for _ in iter_file(good))} rows" in err


def test_export_rejects_an_unreadable_time(tmp_path: Path, capsys) -> None:
    cfg = config(tmp_path)
    (tmp_path / "state").mkdir()
    SqliteStore(tmp_path / "state" / "shortwatch.sqlite").open()
    assert main(["export", "--config", str(cfg), "--since", "yesterday", str(tmp_path / "o.csv")]) == 2
    assert "use ISO-8601 with an offset" in capsys.readouterr().err


def _follow(path: Path, **kw):
    """A live FileSource on one file, collecting what it emits: (source, items, task)."""
    from shortwatch.sensors.file_source import FileSource

    got: list = []

    async def emit(items, origin=None):
        got.extend(items)

    src = FileSource([str(path)], follow=True, poll_s=0.05, **kw)
    return src, got, asyncio.create_task(src.run(emit))


async def _until(pred, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if pred():
            return
        await asyncio.sleep(0.05)


async def test_a_followed_file_that_is_deleted_and_recreated_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "R1.csv"
    path.write_text("time,voltage_V\n1,0.1\n2,0.1\n")
    src, got, task = _follow(path)
    try:
        await _until(lambda: len(got) == 2)
        path.unlink()
        await asyncio.sleep(0.2)
        path.write_text("time,voltage_V\n10,0.2\n11,0.2\n12,0.2\n")  # a new file at the same path
        await _until(lambda: len(got) == 5)
    finally:
        task.cancel()
    assert [s.time for s in got] == [1, 2, 10, 11, 12]
    assert not src.failed


async def test_idle_followed_files_are_retired_and_revived_when_they_grow(tmp_path: Path) -> None:
    path = tmp_path / "D1.csv"
    path.write_text("time,voltage_V\n1,0.1\n2,0.1\n")
    src, got, task = _follow(path, retire_after_s=0.3, idle_check_s=0.2)
    try:
        await _until(lambda: str(path) in src.idle)
        assert str(path) in src.idle and str(path) not in src.readers  # retired, not reopened
        assert src.checkpoint()["files"][str(path)]["offset"] > 0  # its place is kept
        with open(path, "a") as fh:
            fh.write("3,0.2\n4,0.2\n")
        await _until(lambda: len(got) == 4)
    finally:
        task.cancel()
    assert [s.time for s in got] == [1, 2, 3, 4]  # revived where it stopped: nothing twice
