"""Canonical CSV: decoding, every Rejected reason, and an exact write -> read round trip."""

from __future__ import annotations

import dataclasses
import io
import logging
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shortwatch.model import CSV_COLUMNS, MODES, Rejected, Sample
from shortwatch.sensors.canonical_csv import CanonicalCsvDecoder, FormatError, write_csv
from shortwatch.sensors.files import iter_file

HEADER = ",".join(CSV_COLUMNS)
T0 = 1772366400.0  # 2026-03-01T12:00:00+00:00


def decode(text: str, cell: str | None = "X", tz: str = "UTC") -> list[Sample | Rejected]:
    decoder = CanonicalCsvDecoder("test", cell, tz)
    return [item for line in text.split("\n") if (item := decoder.feed(line)) is not None]


def test_unix_and_iso_times_agree() -> None:
    rows = decode(
        f"{HEADER}\n"
        f"{T0:.0f},A1,3.7,0.001,5.0,25.0,3,1,cc\n"
        f"{T0 + 0.5},A1,3.7,0.001,5.0,25.0,3,1,cc\n"
        "2026-03-01T12:00:01+00:00,A1,3.7,0.001,5.0,25.0,3,1,cc\n"
        "2026-03-01T12:00:02Z,A1,3.7,0.001,5.0,25.0,3,1,cc\n"
        "2026-03-01T13:00:03.25+01:00,A1,3.7,0.001,5.0,25.0,3,1,cc\n"
        f"{T0 + 4:.0f},A1,3.7,0.001,5.0,25.0,3,1,cc\n"
    )
    assert [r.time for r in rows] == [T0, T0 + 0.5, T0 + 1, T0 + 2, T0 + 3.25, T0 + 4]
    assert rows[0] == Sample(T0, "A1", 3.7, 0.001, 5.0, 25.0, 3, 1, "cc")


def test_iso_time_without_offset_is_read_in_the_decoder_zone() -> None:
    (row,) = decode("time,voltage_V\n2026-03-01T13:00:00,3.7\n", tz="Europe/Berlin")
    assert row.time == T0  # 13:00 CET is 12:00 UTC


def test_missing_values_and_optional_columns() -> None:
    rows = decode("time,cell,voltage_V,current_A,cycle,step,mode\n1,A1,,0.5,,,\n2,A1,3.1,,3.0,2,rest\n")
    assert rows == [
        Sample(1.0, "A1", None, 0.5),
        Sample(2.0, "A1", 3.1, None, None, None, 3, 2, "rest"),
    ]


def test_default_cell_is_the_file_stem(tmp_path: Path) -> None:
    path = tmp_path / "B7.csv"
    path.write_text("time,voltage_V,pressure_MPa\n1,3.7,4.5\n2,,4.6\n")
    assert list(iter_file(path)) == [Sample(1.0, "B7", 3.7, None, 4.5), Sample(2.0, "B7", None, None, 4.6)]


def test_cell_column_wins_and_empty_cell_takes_the_default() -> None:
    rows = decode("time,cell,voltage_V\n1,A1,3.7\n2,,3.8\n", cell="stem")
    assert [r.cell for r in rows] == ["A1", "stem"]


def test_quoted_fields_crlf_bom_and_extra_columns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        rows = decode('\ufefftime,cell,voltage_V,operator\r\n1,"A,1",3.7,"bob"\r\n\r\n2,A2,3.8,eve\r\n')
    assert rows == [Sample(1.0, "A,1", 3.7), Sample(2.0, "A2", 3.8)]
    assert [r.message for r in caplog.records] == ["test: ignoring unknown columns operator"]


def test_mode_is_read_case_insensitively() -> None:
    (row,) = decode("time,voltage_V,mode\n1,3.7, CV\n")
    assert row.mode == "cv"


def test_header_only_and_blank_lines_give_nothing() -> None:
    decoder = CanonicalCsvDecoder("test", "X")
    assert [decoder.feed(line) for line in ["", HEADER, "", "\r\n"]] == [None] * 4
    assert decoder.ready


