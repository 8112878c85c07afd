"""The validation gate and the line decoders against hostile values (issue 6): far-future and
pre-historic times, malformed ISO seconds, cell ids that break exports, integers out of range,
underscores in numbers, and many unknown cells (one summary line, linear work)."""

from __future__ import annotations

import json
import logging
import time

import pytest

from shortwatch.daemon.pipeline import Pipeline
from shortwatch.model import RecordBatch, Rejected, Sample
from shortwatch.sensors.biologic import BiologicMptDecoder
from shortwatch.sensors.canonical_csv import CanonicalCsvDecoder
from shortwatch.settings import parse_settings

T0 = 1_767_600_000.0  # 2026-01-05


def pipeline(live: bool = False, **daemon) -> Pipeline:
    return Pipeline(parse_settings({"daemon": daemon, "cells": {"A1": {"kind": "symmetric"}}}), live=live)


def run(p: Pipeline, items: list[Sample | Rejected]) -> RecordBatch:
    out = RecordBatch()
    p.process(items, "test", out)
    return out


@pytest.mark.parametrize("live", [False, True])
@pytest.mark.parametrize("t", [90_000_000_000.0, 1.5e11, 1e15])
def test_a_far_future_time_is_quarantined_and_later_rows_are_kept(live: bool, t: float) -> None:
    p = pipeline(live)
    out = run(p, [Sample(T0, "A1", 0.01, 0.0), Sample(t, "A1", 0.01, 0.0), Sample(T0 + 10, "A1", 0.01, 0.0)])
    assert [r.reason for r in out.rejected] == ["future_time"]
    assert [s.time for s in out.samples] == [T0, T0 + 10]


def test_a_far_future_first_sample_of_a_cell_does_not_block_the_cell() -> None:
    p = pipeline()
    out = run(p, [Sample(90_000_000_000.0, "A1", 0.01, 0.0), Sample(T0, "A1", 0.01, 0.0)])
    assert [r.reason for r in out.rejected] == ["future_time"]
    assert [s.time for s in out.samples] == [T0]


def test_live_refuses_times_days_ahead_of_the_wall_clock_replay_only_far_jumps() -> None:
    ahead = time.time() + 3 * 86400
    assert [r.reason for r in run(pipeline(live=True), [Sample(ahead, "A1", 0.01, 0.0)]).rejected] == ["future_time"]
    assert run(pipeline(live=False), [Sample(ahead, "A1", 0.01, 0.0)]).rejected == []
    # replay: a row two years ahead of its neighbours is implausible even in the past
    p = pipeline()
    jump = T0 - 5 * 365 * 86400
    out = run(p, [Sample(jump, "A1", 0.01, 0.0), Sample(jump + 2 * 365 * 86400, "A1", 0.01, 0.0)])
    assert [r.reason for r in out.rejected] == ["future_time"]


@pytest.mark.parametrize("t", [-65_000_000_000.0, -3e9])
def test_times_before_1900_are_bad_times(t: float) -> None:
    out = run(pipeline(), [Sample(t, "A1", 0.01, 0.0), Sample(T0, "A1", 0.01, 0.0)])
    assert [r.reason for r in out.rejected] == ["bad_time"]
    assert [s.time for s in out.samples] == [T0]


@pytest.mark.parametrize("cell", ["A\r1", "A\n1", "A\x00", "a/b", "a+b", "a#b", "x" * 129, "\x7f", "tab\there"])
def test_cell_ids_outside_the_design_rule_are_quarantined(cell: str) -> None:
    p = pipeline()
    out = run(p, [Sample(T0, cell, 0.01, 0.0), Sample(T0, "A1", 0.01, 0.0)])
    assert [r.reason for r in out.rejected] == ["bad_cell_id"]
    assert [s.cell for s in out.samples] == ["A1"]
    assert cell not in p.monitors


@pytest.mark.parametrize("cell", ["A1", "gcpl.pr_182.1", "cell 7-b", "x" * 128, "Zelle-ä"])
def test_good_cell_ids_pass(cell: str) -> None:
    assert len(run(pipeline(), [Sample(T0, cell, 0.01, 0.0)]).samples) == 1


@pytest.mark.parametrize(("field", "value"), [("cycle", 10**20), ("step", -1), ("cycle", 2**31)])
def test_integers_out_of_range_are_quarantined_and_the_sample_kept(field: str, value: int) -> None:
    s = Sample(T0, "A1", 0.01, 0.0, **{field: value})
    out = run(pipeline(), [s])
    assert [r.reason for r in out.rejected] == ["bad_integer"]
    assert str(value) in out.rejected[0].detail
    (kept,) = out.samples
    assert getattr(kept, field) is None and kept.voltage_V == 0.01


def test_a_cycle_of_1e20_in_a_csv_never_reaches_the_store_as_a_number() -> None:
    dec = CanonicalCsvDecoder("f.csv")
    dec.feed("time,cell,voltage_V,current_A,cycle")
    s = dec.feed(f"{T0},A1,3.0,0.001,1e20")
    out = run(pipeline(), [s])
    assert out.samples[0].cycle is None and out.rejected[0].reason == "bad_integer"


