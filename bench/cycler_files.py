"""Read throughput of each real binary cycler file, against its reference in the same run.

For the .ndax/.nda files the reference is NewareNDA.read alone (what any reader of these
files pays); the ratio says how much the record reader adds (re-check, conversion to
Samples). For the .mpr files the reference is numpy reading the same bytes as one array
(the floor for any reader); then the whole pipeline (validation, features, detectors) on
the same file, which is what `shortwatch replay` moves.

Then the cost of following a growing .nda: a large file is made in a temp dir from each real
.nda (its header, then its records again and again with increasing Index and times, no
footer: a test still running), read once (the first poll reads it whole), then 10 records
are appended and one poll passes them on. The reference is one whole read of the same file
(NewareNDA.read), what each change cost before .nda files were followed record by record.

    python bench/cycler_files.py [--realdata ../shared/realdata] [--records 600000]
"""

from __future__ import annotations

import argparse
import statistics
import struct
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from shortwatch.daemon.pipeline import Pipeline
from shortwatch.model import RecordBatch
from shortwatch.sensors.files import open_reader
from shortwatch.sensors.neware_nda import NewareDecoder, nda_layout
from shortwatch.settings import parse_settings


def timed(fn, *args):  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


def as_floats(raw: bytes) -> list[float]:
    return np.frombuffer(raw[: len(raw) // 8 * 8], dtype="<f8").tolist()  # type: ignore[no-any-return]


def read_all(path: Path) -> int:
    reader = open_reader(path)
    n = 0
    while batch := reader.read_available(5000):
        n += len(batch)
    return n


def pipeline(path: Path) -> int:
    p = Pipeline(parse_settings({"cells": {path.stem: {"kind": "full", "area_cm2": 100.0}}}))
    reader = open_reader(path)
    n = 0
    while batch := reader.read_available(5000):  # batches, as the file source hands them over
        p.process(batch, "bench", RecordBatch())
        n += len(batch)
    p.finish(RecordBatch())
    return n


def nda_records(data: bytes) -> tuple[bytes, list[bytes], tuple[int, int]]:
    """(header, data records, (offset of the u4 Index, of the u4 seconds of the date)) of a real .nda."""
    layout = nda_layout(data, len(data))
    assert layout is not None
    start, length = layout["start"], layout["length"]
    v29 = layout["version"] == 29
    tag, fields = (b"\x55\x00", (2, 0)) if v29 else (b"\x55", (8, 44))
    records = [data[p : p + length] for p in range(start, len(data) - length + 1, length)]
    return data[:start], [r for r in records if r.startswith(tag) and (not v29 or r[82:86] == bytes(4))], fields


def repeated(records: list[bytes], fields: tuple[int, int], first: int, n: int, v29: bool) -> bytes:
    """n records from the real ones in a loop, Index from ``first`` on, times moved on by a day a loop."""
    out = bytearray()
    for k in range(n):
        rec = bytearray(records[k % len(records)])
        struct.pack_into("<I", rec, fields[0], first + k)
        if v29:  # the date is Y M D h m s: move the day of the month on (it stays a valid date)
            rec[73] = 1 + (rec[73] - 1 + k // len(records)) % 28
        else:
            date = struct.unpack_from("<I", rec, fields[1])[0]
            struct.pack_into("<I", rec, fields[1], date + 86400 * (k // len(records)))
        out += rec
    return bytes(out)


def follow_cost(real: Path, n_records: int, tmp: Path) -> None:
    """One poll after 10 records are appended to a large growing .nda, against one whole read of it."""
    import NewareNDA

    data = real.read_bytes()
    header, records, fields = nda_records(data)
    v29 = data[14] == 29
    live = tmp / f"big-{real.name}"
    live.write_bytes(header + repeated(records, fields, 1, n_records, v29))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, t_whole = timed(NewareNDA.read, str(live))
    decoder = NewareDecoder(str(live), "bench")

    def drain() -> int:
        n = 0
        while batch := decoder.poll(live, 5000):
            n += len(batch)
        return n

    n_first, t_first = timed(drain)
    polls = []
    for k in range(20):
        with live.open("ab") as f:
            f.write(repeated(records, fields, n_records + 1 + 10 * k, 10, v29))
        n, t_poll = timed(drain)
        assert n == 10, n
        polls.append(t_poll)
    t_poll = statistics.median(polls)
    print(
        f"{live.name:34s} {live.stat().st_size / 1e6:7.1f} {n_first:9d} {t_whole:9.2f} {t_first:10.2f}"
        f" {t_poll * 1e3:12.2f} {t_whole / t_poll:10.0f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--realdata", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "realdata")
    ap.add_argument("--records", type=int, default=600_000, help="records of the large growing .nda")
    args = ap.parse_args()
    nda = sorted((args.realdata / "neware_nda").glob("*.nd*"))
    mpr = sorted(args.realdata.glob("*.mpr"))
    print(f"{'file':46s} {'records':>8s} {'reference/s':>12s} {'reader/s':>10s} {'ratio':>6s} {'pipeline/s':>11s}")
    for path in [*nda, *mpr]:
        if path.suffix in (".nda", ".ndax"):
            import NewareNDA

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _, t_ref = timed(NewareNDA.read, str(path))
        else:
            raw = path.read_bytes()
            _, t_ref = timed(as_floats, raw)
        n, t_read = timed(read_all, path)
        _, t_pipe = timed(pipeline, path)
        print(f"{path.name:46s} {n:8d} {n / t_ref:12.0f} {n / t_read:10.0f} {t_ref / t_read:6.2f} {n / t_pipe:11.0f}")
    print()
    print("following a growing .nda: one poll after 10 records appended, against one whole read (NewareNDA.read)")
    columns = ("MB", "records", "whole/s", "1st poll/s", "10 rec/ms", "ratio")
    print(f"{'file':34s} " + " ".join(f"{c:>{w}s}" for c, w in zip(columns, (7, 9, 9, 10, 12, 10), strict=True)))
    with tempfile.TemporaryDirectory() as tmp:
        for path in [p for p in nda if p.suffix == ".nda"]:
            follow_cost(path, args.records, Path(tmp))


if __name__ == "__main__":
    main()