@pytest.mark.parametrize(
    "header",
    ["cell,voltage_V,current_A", "time,cell,temperature_C,mode", "1772366400,A1,3.7", "time,time,voltage_V"],
)
def test_bad_header_is_a_format_error(header: str) -> None:
    with pytest.raises(FormatError, match="test: "):
        CanonicalCsvDecoder("test", "X").feed(header)


def test_header_error_names_what_is_missing() -> None:
    with pytest.raises(FormatError, match=r"needs a 'time' column.*it has 'cell', 'voltage_V'"):
        CanonicalCsvDecoder("f.csv", "X").feed("cell,voltage_V")


@pytest.mark.parametrize(
    ("line", "reason", "detail", "time"),
    [
        ("1,A1,abc,,,,,,", "parse_error", "voltage_V: not a number: 'abc'", 1.0),
        ("1,A1,3.7,0.1x,,,,,", "parse_error", "current_A: not a number", 1.0),
        ("1,A1,3.7,,,,2.5,,", "parse_error", "cycle: not an integer: '2.5'", 1.0),
        ("1,A1,3.7,,,,,one,", "parse_error", "step: not a number: 'one'", 1.0),
        ("yesterday,A1,3.7,,,,,,", "parse_error", "time: neither ISO-8601 nor Unix seconds", None),
        ("2026-13-01T00:00:00Z,A1,3.7,,,,,,", "parse_error", "time: neither", None),
        ("1,A1,3.7,,,,,,", None, None, 1.0),
        ("1,A1,3.7", "wrong_field_count", "3 fields, the header has 9", None),
        ("1,A1,3.7,,,,,,,,", "wrong_field_count", "11 fields", None),
        ("1,A1,3.7,,,,NaN,,", "non_finite", "cycle", 1.0),
        ("inf,A1,3.7,,,,,,", "non_finite", "time", None),
        (",A1,3.7,,,,,,", "missing_time", "time: empty", None),
        ("1,A1,3.7,,,,,,charge", "bad_mode", "mode: 'charge' is not one of cc, cv, sweep, rest", 1.0),
        ("\x00\x7f\ufffd\ufffd", "wrong_field_count", "1 fields", None),
        ("1,\ufffd\ufffd,\ufffd,,,,,,", "parse_error", "voltage_V: not a number", 1.0),
    ],
)
def test_rejected_rows(line: str, reason: str | None, detail: str | None, time: float | None) -> None:
    decoder = CanonicalCsvDecoder("test", "X")
    decoder.feed(HEADER)
    item = decoder.feed(line)
    if reason is None:
        assert isinstance(item, Sample)
        return
    assert isinstance(item, Rejected)
    assert (item.source, item.reason, item.raw, item.time) == ("test", reason, line, time)
    assert detail in item.detail
    if reason != "wrong_field_count":
        assert item.cell == line.split(",")[1]


@pytest.mark.parametrize("line", ["1,A1,nan,0.001,5.0,,,,", "1,A1,3.7,-inf,5.0,,,,", "1,A1,3.7,0.001,1e999,,,,"])
def test_non_finite_channel_values_pass_to_the_validator(line: str) -> None:
    """The row's good channels must not be lost with the bad one: the validator drops
    only the non-finite channel (and quarantines the sample)."""
    decoder = CanonicalCsvDecoder("test", "X")
    decoder.feed(HEADER)
    item = decoder.feed(line)
    assert isinstance(item, Sample)
    values = [item.voltage_V, item.current_A, item.pressure_MPa]
    assert sum(1 for v in values if v - v) == 1  # exactly one non-finite channel


def test_row_without_any_cell_is_rejected() -> None:
    (row,) = decode("time,cell,voltage_V\n5,,3.7\n", cell=None)
    assert isinstance(row, Rejected)
    assert (row.reason, row.time, row.cell) == ("parse_error", 5.0, None)
    assert "cell" in row.detail