def csv_decoder() -> CanonicalCsvDecoder:
    dec = CanonicalCsvDecoder("f.csv")
    dec.feed("time,cell,voltage_V,current_A,pressure_MPa,cycle")
    return dec


@pytest.mark.parametrize(
    "line",
    [
        "1_000,A1,3.0,0.001,,",
        "1000,A1,3_0,0.001,,",
        "1000,A1,3.0,0.001,,1_0",
        "2026-01-05T09:00:1e9+00:00,A1,3.0,0.001,,",
        "2026-01-05T09:00:99+00:00,A1,3.0,0.001,,",
        "2026-01-05T09:00:1_0+00:00,A1,3.0,0.001,,",
        "2026-01-05T09:00: 5+00:00,A1,3.0,0.001,,",
    ],
)
def test_the_csv_decoder_refuses_what_float_is_too_lenient_about(line: str) -> None:
    dec = csv_decoder()
    dec.feed("2026-01-05T09:00:00+00:00,A1,3.0,0.001,,")  # the fast path has learnt ISO times
    item = dec.feed(line)
    assert isinstance(item, Rejected), item
    assert item.reason == "parse_error"


def test_iso_seconds_are_still_read_on_the_fast_path() -> None:
    dec = csv_decoder()
    a = dec.feed("2026-01-05T09:00:00+00:00,A1,3.0,0.001,,")
    b = dec.feed("2026-01-05T09:00:59.25+00:00,A1,3.0,0.001,,")
    assert isinstance(a, Sample) and isinstance(b, Sample)
    assert b.time - a.time == 59.25


def test_the_mpt_decoder_refuses_underscores() -> None:
    dec = BiologicMptDecoder("r.mpt", "C1")
    for line in ["EC-Lab ASCII FILE", "Nb header lines : 3", "mode\ttime/s\tEwe/V\t<I>/mA\tcycle number"]:
        dec.feed(line)
    assert isinstance(dec.feed("1\t1\t3.5\t0.1\t0"), Sample)
    for line in ["1\t1_0\t3.5\t0.1\t0", "1\t2\t3_5\t0.1\t0", "1\t3\t3.5\t0.1\t1_0"]:
        item = dec.feed(line)
        assert isinstance(item, Rejected) and item.reason == "parse_error", (line, item)


def test_many_unknown_cells_are_one_summary_line(caplog: pytest.LogCaptureFixture) -> None:
    p = pipeline()
    caplog.set_level(logging.INFO)
    run(p, [Sample(T0, f"U{k}", 0.01, 0.0) for k in range(2000)])
    p.finish(RecordBatch())
    lines = [r for r in caplog.records if "no [cells" in r.getMessage() or "unknown cell" in r.getMessage()]
    assert 1 <= len(lines) <= 2, [r.getMessage() for r in lines]
    assert "2000" in lines[-1].getMessage()
    assert p.rejects.counts["unknown_cell"] == 2000


def test_the_checkpoint_of_single_sample_cells_is_small_and_round_trips() -> None:
    p = pipeline()
    run(p, [Sample(T0, f"U{k}", 0.01, 0.0) for k in range(500)])
    run(p, [Sample(T0 + 10 * k, "A1", 0.01, 0.001 * (k % 7)) for k in range(1, 300)])
    state = json.loads(json.dumps(p.state()))
    per_cell = len(json.dumps(state["monitors"]["U7"]))
    assert per_cell < 1200, per_cell
    again = pipeline()
    again.load(state)
    assert json.loads(json.dumps(again.state())) == state
    # and it goes on the same: the restored pipeline judges new samples like the original
    more = [Sample(T0 + 10 * k, "A1", 0.01, 0.001 * (k % 7)) for k in range(300, 400)]
    a, b = run(p, list(more)), run(again, [Sample(s.time, s.cell, s.voltage_V, s.current_A) for s in more])
    assert len(a.samples) == len(b.samples) == 100
    assert json.loads(json.dumps(p.state())) == json.loads(json.dumps(again.state()))


def test_the_unknown_cell_advice_is_valid_toml(caplog: pytest.LogCaptureFixture) -> None:
    import tomllib

    run(pipeline(), [Sample(T0, "gcpl.pr_182.1", 0.01, 0.0)])
    (line,) = [r.getMessage() for r in caplog.records if "no [cells" in r.getMessage()]
    table = line[line.index("[cells.") : line.index("]") + 1]
    assert tomllib.loads(table + "\nkind = 'full'\n")["cells"]["gcpl.pr_182.1"] == {"kind": "full"}


def test_a_far_future_time_in_an_old_checkpoint_no_longer_blocks_its_cell(caplog) -> None:
    old = pipeline()
    run(old, [Sample(T0, "A1", 0.01, 0.0)])
    state = json.loads(json.dumps(old.state()))
    state["validator"]["last"]["A1"][0] = 90_000_000_000.0  # written by a version without the check
    p = pipeline()
    p.load(state)
    out = run(p, [Sample(T0 + 10, "A1", 0.01, 0.0)])
    assert [s.time for s in out.samples] == [T0 + 10] and not out.rejected
    assert "forgot the last sample time of 1 cell(s)" in caplog.text
