"""Detection benchmark: lead time and false alarms on labelled simulated cells.

Columns: detected = failing cells alerted (warning or critical, from onset - 1 h) before the
hard short; lead = hours / cycles / fraction of the onset-to-short interval by which the first
such alert preceded the short (median; min frac is the worst cell); short lat s = the largest
delay of the hard_short critical after the labelled short; crit<lbl = criticals raised before
the labelled moment (the cell could no longer hold its voltage); early = alerts more than 1 h
before the labelled onset; false = alerts on healthy cells.

Generates a fresh labelled scenario set with the simulator (new random seeds each run
unless --seed is given), writes one canonical CSV per cell, replays them through the real
`shortwatch replay` command (two processes, one per core), and prints per family:
detection rate before the hard short, lead time (hours, cycles, and as a fraction of the
interval from soft onset to hard short), hard-short latency, and false alarms per healthy
cell-week. The same table is printed for two baselines computed on the same samples:
- a static threshold rule, as one would set in Grafana: |V| under current below half its
  early median (symmetric), V below 2.5 V while charging (full), pressure outside 1-10 MPa,
  each held for 3 samples;
- a plain Page-Hinkley test on the raw apparent resistance |V|/|I| under current.

    python bench/detection.py [--per-family 4] [--seed N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from replay_cmd import replay_command
from shortwatch.detectors.stats import PageHinkley
from shortwatch.model import Sample
from shortwatch.sensors.canonical_csv import write_csv
from shortwatch.sensors.simulator import SCENARIOS, SimulatedCell, Truth, default_spec

START = 1_767_600_000.0  # 2026-01-05T08:00Z
WEEK_H = 168.0


@dataclass
class CellRun:
    truth: Truth
    kind: str
    hours: float
    cycle_marks: list[tuple[float, int]] = field(default_factory=list)  # (time, cycle) at cycle starts
    alerts: dict[str, list[tuple[float, str, str]]] = field(default_factory=dict)  # method -> [(t, det, sev)]

    def cycle_at(self, t: float) -> int:
        k = bisect.bisect_right([m[0] for m in self.cycle_marks], t) - 1
        return self.cycle_marks[max(k, 0)][1] if self.cycle_marks else 0


class StaticThreshold:
    """Grafana-style rules on raw samples (held for 3 samples)."""

    def __init__(self, kind: str):
        self.kind = kind
        self.early: list[float] = []
        self.ref: float | None = None
        self.hold = 0

    def update(self, s: Sample) -> bool:
        v, i, p = s.voltage_V, s.current_A, s.pressure_MPa
        bad = p is not None and not (1.0 <= p <= 10.0)
        if v is not None and i is not None and abs(i) > 1e-9:
            if self.kind == "symmetric":
                if self.ref is None:
                    self.early.append(abs(v))
                    if len(self.early) >= 360:
                        self.ref = statistics.median(self.early)
                else:
                    bad = bad or abs(v) < 0.5 * self.ref
            else:
                bad = bad or (i > 0 and v < 2.5)
        self.hold = self.hold + 1 if bad else 0
        return self.hold >= 3


class RawPageHinkley:
    """Page-Hinkley on |V|/|I| under current, normalised by its early mean."""

    def __init__(self) -> None:
        self.ph = PageHinkley(delta=0.01, lam=20.0, min_n=360)
        self.early: list[float] = []
        self.ref: float | None = None

    def update(self, s: Sample) -> bool:
        v, i = s.voltage_V, s.current_A
        if v is None or i is None or abs(i) < 1e-9 or not math.isfinite(v):
            return False
        x = abs(v) / abs(i)
        if self.ref is None:
            self.early.append(x)
            if len(self.early) >= 360:
                self.ref = statistics.mean(self.early)
            return False
        return self.ph.update(x / self.ref)


def generate(workdir: Path, per_family: int, seed: int) -> tuple[dict[str, CellRun], list[Path], Path]:
    runs: dict[str, CellRun] = {}
    files: list[Path] = []
    cells_toml = []
    n = 0
    for scenario in SCENARIOS:
        for k in range(per_family):
            cell = f"{scenario}-{k}"
            spec = default_spec(scenario)
            sim = SimulatedCell(cell, scenario, spec, seed=seed + n, start=START)
            n += 1
            run = CellRun(sim.truth, sim.spec.kind, 0.0)
            static, ph = StaticThreshold(sim.spec.kind), RawPageHinkley()
            run.alerts = {"static threshold": [], "Page-Hinkley |V|/|I|": []}
            samples = []
            last_cycle = None
            for s in sim.samples():
                samples.append(s)
                if s.cycle is not None and s.cycle != last_cycle:
                    run.cycle_marks.append((s.time, s.cycle))
                    last_cycle = s.cycle
                if static.update(s) and not run.alerts["static threshold"]:
                    run.alerts["static threshold"].append((s.time, "static", "warning"))
                if ph.update(s) and not run.alerts["Page-Hinkley |V|/|I|"]:
                    run.alerts["Page-Hinkley |V|/|I|"].append((s.time, "page_hinkley", "warning"))
            run.hours = (samples[-1].time - samples[0].time) / 3600.0
            path = workdir / f"{cell}.csv"
            with open(path, "w", encoding="utf-8") as fh:
                write_csv(samples, fh, time_format="unix")
            files.append(path)
            runs[cell] = run
            sp = sim.spec
            cells_toml.append(
                f'[cells."{cell}"]\nkind = "{sp.kind}"\narea_cm2 = {sp.area_cm2}\nfixture = "{sp.fixture}"\n'
                + (f"cathode_mass_g = {sp.cathode_mass_g}\n" if sp.cathode_mass_g else "")
            )
    cfg = workdir / "bench.toml"
    cfg.write_text(f'[daemon]\nstation = "bench"\nstate_dir = "{workdir / "state"}"\n\n' + "\n".join(cells_toml))
    return runs, files, cfg


def replay(cfg: Path, files: list[Path], workdir: Path, runs: dict[str, CellRun]) -> float:
    """Replay in two processes (the cells are independent); returns the wall time."""
    halves = [files[0::2], files[1::2]]
    t0 = time.perf_counter()
    procs = []
    for k, half in enumerate(halves):
        out = workdir / f"alerts-{k}.jsonl"
        cmd = replay_command(cfg, half, out, store=False)
        procs.append((subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True), out))
    for proc, out in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"replay failed:\n{err}")
        sys.stderr.write(err.strip().splitlines()[-1] + "\n")
        for line in out.read_text().splitlines():
            e = json.loads(line)
            if e["kind"] != "cell" or e["state"] != "firing":
                continue
            t = datetime.fromisoformat(e["time"]).timestamp()
            runs[e["cell"]].alerts.setdefault("shortwatch", []).append((t, e["detector"], e["severity"]))
    return time.perf_counter() - t0


def summarise(runs: dict[str, CellRun], method: str) -> list[dict]:
    by_family: dict[str, list[CellRun]] = {}
    for r in runs.values():
        by_family.setdefault(f"{'F' if r.truth.failing else 'H'} {r.truth.scenario}", []).append(r)
    rows = []
    for fam, rs in sorted(by_family.items()):
        detected = leads_h = None
        leads_h, leads_c, fracs, latencies, early, false, crit_before = [], [], [], [], 0, 0, 0
        n_det = n_eligible = 0
        healthy_h = 0.0
        for r in rs:
            alerts = sorted(r.alerts.get(method, []))
            tr = r.truth
            warn = [a for a in alerts if a[1] != "hard_short"]
            if not tr.failing:
                false += len(alerts)
                healthy_h += r.hours
                continue
            onset, short = tr.soft_onset_time, tr.hard_short_time
            crit = [a for a in alerts if a[1] == "hard_short" and a[2] == "critical"]
            if short is not None and crit:
                if crit[0][0] >= short:
                    latencies.append(crit[0][0] - short)
                else:
                    crit_before += 1  # the cell could no longer hold its voltage before the labelled short
            early += sum(1 for a in alerts if onset is not None and a[0] < onset - 3600)
            if short is not None and onset is not None and short - onset < 60:
                continue  # sudden short: no warning is possible; judged by latency
            n_eligible += 1
            deadline = short if short is not None else float("inf")
            since = onset - 3600 if onset is not None else float("-inf")
            hits = [a for a in (warn if method == "shortwatch" else alerts) if since <= a[0] < deadline]
            if not hits:
                continue
            n_det += 1
            if short is not None:
                t_alert = hits[0][0]
                leads_h.append((short - t_alert) / 3600)
                leads_c.append(r.cycle_at(short) - r.cycle_at(t_alert))
                fracs.append((short - t_alert) / (short - onset) if onset is not None and short > onset else 0.0)
        detected = f"{n_det}/{n_eligible}" if n_eligible else "-"
        rows.append(
            dict(
                family=fam,
                cells=len(rs),
                detected=detected,
                lead_h=statistics.median(leads_h) if leads_h else None,
                lead_cycles=statistics.median(leads_c) if leads_c else None,
                lead_frac=statistics.median(fracs) if fracs else None,
                min_frac=min(fracs) if fracs else None,
                short_latency_s=max(latencies) if latencies else None,
                crit_before_label=crit_before,
                early_alarms=early,
                false_alarms=false if not rs[0].truth.failing else None,
                false_per_cell_week=(false / (healthy_h / WEEK_H)) if healthy_h else None,
            )
        )
    return rows


def fmt(v, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def print_table(title: str, rows: list[dict]) -> dict:
    print(f"\n## {title}")
    print(
        f"{'family':28} {'cells':>5} {'detected':>9} {'lead h':>7} {'lead cyc':>8} {'lead frac':>9} "
        f"{'min frac':>8} {'short lat s':>11} {'crit<lbl':>8} {'early':>5} {'false':>5} {'false/cell-wk':>13}"
    )
    for r in rows:
        print(
            f"{r['family']:28} {r['cells']:>5} {r['detected']:>9} {fmt(r['lead_h']):>7} "
            f"{fmt(r['lead_cycles'], '.0f'):>8} {fmt(r['lead_frac'], '.2f'):>9} {fmt(r['min_frac'], '.2f'):>8} "
            f"{fmt(r['short_latency_s'], '.0f'):>11} {r['crit_before_label']:>8} {r['early_alarms']:>5} "
            f"{fmt(r['false_alarms'], 'd'):>5} {fmt(r['false_per_cell_week'], '.2f'):>13}"
        )
    fails = [r for r in rows if r["family"].startswith("F")]
    heal = [r for r in rows if r["family"].startswith("H")]
    det = sum(int(r["detected"].split("/")[0]) for r in fails if r["detected"] != "-")
    elig = sum(int(r["detected"].split("/")[1]) for r in fails if r["detected"] != "-")
    fracs = [r["lead_frac"] for r in fails if r["lead_frac"] is not None]
    false = sum(r["false_alarms"] or 0 for r in heal)
    total = {
        "detected": f"{det}/{elig}",
        "median_family_lead_frac": statistics.median(fracs) if fracs else None,
        "false_alarms_healthy": false,
    }
    print(
        f"total: detected before the short {det}/{elig}; median of family lead fractions "
        f"{fmt(total['median_family_lead_frac'], '.2f')}; false alarms on healthy cells {false}"
    )
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-family", type=int, default=4, help="cells per scenario (default 4: 64 cells)")
    ap.add_argument("--seed", type=int, default=None, help="default: a fresh random seed")
    ap.add_argument("--keep", type=Path, help="keep the generated files here")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(3), "big")
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="shortwatch-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    runs, files, cfg = generate(workdir, args.per_family, seed)
    n_samples = sum(f.read_bytes().count(b"\n") for f in files) - len(files)
    print(
        f"seed {seed}: {len(runs)} cells ({sum(r.truth.failing for r in runs.values())} failing), "
        f"{n_samples:,} samples generated in {time.perf_counter() - t0:.1f} s"
    )
    wall = replay(cfg, files, workdir, runs)
    print(f"replayed through `shortwatch replay` (2 processes) in {wall:.1f} s ({n_samples / wall:,.0f} samples/s)")
    results = {}
    for method in ("shortwatch", "static threshold", "Page-Hinkley |V|/|I|"):
        results[method] = print_table(method, summarise(runs, method))
    (workdir / "results.json").write_text(json.dumps({"seed": seed, "totals": results}, indent=1))
    print(f"\nfiles and results.json in {workdir}")


if __name__ == "__main__":
    main()
