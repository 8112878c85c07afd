"""Property tests (hypothesis, bounded examples): random bytes and malformed rows thrown at the
canonical CSV and .mpt decoders through the FileReader never raise out of it; each rejected
line is one Rejected with its reason and raw text, counted and quarantined by the pipeline; the
valid rows around it are kept; and reading a file in random chunks as it grows gives exactly
what a replay of the whole file gives."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shortwatch.daemon.pipeline import Pipeline
from shortwatch.model import RecordBatch, Rejected, Sample
from shortwatch.sensors.files import FileReader, FormatError, iter_file
from shortwatch.settings import parse_settings

T0 = 1_767_600_000
CSV_HEAD = b"time,cell,voltage_V,current_A,pressure_MPa,cycle\n"
MPT_HEAD = (
    b"EC-Lab ASCII FILE\r\nNb header lines : 4\r\nAcquisition started on : 01/05/2026 08:00:00\r\n"
    b"mode\ttime/s\tEwe/V\t<I>/mA\tcycle number\r\n"
)
MPT_T0 = 1_767_600_000.0  # 2026-01-05T08:00:00Z

junk_text = st.text(alphabet=",\t0123456789.eE+-_naifx \r\"'AB\x00\xe9", max_size=40).map(lambda s: s.encode("utf-8"))
junk = st.one_of(st.binary(max_size=60), junk_text).map(lambda b: b.replace(b"\n", b""))
PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def csv_row(k: int) -> bytes:
    return f"{T0 + 10 * k},GOOD,0.0{k % 10},0.0004,5.0,{k // 50}\n".encode()


def mpt_row(k: int) -> bytes:
    return f"1\t{10 * k}\t3.{k % 10}\t0.4\t{k // 50}\r\n".encode()


def build(head: bytes, row, plan: list[bytes | None]) -> tuple[bytes, list[int], int]:
    """File bytes; the numbers of the valid rows; how many junk lines (None in plan = a valid row)."""
    out, good, n_junk, k = [head], [], 0, 0
    for line in plan:
        if line is None:
            out.append(row(k))
            good.append(k)
            k += 1
        else:
            out.append(line + b"\n")
            n_junk += 1
    return b"".join(out), good, n_junk


def check_file(data: bytes, name: str, good: list[int], t_of) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        items = list(iter_file(path))  # must not raise: the header is valid
    lines = data.split(b"\n")
    assert len(items) <= len(lines)
    samples = [i for i in items if isinstance(i, Sample)]
    mine = [s for s in samples if s.cell == "GOOD" or name.endswith(".mpt")]
    # every valid row is there, with its values, in file order (junk may add samples of its own)
    times = [s.time for s in mine]
    for k in good:
        assert t_of(k) in times, k
    rejected = [i for i in items if isinstance(i, Rejected)]
    for r in rejected:
        assert r.reason and r.raw is not None and r.source.endswith(name)
    # the pipeline counts and quarantines every rejected line, and keeps the valid rows
    p = Pipeline(parse_settings({"cells": {"GOOD": {}, "C1": {}}}))
    out = RecordBatch()
    p.process(items, "file", out)
    assert sum(p.rejects.counts.values()) - p.rejects.counts["unknown_cell"] == len(out.rejected)
    assert all(r in out.rejected for r in rejected)
    if len(samples) == len(good):  # no junk line happened to decode as a sample
        assert len(out.samples) + sum(r.reason in ("out_of_range", "non_finite") for r in out.rejected) >= len(good)
        assert {t_of(k) for k in good} <= {s.time for s in out.samples}


@PROPS
@given(st.lists(st.one_of(st.none(), junk), max_size=40))
def test_csv_junk_is_quarantined_and_valid_rows_kept(plan: list[bytes | None]) -> None:
    data, good, _ = build(CSV_HEAD, csv_row, plan)
    check_file(data, "x.csv", good, lambda k: float(T0 + 10 * k))


@PROPS
@given(st.lists(st.one_of(st.none(), junk), max_size=40))
def test_mpt_junk_is_quarantined_and_valid_rows_kept(plan: list[bytes | None]) -> None:
    data, good, _ = build(MPT_HEAD, mpt_row, plan)
    check_file(data, "C1.mpt", good, lambda k: MPT_T0 + 10 * k)


@PROPS
@given(st.binary(max_size=400), st.sampled_from(["x.csv", "x.mpt", "x.txt"]))
def test_random_bytes_only_ever_give_items_or_a_format_error(data: bytes, name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        try:
            items = list(iter_file(path))
        except FormatError as exc:
            assert str(path) in str(exc)  # an unreadable file is named
            return
    assert all(isinstance(i, Sample | Rejected) for i in items)


@PROPS
@given(
    st.lists(st.one_of(st.none(), junk), max_size=30),
    st.lists(st.integers(min_value=1, max_value=200), min_size=1, max_size=20),
    st.sampled_from([(CSV_HEAD, csv_row, "x.csv"), (MPT_HEAD, mpt_row, "C1.mpt")]),
)
def test_reading_a_growing_file_in_random_chunks_equals_replay(plan, cuts, fmt) -> None:
    head, row, name = fmt
    data, _, _ = build(head, row, plan)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(b"")
        reader = FileReader(path)
        live: list[Sample | Rejected] = []
        pos = 0
        for cut in [*cuts, len(data)]:
            chunk, pos = data[pos : pos + cut], pos + cut
            with path.open("ab") as f:
                f.write(chunk)
            while batch := reader.read_available(max_lines=7):
                live.extend(batch)
        live.extend(reader.finish())
        assert live == list(iter_file(path))


@PROPS
@given(
    st.integers(min_value=1, max_value=40),
    st.lists(st.tuples(st.integers(min_value=1, max_value=90), st.booleans()), min_size=1, max_size=25),
)
def test_a_followed_file_with_idle_pauses_reads_every_line_once(n_rows: int, steps) -> None:
    """Rows appended in random pieces; at random moments the file goes idle (its mtime is set
    into the past) and the reader may read a line that has no newline yet. Every line is read
    exactly once: whole, or, when the pause cut it, as its first part plus one quarantined
    ``continued_line`` rest (never a second sample)."""
    data = CSV_HEAD + b"".join(csv_row(k) for k in range(n_rows))
    first_data = len(CSV_HEAD)
    cut_lines: set[int] = set()  # rows a pause cut in two
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.csv"
        path.write_bytes(b"")
        reader = FileReader(path, idle_line_s=5.0)
        got: list[Sample | Rejected] = []
        pos = 0
        for size, pause in [*steps, (len(data), True)]:
            chunk, pos = data[pos : pos + size], min(len(data), pos + size)
            with path.open("ab") as f:
                f.write(chunk)
            if pause:
                old = path.stat().st_mtime - 60
                os.utime(path, (old, old))  # idle for a minute
                if pos > first_data and data[pos - 1 : pos] != b"\n":
                    cut_lines.add(data.count(b"\n", first_data, pos))  # the row being written
            while batch := reader.read_available(max_lines=3):
                got.extend(batch)
        got.extend(reader.finish())
    whole = {float(T0 + 10 * k) for k in range(n_rows) if k not in cut_lines}
    samples = [s.time for s in got if isinstance(s, Sample)]
    assert len(samples) == len(set(samples))  # no line read twice
    assert whole <= set(samples)
    continued = [r for r in got if isinstance(r, Rejected) and r.reason == "continued_line"]
    assert len(continued) <= len(cut_lines)
    assert all(r.reason in ("continued_line", "truncated_line") for r in got if isinstance(r, Rejected))
    # at most one item per row, and every row gives at least one
    assert len(samples) + sum(isinstance(r, Rejected) and r.reason == "truncated_line" for r in got) == n_rows
