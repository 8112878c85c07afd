"""Random bytes, garbage lines and truncations thrown at every cycler-format decoder.

None may raise out of its reader; every line or record it cannot use comes back as a
Rejected with a reason and the raw input, and the pipeline quarantines each one.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shortwatch.daemon.pipeline import Pipeline
from shortwatch.model import RecordBatch, Rejected, Sample
from shortwatch.sensors.biologic_mpr import MAGIC, MprDecoder
from shortwatch.sensors.files import iter_file
from shortwatch.sensors.neware_nda import NewareDecoder
from shortwatch.settings import parse_settings

REALDATA = Path(os.environ.get("SHORTWATCH_REALDATA", Path(__file__).resolve().parents[2] / "shared" / "realdata"))
BOUNDED = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

#: a header and one good row of each text format (synthetic, in each format's layout)
TEXT_FORMATS = {
    "neware-csv": (
        "DataPoint,Cycle Index,Step Index,Step Type,Time,Cumulative Time,Current(A),Voltage(V),Date\n",
        "5,1,2,CC DChg,00:01:00,25:00:01,-0.001,3.1,2022-05-18 16:27:52\n",
    ),
    "neware-nested": (
        "Cycle Index,Chg. Cap.(Ah)\n,Step Index,Step Number,Step Type,Step Time\n"
        ",,DataPoint,Time,Total Time,Current(A),Voltage(V),Date\n1,0.1\n,1,1,CC Chg,00:00:20\n",
        ',,1,00:00:00,"1 day, 00:00:00",0.5,4.1,2026-03-06 12:37:25\n',
    ),
    "arbin-csv": (
        "Data_Point,Test_Time,DateTime,Step_Index,Cycle_Index,Current,Voltage,Temperature\n",
        "0,0.5,1494377253.17,1,1,6.6,3.3,25.1\n",
    ),
    "maccor-txt": (
        "Today's Date 07/17/2019\nRec#\tCyc#\tStep\tTest (Sec)\tStep (Sec)\tAmp-hr\tAmps\tVolts\tState\tDPt Time\n",
        "1\t0\t1\t0.0\t0.0\t0.0\t1.5\t3.45\tD\t07/11/2019 14:02:33\n",
    ),
    "maccor-keyed": (
        "Name:\tX\nDescription\t\x04\x03\xff\n\nRec\tCycle P\tCycle C\tStep\tTestTime\tStepTime\t"
        "Current [A]\tVoltage [V]\tMd\tDPT Time\n\n",
        "1\t0\t1\t1\t2.5\t0.0\t0.0001\t0.17\tC\t5/11/2021 3:40:24 PM\n",
    ),
}
REASONS = {"parse_error", "wrong_field_count", "missing_time", "non_finite", "truncated_line"}


def decode_text(tmp_path: Path, text: bytes) -> list[Sample | Rejected]:
    path = tmp_path / "export.dat"
    path.write_bytes(text)
    return list(iter_file(path))


def quarantined(items: list[Sample | Rejected]) -> RecordBatch:
    p = Pipeline(parse_settings({}))
    out = RecordBatch()
    p.process(items, "test", out)
    return out


@pytest.mark.parametrize("name", sorted(TEXT_FORMATS))
def test_each_synthetic_export_is_told_by_its_content(name: str, tmp_path: Path) -> None:
    from shortwatch.sensors.files import detect_format

    header, row = TEXT_FORMATS[name]
    path = tmp_path / "export.dat"
    path.write_bytes((header + row).encode("latin-1"))
    assert detect_format(path) == name.replace("-nested", "-csv").replace("-keyed", "-txt")


@pytest.mark.parametrize("name", sorted(TEXT_FORMATS))
def test_a_good_row_decodes(name: str, tmp_path: Path) -> None:
    header, row = TEXT_FORMATS[name]
    items = decode_text(tmp_path, (header + row).encode("latin-1"))
    assert len(items) == 1 and isinstance(items[0], Sample), items


@pytest.mark.parametrize("name", sorted(TEXT_FORMATS))
@BOUNDED
@given(garbage=st.lists(st.binary(max_size=120), min_size=1, max_size=6), cut=st.integers(0, 200))
def test_garbage_lines_are_rejected_and_the_good_rows_around_them_kept(
    name: str, garbage: list[bytes], cut: int, tmp_path: Path
) -> None:
    header, row = TEXT_FORMATS[name]
    good = row.encode("latin-1")
    body = b"".join(g.replace(b"\n", b" ").replace(b"\r", b" ") + b"\n" for g in garbage)
    tail = good[: cut % (len(good) + 1)]  # a last row cut anywhere (replay: decoded or quarantined)
    items = decode_text(tmp_path, header.encode("latin-1") + good + body + good + tail)
    rejected = [i for i in items if isinstance(i, Rejected)]
    assert all(r.reason in REASONS and r.detail for r in rejected), rejected
    kept = [i for i in items if isinstance(i, Sample)]
    assert len(kept) >= 2  # the good rows before and after the garbage
    out = quarantined(items)
    assert len(out.rejected) >= len(rejected)
    assert {r.reason for r in rejected} <= {r.reason for r in out.rejected}


@BOUNDED
@given(
    noise=st.binary(min_size=0, max_size=3000),
    cut=st.integers(0, 10_000),
    flips=st.lists(st.tuples(st.integers(52, 20_000), st.integers(0, 255)), max_size=8),
)
def test_mpr_decoder_never_raises_on_damaged_files(
    noise: bytes, cut: int, flips: list[tuple[int, int]], tmp_path: Path
) -> None:
    real = REALDATA / "mb.issue_223.mpr"
    base = bytearray(real.read_bytes()[: 52 + cut * 3] if real.is_file() else MAGIC.ljust(48) + bytes(4))
    for pos, value in flips:
        if pos < len(base):
            base[pos] = value
    path = tmp_path / "x.mpr"
    path.write_bytes(bytes(base) + noise)
    decoder = MprDecoder("test", "X")
    items: list[Sample | Rejected] = []
    for final in (False, True, True):
        while batch := decoder.poll(path, 500, final=final):
            items.extend(batch)
    assert all(isinstance(i, Sample | Rejected) for i in items)
    assert all(i.reason and i.detail for i in items if isinstance(i, Rejected))
    assert len([i for i in items if isinstance(i, Rejected)]) <= 3  # each problem once, not at every poll


def test_mpr_with_an_unknown_column_id_is_quarantined_with_its_reason(tmp_path: Path) -> None:
    header = MAGIC.ljust(48) + bytes(4)
    module = b"MODULE" + b"VMP data  " + b"VMP data".ljust(25) + struct.pack("<2I", 0x195 + 8, 2) + b"01/01/25"
    data = struct.pack("<IB", 1, 2) + struct.pack("<2H", 4, 255)  # 255: no such column
    path = tmp_path / "x.mpr"
    path.write_bytes(header + module + data.ljust(0x195, b"\0") + bytes(8))
    items = list(iter_file(path))
    assert len(items) == 1 and isinstance(items[0], Rejected)
    assert items[0].reason == "bad_structure" and "column id" in items[0].detail


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(noise=st.binary(min_size=0, max_size=4000), cut=st.integers(0, 400_000))
def test_neware_decoder_never_raises_on_damaged_files(noise: bytes, cut: int, tmp_path: Path) -> None:
    real = REALDATA / "neware_nda" / "new_nda_file.nda"
    base = real.read_bytes()[:cut] if real.is_file() else b"NEWARE"
    path = tmp_path / "x.nda"
    path.write_bytes(base[:cut] + noise if len(base) > 6 else b"NEWARE" + noise)
    decoder = NewareDecoder("test", "X")
    items: list[Sample | Rejected] = []
    while batch := decoder.poll(path, 500, final=True):
        items.extend(batch)
    assert all(isinstance(i, Sample | Rejected) for i in items)
    assert all(i.reason and i.detail for i in items if isinstance(i, Rejected))
