"""A growing Neware .nda followed record by record: exactly the rows a whole read gives, no whole re-reads.

A growing file is a real file's bytes written in chunks of odd sizes (records cut anywhere)
with a poll after each. NewareNDA.read is counted: after the first poll (which reads the
file whole to learn its layout) a file that only grows is never read whole again.
"""

from __future__ import annotations

import json
import logging
import os
import random
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import NewareNDA
import pytest

from shortwatch.model import Rejected, Sample
from shortwatch.sensors.neware_nda import NewareDecoder

REALDATA = Path(os.environ.get("SHORTWATCH_REALDATA", Path(__file__).resolve().parents[2] / "shared" / "realdata"))
NDA = REALDATA / "neware_nda"
NAMES = ["TestFile.nda", "new_nda_file.nda"]
pytestmark = pytest.mark.skipif(not NDA.is_dir(), reason="../shared/realdata/neware_nda is not beside the checkout")


def key(s: Sample) -> tuple:
    t = s.temperature_C
    return (s.time, s.voltage_V, s.current_A, s.cycle, s.step, s.mode, "nan" if t is not None and t != t else t)


def layout(data: bytes) -> tuple[int, int]:
    """(first record, record length): the test's own walk, as NewareNDA's readers find them."""
    if data[14] == 130:
        return 1024, (data.find(data[1024:1026], 1026) - 1024 if data[1024] == 0x55 else 88)
    at = data.find(b"\x00\x00\x00\x00\x55\x00")
    while data[at + 90] != 0x55 or data[at + 16] == 0:  # the next record must follow, with a status
        at = data.find(b"\x00\x00\x00\x00\x55\x00", at + 4)
    return at + 4, 86


