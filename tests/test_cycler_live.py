"""Binary cycler files read while they grow, are rewritten or replaced: every record exactly once.

A growing .mpr or .nda is a real file's bytes written in chunks (header first, then the
records, cut anywhere); a growing .ndax is a complete zip replacing the previous one,
each time with more records in it.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import struct
import time
import zipfile
from pathlib import Path

import pytest

from shortwatch.model import Rejected, Sample
from shortwatch.sensors.biologic_mpr import StartTimes
from shortwatch.sensors.files import BinaryFileReader, iter_file, open_reader

REALDATA = Path(os.environ.get("SHORTWATCH_REALDATA", Path(__file__).resolve().parents[2] / "shared" / "realdata"))
pytestmark = pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata is not beside the checkout")


def key(s: Sample) -> tuple:
    return (s.time, s.voltage_V, s.current_A, s.cycle, s.step, s.mode, s.temperature_C)


def drain(reader: BinaryFileReader, max_lines: int = 5000) -> list[Sample]:
    out: list[Sample] = []
    while batch := reader.read_available(max_lines):
        assert all(isinstance(i, Sample) for i in batch), [i for i in batch if isinstance(i, Rejected)]
        out.extend(batch)  # type: ignore[arg-type]
    return out


def mpr_records_start(data: bytes) -> int:
    """Offset of the first record: the test's own walk of the module headers (see biologic_mpr)."""
    pos = 52
    while True:
        h = pos + 6
        new = data[h + 35 : h + 39] == b"\xff\xff\xff\xff"
        length = struct.unpack_from("<I", data, h + (39 if new else 35))[0]
        old, ver = struct.unpack_from("<2I", data, h + 43) if new else (struct.unpack_from("<I", data, h + 39)[0], 0)
        data_at = h + (59 if new else 51)
        if data[h : h + 10].startswith(b"VMP data"):
            return data_at + {2: 0x195, 3: 0x196}.get(old + ver, 0x3EF)
        pos = data_at + length


@pytest.mark.parametrize("stem", ["gcpl.pr_182.1", "gcpl.issue_211", "mb.issue_223"])
def test_growing_mpr_gives_each_record_once(stem: str, tmp_path: Path) -> None:
    src = REALDATA / f"{stem}.mpr"
    data = src.read_bytes()
    full = list(iter_file(src))
    live = tmp_path / "live.mpr"
    start = mpr_records_start(data)
    live.write_bytes(data[:start])  # EC-Lab has written the settings and the data module's header
    reader = open_reader(live)
    assert isinstance(reader, BinaryFileReader) and reader.format == "biologic-mpr"
    got = drain(reader)
    assert got == []
    rng = random.Random(7)
    pos = start
    with live.open("ab") as f:
        while pos < len(data):
            step = rng.randint(1, 9000)  # cut anywhere, also inside a record
            f.write(data[pos : pos + step])
            f.flush()
            pos += step
            got += drain(reader, max_lines=rng.choice([7, 5000]))
    got += [i for i in reader.finish() if isinstance(i, Sample)]
    assert len(got) == len(full)
    # the LOG module with the start time comes after the data, so a file read while it grows
    # counts time/s from 1970 (logged); all else is the same, and in the same order
    origin = full[0].time - got[0].time
    assert origin == 0.0 if stem == "gcpl.pr_182.1" else origin > 1.7e9
    assert [key(s)[1:] for s in got] == [key(s)[1:] for s in full]
    assert [s.time + origin for s in got] == pytest.approx([s.time for s in full], abs=1e-6)


def test_mpr_rewritten_by_ec_lab_goes_on_where_it_was_and_another_run_starts_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = REALDATA / "gcpl.issue_211.mpr"
    data = src.read_bytes()
    full = list(iter_file(src))
    start = mpr_records_start(data)
    live = tmp_path / "run.mpr"
    live.write_bytes(data[: start + 89 * 1000 + 5])  # ~1000 records so far (and a partial one)
    reader = open_reader(live)
    first = drain(reader)
    assert 0 < len(first) < len(full)
    # EC-Lab makes a text export: it writes the whole file anew (another inode), now complete
    tmp = tmp_path / "run.mpr.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, live)
    rest = drain(reader)
    origin = full[0].time - first[0].time  # read while growing: no LOG module yet (see above)
    assert [key(s)[1:] for s in first + rest] == [key(s)[1:] for s in full]
    assert [s.time + origin for s in first + rest] == pytest.approx([s.time for s in full], abs=1e-6)
    # checkpoint and resume: nothing again
    resumed = open_reader(live)
    assert isinstance(resumed, BinaryFileReader)
    resumed.restore(reader.checkpoint())
    assert drain(resumed) == [] and resumed.finish() == []
    # another run at the same path is read from its start
    shutil.copyfile(REALDATA / "gcpl.pr_182.1.mpr", tmp)
    os.replace(tmp, live)
    with caplog.at_level(logging.WARNING):
        other = drain(reader)
    assert "another run" in caplog.text
    assert [key(s) for s in other] == [key(s) for s in iter_file(REALDATA / "gcpl.pr_182.1.mpr")]


