"""Many cells: replay time and peak memory for 1k, 10k and 100k cells with the same total rows.

One canonical CSV holds ``--rows`` samples spread round-robin over N cells (none of them
configured, so each is an unknown cell on defaults), and `shortwatch replay` reads it in a
child process. The child's own peak RSS is read from its rusage through os.wait4 (not
RUSAGE_CHILDREN, which reports the largest child so far). Work should grow with rows, not
cells x rows: the ratios to the 1k run should stay near 1 for time, and memory should grow
only by the per-cell state. "stderr lines" counts the child's log lines at WARNING and its
closing summary: unknown cells are one line and one summary, not one warning per cell.

    python bench/many_cells.py [--rows 200000] [--cells 1000,10000,100000] [--no-store]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

from replay_cmd import replay_command

T0 = 1_767_600_000


def write_file(path: Path, rows: int, cells: int) -> None:
    with path.open("w", encoding="utf-8") as fh:
        fh.write("time,cell,voltage_V,current_A\n")
        for i in range(rows):
            fh.write(f"{T0 + 10 * (i // cells)},C{i % cells},0.05,0.0004\n")


def run_child(cmd: list[str]) -> tuple[float, float, float, str]:
    """(wall seconds, the child's CPU seconds, its peak RSS in MiB, its stderr)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = proc.stderr.read() if proc.stderr else ""
    _, status, usage = os.wait4(proc.pid, 0)
    dt = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"replay failed ({proc.returncode}):\n{err}")
    return dt, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, err


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--cells", default="1000,10000,100000")
    ap.add_argument("--no-store", action="store_true", help="replay with --no-store")
    args = ap.parse_args()
    counts = [int(c) for c in args.cells.split(",")]
    ref: tuple[float, float] | None = None  # the first run's CPU seconds and peak RSS
    print(f"{args.rows:,} rows per run, {'no store' if args.no_store else 'with the SQLite store'}")
    print(
        f"{'cells':>8} {'wall s':>7} {'CPU s':>6} {'rows/CPU s':>10} {'peak RSS':>9} {'CPU ratio':>9} {'RSS ratio':>9}"
        "  stderr lines"
    )
    for n in counts:
        with tempfile.TemporaryDirectory(prefix="shortwatch-cells-") as tmp:
            work = Path(tmp)
            data = work / "cells.csv"
            write_file(data, args.rows, n)
            cfg = work / "bench.toml"
            cfg.write_text(f'[daemon]\nstate_dir = "{work / "state"}"\n')
            cmd = replay_command(cfg, [data], "/dev/null", store=not args.no_store)
            cmd.insert(cmd.index("replay") + 1, "--log-level")
            cmd.insert(cmd.index("--log-level") + 1, "WARNING")
            dt, cpu, rss, err = run_child(cmd)
        ref = ref or (cpu, rss)
        lines = len(err.splitlines())
        print(
            f"{n:>8,} {dt:>7.2f} {cpu:>6.2f} {args.rows / cpu:>10,.0f} {rss:>5.0f} MiB {cpu / ref[0]:>9.2f} "
            f"{rss / ref[1]:>9.2f}  {lines}"
        )


if __name__ == "__main__":
    main()