def test_garbage_bytes_and_truncated_last_line_in_a_file(tmp_path: Path) -> None:
    path = tmp_path / "C1.csv"
    path.write_bytes(
        b"time,voltage_V,current_A\n1,3.7,0.1\n\xff\xfe\x00garbage\x81\n2,3.8,0.1\n\xc3\x28,\xa0\xa1,1\n3,3.9"
    )
    items = list(iter_file(path))
    assert [type(i).__name__ for i in items] == ["Sample", "Rejected", "Sample", "Rejected", "Rejected"]
    assert [i.reason for i in items if isinstance(i, Rejected)] == [
        "wrong_field_count",
        "parse_error",
        "truncated_line",
    ]
    assert items[1].raw == "\ufffd\ufffd\x00garbage\ufffd"
    assert items[4].raw == "3,3.9"
    assert items[4].detail == "wrong_field_count: 2 fields, the header has 3"


def test_complete_last_line_without_newline_is_a_sample(tmp_path: Path) -> None:
    path = tmp_path / "C1.csv"
    path.write_text("time,voltage_V\n1,3.7\n2,3.8")
    assert list(iter_file(path)) == [Sample(1.0, "C1", 3.7), Sample(2.0, "C1", 3.8)]


def test_write_csv_writes_header_and_empty_fields() -> None:
    out = io.StringIO()
    n = write_csv([Sample(T0, "A1", 3.7, None, 5.0, None, 3, None, "cc"), Sample(T0 + 0.5, "A,2")], out)
    assert n == 2
    assert out.getvalue() == (
        f'{HEADER}\n2026-03-01T12:00:00+00:00,A1,3.7,,5.0,,3,,cc\n2026-03-01T12:00:00.500000+00:00,"A,2",,,,,,,\n'
    )


def test_write_csv_refuses_a_line_break_in_a_cell_id() -> None:
    with pytest.raises(ValueError, match="line break"):
        write_csv([Sample(T0, "A\n1")], io.StringIO())


finite = st.floats(allow_nan=False, allow_infinity=False)
optional_finite = st.none() | finite
optional_int = st.none() | st.integers(-(2**40), 2**40)
cells = st.text(st.characters(blacklist_categories=["Cs", "Cc"]), min_size=1).filter(lambda c: c[0] != "\ufeff")
samples = st.builds(
    Sample,
    time=st.floats(-2e9, 5e9),
    cell=cells,
    voltage_V=optional_finite,
    current_A=optional_finite,
    pressure_MPa=optional_finite,
    temperature_C=optional_finite,
    cycle=optional_int,
    step=optional_int,
    mode=st.none() | st.sampled_from(MODES),
)


def _round_trip(items: list[Sample], time_format: str) -> list[Sample | Rejected]:
    out = io.StringIO()
    assert write_csv(items, out, time_format) == len(items)  # type: ignore[arg-type]
    return decode(out.getvalue(), cell=None)


def _exact(items: list[Sample | Rejected]) -> list[str]:
    """repr of every field: unlike ==, tells -0.0 from 0.0 and 1 from 1.0."""
    return [repr(dataclasses.astuple(item)) for item in items]


@given(st.lists(samples, max_size=20))
def test_round_trip_with_unix_times_is_exact(items: list[Sample]) -> None:
    assert _exact(_round_trip(items, "unix")) == _exact(items)  # type: ignore[arg-type]


@given(st.lists(samples, max_size=20))
def test_round_trip_with_iso_times_is_exact_but_for_sub_microsecond_time(items: list[Sample]) -> None:
    back = _round_trip(items, "iso")
    assert [b.time for b in back] == pytest.approx([s.time for s in items], abs=2e-6, rel=0)
    for b, s in zip(back, items, strict=True):
        b.time = s.time
    assert _exact(back) == _exact(items)  # type: ignore[arg-type]
