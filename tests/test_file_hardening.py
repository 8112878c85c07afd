"""FileReader under hostile files (issue 6): oversized lines, rewrites in place, a last line
without a newline, absurd .mpt headers, CR-only files. Each test failed before its fix."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from shortwatch.model import Rejected, Sample
from shortwatch.sensors.files import MAX_LINE_BYTES, FileReader, FormatError, iter_file

CSV_HEADER = "time,cell,voltage_V,current_A\n"


def csv_rows(start: int, stop: int, cell: str = "A1") -> str:
    return "".join(f"{t},{cell},3.{t % 10},0.001\n" for t in range(start, stop))


def append(path: Path, data: str | bytes) -> None:
    with path.open("ab") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def drain(reader: FileReader) -> list[Sample | Rejected]:
    out: list[Sample | Rejected] = []
    while batch := reader.read_available():
        out.extend(batch)
    return out


def sample_times(items: list[Sample | Rejected]) -> list[float]:
    return [i.time for i in items if isinstance(i, Sample)]


def reasons(items: list[Sample | Rejected]) -> list[str]:
    return [i.reason for i in items if isinstance(i, Rejected)]


HUGE = "9" * (MAX_LINE_BYTES + 10) + "\n"


def test_an_oversized_line_in_a_followed_file_is_quarantined_and_reading_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "A1.csv"
    path.write_text(CSV_HEADER + csv_rows(0, 100))
    reader = FileReader(path)
    assert sample_times(drain(reader)) == list(range(100))
    append(path, HUGE[: MAX_LINE_BYTES // 2])  # the long line is still being written
    assert drain(reader) == []
    append(path, HUGE[MAX_LINE_BYTES // 2 :])
    append(path, csv_rows(100, 200))
    items = drain(reader)
    assert reasons(items) == ["line_too_long"]
    assert sample_times(items) == list(range(100, 200))
    (bad,) = [i for i in items if isinstance(i, Rejected)]
    assert bad.raw.startswith("9999") and len(bad.raw) <= 1000
    assert str(len(HUGE)) in bad.detail
    assert reader.offset == path.stat().st_size


def test_a_restart_inside_an_oversized_line_keeps_skipping_it(tmp_path: Path) -> None:
    path = tmp_path / "A1.csv"
    path.write_text(CSV_HEADER + csv_rows(0, 3) + HUGE[: MAX_LINE_BYTES + 5])
    first = FileReader(path)
    assert sample_times(drain(first)) == [0, 1, 2]
    state = first.checkpoint()
    append(path, HUGE[MAX_LINE_BYTES + 5 :] + csv_rows(3, 5))
    second = FileReader(path)
    second.restore(state)
    items = drain(second)
    assert reasons(items) == ["line_too_long"]
    assert sample_times(items) == [3, 4]


@pytest.mark.parametrize("before", [4999, 5000, 5001, 2500])
def test_replay_reads_past_an_oversized_line_wherever_it_falls(tmp_path: Path, before: int) -> None:
    path = tmp_path / "A1.csv"
    path.write_text(CSV_HEADER + csv_rows(0, before) + HUGE + csv_rows(before, before + 100))
    items = list(iter_file(path))
    assert reasons(items) == ["line_too_long"]
    assert sample_times(items) == list(range(before + 100))


def test_a_rewrite_in_place_that_keeps_the_first_4_kib_is_noticed(tmp_path: Path, caplog) -> None:
    path = tmp_path / "A1.csv"
    head = CSV_HEADER + csv_rows(0, 400)
    assert len(head) > 4096
    path.write_text(head + csv_rows(400, 500))
    reader = FileReader(path)
    assert sample_times(drain(reader)) == list(range(500))
    # same inode, same first 4 KiB, longer: the tail of what was read changed
    with path.open("r+") as f:
        f.write(head + csv_rows(1000, 1200, cell="B2"))
    items = drain(reader)
    assert "file was rewritten" in caplog.text
    assert [i.time for i in items if isinstance(i, Sample) and i.cell == "B2"] == list(range(1000, 1200))


def test_restore_notices_a_rewrite_that_keeps_the_head(tmp_path: Path) -> None:
    path = tmp_path / "A1.csv"
    head = CSV_HEADER + csv_rows(0, 400)
    path.write_text(head + csv_rows(400, 500))
    first = FileReader(path)
    drain(first)
    state = first.checkpoint()
    path.write_text(head + csv_rows(1000, 1200, cell="B2"))
    second = FileReader(path)
    second.restore(state)
    assert len(sample_times(drain(second))) == 600  # read from the start again


def test_a_last_line_without_newline_is_read_once_the_file_is_idle(tmp_path: Path) -> None:
    path = tmp_path / "A1.csv"
    path.write_text(CSV_HEADER + csv_rows(0, 100) + "100,A1,3.0,0.001")
    reader = FileReader(path, idle_line_s=0.2)
    assert sample_times(drain(reader)) == list(range(100))
    time.sleep(0.3)
    assert sample_times(drain(reader)) == [100]
    assert reader.offset == path.stat().st_size
    append(path, "\n" + csv_rows(101, 103))  # the newline came late: not a new line
    assert sample_times(drain(reader)) == [101, 102]


def test_the_late_newline_and_next_rows_are_read_without_repeats(tmp_path: Path) -> None:
    path = tmp_path / "A1.csv"
    path.write_text(CSV_HEADER + "0,A1,3.0,0.001")
    reader = FileReader(path, idle_line_s=0.1)
    assert drain(reader) == []  # not idle yet
    time.sleep(0.2)
    assert sample_times(drain(reader)) == [0]
    append(path, "\r\n" + csv_rows(1, 3))
    assert sample_times(drain(reader)) == [1, 2]


def test_a_line_continued_after_it_was_read_is_quarantined_not_read_twice(tmp_path: Path) -> None:
    path = tmp_path / "A1.csv"
    path.write_text(CSV_HEADER + "0,A1,3.0,0.00")
    reader = FileReader(path, idle_line_s=0.1)
    time.sleep(0.2)
    assert sample_times(drain(reader)) == [0]
    state = reader.checkpoint()
    append(path, "15\n" + csv_rows(1, 3))
    again = FileReader(path, idle_line_s=0.1)
    again.restore(state)
    for r in (reader, again):
        items = drain(r)
        assert reasons(items) == ["continued_line"]
        assert sample_times(items) == [1, 2]


def test_an_idle_header_without_newline_is_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "A1.csv"
    path.write_text("time,cell,volt")  # not yet a header anyone can recognise
    reader = FileReader(path, idle_line_s=0.05)
    time.sleep(0.1)
    assert drain(reader) == []
    append(path, "age_V\n1,A1,3.0\n")
    assert sample_times(drain(reader)) == [1]


def test_live_and_replay_agree_on_a_last_line_without_newline(tmp_path: Path) -> None:
    path = tmp_path / "A1.csv"
    path.write_text(CSV_HEADER + csv_rows(0, 100) + "100,A1,3.0,0.001")
    live = FileReader(path, idle_line_s=0.05)
    got = drain(live)
    time.sleep(0.1)
    got += drain(live)
    assert got == list(iter_file(path))


@pytest.mark.parametrize("n", ["1000000000", "²", "2", "-5", "1e3"])
def test_an_absurd_mpt_header_count_is_an_error_naming_the_file(tmp_path: Path, n: str) -> None:
    path = tmp_path / "run.mpt"
    path.write_bytes(f"EC-Lab ASCII FILE\nNb header lines : {n}\n".encode("latin-1") + b"1\t2\t3\n" * 50)
    with pytest.raises(FormatError, match=r"run\.mpt.*Nb header lines"):
        list(iter_file(path))


def test_an_mpt_header_longer_than_the_file_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "run.mpt"
    path.write_bytes(b"EC-Lab ASCII FILE\nNb header lines : 400\n" + b"x\n" * 50)
    with pytest.raises(FormatError, match=r"run\.mpt.*ended inside its header.*400"):
        list(iter_file(path))


@pytest.mark.parametrize("size", [200, 3 * MAX_LINE_BYTES // 2])
def test_a_cr_only_file_is_named_as_such(tmp_path: Path, size: int) -> None:
    path = tmp_path / "A1.csv"
    text = (CSV_HEADER + csv_rows(0, size // 15)).replace("\n", "\r")
    path.write_bytes(text.encode())
    with pytest.raises(FormatError, match="CR-only"):
        list(iter_file(path))
