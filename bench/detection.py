"""Detection benchmark: lead time and false alarms on labelled simulated cells, from one pass.

Two scenario sets, fresh seeds on every run (unless --seed is given):

- the original set: each of the original 16 scenarios with a fixed protocol (10-s samples,
  0.5 mA/cm2, 1-h half-cycles, 25 C), ``--per-family`` cells each: no regressions;
- the randomised set (issue 10): every cell's protocol drawn from the ranges other labs use
  (current density 0.05-3 mA/cm2, half-cycles 0.25-3 h, C-rate 0.1-1, 25-80 C with daily
  swings of 0.5-2.5 C, stack pressure 2-7 MPa, sampling 10-60 s, some cells logged on a
  voltage change like EC-Lab, some at 1 s for a day), noise models and physics variants
  drawn per cell: at least ``--healthy`` healthy cells from every healthy family, and
  ``--per-failing`` cells of every failing family.

Every cell runs through the daemon's pipeline core (validation, segmentation, features,
detectors, alert state machine: what `shortwatch replay` runs after decoding) in two worker
processes. One pass records each cell's alerts and, per detector, the running maximum of
statistic / threshold with its time, so the ROC-style curve (lead fraction against false
alarms as each detector's threshold is scaled) is swept offline, not replayed per threshold.

Scoring (one rule for every method): a detection is the first `cell` alert of severity
warning or critical, firing, before the hard short; a false alarm is any such alert on a
healthy cell. Lead = short - alert in hours, in cycles, and as a fraction of the interval
from precursor onset to short (capped at 1; ``early`` counts alerts more than 1 h before the
onset). Every short is also judged by the delay of the hard_short critical after it: ``crit
ok`` = within max(30 s, the logged sample after the first one that shows it: a symmetric
reading below half the plateau before, a full cell 0.1 V below its last voltage). False
alarms per 100 cell-weeks come with their 95 % upper bound (Poisson, one-sided). The
static-threshold and Page-Hinkley baselines run on the same samples.

    python bench/detection.py [--per-family 4] [--healthy 210] [--per-failing 12] [--seed N] [--png F]
"""

from __future__ import annotations

import argparse
import bisect
import collections
import math
import multiprocessing
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shortwatch.daemon.pipeline import Pipeline
from shortwatch.detectors.stats import PageHinkley
from shortwatch.model import RecordBatch, Sample
from shortwatch.sensors.simulator import NEW_SCENARIOS, SCENARIOS, SimulatedCell, default_spec
from shortwatch.settings import parse_settings

START = 1_767_600_000.0  # 2026-01-05T08:00Z
WEEK_H = 168.0
ROC_DETECTORS = ("overpotential_drop", "polarization_rise", "pressure_dpq_decline", "cv_current_rise")
#: the failing families each detector is meant to catch (its lead fraction is measured on those)
ROC_TARGETS = {
    "overpotential_drop": ("soft_breakdown", "ccd_breakdown"),
    "polarization_rise": ("void_polarization",),
    "pressure_dpq_decline": ("dpq_decline",),
    "cv_current_rise": ("cv_rise",),
}
ROC_SCALES = tuple(round(x, 3) for x in np.geomspace(0.35, 4.0, 15))
METHODS = ("shortwatch", "static threshold", "Page-Hinkley |V|/|I|")


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


@dataclass
class Job:
    """One cell to simulate and watch."""

    cell: str
    scenario: str
    seed: int
    set_name: str  # original | randomised
    period_s: float = 10.0
    duration_h: float | None = None
    randomize: bool = False
    log_change_V: float | None = None


@dataclass
class CellRun:
    job: Job
    failing: bool
    family: str
    variant: str
    onset: float | None
    short: float | None
    hours: float
    period_s: float
    cycle_marks: list[tuple[float, int]] = field(default_factory=list)
    alerts: dict[str, list[tuple[float, str, str]]] = field(default_factory=dict)  # method -> [(t, det, sev)]
    peaks: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # detector -> running max (t, ratio)
    first_alert: str = ""  # the first alert's summary (false alarms are listed with it)
    shows_at: float | None = None  # the first sample after the short that shows it
    confirm_by: float | None = None  # the sample after that one
    before_short: list[float] = field(default_factory=list)  # symmetric: the last readings before it

    def cycle_at(self, t: float) -> int:
        k = bisect.bisect_right([m[0] for m in self.cycle_marks], t) - 1
        return self.cycle_marks[max(k, 0)][1] if self.cycle_marks else 0


