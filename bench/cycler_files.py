"""Read throughput of each real binary cycler file, against its reference in the same run.

For the .ndax/.nda files the reference is NewareNDA.read alone (what any reader of these
files pays); the ratio says how much the record reader adds (re-check, conversion to
Samples). For the .mpr files the reference is numpy reading the same bytes as one array
(the floor for any reader); then the whole pipeline (validation, features, detectors) on
the same file, which is what `shortwatch replay` moves.

    python bench/cycler_files.py [--realdata ../shared/realdata]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

from shortwatch.daemon.pipeline import Pipeline
from shortwatch.model import RecordBatch
from shortwatch.sensors.files import open_reader
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--realdata", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "realdata")
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


if __name__ == "__main__":
    main()
