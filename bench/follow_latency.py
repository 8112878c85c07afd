"""Follow latency: wall time from a row appended to a followed file to the row handed to the
pipeline, with inotify (watchfiles) and, as the reference, with polling alone at ``poll_s``.

    python bench/follow_latency.py [--rows 50] [--poll-s 2.0]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from shortwatch.sensors.file_source import FileSource


async def measure(folder: Path, rows: int, watch: bool, poll_s: float) -> list[float]:
    path = folder / f"L{int(watch)}.csv"
    path.write_text("time,voltage_V\n")
    written: dict[float, float] = {}
    seen: dict[float, float] = {}

    async def emit(items, origin=None):
        now = time.perf_counter()
        for s in items:
            seen[s.time] = now

    src = FileSource([str(folder / "*.csv")], follow=True, poll_s=poll_s, watch=watch)
    task = asyncio.create_task(src.run(emit))
    await asyncio.sleep(0.5)  # the watcher is up
    try:
        for k in range(rows):
            with path.open("a") as fh:
                written[float(k)] = time.perf_counter()
                fh.write(f"{k},0.1\n")
            await asyncio.sleep(0.1 + (k % 7) * 0.05)  # rows at irregular times, as a cycler logs
        deadline = time.perf_counter() + 2 * poll_s + 1
        while len(seen) < rows and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
    return [seen[t] - written[t] for t in written if t in seen]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=50)
    ap.add_argument("--poll-s", type=float, default=2.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="shortwatch-latency-") as tmp:
        results = {}
        for watch in (True, False):
            lat = asyncio.run(measure(Path(tmp), args.rows, watch, args.poll_s))
            label = "inotify (watchfiles)" if watch else f"polling every {args.poll_s:g} s"
            med = statistics.median(lat)
            p95 = sorted(lat)[int(0.95 * (len(lat) - 1))]
            results[watch] = med
            print(f"{label:>22}: {len(lat)}/{args.rows} rows, median {med * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms")
        print(f"inotify median / polling median = {results[True] / results[False]:.3f}")


if __name__ == "__main__":
    main()