def _variant(params: dict[str, Any], scenario: str) -> str:
    """The physics variant a cell drew, for the per-family table."""
    if scenario == "sym_ccd_breakdown":
        return f"R_e {params['re_law']}, {params['noise_model']} noise"
    if scenario == "sym_void_short":
        return ("runaway" if params["void_end"] >= 3.0 else "gradual") + f", {params['noise_model']} noise"
    if scenario in ("full_selfdischarge_short", "full_sudden_short", "full_void_short"):
        return f"{params['ocv_kind'].upper()} OCV, short at {params['short_step']}"
    return ""


def simulate(job: Job) -> tuple[SimulatedCell, Pipeline]:
    """The job's simulated cell, and the daemon's pipeline core configured for it."""
    sim = SimulatedCell(
        job.cell,
        job.scenario,
        default_spec(job.scenario),
        seed=job.seed,
        start=START,
        period_s=job.period_s,
        duration_h=job.duration_h,
        randomize=job.randomize,
        log_change_V=job.log_change_V,
    )
    sp = sim.spec
    cell_cfg: dict[str, Any] = {"kind": sp.kind, "area_cm2": sp.area_cm2, "fixture": sp.fixture}
    if sp.cathode_mass_g:
        cell_cfg["cathode_mass_g"] = sp.cathode_mass_g
    return sim, Pipeline(parse_settings({"daemon": {"station": "bench"}, "cells": {job.cell: cell_cfg}}))


def run_job(job: Job) -> CellRun:
    """Simulate one cell and run the pipeline and the two baselines over it, in one pass."""
    sim, pipe = simulate(job)
    tr = sim.truth
    run = CellRun(
        job,
        tr.failing,
        tr.family,
        _variant(sim.params, job.scenario),
        tr.soft_onset_time,
        tr.hard_short_time,
        0.0,
        job.period_s,
    )
    run.alerts = {m: [] for m in METHODS}
    static, ph = StaticThreshold(sim.spec.kind), RawPageHinkley()
    batch: list[Sample] = []
    last_cycle = None
    first = last = None
    peaks: dict[str, list[tuple[float, float]]] = {}

    def flush() -> None:
        out = RecordBatch()
        pipe.process(batch, "bench", out)
        for a in out.alerts:
            if a.kind == "cell" and a.state == "firing" and a.severity in ("warning", "critical"):
                run.alerts["shortwatch"].append((a.time, a.detector, a.severity))
                if not run.first_alert:
                    run.first_alert = f"{a.detector}: {a.summary}"
        for d in out.detector_states:
            if d.detector in ROC_DETECTORS and d.statistic is not None and d.threshold:
                ratio = d.statistic / d.threshold
                series = peaks.setdefault(d.detector, [])
                if not series or ratio > series[-1][1]:
                    series.append((d.time, ratio))
        batch.clear()

    short = tr.hard_short_time if tr.hard_short_time is not None else math.inf
    symmetric = sim.spec.kind == "symmetric"
    # the readings before the short: symmetric, the signed plateau under current; full, the
    # last voltage. A sample after it shows the short where it collapsed below half that
    # plateau (symmetric) or fell 0.1 V below that voltage (full)
    before: collections.deque[float] = collections.deque(maxlen=30)
    v_last = math.nan
    for s in sim.samples():
        if first is None:
            first = s.time
        last = s.time
        v, i = s.voltage_V, s.current_A
        if s.time < short:
            if v is not None and i is not None:
                v_last = v
                if symmetric and i and s.mode == "cc":  # (a CV sweep's readings are no plateau)
                    before.append(v if i > 0 else -v)
        elif run.confirm_by is None and v is not None and i is not None:
            if run.shows_at is not None:
                run.confirm_by = s.time
            elif (
                (i and before and (v if i > 0 else -v) < 0.5 * statistics.median(before))
                if symmetric
                else v <= v_last - 0.1
            ):
                run.shows_at = s.time
        if s.cycle is not None and s.cycle != last_cycle:
            run.cycle_marks.append((s.time, s.cycle))
            last_cycle = s.cycle
        if static.update(s) and not run.alerts["static threshold"]:
            run.alerts["static threshold"].append((s.time, "static", "warning"))
        if ph.update(s) and not run.alerts["Page-Hinkley |V|/|I|"]:
            run.alerts["Page-Hinkley |V|/|I|"].append((s.time, "page_hinkley", "warning"))
        batch.append(s)
        if len(batch) >= 5000:
            flush()
    flush()
    run.hours = ((last or 0.0) - (first or 0.0)) / 3600.0
    run.before_short = list(before)
    run.peaks = peaks
    return run


