"""Replay throughput and memory: 1M simulated samples through `shortwatch replay`.

Writes 1M samples of simulated cells (canonical CSV, one file per cell), then times
`shortwatch replay` on them in a child process, with the embedded store and with --no-store,
and prints samples/s and the peak RSS of that child (its own rusage, from wait4, in a small
launcher process: see LAUNCHER). So that
the figure means something on any machine, it also times, in the same run, a reference: a
plain csv.reader pass over the same files that converts every number with float(), and
prints the ratio. Then it measures the memory a CellMonitor holds per cell after a long run
(tracemalloc, and the size of its JSON checkpoint).

    python bench/replay_throughput.py [--samples 1000000] [--cells 8]
"""

from __future__ import annotations

import argparse
import csv
import gc
import itertools
import json
import os
import subprocess
import sys
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


#: Runs the commands it is sent, one JSON line each, and answers with each child's exit code,
#: wall time and own peak RSS (from wait4). Why a separate, small process: the kernel carries
#: the peak RSS of a process image over an exec, so a child forked from this benchmark (grown
#: by the files it generated) would report the benchmark's peak (getrusage(RUSAGE_CHILDREN)
#: reported 126 MiB for /bin/true). Forked from this launcher, a child starts from ~10 MiB.
LAUNCHER = """
import json, os, subprocess, sys, time
for line in sys.stdin:
    job = json.loads(line)
    with open(job["stderr"], "w") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(job["cmd"], stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    cpu = usage.ru_utime + usage.ru_stime
    res = {"rc": proc.returncode, "seconds": seconds, "cpu": cpu, "maxrss_kib": usage.ru_maxrss}
    print(json.dumps(res), flush=True)
"""


class Launcher:
    """Starts the launcher while this process is still small-ish, and runs commands through it."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-S", "-c", LAUNCHER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def run(self, cmd: list[str]) -> tuple[float, float, int, str]:
        """(wall seconds, CPU seconds, the child's own peak RSS in KiB, its stderr)."""
        with tempfile.NamedTemporaryFile("r", suffix=".err") as err:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.write(json.dumps({"cmd": cmd, "stderr": err.name}) + "\n")
            self.proc.stdin.flush()
            res = json.loads(self.proc.stdout.readline())
            text = err.read()
        if res["rc"] != 0:
            raise SystemExit(f"{' '.join(cmd)} exited {res['rc']}:\n{text}")
        return res["seconds"], res["cpu"], res["maxrss_kib"], text

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait()


def time_replay(launcher: Launcher, cfg: Path, files: list[Path], store: bool) -> tuple[float, float, int, float]:
    """(wall seconds, CPU seconds, rows, peak RSS MiB of the child)."""
    dt, cpu, rss_kib, err = launcher.run(replay_command(cfg, files, os.devnull, store))
    rows = int(err.strip().splitlines()[-1].split()[1])
    return dt, cpu, rows, rss_kib / 1024


def time_reference(files: list[Path]) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, rows) of csv.reader + float() over every number of the same
    files: the least any CSV replay in Python must do, measured on this machine in this run."""
    t0, c0 = time.perf_counter(), time.process_time()
    rows = 0
    for path in files:
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader)
            numeric = [k for k, name in enumerate(header) if name not in ("time", "cell", "mode")]
            for row in reader:
                for k in numeric:
                    if row[k]:
                        float(row[k])
                rows += 1
    return time.perf_counter() - t0, time.process_time() - c0, rows


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
    launcher = Launcher()
    with tempfile.TemporaryDirectory(prefix="shortwatch-tput-") as tmp:
        workdir = Path(tmp)
        t0 = time.perf_counter()
        files, cfg = generate(workdir, args.samples, args.cells)
        size = sum(f.stat().st_size for f in files) / 2**20
        print(
            f"generated {args.samples:,} samples in {len(files)} files ({size:.0f} MiB) "
            f"in {time.perf_counter() - t0:.1f} s"
        )
        _, _, true_kib, _ = launcher.run(["/bin/true"])
        print(f"peak RSS of /bin/true measured the same way: {true_kib / 1024:.1f} MiB (a check of the method)")
        # The reference runs right before each replay, so both see the same machine. Rates are
        # also given per CPU second, which other processes on a shared machine disturb far less
        # than wall time (the ratio is taken on those).
        for store in (False, True):
            ref_dt, ref_cpu, ref_rows = time_reference(files)
            print(
                f"reference, csv.reader + float() in this process: {ref_rows:,} rows in {ref_dt:.2f} s "
                f"({ref_cpu:.2f} CPU s) = {ref_rows / ref_cpu:,.0f} rows per CPU s"
            )
            dt, cpu, rows, rss = time_replay(launcher, cfg, files, store)
            label = "replay --no-store " if not store else "replay with SQLite"
            print(
                f"{label}: {rows:,} samples in {dt:.2f} s ({cpu:.2f} CPU s) = {rows / dt:,.0f} samples/s, "
                f"{rows / cpu:,.0f} per CPU s ({(rows / cpu) / (ref_rows / ref_cpu):.2f} x the reference); "
                f"peak RSS {rss:.0f} MiB"
            )
    launcher.close()
    per_cell, ckpt = memory_per_cell()
    print(f"memory per cell after 200 h of 10-s data: {per_cell / 1024:.1f} KiB held; checkpoint {ckpt / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