@pytest.fixture
def whole_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths NewareNDA.read is called on, in order. Whole reads are not spaced out (to bound
    CPU, see neware_nda), so a poll that needs one makes one then and there."""
    monkeypatch.setattr(NewareDecoder, "reread_factor", 0.0)
    calls: list[str] = []
    real = NewareNDA.read

    def counted(path: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(NewareNDA, "read", counted)
    return calls


def drain(
    decoder: NewareDecoder, path: Path, max_records: int = 5000, final: bool = False, rejects: bool = False
) -> list[Any]:
    """Every item a decoder has; Rejected ones only where ``rejects`` (e.g. a time in a DST gap)."""
    out: list[Any] = []
    while batch := decoder.poll(path, max_records, final):
        assert rejects or all(isinstance(i, Sample) for i in batch), [i for i in batch if isinstance(i, Rejected)]
        out.extend(batch)
    return out


def whole(path: Path) -> list[Sample]:
    """One whole read of a complete file (a fresh decoder, all its rows)."""
    return drain(NewareDecoder(str(path), "c"), path, final=True)


def grow(
    data: bytes,
    live: Path,
    start: int,
    decoder: NewareDecoder,
    rng: random.Random,
    max_chunk: int,
    until: int | None = None,
    on_poll: Callable[[], None] | None = None,
) -> tuple[list[Sample], int]:
    """Append data[start:until] in chunks of odd sizes, polling after each; (rows, where it stopped)."""
    got: list[Sample] = []
    pos, end = start, len(data) if until is None else until
    with live.open("ab") as f:
        while pos < end:
            step = min(rng.randint(1, max_chunk), end - pos)
            f.write(data[pos : pos + step])
            f.flush()
            pos += step
            got += drain(decoder, live, max_records=rng.choice([3, 5000]))
            if on_poll is not None:
                on_poll()
    return got, pos


@pytest.mark.parametrize("name", NAMES)
def test_growing_nda_passes_on_what_one_whole_read_gives_without_reading_it_whole_again(
    name: str, tmp_path: Path, whole_reads: list[str]
) -> None:
    data = (NDA / name).read_bytes()
    start, length = layout(data)
    first = start + 3 * length + 5  # the header, three records and a piece of the fourth
    live = tmp_path / name
    live.write_bytes(data[:first])
    decoder = NewareDecoder(str(live), "c")
    got = drain(decoder, live)
    assert whole_reads == [str(live)] and len(got) >= 2  # the first poll reads it whole
    rng = random.Random(11)

    def update_header() -> None:  # as Neware may, with the offsets a BTS 9.1 header holds
        with live.open("r+b") as f:
            f.seek(16)
            f.write(rng.randbytes(48))

    more, _ = grow(data, live, first, decoder, rng, 3 * length + 17, on_poll=update_header)
    assert whole_reads == [str(live)]  # and no poll after it does
    with live.open("r+b") as f:
        f.write(data[:64])
    got += more + drain(decoder, live, final=True)
    full = whole(NDA / name)
    assert len(got) == len(full) > 400
    assert [key(s) for s in got] == [key(s) for s in full]
    # and those are NewareNDA's own numbers: its software cycle, the protocol step, T1
    ref = NewareNDA.read(str(NDA / name))
    assert [s.cycle for s in got] == ref["Cycle"].tolist() and len(set(ref["Cycle"])) >= 2
    assert [s.step for s in got] == ref["Step_Index"].tolist()
    assert [s.voltage_V for s in got] == ref["Voltage"].astype("float64").tolist()
    if "T1" in ref:
        assert [s.temperature_C for s in got] == ref["T1"].astype("float64").tolist()


def _with_aux_records(data: bytes) -> bytes:
    """new_nda_file.nda with temperature records (0x65, channel 1) written apart from the data
    records, as v29 files with an aux channel have them: after its data record for most, before
    it for every fifth and the first, none for every seventh (NewareNDA joins them by Index; its
    v29 reader wants the second record right after the first)."""
    start, length = layout(data)
    out = bytearray(data[:start])
    for pos in range(start, len(data) - length + 1, length):
        rec = data[pos : pos + length]
        index = struct.unpack_from("<I", rec, 2)[0] if rec[:2] == b"\x55\x00" else 0
        aux = bytearray(length)
        aux[0] = 0x65
        struct.pack_into("<BI", aux, 1, 1, index)
        struct.pack_into("<h", aux, 34, 200 + index % 37)  # 0.1 C
        with_aux = index and index % 7
        if with_aux and (index % 5 == 0 or index == 1):
            out += aux
        out += rec
        if with_aux and index % 5 and index != 1:
            out += aux
    return bytes(out + data[start + (len(data) - start) // length * length :])


def test_aux_temperatures_written_apart_are_joined_as_a_whole_read_joins_them(
    tmp_path: Path, whole_reads: list[str]
) -> None:
    data = _with_aux_records((NDA / "new_nda_file.nda").read_bytes())
    complete = tmp_path / "complete.nda"
    complete.write_bytes(data)
    full = whole(complete)
    temps = [s.temperature_C for s in full]
    assert sum(t == t for t in temps if t is not None) > 300 and any(t != t for t in temps if t is not None)
    start, length = layout(data)
    live = tmp_path / "live.nda"
    live.write_bytes(data[: start + 3 * length + 1])
    decoder = NewareDecoder(str(live), "c")
    got = drain(decoder, live)
    more, _ = grow(data, live, start + 3 * length + 1, decoder, random.Random(5), 2 * length + 9)
    assert len(whole_reads) == 2  # the complete file's and the first poll's
    assert len(more) < len(full) - len(got)  # the last record waits: its aux record may still come
    got += more + drain(decoder, live, final=True)
    assert [key(s) for s in got] == [key(s) for s in full]


def test_duplicate_index_is_dropped_as_a_whole_read_drops_it(tmp_path: Path, whole_reads: list[str]) -> None:
    data = (NDA / "TestFile.nda").read_bytes()
    start, length = layout(data)
    cut = start + 400 * length
    again = data[start + 100 * length : start + 101 * length]  # Index 101, written again
    changed = data[:cut] + again + data[cut:]
    complete = tmp_path / "complete.nda"
    complete.write_bytes(changed)
    live = tmp_path / "live.nda"
    live.write_bytes(changed[: start + 3 * length])
    decoder = NewareDecoder(str(live), "c")
    got = drain(decoder, live)
    more, _ = grow(changed, live, start + 3 * length, decoder, random.Random(2), 5000)
    got += more + drain(decoder, live, final=True)
    assert whole_reads == [str(live)]
    full = whole(complete)
    assert len(full) == 6670
    assert [key(s) for s in got] == [key(s) for s in full]


@pytest.mark.parametrize("name", NAMES)
def test_a_restart_from_the_checkpoint_goes_on_incrementally_with_nothing_twice(
    name: str, tmp_path: Path, whole_reads: list[str]
) -> None:
    data = (NDA / name).read_bytes()
    start, length = layout(data)
    live = tmp_path / name
    live.write_bytes(data[: start + 3 * length])
    before = NewareDecoder(str(live), "c")
    got = drain(before, live)
    more, pos = grow(data, live, start + 3 * length, before, random.Random(4), 900, until=len(data) * 2 // 3)
    got += more
    state = json.loads(json.dumps(before.state()))  # as a checkpoint stores it
    assert state["offset"] <= pos
    after = NewareDecoder(str(live), "c")  # the daemon restarted
    after.load(state)
    calls = len(whole_reads)
    more, _ = grow(data, live, pos, after, random.Random(6), 900)
    got += more + drain(after, live, final=True)
    assert len(whole_reads) == calls  # it went on from the checkpoint, not from a whole read
    assert [key(s) for s in got] == [key(s) for s in whole(NDA / name)]


def test_a_checkpoint_taken_while_whole_read_rows_wait_makes_a_restart_read_whole(
    tmp_path: Path, whole_reads: list[str]
) -> None:
    live = tmp_path / "live.nda"
    live.write_bytes((NDA / "TestFile.nda").read_bytes())
    before = NewareDecoder(str(live), "c")
    got = before.poll(live, 1000)  # 1000 of the 6670 rows of the whole read returned
    assert len(got) == 1000
    state = json.loads(json.dumps(before.state()))
    assert "follow" not in state and state["n_done"] == 1000
    after = NewareDecoder(str(live), "c")
    after.load(state)
    got += drain(after, live)
    assert len(whole_reads) == 2
    assert [key(s) for s in got] == [key(s) for s in whole(live)]  # type: ignore[arg-type]


def test_a_file_rewritten_shorter_waits_and_another_run_is_read_from_its_start(
    tmp_path: Path, whole_reads: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    data = (NDA / "TestFile.nda").read_bytes()
    start, length = layout(data)
    live = tmp_path / "live.nda"
    live.write_bytes(data[: start + 3 * length])
    decoder = NewareDecoder(str(live), "c")
    got = drain(decoder, live)
    more, _ = grow(data, live, start + 3 * length, decoder, random.Random(8), 5000, until=len(data) * 3 // 5)
    got += more
    # the same run written anew, shorter for now: nothing passed on, nothing lost
    tmp = tmp_path / "new.tmp"
    tmp.write_bytes(data[: len(data) // 3])
    os.replace(tmp, live)
    with caplog.at_level(logging.WARNING):
        assert drain(decoder, live) == []
    assert "shrank" in caplog.text and len(whole_reads) == 2
    tmp.write_bytes(data)
    os.replace(tmp, live)
    got += drain(decoder, live, final=True)
    assert [key(s) for s in got] == [key(s) for s in whole(NDA / "TestFile.nda")]
    # another run at the same path (another head): read from its start
    other = (NDA / "new_nda_file.nda").read_bytes()
    tmp.write_bytes(other)
    os.replace(tmp, live)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        rest = drain(decoder, live, final=True)
    assert "head changed" in caplog.text and "another run" in caplog.text
    assert [key(s) for s in rest] == [key(s) for s in whole(NDA / "new_nda_file.nda")]


def test_a_record_out_of_place_falls_back_to_a_whole_read(
    tmp_path: Path, whole_reads: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    data = (NDA / "TestFile.nda").read_bytes()
    start, length = layout(data)
    live = tmp_path / "live.nda"
    live.write_bytes(data[: start + 50 * length])
    decoder = NewareDecoder(str(live), "c")
    got = drain(decoder, live)
    with live.open("ab") as f:
        f.write(data[start + 51 * length : start + 60 * length])  # Index 51 left out
    got += drain(decoder, live)
    assert len(got) == 59 and len(whole_reads) == 1
    with live.open("ab") as f:
        f.write(data[start + 50 * length : start + 51 * length])  # and written late: NewareNDA sorts it in
    with caplog.at_level(logging.WARNING):
        drain(decoder, live)
    assert "out of place" in caplog.text and len(whole_reads) == 2
    # NewareNDA sorted Index 51 in: rows are not where they were, so (as before there was
    # following) the file is taken for another run and read from its start
    assert "another run" in caplog.text
    assert drain(decoder, live) == [] and len(whole_reads) == 2  # no change: not read again


@pytest.mark.parametrize("drift", ["other numbers", "an exception"])
def test_helpers_that_no_longer_agree_with_newarenda_keep_the_file_on_whole_reads(
    drift: str,
    tmp_path: Path,
    whole_reads: list[str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """NewareNDA's per-record helpers are a private API: a release where they mean something
    else (simulated here) must not change what is passed on."""
    from shortwatch.sensors import neware_nda

    real = neware_nda._nda_helpers

    def drifted() -> dict[str, Any]:
        helpers = real()
        decode = helpers["_bytes_to_list_BTS91"]
        if drift == "other numbers":
            helpers["_bytes_to_list_BTS91"] = lambda rec: [*decode(rec)[:6], decode(rec)[6] * 2, *decode(rec)[7:]]
        else:
            helpers["_bytes_to_list_BTS91"] = lambda rec: decode(rec[:10])
        return helpers

    monkeypatch.setattr(neware_nda, "_nda_helpers", drifted)
    data = (NDA / "TestFile.nda").read_bytes()
    start, length = layout(data)
    live = tmp_path / "live.nda"
    live.write_bytes(data[: start + 3 * length])
    decoder = NewareDecoder(str(live), "c")
    with caplog.at_level(logging.WARNING):
        got = drain(decoder, live)
        more, _ = grow(data, live, start + 3 * length, decoder, random.Random(1), 60_000)
    got += more + drain(decoder, live, final=True)
    assert [key(s) for s in got] == [key(s) for s in whole(NDA / "TestFile.nda")]
    assert len(whole_reads) >= 7  # every change read whole
    warned = [m for r in caplog.records if (m := r.getMessage()).startswith(f"{live}:") and "whole" in m]
    assert len(warned) == 1 and ("differ from NewareNDA's table" in warned[0] or "helpers failed" in warned[0])


def test_a_record_time_without_pandas_is_the_time_a_whole_read_gives() -> None:
    """A poll converts a few stamps itself; a whole read converts the table with pandas."""
    from datetime import UTC, datetime, timedelta, timezone

    import pandas as pd

    decoder = NewareDecoder("x", "c", tz="Europe/Berlin")
    stamps = [
        datetime(2024, 3, 31, 1, 59, 59),
        datetime(2024, 3, 31, 2, 30),  # not there: clocks jump from 2:00 to 3:00
        datetime(2024, 10, 27, 2, 30),  # there twice
        datetime(2024, 10, 27, 3, 0, 0, 123456),
        datetime(2020, 3, 25, 11, 16, 50),
    ]
    aware = [datetime(2024, 5, 27, 8, 2, 53, 970000, tzinfo=UTC), datetime(2024, 5, 27, 10, 2, 53, 5, tzinfo=UTC)]
    mine = [decoder._seconds(t) for t in stamps]
    assert (
        mine[1] != mine[1]
        and mine[2] != mine[2]
        and mine[0] == datetime(2024, 3, 31, 0, 59, 59, tzinfo=UTC).timestamp()
    )
    assert _same_list(mine, decoder._times(pd.Series(stamps)))
    assert [decoder._seconds(t) for t in aware] == decoder._times(pd.Series(aware))
    shifted = [t.astimezone(timezone(timedelta(hours=2))) for t in aware]  # a machine whose local time is CEST
    assert [decoder._seconds(t) for t in shifted] == decoder._times(pd.Series(aware))


def _same_list(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(x == y or (x != x and y != y) for x, y in zip(a, b, strict=True))


async def test_the_file_source_follows_a_growing_nda_across_a_restart(tmp_path: Path, whole_reads: list[str]) -> None:
    """The daemon's path: FileSource, its checkpoint (JSON) and a new FileSource restored from it."""
    import asyncio

    from shortwatch.sensors.file_source import FileSource

    data = (NDA / "TestFile.nda").read_bytes()
    start, length = layout(data)
    live = tmp_path / "cell9.nda"
    live.write_bytes(data[: start + 3 * length + 7])
    got: list[Sample] = []

    async def emit(items: list, path: str) -> None:
        got.extend(items)

    async def follow(source: FileSource, ends: list[int]) -> None:
        task = asyncio.create_task(source.run(emit))
        try:
            for end in ends:
                with live.open("ab") as f:
                    f.write(data[live.stat().st_size : end])
                await asyncio.sleep(0.1)
            n = -1
            while n != len(got):  # until it has passed on all there is
                n = len(got)
                await asyncio.sleep(0.3)
        finally:
            task.cancel()
        assert source.failed == {}

    first = FileSource([str(tmp_path / "*.nda")], poll_s=0.02, follow=True)
    await follow(first, [start + 3 * length + 7 + k * 9001 for k in range(1, 12)])
    assert 100 < len(got) < 6670 and whole_reads == [str(live)]
    state = json.loads(json.dumps(first.checkpoint()))
    second = FileSource([str(tmp_path / "*.nda")], poll_s=0.02, follow=True)
    second.restore(state)
    await follow(second, [len(data) * 3 // 4, len(data)])
    assert whole_reads == [str(live)]  # the restarted source went on from the checkpoint
    assert [key(s) for s in got] == [key(s) for s in whole(NDA / "TestFile.nda")]
    assert {s.cell for s in got} == {"cell9"}


def test_a_footer_ends_the_file_until_records_take_its_place(tmp_path: Path, whole_reads: list[str]) -> None:
    """A BTS 9.1 file ends with a footer (its first record byte 0x81), past which NewareNDA reads
    nothing. Should Neware go on (a test resumed) and write records over it, they are read."""
    data = (NDA / "TestFile.nda").read_bytes()
    start, length = layout(data)
    footer = start + 6670 * length
    assert data[footer] == 0x81
    live = tmp_path / "live.nda"
    live.write_bytes(data[: start + 3 * length])
    decoder = NewareDecoder(str(live), "c")
    got = drain(decoder, live)
    more, _ = grow(data, live, start + 3 * length, decoder, random.Random(3), 20_000)
    got += more
    with live.open("ab") as f:
        f.write(b"\x00" * 999)  # after the footer: not read
    assert drain(decoder, live) == [] and len(got) == 6670
    resumed = bytearray()
    for k in range(40):  # records again, with the next Index, over the footer
        rec = bytearray(data[start + (6600 + k) * length : start + (6601 + k) * length])
        struct.pack_into("<I", rec, 8, 6671 + k)
        resumed += rec
    with live.open("r+b") as f:
        f.seek(footer)
        f.write(resumed)
    got += drain(decoder, live, final=True)
    assert whole_reads == [str(live)]
    assert len(got) == 6710
    assert [key(s) for s in got] == [key(s) for s in whole(live)]


def _key(i: Any) -> tuple:
    return ("rejected", i.reason) if isinstance(i, Rejected) else (i.time, i.voltage_V, i.current_A, i.cycle, i.step)


def test_a_run_starting_in_a_repeated_dst_hour_is_not_taken_for_another_run(
    tmp_path: Path, whole_reads: list[str]
) -> None:
    """The first rows fall in Europe/Berlin's repeated hour, so their time is no time (NaN): the
    checks of what was passed on must still recognise the run, or a restart re-sends every row."""
    from datetime import datetime

    data = bytearray((NDA / "new_nda_file.nda").read_bytes())
    start, size = layout(bytes(data))
    first = None
    for p in range(start, len(data) - size + 1, size):
        if data[p : p + 2] != b"\x55\x00":
            continue
        y, mo, d, h, mi, s = struct.unpack_from("<HBBBBB", data, p + 70)
        first = first or datetime(y, mo, d, h, mi, s)
        t = datetime(y, mo, d, h, mi, s) - first + datetime(2024, 10, 27, 2, 0)
        struct.pack_into("<HBBBBB", data, p + 70, t.year, t.month, t.day, t.hour, t.minute, t.second)
    complete = tmp_path / "complete.nda"
    complete.write_bytes(data)
    live = tmp_path / "live.nda"
    live.write_bytes(data[: start + 100 * size])
    decoder = NewareDecoder(str(live), "c", tz="Europe/Berlin")
    got = decoder.poll(live, 90)  # 90 of the first read's 100 rows: 10 wait, so a restart reads whole
    assert got and isinstance(got[0], Rejected) and got[0].reason == "missing_time"
    restarted = NewareDecoder(str(live), "c", tz="Europe/Berlin")
    restarted.load(json.loads(json.dumps(decoder.state())))
    got += drain(restarted, live, rejects=True)
    with live.open("ab") as f:
        f.write(data[start + 100 * size :])
    got += drain(restarted, live, final=True, rejects=True)
    full = drain(NewareDecoder(str(complete), "c", tz="Europe/Berlin"), complete, final=True, rejects=True)
    assert [_key(i) for i in got] == [_key(i) for i in full]


def test_a_file_newarenda_cannot_read_is_not_read_whole_on_every_poll(tmp_path: Path) -> None:
    """A record NewareNDA cannot decode (a status it does not know): the follower falls back to a
    whole read, which fails too; an unchanged file is then not read again at every poll."""
    calls: list[str] = []
    real = NewareNDA.read

    def counted(path: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(path)
        return real(path, *args, **kwargs)

    data = (NDA / "TestFile.nda").read_bytes()
    size = data.find(data[1024:1026], 1026) - 1024
    live = tmp_path / "live.nda"
    live.write_bytes(data[: 1024 + 300 * size])
    decoder = NewareDecoder(str(live), "c")
    assert len(drain(decoder, live)) > 0
    record = bytearray(data[1024 + 300 * size : 1024 + 301 * size])
    record[3] = 99  # a status code NewareNDA's table does not have
    with live.open("ab") as f:
        f.write(record)
    NewareNDA.read = counted  # type: ignore[assignment]
    try:
        for _ in range(20):  # over a second: past the budget that spaces out whole reads
            decoder.poll(live, 5000)
            time.sleep(0.06)
    finally:
        NewareNDA.read = real  # type: ignore[assignment]
    assert len(calls) <= 1