def trace(job: Job, detector: str) -> None:
    """Why a cell alarmed (or did not): every finished step with its features, the detector's
    statistic after it, and every alert, in data time (hours from the start)."""
    sim, pipe = simulate(job)
    tr = sim.truth
    log = f"dE {job.log_change_V} V" if job.log_change_V else f"{job.period_s:.0f} s"
    print(f"{job.cell} ({job.scenario}, {log}); onset {tr.soft_onset_time}, short {tr.hard_short_time}")
    print({k: v for k, v in sim.params.items() if not isinstance(v, (list, tuple)) or len(v) < 8})

    def h(t: float) -> float:
        return (t - START) / 3600.0

    samples = list(sim.samples())
    for k in range(0, len(samples), 5000):
        out = RecordBatch()
        pipe.process(samples[k : k + 5000], "bench", out)
        rows: list[tuple[float, int, str]] = []
        for f in out.steps:
            rows.append(
                (
                    f.t_end,
                    0,
                    (
                        f"{h(f.t_start):7.2f}-{h(f.t_end):7.2f} h  c{f.cycle:<4} {f.step_kind:12} n={f.n_samples:<5} "
                        f"J={fmt(f.current_density_mA_cm2, '.3f')} eta={fmt(f.eta_V, '.5f')} "
                        f"asr={fmt(f.asr_ohm_cm2, '.2f')} nuc={fmt(f.nucleation_V, '.4f')} "
                        f"end={fmt(f.end_rise_V, '.4f')} "
                        f"T={fmt(f.temperature_C, '.1f')} p={fmt(f.p_end, '.2f')} tau={fmt(f.rest_tau_s, '.0f')} "
                        f"flat={fmt(f.flatness, '.3f')}"
                    ),
                )
            )
        for c in out.cycles:
            rows.append(
                (
                    c.t_end,
                    0,
                    (
                        f"{'':18}cycle {c.cycle}: ce={fmt(c.ce, '.4f')} q={fmt(c.q_discharge_Ah_g, '.4f')} Ah/g "
                        f"dP_dis={fmt(c.dP_discharge_MPa, '.4f')} dpq={fmt(c.dpq_MPa_g_per_Ah, '.3f')} "
                        f"T={fmt(c.temperature_C, '.1f')}"
                    ),
                )
            )
        for d in out.detector_states:
            if d.detector == detector:
                rows.append(
                    (d.time, 1, f"{'':20}{d.detector} {d.state} {fmt(d.statistic, '.3f')}/{fmt(d.threshold, '.3f')}")
                )
        for a in out.alerts:
            rows.append((a.time, 2, f"{h(a.time):7.2f} h  ALERT {a.detector} {a.severity} {a.state}: {a.summary}"))
        for _, _, line in sorted(rows):
            print(line)


