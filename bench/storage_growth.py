"""Does the embedded store keep its insert rate as the file grows?

Inserts synthetic 10-s samples of N cells (all cells at each time step, as the live daemon
does) in batches into a SqliteStore in a temporary directory, and prints, every ~1 M rows, the
cumulative rows, the insert rate of the last chunk and the file size. The rate counts only the
time spent in the store (hand-over until commit), not making the synthetic samples.

    python bench/storage_growth.py --rows 20000000 --cells 32
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from shortwatch.model import RecordBatch, Sample
from shortwatch.storage.sqlite import SqliteStore

T0 = 1_767_600_000.0  # 2026-01-05


def make_batch(first_tick: int, ticks: int, cells: list[str], rng: np.random.Generator) -> list[Sample]:
    """``ticks`` 10-s time steps of every cell: a 2-h charge/discharge square wave."""
    k = np.arange(first_tick, first_tick + ticks)
    t = T0 + 10.0 * k
    charging = (k // 720) % 2 == 0
    current = np.where(charging, 1e-3, -1e-3)
    cycle = (k // 1440).tolist()
    step = (k // 720).tolist()
    out: list[Sample] = []
    for j, cell in enumerate(cells):
        volt = np.where(charging, 0.02, -0.02) + rng.normal(0, 1e-4, ticks) + j * 1e-4
        press = 5.0 + 0.1 * np.sin(k / 500.0) + rng.normal(0, 1e-3, ticks)
        out.extend(
            Sample(ti, cell, vi, ii, pi, 25.0, ci, si, "cc")
            for ti, vi, ii, pi, ci, si in zip(
                t.tolist(), volt.tolist(), current.tolist(), press.tolist(), cycle, step, strict=True
            )
        )
    out.sort(key=lambda s: s.time)  # arrival order: all cells at each time step
    return out


def file_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000, help="sample rows to insert (default 10 M, ~1 min)")
    ap.add_argument("--cells", type=int, default=32)
    ap.add_argument("--batch", type=int, default=5000, help="samples per RecordBatch (default 5000)")
    ap.add_argument("--report-every", type=int, default=1_000_000, help="rows per printed line")
    ap.add_argument("--dir", type=Path, default=None, help="where to put the file (default: a temp dir)")
    args = ap.parse_args()

    cells = [f"C{i:02d}" for i in range(args.cells)]
    ticks = max(1, args.batch // args.cells)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "growth.sqlite"
        rates: list[float] = []
        with SqliteStore(path, max_pending_batches=4) as store:
            done = chunk_rows = tick = 0
            chunk_s = 0.0
            wall0 = time.perf_counter()
            print(f"{'rows':>12} {'rows/s':>10} {'file MB':>9} {'B/row':>6}")
            while done < args.rows:
                samples = make_batch(tick, ticks, cells, rng)
                tick += ticks
                t = time.perf_counter()
                store.write_sync(RecordBatch(samples=samples))
                chunk_s += time.perf_counter() - t
                done += len(samples)
                chunk_rows += len(samples)
                if chunk_rows >= args.report_every or done >= args.rows:
                    rates.append(chunk_rows / chunk_s)
                    size = file_size(path)
                    print(f"{done:>12,} {rates[-1]:>10,.0f} {size / 1e6:>9.0f} {size / done:>6.1f}", flush=True)
                    chunk_rows, chunk_s = 0, 0.0
            wall = time.perf_counter() - wall0
            t = time.perf_counter()
            plot = store.read_samples_decimated(cells[-1], 5000)
            dec_s = time.perf_counter() - t
            t = time.perf_counter()
            day = sum(1 for _ in store.read_samples(cells[0], since=T0 + 86400, until=T0 + 2 * 86400))
            day_s = time.perf_counter() - t
            stats = store.stats
        print(
            f"first chunk {rates[0]:,.0f} rows/s, last chunk {rates[-1]:,.0f} rows/s "
            f"({rates[-1] / rates[0]:.0%} of first); {done:,} rows in {wall:.0f} s wall "
            f"(incl. generating the samples); errors {stats['errors']}"
        )
        print(
            f"reads at the end: decimated plot of one cell ({len(plot['time'])} points) {dec_s * 1e3:.0f} ms, "
            f"one day of one cell ({day} samples) {day_s * 1e3:.0f} ms"
        )


if __name__ == "__main__":
    main()
