"""BioLogic EC-Lab .mpt exports: a real file, and small synthetic ones for each header variant."""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

import pytest

from shortwatch.model import Rejected, Sample
from shortwatch.sensors.biologic import BiologicMptDecoder
from shortwatch.sensors.canonical_csv import FormatError
from shortwatch.sensors.files import iter_file

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
GCPL = REALDATA / "gcpl.pr_182.1.mpt"

COLUMNS = ["mode", "ox/red", "time/s", "Ewe/V", "<I>/mA", "cycle number"]


def mpt(
    columns: list[str],
    rows: list[list[str]],
    settings: tuple[str, ...] = (),
    newline: str = "\n",
) -> str:
    """An .mpt export as EC-Lab writes it: header, then rows, each line ending in a tab."""
    header = ["EC-Lab ASCII FILE", f"Nb header lines : {3 + len(settings)}", *settings]
    body = ["\t".join(fields) + "\t" for fields in [columns, *rows]]
    return newline.join([*header, *body]) + newline


def read(tmp_path: Path, text: str, tz: str = "UTC", name: str = "cell.mpt") -> list[Sample | Rejected]:
    path = tmp_path / name
    path.write_bytes(text.encode("latin-1"))
    return list(iter_file(path, tz=tz))


def decode(text: str, tz: str = "UTC") -> list[Sample | Rejected]:
    decoder = BiologicMptDecoder("test", "X", tz)
    return [item for line in text.split("\n") if (item := decoder.feed(line)) is not None]