def plan(args: argparse.Namespace, seed: int) -> list[Job]:
    rng = np.random.default_rng(seed)
    jobs: list[Job] = []
    n = 0

    def next_seed() -> int:
        nonlocal n
        n += 1
        return seed * 1000 + n

    original = [s for s in SCENARIOS if s not in NEW_SCENARIOS]
    for scenario in original:
        for k in range(args.per_family):
            jobs.append(Job(f"o-{scenario}-{k}", scenario, next_seed(), "original"))
    healthy = [s for s, info in SCENARIOS.items() if not info.failing and s != "sym_glitches"]
    failing = [s for s, info in SCENARIOS.items() if info.failing and s not in ("sym_soft_stable",)]

    def protocol(job: Job, allow_1s: bool) -> Job:
        r = rng.random()
        if allow_1s and r < 0.04:  # a day at 1 s
            job.period_s, job.duration_h = 1.0, float(rng.uniform(20, 30))
        elif r < 0.2:  # EC-Lab: internal sampling 5 s, logged on dE or every 60-600 s
            job.period_s, job.log_change_V = 5.0, float(rng.choice([0.001, 0.002, 0.005]))
        else:
            job.period_s = float(rng.uniform(10, 60))
        return job

    for k in range(args.healthy):
        scenario = healthy[k % len(healthy)]
        jobs.append(protocol(Job(f"h-{scenario}-{k}", scenario, next_seed(), "randomised", randomize=True), True))
    for scenario in failing:
        for k in range(args.per_failing):
            jobs.append(protocol(Job(f"f-{scenario}-{k}", scenario, next_seed(), "randomised", randomize=True), False))
    return jobs


# ------------------------------------------------------------------ scoring


def first_hit(run: CellRun, method: str) -> tuple[float, str, str] | None:
    alerts = sorted(run.alerts.get(method, []))
    deadline = run.short if run.short is not None else math.inf
    hits = [a for a in alerts if a[0] < deadline]
    return hits[0] if hits else None


def short_latency(run: CellRun) -> float | None:
    """Seconds from the labelled short to the first hard_short critical after the precursor
    onset (negative: the cell could no longer hold its voltage before the labelled moment)."""
    if run.short is None:
        return None
    since = run.onset if run.onset is not None else run.short - 3600.0
    crit = [a[0] for a in run.alerts["shortwatch"] if a[1] == "hard_short" and a[2] == "critical"]
    after = [t - run.short for t in crit if t >= min(since, run.short) - 1e-6]
    return min(after) if after else None


def latency_ok(run: CellRun, lat: float | None) -> bool:
    """Critical within 30 s of data time, or at the sample after the first one that shows it
    (or already before the labelled moment: the cell could no longer hold its voltage). The
    samples are the ones logged: a cell logged on a voltage change writes the collapse at once
    and its noise soon after, so it is held to those times, not to its 600-s still-plateau
    interval (which let a short confirmed after 1237 s pass as on time). Where no sample
    shows it as such (a short at rest of a symmetric cell), two sample intervals."""
    if lat is None or run.short is None:
        return False
    if run.confirm_by is not None:
        allowed = run.confirm_by - run.short
    else:
        allowed = 2.0 * (run.period_s if run.job.log_change_V is None else 600.0)
    return lat <= max(30.0, allowed) + 1e-6


def plateau_snr(run: CellRun) -> str:
    """The plateau before the short against its sample-to-sample noise, for the late list:
    where it is a few sigmas, no two readings can tell a short from noise."""
    x = np.asarray(run.before_short)
    if x.size < 5 or not run.job.scenario.startswith("sym"):
        return ""
    # the median |dV| of two readings with gaussian noise is 0.954 sigma (robust to spikes)
    level, noise = float(np.median(x)), float(np.median(np.abs(np.diff(x)))) / 0.954
    if noise <= 0:
        return ""
    return f"plateau {level * 1e3:.3g} mV, noise {noise * 1e3:.2g} mV ({level / noise:.1f} sigma)"


def poisson_upper(k: int, conf: float = 0.95) -> float:
    """One-sided upper confidence bound of a Poisson mean after observing k events."""
    lo, hi = 0.0, 10.0 + 10.0 * k
    for _ in range(100):
        lam = 0.5 * (lo + hi)
        term = cdf = math.exp(-lam)
        for i in range(1, k + 1):
            term *= lam / i
            cdf += term
        lo, hi = (lam, hi) if cdf > 1.0 - conf else (lo, lam)
    return hi


