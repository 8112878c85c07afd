"""FileReader: format detection, following a growing file, checkpoint/restore, rotation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shortwatch.model import Rejected, Sample
from shortwatch.sensors.files import FileReader, FormatError, detect_format, iter_file

CSV_HEADER = "time,cell,voltage_V,current_A\n"
MPT_HEADER = (
    "EC-Lab ASCII FILE\nNb header lines : 5\n\nAcquisition started on : 01/01/2024 00:00:00\n"
    "mode\ttime/s\tEwe/V\t<I>/mA\tcycle number\t\n"
)


def csv_rows(start: int, stop: int, cell: str = "A1") -> str:
    return "".join(f"{t},{cell},3.{t % 10},0.001\n" for t in range(start, stop))


def times(items: list[Sample | Rejected]) -> list[float | None]:
    assert all(isinstance(i, Sample) for i in items), items
    return [i.time for i in items]


def append(path: Path, data: str | bytes) -> None:
    with path.open("ab") as f:
        f.write(data.encode() if isinstance(data, str) else data)


@pytest.mark.parametrize(
    ("name", "content", "fmt"),
    [
        ("x.txt", MPT_HEADER, "biologic-mpt"),
        ("x.mpt", "", "biologic-mpt"),
        ("x.mpt", "EC-Lab ASCII FILE", "biologic-mpt"),
        ("x.txt", CSV_HEADER, "csv"),
        ("x.dat", "\ufeff" + '"time","pressure_MPa"\r\n1,2\r\n', "csv"),
        ("x.mpt", "time,voltage_V\n", "csv"),
    ],
)
def test_detect_format(tmp_path: Path, name: str, content: str, fmt: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    assert detect_format(path) == fmt


@pytest.mark.parametrize("content", ["", "Date,Voltage(V),Current(A)\n", "time,cell\n"])
def test_unknown_format_lists_the_supported_ones(tmp_path: Path, content: str) -> None:
    path = tmp_path / "x.csv"
    path.write_text(content)
    with pytest.raises(FormatError, match=r"unknown file format; supported: csv .*biologic-mpt"):
        detect_format(path)


def test_reading_a_file_of_unknown_format_fails_once_its_first_lines_are_complete(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("")
    assert list(iter_file(path)) == []  # an empty file is no error
    path.write_text("Date,Voltage(V)")
    reader = FileReader(path)
    assert reader.read_available() == []  # the first line may still be growing
    append(path, "\n" + "1,2\n" * 14)
    assert reader.read_available() == []  # some formats tell themselves only a few lines in
    append(path, "1,2\n")
    with pytest.raises(FormatError, match="unknown file format"):
        reader.read_available()


def test_unknown_format_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="supported: auto, csv, biologic-mpt"):
        FileReader(tmp_path / "x.csv", fmt="neware")


def test_follow_a_growing_file_without_losing_or_repeating_rows(tmp_path: Path) -> None:
    path = tmp_path / "A1.csv"
    path.write_text("")
    reader = FileReader(path)
    assert reader.read_available() == []
    assert reader.format is None  # auto: nothing to tell the format from yet
    append(path, "time,cell,volt")
    assert reader.read_available() == []
    append(path, "age_V,current_A\n" + csv_rows(0, 3))
    append(path, b"3,A\xc3")  # ends in half of a two-byte UTF-8 character
    assert times(reader.read_available()) == [0, 1, 2]
    assert reader.format == "csv"
    assert reader.offset == path.stat().st_size - len(b"3,A\xc3")
    assert reader.read_available() == []
    append(path, b"\xa9,3.3,0.001\n" + csv_rows(4, 6).encode())
    items = reader.read_available()
    assert times(items) == [3, 4, 5]
    assert items[0].cell == "A\xe9"
    assert reader.offset == path.stat().st_size
    assert reader.finish() == []


def test_max_lines_bounds_a_batch(tmp_path: Path) -> None:
    path = tmp_path / "A1.csv"
    path.write_text(CSV_HEADER + csv_rows(0, 10))
    reader = FileReader(path)
    batches = []
    while batch := reader.read_available(max_lines=4):
        batches.append(times(batch))
    assert batches == [[0, 1, 2], [3, 4, 5, 6], [7, 8, 9]]  # the header took a line of the first batch


def test_a_file_larger_than_one_read(tmp_path: Path) -> None:
    path = tmp_path / "A1.csv"
    path.write_text(CSV_HEADER + csv_rows(0, 120_000))
    assert path.stat().st_size > 2 * (1 << 20)
    reader = FileReader(path)
    got: list[float | None] = []
    while batch := reader.read_available():
        assert len(batch) <= 5000
        got.extend(times(batch))
    assert got == list(range(120_000))
    assert reader.offset == path.stat().st_size


def test_finish_decodes_a_complete_last_line_and_flags_a_truncated_one(tmp_path: Path) -> None:
    path = tmp_path / "A1.csv"
    path.write_text(CSV_HEADER + csv_rows(0, 2) + "2,A1,3.2,0.001")
    reader = FileReader(path)
    assert times(reader.read_available()) == [0, 1]
    assert times(reader.finish()) == [2]
    assert reader.offset == path.stat().st_size
    path.write_text(CSV_HEADER + csv_rows(0, 2) + "2,A1,3.")
    (last,) = list(iter_file(path))[2:]
    assert isinstance(last, Rejected)
    assert (last.reason, last.raw) == ("truncated_line", "2,A1,3.")


@pytest.mark.parametrize("fmt", ["auto", "csv"])
def test_checkpoint_and_restore_resume_exactly(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "A1.csv"
    path.write_text(CSV_HEADER + csv_rows(0, 10) + "10,A1,")
    first = FileReader(path, fmt)
    assert times(first.read_available(max_lines=6)) == [0, 1, 2, 3, 4]
    state = first.checkpoint()
    assert state["offset"] == first.offset
    append(path, "3.0,0.001\n" + csv_rows(11, 13))

    second = FileReader(path, fmt)
    second.restore(state)
    assert second.offset == state["offset"]
    assert times(second.read_available()) == [5, 6, 7, 8, 9, 10, 11, 12]
    assert second.checkpoint()["offset"] == path.stat().st_size


def test_restore_of_an_mpt_reads_the_header_again(tmp_path: Path) -> None:
    path = tmp_path / "C3.mpt"
    rows = "".join(f"1\t{t}\t3.{t}\t0.5\t0\t\n" for t in range(8))
    path.write_bytes((MPT_HEADER + rows).encode("latin-1"))
    first = FileReader(path)
    assert len(first.read_available(max_lines=8)) == 3  # 5 header lines, then 3 rows
    second = FileReader(path)
    second.restore(first.checkpoint())
    t0 = 1704067200.0  # 2024-01-01T00:00:00Z
    assert times(second.read_available()) == [t0 + t for t in range(3, 8)]


def test_restore_with_offset_zero_reads_from_the_start(tmp_path: Path) -> None:
    path = tmp_path / "A1.csv"
    path.write_text(CSV_HEADER + csv_rows(0, 3))
    reader = FileReader(path)
    state = reader.checkpoint()
    reader.restore(state)
    assert times(reader.read_available()) == [0, 1, 2]


def test_restore_on_a_truncated_file_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "A1.csv"
    path.write_text(CSV_HEADER + csv_rows(0, 10))
    first = FileReader(path)
    first.read_available()
    state = first.checkpoint()
    with path.open("r+") as f:  # truncated in place: same inode
        f.truncate(0)
    append(path, CSV_HEADER + csv_rows(100, 102))
    second = FileReader(path)
    second.restore(state)
    assert times(second.read_available()) == [100, 101]


def test_restore_on_a_replaced_file_of_the_same_size_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "A1.csv"
    path.write_text(CSV_HEADER + csv_rows(0, 10))
    first = FileReader(path)
    first.read_available()
    state = first.checkpoint()
    path.unlink()
    path.write_text(CSV_HEADER + csv_rows(0, 10, cell="B2"))  # may well reuse the inode
    second = FileReader(path)
    second.restore(state)
    items = second.read_available()
    assert len(items) == 10
    assert {i.cell for i in items} == {"B2"}  # type: ignore[union-attr]


def test_restore_refuses_another_file_s_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "A1.csv"
    path.write_text(CSV_HEADER)
    state = FileReader(path).checkpoint() | {"path": str(tmp_path / "other.csv")}
    with pytest.raises(ValueError, match="checkpoint is for"):
        FileReader(path).restore(state)


def test_following_a_truncated_file_restarts_from_zero(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "A1.csv"
    path.write_text(CSV_HEADER + csv_rows(0, 5))
    reader = FileReader(path)
    assert times(reader.read_available()) == [0, 1, 2, 3, 4]
    path.write_text(CSV_HEADER + csv_rows(50, 52))  # truncated and rewritten in place, shorter
    assert times(reader.read_available()) == [50, 51]
    assert "A1.csv: file was truncated; reading it from the start" in caplog.text


def test_following_a_replaced_file_restarts_from_zero(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "A1.csv"
    path.write_text(CSV_HEADER + csv_rows(0, 3))
    reader = FileReader(path)
    assert times(reader.read_available()) == [0, 1, 2]
    new = tmp_path / "new.csv"
    new.write_text(CSV_HEADER + csv_rows(0, 40, cell="B2"))
    keep = path.with_suffix(".old")
    os.rename(path, keep)  # keep the old inode alive so that the new file gets another
    os.rename(new, path)
    items = reader.read_available()
    assert len(items) == 40
    assert {i.cell for i in items} == {"B2"}  # type: ignore[union-attr]
    assert "A1.csv: file was replaced; reading it from the start" in caplog.text


def test_a_missing_file_raises_and_the_reader_keeps_its_place(tmp_path: Path) -> None:
    path = tmp_path / "A1.csv"
    path.write_text(CSV_HEADER + csv_rows(0, 3))
    reader = FileReader(path)
    reader.read_available()
    keep = path.with_suffix(".tmp")
    path.rename(keep)
    with pytest.raises(FileNotFoundError):
        reader.read_available()
    keep.rename(path)
    append(path, csv_rows(3, 4))
    assert times(reader.read_available()) == [3]


def test_explicit_cell_and_zone(tmp_path: Path) -> None:
    path = tmp_path / "run.mpt"
    path.write_bytes((MPT_HEADER + "3\t0\t3.5\t0\t0\t\n").encode("latin-1"))
    (row,) = list(iter_file(path, cell="K9", tz="America/New_York"))
    assert row == Sample(1704085200.0, "K9", 3.5, 0.0, None, None, 0, None, "rest")  # 05:00 UTC