@pytest.mark.slow
def test_growing_nda_gives_each_record_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shortwatch.sensors.neware_nda import NewareDecoder

    monkeypatch.setattr(NewareDecoder, "reread_factor", 0.0)  # read at every change, as on a small file
    src = REALDATA / "neware_nda" / "TestFile.nda"
    data = src.read_bytes()
    full = list(iter_file(src))
    live = tmp_path / "live.nda"
    live.write_bytes(data[:2048])  # the header
    reader = open_reader(live)
    assert isinstance(reader, BinaryFileReader) and reader.format == "neware-nda"
    got = drain(reader)
    rng = random.Random(3)
    pos = 2048
    reads_with_news = 0
    with live.open("ab") as f:
        while pos < len(data):
            step = rng.randint(1000, 90000)
            f.write(data[pos : pos + step])
            f.flush()
            pos += step
            news = drain(reader, max_lines=rng.choice([100, 5000]))
            reads_with_news += bool(news)
            got += news
    assert reads_with_news >= 5
    got += reader.finish()  # what a read skipped to bound its CPU (see neware_nda) is read at the end
    assert [key(s) for s in got] == [key(s) for s in full]


def _ndax_with(src: zipfile.ZipFile, out: Path, ndc_bytes: int) -> None:
    """A complete .ndax holding the first ndc_bytes of the source's data.ndc."""
    tmp = out.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for info in src.infolist():
            content = src.read(info.filename)
            z.writestr(info.filename, content[:ndc_bytes] if info.filename == "data.ndc" else content)
    os.replace(tmp, out)