def summarise(runs: list[CellRun], method: str) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], list[CellRun]] = {}
    for r in runs:
        groups.setdefault((r.job.set_name, r.job.scenario), []).append(r)
    rows = []
    for (set_name, scenario), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], rs_key(kv[1]), kv[0][1])):
        row: dict[str, Any] = {"set": set_name, "family": scenario, "cells": len(rs), "failing": rs[0].failing}
        if not rs[0].failing:
            alarms = [r for r in rs if r.alerts.get(method)]
            weeks = sum(r.hours for r in rs) / WEEK_H
            row.update(false_cells=len(alarms), cell_weeks=weeks, false_alerts=sum(len(r.alerts[method]) for r in rs))
            rows.append(row)
            continue
        leads_h, leads_c, fracs, lats, early, n_det, n_elig, n_crit_ok, n_short, n_before = (
            [],
            [],
            [],
            [],
            0,
            0,
            0,
            0,
            0,
            0,
        )
        for r in rs:
            lat = short_latency(r)
            if r.short is not None and method == "shortwatch":
                n_short += 1
                n_crit_ok += latency_ok(r, lat)
                if lat is not None and lat < 0:
                    n_before += 1
                elif lat is not None:
                    lats.append(lat)
            if r.short is None or r.onset is None or r.short - r.onset < 60:
                continue  # no precursor (or no short in the data): judged by latency only
            n_elig += 1
            hit = first_hit(r, method)
            if hit is None:
                continue
            n_det += 1
            early += hit[0] < r.onset - 3600
            leads_h.append((r.short - hit[0]) / 3600)
            leads_c.append(r.cycle_at(r.short) - r.cycle_at(hit[0]))
            fracs.append(min(1.0, (r.short - hit[0]) / (r.short - r.onset)))
        row.update(
            detected=f"{n_det}/{n_elig}" if n_elig else "-",
            n_det=n_det,
            n_elig=n_elig,
            lead_h=statistics.median(leads_h) if leads_h else None,
            lead_cycles=statistics.median(leads_c) if leads_c else None,
            lead_frac=statistics.median(fracs) if fracs else None,
            min_frac=min(fracs) if fracs else None,
            max_latency_s=max(lats) if lats else None,
            crit_ok=f"{n_crit_ok}/{n_short}" if n_short else "-",
            crit_before=n_before,
            early=early,
            variants=sorted({r.variant for r in rs if r.variant}),
        )
        rows.append(row)
    return rows


def rs_key(rs: list[CellRun]) -> int:
    return 0 if rs[0].failing else 1


