"""Every real cycler export in ../shared/realdata, read end to end and checked against its own columns.

The expected values come from reading each file independently here (pandas, pyarrow for
NewareNDA's .ftr reference tables), not from the readers under test.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shortwatch.daemon.pipeline import Pipeline
from shortwatch.model import RecordBatch, Rejected, Sample
from shortwatch.sensors.files import detect_format, iter_file
from shortwatch.settings import parse_settings

REALDATA = Path(os.environ.get("SHORTWATCH_REALDATA", Path(__file__).resolve().parents[2] / "shared" / "realdata"))
NDA = REALDATA / "neware_nda"
pytestmark = pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata is not beside the checkout")

#: every data file and the format its content says; metadata files are recognised and skipped
FILES = {
    "2017-05-09_test-TC-contact_CH33.csv": "arbin-csv",
    "2017-05-09_test-TC-contact_CH33_Metadata.csv": "arbin-metadata",
    "gcpl.issue_211.mpr": "biologic-mpr",
    "gcpl.issue_211.mpt": "biologic-mpt",
    "gcpl.pr_182.1.mpr": "biologic-mpr",
    "gcpl.pr_182.1.mpt": "biologic-mpt",
    "maccor_001.txt": "maccor-txt",
    "maccor_002.txt": "maccor-txt",
    "mb.issue_223.mpr": "biologic-mpr",
    "mb.issue_223.mpt": "biologic-mpt",
    "neware_uio.csv": "neware-csv",
    "nw_regular_export_ife_example.csv": "neware-csv",
    "xTESLADIAG_000019_CH70.070": "maccor-txt",
    "neware_nda/TestFile.nda": "neware-nda",
    "neware_nda/new_nda_file.nda": "neware-nda",
    "neware_nda/123456789012_Unit27_Example_Data_File.ndax": "neware-nda",
    "neware_nda/BTS85-36-6-5-110-20240424.ndax": "neware-nda",
}


def samples(path: Path) -> list[Sample]:
    items = list(iter_file(path))
    assert not [i for i in items if isinstance(i, Rejected)]
    return items  # type: ignore[return-value]


def pipeline(path: Path, **spec: object) -> RecordBatch:
    p = Pipeline(parse_settings({"cells": {path.stem: spec}}))
    out = RecordBatch()
    p.process(iter_file(path), "test", out)
    p.finish(out)
    return out


def test_the_folder_holds_exactly_the_files_listed() -> None:
    present = {str(p.relative_to(REALDATA)) for p in REALDATA.rglob("*") if p.suffix not in (".md", ".ftr")}
    assert present - {"neware_nda"} == set(FILES)


@pytest.mark.parametrize("name", sorted(FILES))
def test_format_is_told_by_content_whatever_the_extension(name: str, tmp_path: Path) -> None:
    path = REALDATA / name
    assert detect_format(path) == FILES[name]
    if path.stat().st_size < 4_000_000:
        renamed = tmp_path / "export.dat"
        renamed.write_bytes(path.read_bytes())
        assert detect_format(renamed) == FILES[name]


def test_arbin_metadata_beside_the_data_is_skipped_not_read_as_data() -> None:
    assert list(iter_file(REALDATA / "2017-05-09_test-TC-contact_CH33_Metadata.csv")) == []


def test_arbin_csv() -> None:
    path = REALDATA / "2017-05-09_test-TC-contact_CH33.csv"
    df = pd.read_csv(path)
    got = samples(path)
    assert len(got) == len(df) == 287
    assert [s.time for s in got] == pytest.approx((df.DateTime.iloc[0] - df.Test_Time.iloc[0] + df.Test_Time).tolist())
    assert [s.voltage_V for s in got] == df.Voltage.tolist()
    assert [s.current_A for s in got] == df.Current.tolist()  # Arbin: positive on charge, as shortwatch
    assert all(s.current_A > 0 for s in got)  # a 6.6 A charge
    assert [s.temperature_C for s in got] == df.Temperature.tolist()
    assert all(s.cycle is None and s.step is None for s in got)  # the file's Step/Cycle are empty


def test_neware_flat_csv_times_past_24_h_cycles_signs_and_capacities() -> None:
    path = REALDATA / "neware_uio.csv"
    df = pd.read_csv(path)
    got = samples(path)
    assert len(got) == len(df) == 9065
    assert df["Cumulative Time"].iloc[-1] == "144:02:18"  # hours past 24
    assert got[-1].time - got[0].time == 144 * 3600 + 2 * 60 + 18
    assert [s.cycle for s in got] == df["Cycle Index"].tolist()
    assert [s.step for s in got] == df["Step Index"].tolist()
    charge = df["Step Type"].str.contains(" Chg").to_numpy()
    discharge = df["Step Type"].str.contains("DChg").to_numpy()
    current = np.array([s.current_A for s in got])
    assert (current[charge] >= 0).all() and (current[discharge] <= 0).all() and (current[discharge] < 0).any()
    out = pipeline(path, kind="anode-free", area_cm2=1.0)
    assert Counter(r.reason for r in out.rejected) == {"duplicate_time": 98}  # step ends logged twice by Neware
    # per cycle: the sum over its steps of Neware's own step capacities
    run = (df["Step Index"] != df["Step Index"].shift()).cumsum()
    steps = df.groupby(run).agg(c=("Cycle Index", "first"), ch=("Chg. Cap.(Ah)", "max"), dc=("DChg. Cap.(Ah)", "max"))
    per_cycle = steps.groupby("c")[["ch", "dc"]].sum()
    assert [c.cycle for c in out.cycles] == [1, 2, 3, 4]  # Neware's own numbers, not renumbered
    for c in out.cycles:
        assert c.q_charge_Ah == pytest.approx(per_cycle.ch[c.cycle], rel=1e-4)
        assert c.q_discharge_Ah == pytest.approx(per_cycle.dc[c.cycle], rel=1e-4)


def test_neware_nested_csv_rows_take_cycle_and_step_from_the_rows_above() -> None:
    path = REALDATA / "nw_regular_export_ife_example.csv"
    lines = path.read_text(encoding="latin-1").splitlines()[3:]
    records = [ln.split(",") for ln in lines if ln.startswith(",,")]
    got = samples(path)
    assert len(got) == len(records) == 9295
    assert [s.voltage_V for s in got] == [float(r[6]) for r in records]
    assert [s.temperature_C for s in got] == [float(r[12]) for r in records]  # T1
    cycle_rows = [ln for ln in lines if ln[:1].isdigit()]
    assert sorted({s.cycle for s in got}) == [int(ln.split(",")[0]) for ln in cycle_rows] == list(range(1, 21))
    current = np.array([s.current_A for s in got])
    assert current.max() == pytest.approx(0.5, rel=1e-3) and current.min() == pytest.approx(-0.5, rel=1e-3)
    # charge capacity of each cycle as the cycle row states it, against the records' integral
    out = pipeline(path, kind="full", area_cm2=1.0)
    stated = {int(ln.split(",")[0]): (float(ln.split(",")[1]), float(ln.split(",")[2])) for ln in cycle_rows}
    assert [c.cycle for c in out.cycles] == list(range(1, 21))
    for c in out.cycles:
        assert c.q_charge_Ah == pytest.approx(stated[c.cycle][0], rel=2e-3, abs=2e-5)
        assert c.q_discharge_Ah == pytest.approx(stated[c.cycle][1], rel=2e-3, abs=2e-5)


def _maccor_runs(df: pd.DataFrame, cycle: str, state: str, capacity: str) -> pd.DataFrame:
    run = ((df.Step != df.Step.shift()) | (df[state] != df[state].shift())).cumsum()
    return df.groupby(run).agg(c=(cycle, "first"), s=(state, "first"), q=(capacity, "max"))


def test_maccor_signed_layout() -> None:
    path = REALDATA / "xTESLADIAG_000019_CH70.070"
    df = pd.read_csv(path, sep="\t", skiprows=1)
    got = samples(path)
    assert len(got) == len(df) == 11669
    assert [s.time - got[0].time for s in got] == pytest.approx(df["Test (Sec)"].tolist(), abs=1e-6)
    assert [s.current_A for s in got] == df.Amps.tolist()  # already signed: D negative
    assert [s.cycle for s in got] == df["Cyc#"].tolist() and [s.step for s in got] == df.Step.tolist()
    out = pipeline(path, kind="full", area_cm2=100.0)
    assert not out.rejected
    runs = _maccor_runs(df, "Cyc#", "State", "Amp-hr")
    assert [c.cycle for c in out.cycles] == [0, 1, 2]
    for c in out.cycles:
        last = c.cycle == 2  # cut off by the end of the file
        expected = runs.q[(runs.c == c.cycle) & (runs.s == "D")].sum()
        assert c.q_discharge_Ah == pytest.approx(expected, rel=1e-2 if last else 1e-4)
        # charge ends in CV taper pulses the segmenter splits differently: within 2 %
        assert c.q_charge_Ah == pytest.approx(runs.q[(runs.c == c.cycle) & (runs.s == "C")].sum(), rel=2e-2)


def test_maccor_unsigned_current_takes_its_sign_from_state_and_the_dead_thermocouple_is_dropped() -> None:
    path = REALDATA / "maccor_001.txt"
    df = pd.read_csv(path, sep="\t", skiprows=3, index_col=False)
    got = samples(path)
    assert len(got) == len(df) == 6704
    assert (df.Amps >= 0).all()  # unsigned in the file
    signs = df.State.map({"C": 1, "D": -1}).fillna(1).to_numpy()
    assert [s.current_A for s in got] == (df.Amps.to_numpy() * signs).tolist()
    last = 2 * 86400 + 2 * 3600 + 52 * 60 + 51.57  # "2d 02:52:51.57"
    assert got[-1].time - got[0].time == pytest.approx(last, abs=1e-3)
    out = pipeline(path, kind="full", area_cm2=100.0)
    assert all(s.temperature_C is None for s in out.samples)  # -2500 C: the channel is dropped
    assert all(s.voltage_V is not None for s in out.samples)  # the rest of each sample is kept
    assert len(out.samples) == 6704 - 1  # the last record repeats the time of the one before
    assert Counter(r.reason for r in out.rejected) == {"out_of_range": 6703, "duplicate_time": 1}
    assert [a.detector for a in out.alerts if a.kind == "cell"] == []
    runs = _maccor_runs(df, "Cyc#", "State", "Amp-hr")
    total_discharge = sum(c.q_discharge_Ah for c in out.cycles)
    assert total_discharge == pytest.approx(runs.q[runs.s == "D"].sum(), rel=2e-3)


def test_maccor_keyed_layout_with_minutes_and_control_bytes() -> None:
    path = REALDATA / "maccor_002.txt"
    raw = path.read_bytes()
    assert b"\x04" in raw[:1000] and b"\xff" in raw[:1000]  # control bytes in the header
    df = pd.read_csv(path, sep="\t", skiprows=13, encoding="latin-1", index_col=False).dropna(subset=["Rec"])
    got = samples(path)
    assert len(got) == len(df) == 7446
    assert [s.time - got[0].time for s in got] == pytest.approx((df.TestTime * 60).tolist(), abs=1e-6)  # minutes
    assert got[-1].time - got[0].time == pytest.approx(3809.841833 * 60)
    signs = df.Md.map({"C": 1, "D": -1}).fillna(1).to_numpy()
    assert [s.current_A for s in got] == pytest.approx((df["Current [A]"].to_numpy() * signs).tolist())
    assert [s.cycle for s in got] == df["Cycle C"].astype(int).tolist()
    out = pipeline(path, kind="full", area_cm2=1.0)
    runs = _maccor_runs(df, "Cycle C", "Md", "Cap. [Ah]")
    for c in out.cycles:
        assert c.q_discharge_Ah == pytest.approx(runs.q[(runs.c == c.cycle) & (runs.s == "D")].sum(), rel=2e-3)


@pytest.mark.parametrize("stem", ["gcpl.pr_182.1", "gcpl.issue_211", "mb.issue_223"])
def test_mpr_gives_the_samples_of_its_mpt_export(stem: str) -> None:
    binary, text = samples(REALDATA / f"{stem}.mpr"), samples(REALDATA / f"{stem}.mpt")
    assert len(binary) == len(text) > 100
    for b, t in zip(binary, text, strict=True):
        assert b.time == pytest.approx(t.time, abs=1e-3)  # the .mpt start time is rounded to 1 ms
        assert b.voltage_V == pytest.approx(t.voltage_V, rel=1e-7)  # float32 printed with 8 digits
        assert b.current_A == pytest.approx(t.current_A, rel=1e-6, abs=1e-15)
        assert (b.cycle, b.mode, b.step, b.temperature_C) == (t.cycle, t.mode, t.step, t.temperature_C)


def _ftr(path: Path) -> pd.DataFrame:
    import pyarrow.feather as feather

    ref = feather.read_table(path.with_suffix(".ftr")).to_pandas()
    return ref.drop_duplicates("Index", keep="first").reset_index(drop=True)


@pytest.mark.parametrize("name", ["TestFile.nda", "new_nda_file.nda", "123456789012_Unit27_Example_Data_File.ndax"])
def test_neware_binary_agrees_with_the_reference_table(name: str) -> None:
    path = NDA / name
    ref = _ftr(path)
    got = samples(path)
    assert len(got) == len(ref)
    assert [s.voltage_V for s in got] == pytest.approx(ref.Voltage.tolist(), rel=1e-6)
    assert [s.current_A for s in got] == pytest.approx((ref["Current(mA)"] / 1000).tolist(), rel=1e-6, abs=1e-12)
    assert [s.cycle for s in got] == ref.Cycle.tolist()
    stamps = ref.Timestamp
    if stamps.dt.tz is None:
        stamps = stamps.dt.tz_localize("UTC")
    expected = (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    # whole seconds in the older reference; an .nda stamped to the second gets its fraction from the step time
    assert [s.time for s in got] == pytest.approx(expected.tolist(), abs=1.0)
    assert len({s.time for s in got}) >= len(got) - 5  # so records 0.5 s apart keep distinct times
    charge = ref.Status.astype(str).str.endswith("_Chg").to_numpy()
    current = np.array([s.current_A for s in got])
    assert (current[charge] >= 0).all() and (current[ref.Status.astype(str).str.endswith("DChg")] <= 0).all()
    if "T1" in ref:
        assert [s.temperature_C for s in got] == pytest.approx(ref.T1.tolist(), rel=1e-6)


def test_neware_nda_capacities_agree_with_the_file() -> None:
    path = NDA / "TestFile.nda"
    ref = _ftr(path)
    out = pipeline(path, kind="full", area_cm2=10.0)  # a 6 Ah cell at 3 A
    assert Counter(r.reason for r in out.rejected) == {"out_of_order": 17, "duplicate": 1}  # as Neware logged them
    assert [c.cycle for c in out.cycles] == [1, 2, 3]
    run = (ref.Step != ref.Step.shift()).cumsum()
    steps = ref.groupby(run).agg(
        c=("Cycle", "first"), ch=("Charge_Capacity(mAh)", "max"), dc=("Discharge_Capacity(mAh)", "max")
    )
    per_cycle = steps.groupby("c")[["ch", "dc"]].sum() / 1000
    for c in out.cycles[:-1]:  # the last cycle is cut off by the end of the file
        assert c.q_charge_Ah == pytest.approx(per_cycle.ch[c.cycle], rel=1e-2)
        assert c.q_discharge_Ah == pytest.approx(per_cycle.dc[c.cycle], rel=1e-2)


@pytest.mark.slow
def test_the_big_ndax_is_read_whole() -> None:
    path = NDA / "BTS85-36-6-5-110-20240424.ndax"
    n, cycles, last = 0, set(), None
    for item in iter_file(path):
        assert isinstance(item, Sample)
        n += 1
        cycles.add(item.cycle)
        last = item
    assert n == 699677
    assert last is not None and last.cycle == max(cycles)


@pytest.mark.parametrize(
    "name",
    ["maccor_001.txt", "maccor_002.txt", "neware_uio.csv", "nw_regular_export_ife_example.csv",
     "2017-05-09_test-TC-contact_CH33.csv", "xTESLADIAG_000019_CH70.070"],
)  # fmt: skip
def test_text_export_resumed_from_a_checkpoint_mid_file_gives_the_same_samples(name: str) -> None:
    from shortwatch.sensors.files import FileReader

    path = REALDATA / name
    full = samples(path)
    first = FileReader(path)
    got = first.read_available(max_lines=150)  # the start time, cycle and step rows are above the resume point
    assert 0 < len(got) < len(full)
    second = FileReader(path)
    second.restore(first.checkpoint())
    while batch := second.read_available():
        got += batch
    got += second.finish()
    assert got == full
