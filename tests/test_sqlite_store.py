"""The embedded SQLite store: round trips, idempotent imports, backpressure, retries."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from shortwatch.model import (
    AlertEvent,
    CycleFeatures,
    DetectorStatus,
    RecordBatch,
    Rejected,
    Sample,
    StepFeatures,
)
from shortwatch.storage.sqlite import SCHEMA_VERSION, SqliteStore, StoreClosedError

T0 = 1_767_600_000.0


def samples(cell: str, n: int, start: float = T0, period: float = 10.0) -> list[Sample]:
    return [
        Sample(
            time=start + i * period,
            cell=cell,
            voltage_V=0.01 + i * 1e-6,
            current_A=1e-3 if i % 2 else -1e-3,
            pressure_MPa=None if i % 3 == 0 else 5.0 + i * 1e-4,
            temperature_C=None if i % 5 else 25.5,
            cycle=i // 100,
            step=i // 50,
            mode=("cc", "cv", "rest", None)[i % 4],
        )
        for i in range(n)
    ]


def step(cell: str, index: int) -> StepFeatures:
    values: dict = {}
    for f in dataclasses.fields(StepFeatures):
        values[f.name] = 1.5 + index if "float" in str(f.type) else index if "int" in str(f.type) else "charge"
    values.update(cell=cell, step_index=index, asr_ohm_cm2=None, sweep_peak_A=None)
    return StepFeatures(**values)


def cycle(cell: str, number: int) -> CycleFeatures:
    values: dict = {}
    for f in dataclasses.fields(CycleFeatures):
        values[f.name] = 0.25 * number + 0.125 if "float" in str(f.type) else number
    values.update(cell=cell, cycle=number, ce=None, cv_peak_A=None)
    return CycleFeatures(**values)


def alert(cell: str, t: float, state: str = "firing") -> AlertEvent:
    return AlertEvent(
        time=t,
        cell=cell,
        detector="overpotential_drop",
        kind="cell",
        severity="warning",
        state=state,  # type: ignore[arg-type]
        summary="Overpotential fell 38% <b>&</b>",
        evidence={"cycle": np.int64(41), "asr": 32.3, "nan": float("nan"), "f32": np.float32(1.5), "note": "x"},
        advice="Run a CV check",
    )


@pytest.fixture
def store(tmp_path: Path):
    with SqliteStore(tmp_path / "db" / "store.sqlite", station="glovebox-1") as s:
        yield s


def test_samples_round_trip(store: SqliteStore) -> None:
    a, b = samples("A1", 300), samples("B2", 200, start=T0 + 5)
    store.write_sync(RecordBatch(samples=a + b))
    assert list(store.read_samples("A1")) == a
    assert list(store.read_samples("B2")) == b
    assert store.cells() == ["A1", "B2"]
    assert store.count("sample") == 500
    assert store.count("sample", "B2") == 200
    assert store.stats["rows"]["sample"] == 500


def test_feature_alert_detector_and_quarantine_round_trip(store: SqliteStore) -> None:
    steps = [step("A1", i) for i in range(3)]
    cycles = [cycle("A1", i) for i in range(2)]
    alerts = [alert("A1", T0 + 100), alert("A1", T0 + 200, "resolved"), alert("B2", T0 + 150)]
    states = [DetectorStatus(T0 + i, "A1", "hard_short", 0.5 * i, 5.0, "ok") for i in range(3)]
    rejected = [Rejected("file:x.csv", "unparsable", "1,2,abc", cell="A1", time=T0, detail="col 3")]
    store.write_sync(RecordBatch(steps=steps, cycles=cycles, alerts=alerts, rejected=rejected, detector_states=states))
    assert [StepFeatures(**d) for d in store.read_steps("A1")] == steps
    assert [CycleFeatures(**d) for d in store.read_cycles("A1")] == cycles
    assert [DetectorStatus(**d) for d in store.read_detector_states("A1")] == states
    expected = [e.to_json_dict(store.station) | {"time_s": e.time} for e in sorted(alerts, key=lambda e: e.time)]
    assert store.read_alerts() == expected
    assert store.read_alerts("B2") == [expected[1]]
    assert store.read_alerts()[0]["evidence"] == {"cycle": 41, "asr": 32.3, "nan": None, "f32": 1.5, "note": "x"}
    (q,) = store.read_rejected()
    received = q.pop("received")
    assert q == dataclasses.asdict(rejected[0])
    assert abs(received - time.time()) < 60


def test_rewriting_features_replaces_them(store: SqliteStore) -> None:
    first = cycle("A1", 1)
    store.write_sync(RecordBatch(cycles=[first], alerts=[alert("A1", T0)]))
    again = dataclasses.replace(first, q_charge_Ah=9.0)
    store.write_sync(RecordBatch(cycles=[again], alerts=[alert("A1", T0)]))
    assert [CycleFeatures(**d) for d in store.read_cycles("A1")] == [again]
    assert len(store.read_alerts()) == 1


def test_duplicate_samples_are_ignored(store: SqliteStore) -> None:
    a = samples("A1", 100)
    store.write_sync(RecordBatch(samples=a))
    changed = [dataclasses.replace(s, voltage_V=9.9) for s in a[50:]]
    store.write_sync(RecordBatch(samples=changed + samples("A1", 10, start=T0 + 5000)))
    assert store.count("sample") == 110
    assert list(store.read_samples("A1", until=T0 + 1000)) == a  # first write wins
    assert store.stats["sample_ignored"] == 50


def test_read_samples_order_and_time_filters(store: SqliteStore) -> None:
    a = samples("A1", 50, period=10.0)
    b = samples("B2", 50, start=T0, period=7.0)  # same first time as A1: ties order by cell
    store.write_sync(RecordBatch(samples=b))
    store.write_sync(RecordBatch(samples=a))
    merged = list(store.read_samples())
    assert merged == sorted(a + b, key=lambda s: (s.time, s.cell))
    window = list(store.read_samples(since=T0 + 100, until=T0 + 200))
    assert window == [s for s in merged if T0 + 100 <= s.time < T0 + 200]
    assert [s.time for s in store.read_samples("A1", since=T0 + 480)] == [T0 + 480, T0 + 490]
    assert list(store.read_samples("nope")) == []


def test_decimation_bounds_points_and_keeps_the_ends(store: SqliteStore) -> None:
    a = samples("A1", 20_000)
    store.write_sync(RecordBatch(samples=a))
    d = store.read_samples_decimated("A1", max_points=500)
    assert set(d) == {"time", "voltage_V", "current_A", "pressure_MPa", "temperature_C"}
    assert 450 <= len(d["time"]) <= 500
    assert d["time"][0] == a[0].time and d["time"][-1] == a[-1].time
    assert np.all(np.diff(d["time"]) > 0)
    assert np.isnan(d["pressure_MPa"][0]) and not np.isnan(d["voltage_V"]).any()
    small = store.read_samples_decimated("A1", max_points=50_000)  # fewer rows: all of them
    assert len(small["time"]) == 20_000
    assert len(store.read_samples_decimated("nope")["time"]) == 0


def _hold_write_lock(path: Path) -> sqlite3.Connection:
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN EXCLUSIVE")
    return blocker


async def test_write_awaits_when_the_writer_is_behind(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "s.sqlite", max_pending_batches=1, busy_timeout_s=0.02) as store:
        blocker = _hold_write_lock(store.path)
        await asyncio.wait_for(store.write(RecordBatch(samples=samples("A1", 10))), 0.5)  # at once
        second = asyncio.create_task(store.write(RecordBatch(samples=samples("B2", 10))))
        ticks = 0
        for _ in range(10):  # the event loop keeps running while the write waits
            await asyncio.sleep(0.02)
            ticks += 1
        assert ticks == 10 and not second.done()
        assert store.stats["pending_batches"] == 1
        blocker.rollback()
        blocker.close()
        await asyncio.wait_for(second, 5)
        await store.flush()
        assert store.count("sample") == 20


def test_failed_writes_are_retried_not_lost(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "s.sqlite", busy_timeout_s=0.02) as store:
        blocker = _hold_write_lock(store.path)
        threading.Timer(0.5, lambda: (blocker.rollback(), blocker.close())).start()
        t = time.perf_counter()
        store.write_sync(RecordBatch(samples=samples("A1", 1000), cycles=[cycle("A1", 1)]))
        assert time.perf_counter() - t >= 0.4
        assert store.count("sample") == 1000 and len(store.read_cycles("A1")) == 1
        assert store.stats["errors"] >= 1 and "locked" in store.stats["last_error"]


def test_unstorable_records_go_to_quarantine(store: SqliteStore) -> None:
    good = samples("A1", 20)
    bad_sample = Sample(T0, None, 1.0)  # type: ignore[arg-type]
    bad_step = dataclasses.replace(step("A1", 7), eta_V={"not": "a number"})  # type: ignore[arg-type]
    store.write_sync(RecordBatch(samples=[*good, bad_sample], steps=[step("A1", 1), bad_step]))
    assert list(store.read_samples("A1")) == good
    assert [d["step_index"] for d in store.read_steps("A1")] == [1]
    reasons = sorted(r["reason"] for r in store.read_rejected())
    assert reasons == ["unstorable sample record", "unstorable step record"]
    assert store.stats["errors"] == 1


def test_close_with_timeout_reports_what_was_not_written(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite", busy_timeout_s=0.02).open()
    blocker = _hold_write_lock(store.path)
    asyncio.run(store.write(RecordBatch(samples=samples("A1", 10))))
    with pytest.raises(StoreClosedError, match="1 batches"):
        store.close(timeout=0.2)
    blocker.close()
    with pytest.raises(StoreClosedError):
        asyncio.run(store.write(RecordBatch(samples=samples("A1", 10))))


def test_reopen_keeps_data_and_cell_ids(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with SqliteStore(path) as store:
        store.write_sync(RecordBatch(samples=samples("A1", 10), cycles=[cycle("A1", 0)]))
    with SqliteStore(path) as store:
        store.write_sync(RecordBatch(samples=samples("A1", 10, start=T0 + 1000) + samples("C3", 5)))
        assert store.count("sample", "A1") == 20 and store.cells() == ["A1", "C3"]
        assert len(store.read_cycles("A1")) == 1
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
        assert conn.execute("SELECT DISTINCT station FROM cell").fetchall() == [("lab",)]


def test_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with SqliteStore(path):
        pass
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(RuntimeError, match="newer"):
        SqliteStore(path).open()


async def test_reads_while_writing(store: SqliteStore) -> None:
    stop = threading.Event()
    seen: list[int] = []
    problems: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                times = [s.time for s in store.read_samples("A1")]
                assert times == sorted(times)
                seen.append(len(times))
                store.read_samples_decimated("A1", 100)
        except BaseException as exc:
            problems.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    for k in range(40):
        await store.write(RecordBatch(samples=samples("A1", 500, start=T0 + k * 5000)))
    await store.flush()
    stop.set()
    thread.join()
    assert not problems
    assert seen == sorted(seen) and len(seen) >= 2
    assert store.count("sample") == 20_000


def test_numpy_scalars_are_stored_as_numbers(store: SqliteStore) -> None:
    s = Sample(np.float64(T0), "A1", np.float32(0.5), cycle=np.int64(3), step=np.int32(4))  # type: ignore[arg-type]
    store.write_sync(RecordBatch(samples=[s]))
    (back,) = store.read_samples("A1")
    assert (back.time, back.voltage_V, back.cycle, back.step) == (T0, 0.5, 3, 4)
    assert type(back.cycle) is int


def test_batches_of_any_size(store: SqliteStore) -> None:
    start = T0
    for n in (1, 16, 17, 2047, 2048, 2049, 5000):
        store.write_sync(RecordBatch(samples=samples("A1", n, start=start)))
        start += n * 10.0
    assert store.count("sample") == store.stats["rows"]["sample"] == 11_178
    assert store.stats["sample_ignored"] == 0
    times = [s.time for s in store.read_samples("A1")]
    assert times == [T0 + 10.0 * i for i in range(11_178)]


def test_read_connections_of_ended_threads_are_closed(store: SqliteStore) -> None:
    for _ in range(5):
        thread = threading.Thread(target=store.cells)
        thread.start()
        thread.join()
    store.cells()
    assert len(store._read_conns) <= 2  # this thread's and at most the last ended one's
