"""Replay throughput and memory: 1M simulated samples through `shortwatch replay`.

Writes 1M samples of simulated cells (canonical CSV, several cells per file as a cycler
export would hold one), then times `shortwatch replay` on them in a child process, with
the embedded store and with --no-store, and prints samples/s and the child's peak RSS.
Then it measures the memory a CellMonitor holds per cell after a long run (tracemalloc,
and the size of its JSON checkpoint).

    python bench/replay_throughput.py [--samples 1000000] [--cells 8]
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import resource
import subprocess
import tempfile
import time
import tracemalloc
from pathlib import Path

from replay_cmd import replay_command
from shortwatch.daemon.pipeline import Pipeline
from shortwatch.model import RecordBatch
from shortwatch.sensors.canonical_csv import write_csv
from shortwatch.sensors.simulator import SimulatedCell, default_spec
from shortwatch.settings import parse_settings

START = 1_767_600_000.0
SCENARIOS = ["sym_healthy", "sym_soft_hard", "full_healthy", "sym_cv_rise", "full_dpq_short", "sym_temperature"]


def generate(workdir: Path, n_samples: int, n_cells: int) -> tuple[list[Path], Path]:
    """At least n_cells files holding n_samples in all (scenarios that end early, e.g. after
    a short, are topped up with more cells)."""
    per_cell = n_samples // n_cells
    files = []
    cells_toml = []
    total = 0
    k = 0
    while total < n_samples:
        scenario = SCENARIOS[k % len(SCENARIOS)]
        cell = f"C{k}"
        spec = default_spec(scenario)
        sim = SimulatedCell(cell, scenario, spec, seed=k, start=START)
        want = min(per_cell, n_samples - total)
        samples = list(itertools.islice(sim.samples(), want))
        total += len(samples)
        path = workdir / f"{cell}.csv"
        with open(path, "w", encoding="utf-8") as fh:
            write_csv(samples, fh)
        files.append(path)
        cells_toml.append(
            f'[cells.{cell}]\nkind = "{spec.kind}"\n'
            + (f"cathode_mass_g = {spec.cathode_mass_g}\n" if spec.cathode_mass_g else "")
        )
        k += 1
    cfg = workdir / "bench.toml"
    cfg.write_text(f'[daemon]\nstate_dir = "{workdir / "state"}"\n\n' + "\n".join(cells_toml))
    return files, cfg


def time_replay(cfg: Path, files: list[Path], store: bool) -> tuple[float, int, float]:
    """(seconds, rows, peak RSS MiB of the child)."""
    cmd = replay_command(cfg, files, "/dev/null", store)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    rows = int(proc.stderr.strip().splitlines()[-1].split()[1])
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return dt, rows, rss


def memory_per_cell(n_cells: int = 32, hours: float = 200.0) -> tuple[float, float]:
    """Bytes a CellMonitor holds per cell after `hours` of data, and its checkpoint size."""
    settings = parse_settings({})
    sims = [
        SimulatedCell(
            f"M{k}",
            SCENARIOS[k % len(SCENARIOS)],
            default_spec(SCENARIOS[k % len(SCENARIOS)]),
            k,
            START,
            duration_h=hours,
        )
        for k in range(n_cells)
    ]
    for sim in sims:
        settings.cells[sim.truth.cell] = sim.spec
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    p = Pipeline(settings)
    for sim in sims:
        batch = []
        for s in sim.samples():
            batch.append(s)
            if len(batch) == 5000:
                p.process(batch, "bench", RecordBatch())
                batch = []
        p.process(batch, "bench", RecordBatch())
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    ckpt = len(json.dumps(p.state()))
    return held / n_cells, ckpt / n_cells


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--cells", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="shortwatch-tput-") as tmp:
        workdir = Path(tmp)
        t0 = time.perf_counter()
        files, cfg = generate(workdir, args.samples, args.cells)
        size = sum(f.stat().st_size for f in files) / 2**20
        print(
            f"generated {args.samples:,} samples in {len(files)} files ({size:.0f} MiB) "
            f"in {time.perf_counter() - t0:.1f} s"
        )
        for store in (False, True):
            dt, rows, rss = time_replay(cfg, files, store)
            label = "replay --no-store " if not store else "replay with SQLite"
            print(
                f"{label}: {rows:,} samples in {dt:.2f} s = {rows / dt:,.0f} samples/s on one core; "
                f"peak RSS {rss:.0f} MiB"
            )
    per_cell, ckpt = memory_per_cell()
    print(f"memory per cell after 200 h of 10-s data: {per_cell / 1024:.1f} KiB held; checkpoint {ckpt / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