@pytest.mark.slow
def test_ndax_replaced_by_complete_files_passes_on_only_new_records(tmp_path: Path) -> None:
    src = zipfile.ZipFile(REALDATA / "neware_nda" / "BTS85-36-6-5-110-20240424.ndax")
    live = tmp_path / "live.ndax"
    _ndax_with(src, live, 30_000)
    whole = live.read_bytes()
    live.write_bytes(whole[: len(whole) // 2])  # Neware is writing it: no central directory yet
    reader = open_reader(live)
    assert isinstance(reader, BinaryFileReader) and reader.format == "neware-nda"
    assert drain(reader) == []  # not a complete zip: nothing, and no error
    got: list[Sample] = []
    for size in (30_000, 30_000, 75_013, 160_000):
        _ndax_with(src, live, size)
        got += drain(reader, max_lines=999)
    got += reader.finish()
    final = list(iter_file(live))
    assert len(final) > 5000
    assert [key(s) for s in got] == [key(s) for s in final]


async def test_the_file_source_follows_a_growing_mpr_from_an_empty_file(tmp_path: Path) -> None:
    import asyncio

    from shortwatch.sensors.file_source import FileSource

    data = (REALDATA / "gcpl.pr_182.1.mpr").read_bytes()
    full = list(iter_file(REALDATA / "gcpl.pr_182.1.mpr"))
    live = tmp_path / "cell7.mpr"
    live.write_bytes(b"")  # EC-Lab has just created it: its format is not known yet
    got: list[Sample] = []

    async def emit(items: list, path: str) -> None:
        got.extend(items)

    source = FileSource([str(tmp_path / "*.mpr")], poll_s=0.02, follow=True, state_dir=tmp_path / "state")
    task = asyncio.create_task(source.run(emit))
    written: list[float] = []
    try:
        start = mpr_records_start(data)
        for end in (start, start + 5000, start + 100_000, len(data)):
            with live.open("ab") as f:
                f.write(data[live.stat().st_size : end])
            written.append(time.time())
            await asyncio.sleep(0.2)
        for _ in range(100):
            if len(got) >= len(full):
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
    assert source.failed == {}
    # this file has no LOG module with the start time (a replay counts time/s from 1970); while it
    # is followed, the last record of the first read is taken as written when the file was
    assert full[0].time == 0.0
    last_of_first_read = 5000 // 89 - 1
    assert got[last_of_first_read].time == pytest.approx(written[1], abs=1.0)
    origin = got[0].time - full[0].time
    assert [s.time - origin for s in got] == pytest.approx([s.time for s in full], abs=1e-6)
    assert [key(s)[1:] for s in got] == [key(s)[1:] for s in full]
    assert {s.cell for s in got} == {"cell7"}


def test_a_followed_mpr_read_again_without_its_checkpoint_keeps_its_start(tmp_path: Path) -> None:
    """The start of a followed .mpr without its LOG module comes from the clock, so it is kept:
    a new reader (a kill -9 before the first checkpoint) that finds EC-Lab flushed later, or the
    file idle for an hour, dates every record as before, and the store recognises them."""
    data = (REALDATA / "gcpl.pr_182.1.mpr").read_bytes()
    live = tmp_path / "cell7.mpr"
    live.write_bytes(data[: mpr_records_start(data) + 89 * 300])
    kept = tmp_path / "state" / "mpr-start-times.json"
    first = drain(open_reader(live, idle_line_s=1.0, start_times=StartTimes(kept)))
    assert len(first) == 300 and first[-1].time == pytest.approx(live.stat().st_mtime, abs=1e-3)
    for age in (-3.0, 3600.0):  # EC-Lab's write 3 s later than it was; an hour without a write
        os.utime(live, (time.time() - age, time.time() - age))
        again = drain(open_reader(live, idle_line_s=1.0, start_times=StartTimes(kept)))
        assert [key(s) for s in again] == [key(s) for s in first]
    assert drain(open_reader(live))[0].time == 0.0  # a replay does not read the clock


@pytest.mark.slow
def test_the_daemon_follows_a_growing_mpr_across_a_restart_and_a_kill_9(tmp_path: Path) -> None:
    """`shortwatch run` on a folder where EC-Lab writes an .mpr: every record stored exactly once."""
    import signal

    from daemon_process import start_run, wait_for
    from test_cli import _stored_samples

    data = (REALDATA / "gcpl.pr_182.1.mpr").read_bytes()
    n_full = len(list(iter_file(REALDATA / "gcpl.pr_182.1.mpr")))
    start = mpr_records_start(data)
    folder = tmp_path / "ec-lab"
    folder.mkdir()
    live = folder / "cell7.mpr"
    live.write_bytes(data[: start + 89 * 800 + 13])  # 800 records and part of the next
    # the test writes a day of records in seconds; a file written just now would have its start
    # taken from the clock (see the test above) and the later records would lie in the future
    os.utime(live, (time.time() - 3600, time.time() - 3600))
    db = tmp_path / "state" / "shortwatch.sqlite"
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(
        f'[daemon]\nhttp = ""\nstate_dir = "{tmp_path / "state"}"\ncheckpoint_interval_s = 0.5\n'
        '[cells.cell7]\nkind = "full"\narea_cm2 = 1.0\n'
        f'[[sources]]\ntype = "file"\npaths = ["{folder}/*.mpr"]\npoll_s = 0.1\n'
    )
    daemon_log = tmp_path / "daemon.log"
    proc = start_run(cfg, log=daemon_log)
    try:
        wait_for(lambda: _stored_samples(db) >= 800, what=lambda: daemon_log.read_text()[-3000:])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
    with live.open("ab") as f:
        f.write(data[live.stat().st_size : start + 89 * 2000])
    proc = start_run(cfg, log=daemon_log)
    try:
        wait_for(lambda: _stored_samples(db) >= 2000, what=lambda: daemon_log.read_text()[-3000:])
        time.sleep(1.2)  # a checkpoint lands
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.kill()
    with live.open("ab") as f:
        f.write(data[live.stat().st_size :])
    proc = start_run(cfg, log=daemon_log)
    try:
        wait_for(lambda: _stored_samples(db) >= n_full, what=lambda: daemon_log.read_text()[-3000:])
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
    from shortwatch.storage.sqlite import SqliteStore

    store = SqliteStore(db)
    store.open()
    try:
        assert store.count("sample") == n_full  # nothing lost, nothing stored twice
        # what kill -9 made the reader read again is recognised by the validator, not stored twice
        assert {r["reason"] for r in store.read_rejected()} <= {"duplicate"}
    finally:
        store.close()
