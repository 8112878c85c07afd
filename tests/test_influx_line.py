"""Line protocol encoding: the same lines influxdb-client's Point writes, the schema's types."""

from __future__ import annotations

import dataclasses
import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st
from influxdb_client import Point

from shortwatch.model import CycleFeatures, StepFeatures
from shortwatch.storage.influx_line import STEP_FIELDS, LineEncoder, timestamp

T0 = 1_767_600_000.0
names = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=20)
floats = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5).map(float))
ints = st.one_of(st.none(), st.integers(-(2**40), 2**40))


def _point(measurement: str, tags: dict, fields: dict, t: float, precision: str = "us") -> str:
    p = Point(measurement)
    for k, v in tags.items():
        p.tag(k, v)
    for k, v in fields.items():
        p.field(k, v)
    p.time(timestamp(t, precision), precision)
    return p.to_line_protocol()


@settings(max_examples=300, deadline=None)
@given(cell=names, station=names, v=floats, i=floats, p=floats, temp=floats, cycle=ints, step=ints)
def test_sample_line_is_what_point_writes(cell, station, v, i, p, temp, cycle, step) -> None:
    row = {"cell": cell, "station": station, "time": T0 + 0.123456, "voltage_V": v, "current_A": i}
    row |= {"pressure_MPa": p, "temperature_C": temp, "cycle": cycle, "step": step}
    fields = {k: row[k] for k in ("voltage_V", "current_A", "pressure_MPa", "temperature_C", "cycle", "step")}
    expected = _point("sample", {"cell": cell, "station": station}, fields, row["time"]) or None
    assert LineEncoder("us").sample(row) == expected


def test_no_field_no_line_and_nan_is_left_out() -> None:
    enc = LineEncoder("ms")
    assert enc.sample({"cell": "A1", "station": "s", "time": T0, "voltage_V": math.nan}) is None
    line = enc.sample({"cell": "A 1,x=y", "station": "s", "time": T0, "voltage_V": math.nan, "current_A": 0.001})
    assert line == r"sample,cell=A\ 1\,x\=y,station=s current_A=0.001 1767600000000"


def test_declared_types_win_over_the_values() -> None:
    """A float field holding a whole number stays a float; an int field is an integer."""
    enc = LineEncoder("s")
    row = {f.name: None for f in dataclasses.fields(StepFeatures)}
    row |= {"cell": "A1", "station": "s", "step_kind": "charge", "t_start": T0, "step_index": 3.0, "cycle": 1}
    row |= {"max_dip_V": 0, "duration_s": 10, "v_dips": 2}
    line = enc.step(row)
    fields = "cycle=1i,duration_s=10,max_dip_V=0,step_index=3i,v_dips=2i"
    assert line == f"step,cell=A1,station=s,step_kind=charge {fields} 1767600000"
    assert STEP_FIELDS["capacity_Ah"] == "f" and STEP_FIELDS["n_samples"] == "i"
    assert "t_start" not in STEP_FIELDS and "cell" not in STEP_FIELDS


def test_cycle_and_detector_lines() -> None:
    enc = LineEncoder("ms")
    row = {f.name: None for f in dataclasses.fields(CycleFeatures)}
    row |= {"cell": "B1", "station": "g1", "cycle": 4, "t_start": T0, "t_end": T0 + 3600, "ce": 0.98}
    assert enc.cycle(row) == "cycle,cell=B1,station=g1 ce=0.98,cycle=4i,t_end=1767603600 1767600000000"
    det = {"cell": "B1", "station": "g1", "time": T0, "detector": "hard_short", "statistic": 1.5}
    det |= {"threshold": None, "state": "ok"}
    assert enc.detector(det) == 'detector,cell=B1,detector=hard_short,station=g1 state="ok",statistic=1.5 1767600000000'


def test_alert_line_quotes_and_escapes_and_station_alerts() -> None:
    enc = LineEncoder("ms")
    ev = {
        "id": "u-1",
        "episode": "_station/influx_backlog/2026-01-05T08:00:00+00:00",
        "time_s": T0,
        "station": "g1",
        "cell": None,
        "source": "influxdb",
        "detector": "influx_backlog",
        "kind": "data",
        "severity": "warning",
        "state": "firing",
        "reminder": False,
        "summary": 'a "quoted" \\ summary',
        "evidence": {"rows": 3, "why": "x"},
        "advice": "",
    }
    line = enc.alert(ev)
    assert line.startswith("alert,cell=_station,detector=influx_backlog,station=g1 ")
    assert r'summary="a \"quoted\" \\ summary"' in line
    assert 'evidence="{\\"rows\\":3,\\"why\\":\\"x\\"}"' in line
    assert "reminder=false" in line and line.endswith(" 1767600000000")
    assert json.loads('"' + line.split('evidence="')[1].split('",')[0] + '"') == '{"rows":3,"why":"x"}'


def test_timestamps_at_every_precision() -> None:
    t = 1_767_600_000.123456
    assert [timestamp(t, p) for p in ("s", "ms", "us", "ns")] == [
        1767600000,
        1767600000123,
        1767600000123456,
        1767600000123456000,
    ]


def test_daemon_numbers_are_floats() -> None:
    line = LineEncoder("s").daemon("g1", T0, {"queue_depth": 3, "backlog_rows": 0, "ok": True, "note": "x"})
    assert line == 'daemon,station=g1 backlog_rows=0,note="x",ok=true,queue_depth=3 1767600000'
