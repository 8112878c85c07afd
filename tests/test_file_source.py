"""The file source (issue 6 and 7): replay merges files by time, a followed file's rows come
through inotify rather than the poll, read errors are retried at the kept position, and path
patterns that match nothing are reported."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from shortwatch.daemon.pipeline import Pipeline
from shortwatch.model import RecordBatch, Rejected, Sample
from shortwatch.sensors.file_source import FileSource
from shortwatch.sensors.files import MAX_LINE_BYTES
from shortwatch.settings import parse_settings

T0 = 1_767_600_000


async def replay(paths: list[Path]) -> list[tuple[str, list[Sample | Rejected]]]:
    got: list[tuple[str, list[Sample | Rejected]]] = []

    async def emit(items, origin=None):
        got.append((origin, list(items)))

    await FileSource([str(p) for p in paths], follow=False).run(emit)
    return got


async def test_replay_merges_a_cycler_file_and_a_load_cell_file_by_time(tmp_path: Path) -> None:
    cycler = tmp_path / "cycler.csv"
    cycler.write_text(
        "time,cell,voltage_V,current_A\n" + "".join(f"{T0 + 10 * k},A1,0.05,0.0004\n" for k in range(2000))
    )
    load = tmp_path / "load.csv"
    load.write_text("time,cell,pressure_MPa\n" + "".join(f"{T0 + 10 * k + 5},A1,5.0\n" for k in range(2000)))
    other = tmp_path / "other.csv"  # another cell: needs no merging, comes in whole batches
    other.write_text("time,cell,voltage_V\n" + "".join(f"{T0 + k},B7,0.05\n" for k in range(3000)))
    got = await replay([cycler, load, other])
    a1 = [(origin, s.time) for origin, items in got for s in items if s.cell == "A1"]
    assert [t for _, t in a1] == sorted(t for _, t in a1)  # one time line, as it ran live
    assert len(a1) == 4000
    assert {o for o, t in a1 if (t - T0) % 10 == 5} == {str(load)}  # each run keeps its file as origin
    assert {o for o, t in a1 if (t - T0) % 10 == 0} == {str(cycler)}
    b7 = [items for origin, items in got if origin == str(other)]
    assert sum(map(len, b7)) == 3000 and len(b7) <= 2


async def test_replay_merge_keeps_each_file_s_own_order_checks(tmp_path: Path) -> None:
    cycler = tmp_path / "cycler.csv"
    rows = [T0 + 10 * k for k in range(10)]
    rows[6], rows[7] = rows[7], rows[6]  # one pair out of order inside the file
    cycler.write_text("time,cell,voltage_V,current_A\n" + "".join(f"{t},A1,0.05,0.0004\n" for t in rows))
    load = tmp_path / "load.csv"
    load.write_text("time,cell,pressure_MPa\n" + "".join(f"{T0 + 10 * k + 5},A1,5.0\n" for k in range(10)))
    p = Pipeline(parse_settings({"cells": {"A1": {}}}))
    out = RecordBatch()
    for origin, items in await replay([load, cycler]):
        p.process(items, origin, out)
    assert [(r.reason, r.time) for r in out.rejected] == [("out_of_order", T0 + 60)]
    assert len(out.samples) == 19


def follow(paths: list[str], **kw):
    got: list[Sample | Rejected] = []

    async def emit(items, origin=None):
        got.extend(items)

    src = FileSource(paths, follow=True, **kw)
    return src, got, asyncio.create_task(src.run(emit))


async def until(pred, timeout: float = 5.0) -> bool:
    for _ in range(int(timeout / 0.02)):
        if pred():
            return True
        await asyncio.sleep(0.02)
    return pred()


def append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)


async def test_a_followed_file_is_read_on_change_not_on_the_next_poll(tmp_path: Path) -> None:
    path = tmp_path / "A1.csv"
    path.write_text("time,voltage_V\n1,0.1\n")
    _src, got, task = follow([str(tmp_path / "*.csv")], poll_s=60.0)
    try:
        assert await until(lambda: len(got) == 1)
        await asyncio.sleep(0.3)  # the watcher is up
        append(path, "2,0.1\n")
        assert await until(lambda: len(got) == 2, timeout=5.0), "the new row waited for the 60 s poll"
        (tmp_path / "B2.csv").write_text("time,voltage_V\n3,0.1\n")  # a new file too
        assert await until(lambda: len(got) == 3, timeout=5.0)
    finally:
        task.cancel()
    assert [s.time for s in got] == [1, 2, 3]


async def test_polling_alone_still_follows(tmp_path: Path) -> None:
    path = tmp_path / "A1.csv"
    path.write_text("time,voltage_V\n1,0.1\n")
    _src, got, task = follow([str(path)], poll_s=0.05, watch=False)
    try:
        assert await until(lambda: len(got) == 1)
        append(path, "2,0.1\n")
        assert await until(lambda: len(got) == 2)
    finally:
        task.cancel()


async def test_a_last_line_without_newline_is_followed_once_idle(tmp_path: Path) -> None:
    path = tmp_path / "A1.csv"
    path.write_text("time,voltage_V\n1,0.1\n2,0.1")
    _src, got, task = follow([str(path)], poll_s=60.0, idle_line_s=0.2)
    try:
        assert await until(lambda: len(got) == 2)
        append(path, "\n3,0.1\n")
        assert await until(lambda: len(got) == 3)
        await asyncio.sleep(0.5)
    finally:
        task.cancel()
    assert [s.time for s in got] == [1, 2, 3]


async def test_a_read_error_is_retried_at_the_kept_position(tmp_path: Path, caplog) -> None:
    path = tmp_path / "A1.csv"
    path.write_text("time,voltage_V\n" + "".join(f"{k},0.1\n" for k in range(100)))
    src, got, task = follow([str(path)], poll_s=0.05)
    aside = tmp_path / "aside"
    try:
        assert await until(lambda: len(got) == 100)
        os.rename(path, aside)
        path.mkdir()  # reading it now fails with IsADirectoryError, an OSError like EACCES
        assert await until(lambda: "cannot read" in caplog.text)
        await asyncio.sleep(0.3)
        path.rmdir()
        os.rename(aside, path)
        append(path, "".join(f"{k},0.1\n" for k in range(100, 150)))
        assert await until(lambda: len(got) == 150, timeout=10.0)
    finally:
        task.cancel()
    assert [s.time for s in got] == list(range(150))  # nothing lost, nothing read twice
    assert not src.failed
    assert src.checkpoint()["files"][str(path)]["offset"] == path.stat().st_size


async def test_an_oversized_line_in_a_followed_file_does_not_stop_it(tmp_path: Path) -> None:
    path = tmp_path / "A1.csv"
    path.write_text("time,voltage_V\n1,0.1\n")
    src, got, task = follow([str(path)], poll_s=0.05)
    try:
        assert await until(lambda: len(got) == 1)
        append(path, "9" * (MAX_LINE_BYTES + 1) + "\n" + "2,0.1\n3,0.1\n")
        assert await until(lambda: len(got) == 4)
    finally:
        task.cancel()
    assert [type(i).__name__ for i in got] == ["Sample", "Rejected", "Sample", "Sample"]
    assert got[1].reason == "line_too_long"  # type: ignore[union-attr]
    assert not src.failed


async def test_a_pattern_that_matches_nothing_is_reported_and_again_when_it_matches(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    pattern = str(tmp_path / "exports" / "*.mpt")
    _src, got, task = follow([pattern], poll_s=0.05)
    try:
        assert await until(lambda: "matches no file yet" in caplog.text)
        (tmp_path / "exports").mkdir()
        (tmp_path / "exports" / "C1.mpt").write_text(
            "EC-Lab ASCII FILE\nNb header lines : 3\nmode\ttime/s\tEwe/V\t<I>/mA\n1\t0\t3.5\t0.1\n"
        )
        assert await until(lambda: len(got) == 1)
    finally:
        task.cancel()
    warnings = [r for r in caplog.records if "matches no file yet" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    infos = [r for r in caplog.records if "now matches 1 file(s)" in r.getMessage()]
    assert len(infos) == 1 and infos[0].levelno == logging.INFO


async def test_a_file_unreadable_at_restart_keeps_its_position_in_checkpoints(tmp_path: Path) -> None:
    path = tmp_path / "A1.csv"
    path.write_text("time,voltage_V\n" + "".join(f"{k},0.1\n" for k in range(50)))
    first, got, task = follow([str(path)], poll_s=0.05)
    try:
        assert await until(lambda: len(got) == 50)
    finally:
        task.cancel()
    state = first.checkpoint()
    aside = tmp_path / "aside"
    os.rename(path, aside)  # gone while the daemon restarts
    second, got2, task = follow([str(path)], poll_s=0.05)
    second.restore(state)
    try:
        await asyncio.sleep(0.3)
        assert second.checkpoint()["files"][str(path)]["offset"] == state["files"][str(path)]["offset"]
        os.rename(aside, path)
        append(path, "50,0.1\n")
        assert await until(lambda: len(got2) == 1)
    finally:
        task.cancel()
    assert [s.time for s in got2] == [50]  # not the 50 old rows again


async def test_a_retired_file_is_revived_as_soon_as_the_watcher_sees_it_grow(tmp_path: Path) -> None:
    path = tmp_path / "D1.csv"
    path.write_text("time,voltage_V\n1,0.1\n")
    src, got, task = follow([str(tmp_path / "*.csv")], poll_s=60.0, retire_after_s=0.2, idle_check_s=60.0)
    try:
        assert await until(lambda: len(got) == 1)
        # retirement happens when the follower wakes after the file went quiet: a change elsewhere wakes it
        await asyncio.sleep(0.3)
        (tmp_path / "other.csv").write_text("time,voltage_V\n")
        assert await until(lambda: str(path) in src.idle)
        append(path, "2,0.1\n")
        assert await until(lambda: len(got) == 2, timeout=5.0), "the retired file waited for the 60 s idle check"
    finally:
        task.cancel()
    assert [s.time for s in got] == [1, 2]