def fmt(v: Any, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def print_table(title: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    print(f"\n## {title}")
    print(
        f"{'set':10} {'family':26} {'cells':>5} {'detected':>9} {'lead h':>7} {'lead cyc':>8} {'lead frac':>9} "
        f"{'min frac':>8} {'max lat s':>9} {'crit ok':>7} {'<lbl':>4} {'early':>5} {'false':>5} {'cell-wk':>7}"
    )
    totals: dict[str, Any] = {}
    for r in rows:
        if r["failing"]:
            print(
                f"{r['set']:10} {'F ' + r['family']:26} {r['cells']:>5} {r['detected']:>9} {fmt(r['lead_h']):>7} "
                f"{fmt(r['lead_cycles'], '.0f'):>8} {fmt(r['lead_frac'], '.2f'):>9} {fmt(r['min_frac'], '.2f'):>8} "
                f"{fmt(r['max_latency_s'], '.0f'):>9} {r['crit_ok']:>7} {r['crit_before']:>4} {r['early']:>5}"
            )
        else:
            print(
                f"{r['set']:10} {'H ' + r['family']:26} {r['cells']:>5} {'':>9} {'':>7} {'':>8} {'':>9} {'':>8} "
                f"{'':>9} {'':>7} {'':>4} {'':>5} {r['false_cells']:>5} {r['cell_weeks']:>7.1f}"
            )
    for r in rows:
        if r["failing"] and r.get("variants"):
            print(f"  {r['family']} variants: " + "; ".join(r["variants"]))
    for set_name in ("original", "randomised"):
        fails = [r for r in rows if r["failing"] and r["set"] == set_name]
        heal = [r for r in rows if not r["failing"] and r["set"] == set_name]
        det = sum(r["n_det"] for r in fails)
        elig = sum(r["n_elig"] for r in fails)
        fracs = [r["lead_frac"] for r in fails if r["lead_frac"] is not None]
        false = sum(r["false_cells"] for r in heal)
        weeks = sum(r["cell_weeks"] for r in heal)
        upper = poisson_upper(false) / weeks * 100 if weeks else None
        families_ok = all(r["n_det"] == r["n_elig"] for r in fails)
        totals[set_name] = {
            "detected": f"{det}/{elig}",
            "every_family": families_ok,
            "median_family_lead_frac": statistics.median(fracs) if fracs else None,
            "healthy_cells": sum(r["cells"] for r in heal),
            "cell_weeks": weeks,
            "false_alarm_cells": false,
            "per_100_cell_weeks": false / weeks * 100 if weeks else None,
            "upper95_per_100_cell_weeks": upper,
        }
        t = totals[set_name]
        print(
            f"{set_name}: detected before the short {det}/{elig} (every family: {families_ok}); median of family "
            f"lead fractions {fmt(t['median_family_lead_frac'], '.2f')}; false alarms {false} on "
            f"{t['healthy_cells']} healthy cells ({weeks:.0f} cell-weeks) = {fmt(t['per_100_cell_weeks'], '.2f')} "
            f"per 100 cell-weeks, 95 % upper bound {fmt(upper, '.2f')}"
        )
    return totals


def roc(runs: list[CellRun]) -> dict[str, list[tuple[float, float, float]]]:
    """Per detector and threshold scale: (scale, median lead fraction over failing cells, false
    alarms per 100 healthy cell-weeks), from the recorded running maxima of statistic/threshold."""
    healthy = [r for r in runs if not r.failing]
    weeks = sum(r.hours for r in healthy) / WEEK_H
    failing = [r for r in runs if r.failing and r.short is not None and r.onset is not None and r.short - r.onset > 60]
    out: dict[str, list[tuple[float, float, float]]] = {}
    for det in ROC_DETECTORS:
        relevant = [r for r in failing if r.family in ROC_TARGETS[det]]
        if not relevant:
            continue
        curve = []
        for scale in ROC_SCALES:
            fracs = []
            for r in relevant:
                t = next((t for t, ratio in r.peaks.get(det, []) if ratio >= scale and t < r.short), None)
                fracs.append(0.0 if t is None else min(1.0, (r.short - t) / (r.short - r.onset)))
            fa = sum(1 for r in healthy if any(ratio >= scale for _, ratio in r.peaks.get(det, [])))
            curve.append((scale, statistics.median(fracs), fa / weeks * 100 if weeks else 0.0))
        out[det] = curve
    return out


def plot_roc(curves: dict[str, list[tuple[float, float, float]]], png: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 5.0), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for det, curve in curves.items():
        fa = [c[2] for c in curve]
        lead = [c[1] for c in curve]
        (line,) = ax.plot(fa, lead, marker="o", ms=3, label=det)
        default = min(curve, key=lambda c: abs(math.log(c[0])))
        ax.plot([default[2]], [default[1]], marker="*", ms=14, color=line.get_color())
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("false alarms per 100 healthy cell-weeks (healthy cells whose statistic crosses)")
    ax.set_ylabel("median lead fraction on the failing families it targets")
    ax.set_title("Threshold scaled 0.35x-4x (star: the default)")
    ax.axvline(1.0, color="grey", lw=0.8, ls="--")
    ax.axhline(0.7, color="grey", lw=0.8, ls="--")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(png)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-family", type=int, default=4, help="cells per original scenario (default 4)")
    ap.add_argument("--healthy", type=int, default=210, help="randomised healthy cells (default 210)")
    ap.add_argument("--per-failing", type=int, default=8, help="randomised cells per failing family (default 8)")
    ap.add_argument("--seed", type=int, default=None, help="default: a fresh random seed")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", help="run only the scenarios whose name contains this")
    ap.add_argument("--png", type=Path, default=Path("bench/detection_roc.png"))
    ap.add_argument("--trace", metavar="CELL", help="with --seed: print one cell's half-cycles and detector states")
    ap.add_argument("--detector", default="overpotential_drop", help="the detector --trace follows")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(3), "big")
    if args.trace:
        job = next((j for j in plan(args, seed) if j.cell == args.trace), None)
        if job is None:
            sys.exit(f"no cell {args.trace} in the plan of seed {seed}")
        trace(job, args.detector)
        return
    jobs = [j for j in plan(args, seed) if not args.only or args.only in j.scenario]
    print(f"seed {seed}: {len(jobs)} cells; running them through the pipeline in {args.workers} processes")
    t0 = time.perf_counter()
    runs: list[CellRun] = []
    # the longest cells first, so the two workers finish together
    jobs.sort(key=lambda j: (j.period_s, j.log_change_V is None))
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        for k, run in enumerate(pool.imap_unordered(run_job, jobs, chunksize=1)):
            runs.append(run)
            if sys.stderr.isatty():
                sys.stderr.write(f"\r{k + 1}/{len(jobs)} cells")
    wall = time.perf_counter() - t0
    hours = sum(r.hours for r in runs)
    print(f"{len(runs)} cells ({hours / WEEK_H:.0f} cell-weeks of data) in {wall:.0f} s wall")
    results = {m: print_table(m, summarise(runs, m)) for m in METHODS}
    false = [r for r in runs if not r.failing and r.alerts["shortwatch"]]
    if false:
        print("\n## shortwatch's false alarms (first alert of each healthy cell that had one)")
        for r in sorted(false, key=lambda r: r.first_alert):
            t = (r.alerts["shortwatch"][0][0] - START) / 3600
            print(f"{r.job.cell:28} {r.job.period_s:>4.0f} s  {t:6.1f} h  {r.first_alert[:150]}")
    odd = []
    for r in runs:
        if not r.failing or r.short is None:
            continue
        lat = short_latency(r)
        missed = r.onset is not None and r.short - r.onset >= 60 and first_hit(r, "shortwatch") is None
        if missed or not latency_ok(r, lat):
            how = "missed" if missed else f"hard_short {'never' if lat is None else f'{lat:.0f} s after'}"
            log = f"dE {r.job.log_change_V} V" if r.job.log_change_V else f"{r.job.period_s:.0f} s"
            if how.startswith("hard_short") and r.shows_at is not None:
                nxt = "-" if r.confirm_by is None else f"{r.confirm_by - r.short:.0f}"
                how += f" (shown {r.shows_at - r.short:.0f} s, next {nxt} s)"
            odd.append(f"{r.job.cell:30} {log:>10}  {how:44} {r.variant} {plateau_snr(r)}")
    if odd:
        print("\n## failing cells missed, or whose hard short was late")
        print("\n".join(sorted(odd)))
    curves = roc([r for r in runs if r.job.set_name == "randomised"])
    print("\n## ROC-style sweep (randomised set): scale, median lead fraction, false alarms per 100 cell-weeks")
    for det, curve in curves.items():
        print(f"{det:22} " + "  ".join(f"{s:.2f}:{lf:.2f}/{fa:.2f}" for s, lf, fa in curve))
    plot_roc(curves, args.png)
    print(f"\nROC-style curve written to {args.png}")
    sw = results["shortwatch"]["randomised"]
    print(
        "goals (randomised set): every failing family alerted: "
        f"{sw['every_family']}; median lead fraction >= 0.7: {fmt(sw['median_family_lead_frac'], '.2f')}; "
        f"false alarms 0 with upper bound <= 1 per 100 cell-weeks: {sw['false_alarm_cells']} / "
        f"{fmt(sw['upper95_per_100_cell_weeks'], '.2f')}"
    )


if __name__ == "__main__":
    main()