@pytest.mark.skipif(not GCPL.is_file(), reason=f"real-data folder {REALDATA} is not beside the checkout")
def test_real_gcpl_export(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        items = list(iter_file(GCPL))
    assert len(items) == 2533
    assert all(isinstance(i, Sample) for i in items)
    samples: list[Sample] = items  # type: ignore[assignment]
    assert {s.cell for s in samples} == {"gcpl.pr_182.1"}  # the file name without its extension
    # <I>/mA in the file runs from -0.250054 to +0.221772 mA
    currents = [s.current_A for s in samples if s.current_A is not None]
    assert max(abs(i) for i in currents) == pytest.approx(0.250054e-3, rel=1e-5)
    assert max(currents) == pytest.approx(0.221772e-3, rel=1e-5)
    assert Counter(s.cycle for s in samples) == {0: 389, 1: 594, 2: 571, 3: 585, 4: 394}
    assert Counter(s.mode for s in samples) == {"cc": 1654, "rest": 697, "cv": 182}
    # no "Acquisition started on" line: time/s counted from the epoch
    assert samples[0].time == 0.0
    assert samples[1].time == pytest.approx(8.365199788677273)
    assert samples[-1].time == pytest.approx(3.025189476075938e5)
    assert all(a.time <= b.time for a, b in pairwise(samples))
    assert samples[0].voltage_V == 2.3403094  # Ewe/V, the file has no Ecell/V
    assert all(s.pressure_MPa is None and s.step is None and s.temperature_C is None for s in samples)
    assert [r.message for r in caplog.records if "Acquisition" in r.message] == [
        f"{GCPL}: no 'Acquisition started on' line; times are time/s counted from 1970-01-01 UTC"
    ]


def test_acquisition_start_is_local_time_in_the_configured_zone(tmp_path: Path) -> None:
    settings = (
        "",
        "Galvanostatic Cycling with Potential Limitation",
        "Acquisition started on : 03/15/2022 10:21:33",
    )
    rows = [["1", "0", "0", "3.5", "0.1", "0"], ["1", "0", "1.5", "3.6", "0.1", "0"]]
    items = read(tmp_path, mpt(COLUMNS, rows, settings), tz="Europe/Berlin")
    start = datetime(2022, 3, 15, 9, 21, 33, tzinfo=UTC).timestamp()  # CET = UTC+1 in March before DST
    assert [i.time for i in items] == [start, start + 1.5]


def test_acquisition_start_with_milliseconds_in_summer_time() -> None:
    settings = ("Acquisition started on : 07/01/2023 12:00:00.250",)
    (row,) = decode(mpt(COLUMNS, [["1", "0", "2", "3.5", "0.1", "0"]], settings), tz="Europe/Berlin")
    assert row.time == datetime(2023, 7, 1, 10, 0, 2, 250000, tzinfo=UTC).timestamp()


def test_longer_header_with_settings_lines() -> None:
    settings = ("", "Galvanostatic Cycling with Potential Limitation", "", "Run on channel : 3 (SN 1234)")
    text = mpt(COLUMNS, [["3", "0", "10", "3.5", "0", "2.000000000000000E+000"]], settings)
    assert text.split("\n")[1] == "Nb header lines : 7"
    assert decode(text) == [Sample(10.0, "X", 3.5, 0.0, None, None, 2, None, "rest")]


def test_six_header_lines_data_starts_on_line_seven() -> None:
    settings = ("User : somebody", "Acquisition started on : 01/02/2024 00:00:00", "Electrode surface area : 0.785 cm²")
    text = mpt(COLUMNS, [["2", "1", "0", "4.2", "0.01", "1"]], settings)
    assert text.split("\n")[1] == "Nb header lines : 6"
    (row,) = decode(text)
    assert row == Sample(datetime(2024, 1, 2, tzinfo=UTC).timestamp(), "X", 4.2, 1e-5, None, None, 1, None, "cv")


def test_decimal_commas_e_notation_and_crlf(tmp_path: Path) -> None:
    rows = [["1", "1", "1,5", "3,456E+000", "-2,5E-001", "0,0"], ["2", "1", "2,5", "3,7", "-0,125", "1,0"]]
    items = read(tmp_path, mpt(COLUMNS, rows, newline="\r\n"), name="B2.mpt")
    assert items == [
        Sample(1.5, "B2", 3.456, -2.5e-4, None, None, 0, None, "cc"),
        Sample(2.5, "B2", 3.7, -1.25e-4, None, None, 1, None, "cv"),
    ]


def test_instantaneous_current_is_preferred_to_the_mean() -> None:
    both = ["time/s", "Ewe/V", "<I>/mA", "I/mA"]
    assert decode(mpt(both, [["0", "3.5", "1.0", "2.0"]]))[0].current_A == 2e-3  # type: ignore[union-attr]
    mean_only = ["time/s", "Ewe/V", "<I>/mA"]
    assert decode(mpt(mean_only, [["0", "3.5", "1.0"]]))[0].current_A == 1e-3  # type: ignore[union-attr]
    amperes = ["time/s", "Ewe/V", "I/A"]
    assert decode(mpt(amperes, [["0", "3.5", "1.0"]]))[0].current_A == 1.0  # type: ignore[union-attr]


def test_cell_voltage_is_preferred_to_the_working_electrode() -> None:
    columns = ["time/s", "Ewe/V", "Ece/V", "Ecell/V", "I/mA"]
    (row,) = decode(mpt(columns, [["0", "3.9", "-0.1", "4.0", "1"]]))
    assert row.voltage_V == 4.0  # type: ignore[union-attr]


def test_temperature_column_is_read_in_celsius(tmp_path: Path) -> None:
    columns = ["time/s", "Ecell/V", "I/mA", "Temperature/°C"]
    (row,) = read(tmp_path, mpt(columns, [["0", "4.0", "1", "25,5"]]))
    assert row.temperature_C == 25.5  # type: ignore[union-attr]


def test_potentiostatic_rows_of_a_cyclic_voltammetry_are_sweeps() -> None:
    settings = ("", "Cyclic Voltammetry", "")
    rows = [["2", "1", "0", "0.1", "0.01", "1"], ["3", "0", "1", "0.1", "0", "1"]]
    assert [r.mode for r in decode(mpt(COLUMNS, rows, settings))] == ["sweep", "rest"]  # type: ignore[union-attr]


def test_unknown_mode_code_is_left_unknown() -> None:
    (row,) = decode(mpt(COLUMNS, [["0", "0", "0", "3.5", "0.1", "0"]]))
    assert isinstance(row, Sample)
    assert row.mode is None


@pytest.mark.parametrize(
    ("fields", "reason", "detail", "time"),
    [
        (["1", "0", "1", "3.5", "0.1x", "0"], "parse_error", "<I>/mA: not a number: '0.1x'", 1.0),
        (["1", "0", "1", "3.5", "0.1", "0.5"], "parse_error", "cycle number: not an integer", 1.0),
        (["x", "0", "1", "3.5", "0.1", "0"], "parse_error", "mode: not a number: 'x'", 1.0),
        (["1", "0", "", "3.5", "0.1", "0"], "missing_time", "time/s: empty", None),
        (["1", "0", "abc", "3.5", "0.1", "0"], "parse_error", "time/s: not a number", None),
        (["1", "0", "inf", "3.5", "0.1", "0"], "non_finite", "time/s", None),
        (["1", "0", "1", "3.5"], "wrong_field_count", "4 fields, the header has 6", None),
    ],
)
def test_rejected_rows(fields: list[str], reason: str, detail: str, time: float | None) -> None:
    line = "\t".join(fields) + "\t"
    (item,) = decode(mpt(COLUMNS, [fields]))
    assert isinstance(item, Rejected)
    assert (item.reason, item.raw, item.cell, item.time) == (reason, line, "X", time)
    assert detail in item.detail


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("EC-Lab LOG FILE\n", "not an EC-Lab .mpt text export"),
        ("EC-Lab ASCII FILE\nmode\ttime/s\n", "line 2 should be 'Nb header lines : N'"),
        (mpt(["mode", "Ewe/V", "I/mA"], []), "with time/s and"),
        (mpt(["time/s", "Q charge/mA.h"], []), "with time/s and"),
        (mpt(COLUMNS, [], ("Acquisition started on : 2022-03-15 10:21:33",)), "cannot read 'Acquisition started on"),
    ],
)
def test_bad_header_is_a_format_error(text: str, match: str) -> None:
    with pytest.raises(FormatError, match=match):
        decode(text)
