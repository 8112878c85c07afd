"""The demo's report: one PNG per cell and an index.html that embeds them.

It reads only the store (decimated samples, cycles, alerts), so it works the same on the live
daemon's file, on a replay's, or on a copy sent by a colleague, and a year of data plots as
fast as a day. Figures are drawn on matplotlib's Agg canvas directly: no display and no
change to the process-wide pyplot backend.
"""

from __future__ import annotations

import dataclasses
import html
import io
import math
import re
import textwrap
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from shortwatch.model import iso_time
from shortwatch.settings import CellSpec
from shortwatch.storage.sqlite import SqliteStore

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
SEVERITY_COLOR = {"info": "grey", "warning": "darkorange", "critical": "red"}
#: Detectors of the same severity share a colour; the line style tells them apart.
_DETECTOR_STYLES = ("-", "--", "-.", ":")
#: Points per trace: enough for a 1200-px-wide panel, few enough to draw 8 cells in seconds.
PLOT_POINTS = 4000
#: Evidence images per cell in a report (the latest alerts that fired).
EVIDENCE_PER_CELL = 20


@dataclass(slots=True)
class CellSummary:
    """One row of the report's cell table."""

    cell: str
    kind: str
    samples: int
    cycles: int
    alerts_fired: int
    worst_severity: str | None  # worst severity that ever fired
    status: str  # worst severity still firing at the end, or "ok"
    image: str  # file name of the PNG, relative to index.html
    evidence: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (PNG name, caption) per alert


def final_status(alerts: Iterable[dict[str, Any]]) -> str:
    """The worst severity still firing after replaying the transitions in time order, or "ok"."""
    active: dict[str, str] = {}
    for a in sorted(alerts, key=lambda a: a["time_s"]):
        if a["state"] == "firing":
            active[a["detector"]] = a["severity"]
        else:
            active.pop(a["detector"], None)
    return max(active.values(), key=_rank, default="ok")


def worst_severity(alerts: Iterable[dict[str, Any]]) -> str | None:
    """The worst severity that ever fired, None if nothing fired."""
    fired = [a["severity"] for a in alerts if a["state"] == "firing"]
    return max(fired, key=_rank, default=None)


def _rank(severity: str) -> int:
    return SEVERITY_RANK.get(severity, 0)


def _infer_kind(cycles: Sequence[dict[str, Any]]) -> str:
    """Without cell specs: cycles with per-gram features come from a full cell."""
    full = any(c.get("dpq_MPa_g_per_Ah") is not None or c.get("q_discharge_Ah_g") is not None for c in cycles)
    return "full" if full else "symmetric"


def _image_name(cell: str, taken: set[str]) -> str:
    """A file name for the cell's PNG: safe characters only, unique within the report."""
    stem = re.sub(r"[^A-Za-z0-9_-]", "_", cell) or "cell"
    name, n = f"{stem}.png", 1
    while name.lower() in taken:
        n += 1
        name = f"{stem}-{n}.png"
    taken.add(name.lower())
    return name


def _column(cycles: Sequence[dict[str, Any]], key: str, scale: float = 1.0) -> np.ndarray:
    return np.array([np.nan if c.get(key) is None else c[key] * scale for c in cycles], dtype=float)


def _note(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="grey")


def _plot_features(ax: Axes, kind: str, cycles: Sequence[dict[str, Any]], t0: float) -> None:
    """Per-cycle features at each cycle's end: ASR and CV peak (symmetric), d(dP)_Q and CE (full).
    Robust limits: a CV peak of 56 mA after a short, or formation cycles' CE, do not flatten the rest."""
    if kind == "symmetric":
        left_key, left_label, left_scale = "asr_ohm_cm2", "plateau ASR (Ω cm²)", 1.0
        right_key, right_label, right_scale = "cv_peak_A", "CV peak current (mA)", 1e3
    else:
        left_key, left_label, left_scale = "dpq_MPa_g_per_Ah", "d(dP)_Q (MPa g/Ah)", 1.0
        right_key, right_label, right_scale = "ce", "CE", 1.0
    ax.set_ylabel(left_label, color="tab:brown")
    if not cycles:
        _note(ax, "no finished cycles")
        return
    x = (np.array([c["t_end"] for c in cycles], dtype=float) - t0) / 3600.0
    ms = 3 if len(cycles) <= 300 else 0  # a year of cycles: a line, not a row of dots
    left = _column(cycles, left_key, left_scale)
    right = _column(cycles, right_key, right_scale)
    ok = np.isfinite(left)  # plot only the cycles that have the value, joined by a line
    if ok.any():
        ax.plot(x[ok], left[ok], "o-", ms=ms, lw=1.0, color="tab:brown")
        set_robust_ylim(ax, left[ok])
    else:
        _note(ax, f"no {left_label} values")
    ok = np.isfinite(right)
    if ok.any():
        twin = ax.twinx()
        twin.plot(x[ok], right[ok], "s--", ms=ms, lw=0.8, color="tab:cyan")
        twin.set_ylabel(right_label, color="tab:cyan")
        set_robust_ylim(twin, right[ok])


def _mark_alerts(axes: Sequence[Axes], fired: Sequence[dict[str, Any]], t0: float) -> list[Line2D]:
    """Vertical lines at the firing times on every panel; returns legend handles.
    Colour = severity, line style = detector (the same on every cell's plot)."""
    groups: dict[tuple[str, str], list[float]] = {}
    for a in fired:
        groups.setdefault((a["detector"], a["severity"]), []).append((a["time_s"] - t0) / 3600.0)
    handles = []
    for (detector, severity), xs in sorted(groups.items(), key=lambda g: (-_rank(g[0][1]), g[0])):
        color = SEVERITY_COLOR.get(severity, "black")
        style = detector_style(detector)
        for ax in axes:
            lines = LineCollection(
                [[(x, 0.0), (x, 1.0)] for x in xs],
                transform=ax.get_xaxis_transform(),  # x in hours, y spanning the panel
                colors=color,
                linestyles=style,
                linewidths=1.2,
                alpha=0.85,
            )
            ax.add_collection(lines, autolim=False)
        handles.append(Line2D([], [], color=color, ls=style, label=f"{detector} ({severity})"))
    return handles


def _envelope(
    ax: Axes, hours: np.ndarray, lo: np.ndarray, hi: np.ndarray, color: str, include: Iterable[float] = ()
) -> None:
    """A channel as its min-max band per bucket: a 40-s excursion survives decimation; the
    values an alert fired on (``include``) stay on the axis whatever the robust limits say."""
    ax.fill_between(hours, lo, hi, step="post", color=color, lw=0.7, alpha=0.9)
    set_robust_ylim(ax, np.concatenate([lo, hi]), include)


def plot_cell(
    path: Path,
    cell: str,
    kind: str,
    status: str,
    data: dict[str, np.ndarray],
    cycles: Sequence[dict[str, Any]],
    alerts: Sequence[dict[str, Any]],
) -> None:
    """Stacked panels over hours since the cell's first sample, alert times marked on each.
    ``data`` is a min/max envelope (SqliteStore.read_samples_envelope)."""
    t = data["time"]
    fallback = [c["t_start"] for c in cycles] + [a["time_s"] for a in alerts]
    t0 = float(t[0]) if len(t) else min(fallback, default=0.0)
    hours = (t - t0) / 3600.0
    has_pressure = bool(np.isfinite(data["pressure_MPa_max"]).any())
    fig = Figure(figsize=(12, 9), dpi=100)
    FigureCanvasAgg(fig)
    # Fixed margins: a layout engine would draw every figure twice (half the report's time).
    # The legend goes above the panels, where it covers no data.
    fig.subplots_adjust(left=0.07, right=0.93, bottom=0.06, top=0.88, hspace=0.08)
    axes = list(fig.subplots(3 + has_pressure, 1, sharex=True, squeeze=False)[:, 0])
    _envelope(axes[0], hours, data["voltage_V_min"], data["voltage_V_max"], "tab:blue")
    axes[0].set_ylabel("voltage (V)")
    _envelope(axes[1], hours, data["current_A_min"] * 1e3, data["current_A_max"] * 1e3, "tab:green")
    axes[1].set_ylabel("current (mA)")
    if has_pressure:
        fired_on = [
            a["evidence"][k]
            for a in alerts
            if a["state"] == "firing" and a["detector"] == "pressure_window"
            for k in ("pressure_MPa", "extreme_MPa")
            if isinstance((a.get("evidence") or {}).get(k), int | float)
        ]
        _envelope(axes[2], hours, data["pressure_MPa_min"], data["pressure_MPa_max"], "tab:purple", fired_on)
        axes[2].set_ylabel("stack pressure (MPa)")
    if not len(t):
        _note(axes[0], "no samples")
    _plot_features(axes[-1], kind, cycles, t0)
    for ax in axes:
        ax.grid(True, lw=0.3, alpha=0.5)
    handles = _mark_alerts(axes, [a for a in alerts if a["state"] == "firing"], t0)
    if handles:
        fig.legend(
            handles=handles,
            loc="upper center",
            bbox_to_anchor=(0.5, 0.945),
            ncol=min(4, len(handles)),
            fontsize=8,
            frameon=False,
            title="alerts fired",
            title_fontsize=8,
        )
    axes[-1].set_xlabel(f"hours since first sample ({iso_time(t0)})")
    fig.suptitle(
        f"{cell} — {kind} — status: {status}",
        color=SEVERITY_COLOR.get(status, "black"),
        fontsize=14,
    )
    fig.savefig(path)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin-bottom: 2em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; }
.critical { color: #c00; font-weight: bold; }
.warning { color: #d2691e; font-weight: bold; }
.info { color: #666; }
img { max-width: 100%; border: 1px solid #ddd; }
"""


def _td(value: Any, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<td{attr}>{html.escape('' if value is None else str(value))}</td>"


def render_index(title: str, source: str, cells: Sequence[CellSummary], alerts: Sequence[dict[str, Any]]) -> str:
    """index.html: the cell table, the alert list, then every cell's plot. All text escaped."""
    esc = html.escape
    out = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f"<p>Generated {esc(iso_time(time.time()))} from <code>{esc(source)}</code>.</p>",
        "<h2>Cells</h2>",
        "<table><tr><th>cell</th><th>kind</th><th>samples</th><th>cycles</th>"
        "<th>alerts fired</th><th>worst severity</th><th>status at end</th></tr>",
    ]
    for c in cells:
        anchor = esc(quote(c.image), quote=True)
        out.append(
            f'<tr><td><a href="#{anchor}">{esc(c.cell)}</a></td>'
            + _td(c.kind)
            + _td(f"{c.samples:,}", "num")
            + _td(c.cycles, "num")
            + _td(c.alerts_fired, "num")
            + _td(c.worst_severity or "—", c.worst_severity or "")
            + _td(c.status, c.status if c.status != "ok" else "")
            + "</tr>"
        )
    out.append("</table>")
    out.append("<h2>Alerts</h2>")
    if alerts:
        out.append(
            "<table><tr><th>time</th><th>cell</th><th>detector</th><th>severity</th>"
            "<th>state</th><th>summary</th><th>advice</th></tr>"
        )
        for a in alerts:
            out.append(
                "<tr>"
                + _td(a["time"])
                + _td(a["cell"])
                + _td(a["detector"])
                + _td(a["severity"], a["severity"] if a["state"] == "firing" else "")
                + _td(a["state"])
                + _td(a["summary"])
                + _td(a["advice"])
                + "</tr>"
            )
        out.append("</table>")
    else:
        out.append("<p>No alerts.</p>")
    out.append("<h2>Plots</h2>")
    for c in cells:
        src = esc(quote(c.image), quote=True)
        out.append(
            f'<h3 id="{src}">{esc(c.cell)} ({esc(c.kind)}): {esc(c.status)}</h3>'
            f'<img src="{src}" alt="{esc(c.cell, quote=True)}" width="1200" height="900">'
        )
        for name, caption in c.evidence:
            out.append(
                f"<h4>{esc(caption)}</h4>"
                f'<img src="{esc(quote(name), quote=True)}" alt="{esc(caption, quote=True)}" width="1000" height="650">'
            )
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _render_cell(
    store: SqliteStore,
    out_dir: Path,
    cell: str,
    specs: Callable[[str], CellSpec] | None,
    alerts: list[dict[str, Any]],
    taken: set[str],
    since: float | None,
    until: float | None,
) -> CellSummary:
    """Draw one cell's PNG and the evidence image of each alert that fired; summarise the cell."""
    lo, hi = -math.inf if since is None else since, math.inf if until is None else until
    cycles = [c for c in store.read_cycles(cell) if lo <= c["t_end"] < hi]
    kind = specs(cell).kind if specs is not None else _infer_kind(cycles)
    status = final_status(alerts)
    image = _image_name(cell, taken)
    data = store.read_samples_envelope(cell, PLOT_POINTS // 2, since, until)
    plot_cell(out_dir / image, cell, kind, status, data, cycles, alerts)
    evidence = []
    for a in [a for a in alerts if a["state"] == "firing"][-EVIDENCE_PER_CELL:]:
        name = _image_name(f"{cell}-{a['detector']}", taken)
        (out_dir / name).write_bytes(evidence_png(store, a, kind))
        evidence.append((name, f"{a['time'][:19]} {a['detector']} {a['severity']}: {a['summary']}"))
    return CellSummary(
        cell=cell,
        kind=kind,
        samples=int(data["n"].sum()),
        cycles=len(cycles),
        alerts_fired=sum(a["state"] == "firing" for a in alerts),
        worst_severity=worst_severity(alerts),
        status=status,
        image=image,
        evidence=evidence,
    )


def build_report(
    store: SqliteStore,
    out_dir: Path,
    cells: Iterable[str] | None = None,
    specs: Callable[[str], CellSpec] | None = None,
    title: str = "shortwatch report",
    since: float | None = None,
    until: float | None = None,
) -> Path:
    """Write one PNG per cell, one per alert fired, and index.html into ``out_dir``;
    returns index.html's path.

    ``cells`` defaults to every cell with samples; ``since`` <= data time < ``until`` limits
    samples, cycles and alerts. ``specs`` (e.g. ``Settings.cell_spec``) gives each cell's
    kind, otherwise a cell whose cycles carry per-gram features is taken for a full cell and
    the rest for symmetric cells.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(cells) if cells is not None else store.cells()
    wanted = set(names)
    lo, hi = -math.inf if since is None else since, math.inf if until is None else until
    all_alerts = [a for a in store.read_alerts() if a["cell"] in wanted and lo <= a["time_s"] < hi]
    by_cell: dict[str, list[dict[str, Any]]] = {}
    for a in all_alerts:
        by_cell.setdefault(a["cell"], []).append(a)
    taken: set[str] = {"index.html"}
    summaries = [
        _render_cell(store, out_dir, cell, specs, by_cell.get(cell, []), taken, since, until) for cell in names
    ]
    index = out_dir / "index.html"
    index.write_text(render_index(title, str(store.path), summaries, all_alerts), encoding="utf-8")
    return index


# ---------------------------------------------------------------- evidence plots
#
# One image per alert: the feature trend that fired, against the cycler's cycle numbers, with
# the baseline, the threshold and the firing point marked, zoomed to the cycles that led to it,
# and below it the detector's statistic against its threshold. The report shows the same image
# for every alert it lists, and every notifier that can carry an image attaches it.

#: Cycles shown before the one that fired (and after it, when the data go on).
EVIDENCE_CYCLES_BEFORE = 40
EVIDENCE_CYCLES_AFTER = 4
#: Data shown around an alert that fired on samples (a hard short, a pressure excursion).
EVIDENCE_WINDOW_BEFORE_S = 4 * 3600.0
EVIDENCE_WINDOW_AFTER_S = 1 * 3600.0
EVIDENCE_SIZE_IN = (10.0, 6.5)
EVIDENCE_DPI = 100


@dataclass(slots=True)
class Trend:
    """A per-cycle feature: x in cycle numbers, with what the detector compared it to."""

    x: np.ndarray
    y: np.ndarray
    label: str
    baseline: float | None = None
    baseline_label: str = "baseline"
    threshold: float | None = None
    threshold_label: str = "threshold"
    fired: tuple[float, float] | None = None  # (cycle, value) of the firing point


def robust_limits(
    values: np.ndarray, include: Iterable[float | None] = (), pad: float = 0.08
) -> tuple[float, float] | None:
    """Y limits from the 1st-99th percentiles of the finite values (of under 100 values: all
    but a lone extreme, see _without_lone_extremes), widened to show every
    value in ``include`` (baseline, threshold, firing point): one 56 mA point after a short
    no longer flattens the rise that fired."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    keep = [float(x) for x in include if x is not None and math.isfinite(x)]
    if not len(v) and not keep:
        return None
    if len(v) >= 100:
        lo, hi = np.percentile(v, [1, 99])
    elif len(v):  # few points (per-cycle features): drop only a lone value far beyond the rest
        lo, hi = _without_lone_extremes(np.sort(v))
    else:
        lo, hi = min(keep), max(keep)
    lo, hi = min([lo, *keep]), max([hi, *keep])
    span = hi - lo or abs(hi) * 0.1 or 1.0
    return lo - pad * span, hi + pad * span


def _without_lone_extremes(v: np.ndarray) -> tuple[float, float]:
    """(min, max) of sorted values without the few at either end that stand apart: a value
    further from its neighbour than twice the span of the rest (a 56 mA CV peak after a
    short, a formation cycle's CE). A steady decline (CE falling cycle by cycle) has no such
    gap and stays in view. At most 5 % of the values (at least one) go at each end."""
    lo, hi = 0, len(v) - 1
    most = max(1, len(v) // 20)
    for _ in range(most):
        if hi - lo >= 2 and v[hi] - v[hi - 1] > 2 * (v[hi - 1] - v[lo]):
            hi -= 1
    for _ in range(most):
        if hi - lo >= 2 and v[lo + 1] - v[lo] > 2 * (v[hi] - v[lo + 1]):
            lo += 1
    return float(v[lo]), float(v[hi])


def set_robust_ylim(ax: Axes, values: np.ndarray, include: Iterable[float | None] = ()) -> None:
    """Apply robust_limits, and say on the panel how many points are off the scale."""
    lim = robust_limits(values, include)
    if lim is None:
        return
    ax.set_ylim(*lim)
    v = np.asarray(values, dtype=float)
    off = int(np.sum((v < lim[0]) | (v > lim[1])))
    if off:
        ext = v[np.isfinite(v)]
        ax.text(
            0.995,
            0.98,
            f"{off} point(s) off scale ({ext.min():.3g} to {ext.max():.3g})",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=7,
            color="grey",
        )


def detector_style(detector: str) -> str:
    """One line style per detector, the same on every cell's plot."""
    from shortwatch.detectors.registry import DETECTORS

    names = list(DETECTORS)
    i = names.index(detector) if detector in names else sum(map(ord, detector))
    return _DETECTOR_STYLES[i % len(_DETECTOR_STYLES)]


def _cycle_x(rows: Sequence[dict[str, Any]]) -> np.ndarray:
    """Half-cycles placed within their cycle: the k-th step of cycle c at c + k/n."""
    x = np.array([r["cycle"] for r in rows], dtype=float)
    for c in np.unique(x):
        idx = np.flatnonzero(x == c)
        x[idx] += np.arange(len(idx)) / len(idx)
    return x


def feature_trend(
    detector: str, ev: dict[str, Any], steps: Sequence[dict[str, Any]], cycles: Sequence[dict[str, Any]]
) -> Trend | None:
    """The per-cycle feature behind a trend detector's alert; None for sample-level ones."""
    fc = ev.get("cycle")
    if detector == "overpotential_drop":
        rows = [s for s in steps if s.get("asr_ohm_cm2") is not None and s["step_kind"] in ("charge", "discharge")]
        x = _cycle_x(rows)
        y = np.array([s["asr_ohm_cm2"] for s in rows], dtype=float)
        hit = [i for i, s in enumerate(rows) if s["step_index"] == ev.get("half_cycle")]
        fired = (x[hit[0]], y[hit[0]]) if hit else None
        return Trend(
            x, y, "plateau ASR per half-cycle (Ω cm²)", ev.get("baseline_asr_ohm_cm2"), "peak (baseline)", fired=fired
        )
    if detector == "cv_current_rise":
        rows = [c for c in cycles if c.get("cv_peak_A") is not None]
        x = np.array([c["cycle"] for c in rows], dtype=float)
        y = np.array([c["cv_peak_A"] * 1e3 for c in rows], dtype=float)
        # the detector compares peaks referred to 25 C (I ~ 1/R), the points are as measured; the
        # limit drawn is the rule that fired: omega against the first check, or the rise from the low
        i0, thr, low = ev.get("initial_peak_A"), ev.get("threshold"), ev.get("lowest_peak_A")
        rise_fraction = ev.get("rise_fraction")
        by_rise = (ev.get("omega") or 0.0) < (thr or 0.0) and low is not None and rise_fraction is not None
        if by_rise:
            limit = low * (1 + rise_fraction) * 1e3
            limit_label = f"lowest × {1 + rise_fraction:g}, {ev.get('rising_checks', 2)} rises (25 °C)"
        else:
            limit = i0 * (1 + thr) * 1e3 if i0 is not None and thr is not None else None
            limit_label = "first × (1 + ω thr.) (25 °C)"
        fired = (fc, ev["peak_current_A"] * 1e3) if fc is not None and ev.get("peak_current_A") is not None else None
        return Trend(
            x,
            y,
            "CV peak current per check (mA)",
            None if low is None else low * 1e3,
            "lowest peak (25 °C)",
            limit,
            limit_label,
            fired,
        )
    if detector == "pressure_dpq_decline":
        rows = [c for c in cycles if c.get("dpq_MPa_g_per_Ah") is not None]
        x = np.array([c["cycle"] for c in rows], dtype=float)
        y = np.array([c["dpq_MPa_g_per_Ah"] for c in rows], dtype=float)
        fired = (fc, ev["dpq_MPa_g_per_Ah"]) if fc is not None and "dpq_MPa_g_per_Ah" in ev else None
        return Trend(
            x,
            y,
            "d(dP)_Q per cycle (MPa g/Ah)",
            ev.get("expected_dpq_MPa_g_per_Ah"),
            f"own trend at cycle {fc}",
            fired=fired,
        )
    if detector == "pressure_mechanics":
        rows = [c for c in cycles if c.get("p_max") is not None]
        x = np.array([c["cycle"] for c in rows], dtype=float)
        y = np.array([c["p_max"] for c in rows], dtype=float)
        ref, thr = ev.get("reference_peak_MPa"), ev.get("threshold")
        limit = ref * thr if ref is not None and thr is not None else None
        fired = (fc, ev["peak_pressure_MPa"]) if fc is not None and "peak_pressure_MPa" in ev else None
        return Trend(x, y, "peak stack pressure per cycle (MPa)", ref, "first cycles' peak", limit, "threshold", fired)
    return None


def _draw_trend(ax: Axes, tr: Trend, color: str) -> None:
    """The trend line, its baseline and threshold, the firing point; zoomed and robust."""
    if tr.fired is not None:
        fx = tr.fired[0]
        lo, hi = fx - EVIDENCE_CYCLES_BEFORE, fx + EVIDENCE_CYCLES_AFTER
    else:
        hi = tr.x.max() if len(tr.x) else 1.0
        lo = hi - EVIDENCE_CYCLES_BEFORE
    sel = (tr.x >= lo) & (tr.x <= hi)
    ax.plot(tr.x[sel], tr.y[sel], "o-", ms=3, lw=1.0, color="tab:brown", label=tr.label)
    if tr.baseline is not None:
        ax.axhline(tr.baseline, color="tab:blue", ls="--", lw=1.0, label=f"{tr.baseline_label} {tr.baseline:.4g}")
    if tr.threshold is not None:
        ax.axhline(tr.threshold, color="red", ls=":", lw=1.2, label=f"{tr.threshold_label} {tr.threshold:.4g}")
    if tr.fired is not None:
        ax.plot(
            *tr.fired, marker="*", ms=16, color=color, mec="black", ls="none", label=f"fired (cycle {tr.fired[0]:.0f})"
        )
    ax.set_xlim(max(lo, tr.x.min()) - 0.5 if len(tr.x) else lo, min(hi, tr.x.max()) + 0.5 if len(tr.x) else hi)
    set_robust_ylim(ax, tr.y[sel], (tr.baseline, tr.threshold, None if tr.fired is None else tr.fired[1]))
    ax.set_ylabel(re.sub(r" per [\w-]+", "", tr.label))
    ax.set_xlabel("cycle (cycler numbering)")


def _time_to_cycle(cycles: Sequence[dict[str, Any]]) -> Callable[[np.ndarray], np.ndarray]:
    """Data time -> cycle number, placing a cycle's end at its own number: a statistic
    recorded when cycle c ended stands above the feature point of cycle c."""
    if not cycles:
        return lambda t: np.full(np.shape(t), np.nan)
    ts = np.array([cycles[0]["t_start"]] + [c["t_end"] for c in cycles], dtype=float)
    ns = np.array([cycles[0]["cycle"] - 1] + [c["cycle"] for c in cycles], dtype=float)
    return lambda t: np.interp(t, ts, ns)


def _draw_statistic(
    ax: Axes,
    states: Sequence[dict[str, Any]],
    to_cycle: Callable,
    xlim: tuple[float, float],
    color: str,
    threshold: float | None,
) -> None:
    """The detector's statistic against the threshold it fired on, over the same cycles."""
    rows = [s for s in states if s.get("statistic") is not None]
    if not rows:
        _note(ax, "no statistic recorded")
        return
    x = to_cycle(np.array([s["time"] for s in rows], dtype=float))
    y = np.array([s["statistic"] for s in rows], dtype=float)
    sel = (x >= xlim[0]) & (x <= xlim[1])
    ax.step(x[sel], y[sel], where="post", color="tab:gray", lw=1.0, label="detector statistic")
    thr = (
        [threshold] if threshold is not None else [s["threshold"] for s in rows if s.get("threshold") is not None][-1:]
    )
    if thr:
        ax.axhline(thr[-1], color="red", ls=":", lw=1.2, label=f"threshold {thr[-1]:.4g}")
    firing = [(xi, yi) for xi, yi, s in zip(x, y, rows, strict=True) if s["state"] in ("warning", "critical")]
    if firing:
        ax.plot(*zip(*firing, strict=True), "o", ms=4, color=color, ls="none", label="warning or critical")
    ax.set_xlim(*xlim)
    set_robust_ylim(ax, y[sel], thr)
    ax.set_ylabel("statistic")
    ax.set_xlabel("cycle (cycler numbering)")


def _draw_window(
    axes: Sequence[Axes],
    store: SqliteStore,
    cell: str,
    detector: str,
    ev: dict[str, Any],
    t: float,
    cycles: Sequence[dict[str, Any]],
    color: str,
) -> None:
    """Samples around the firing time (min/max envelope): the signal that fired on top,
    the current below; hours from the firing, cycle numbers along the top."""
    lo, hi = t - EVIDENCE_WINDOW_BEFORE_S, t + EVIDENCE_WINDOW_AFTER_S
    env = store.read_samples_envelope(cell, 1500, lo, hi)
    h = (env["time"] - t) / 3600.0
    top_key, top_label, top_scale = ("voltage_V", "voltage (V)", 1.0)
    marks: list[tuple[float, str, str]] = []
    if detector == "pressure_window":
        top_key, top_label = "pressure_MPa", "stack pressure (MPa)"
        marks = [(ev[k], k.replace("_MPa", " (MPa)"), "red") for k in ("min_MPa", "max_MPa") if ev.get(k) is not None]
    elif detector == "hard_short":
        if ev.get("expected_overpotential_V") is not None:
            marks.append((ev["expected_overpotential_V"], "expected |V|", "tab:blue"))
            if ev.get("threshold_V") is not None:
                marks.append((ev["threshold_V"], "short below |V|", "red"))
            top_key, top_label = "abs_voltage_V", "|voltage| (V)"
        elif ev.get("voltage_before_V") is not None:
            marks.append((ev["voltage_before_V"], "before the drop", "tab:blue"))
    channels = [(top_key, top_label, top_scale), ("current_A", "current (mA)", 1e3)]
    for ax, (key, label, scale) in zip(axes, channels, strict=True):
        if key == "abs_voltage_V":
            a, b = np.abs(env["voltage_V_min"]), np.abs(env["voltage_V_max"])
            vmin, vmax = np.minimum(a, b), np.maximum(a, b)
        else:
            vmin, vmax = env[f"{key}_min"] * scale, env[f"{key}_max"] * scale
        if len(h) and np.isfinite(vmax).any():
            ax.fill_between(
                h,
                vmin,
                vmax,
                color="tab:blue" if ax is axes[0] else "tab:green",
                lw=0.8,
                alpha=0.8,
                step="post",
                label=f"{label.split(' (')[0]} (min to max)",
            )
        else:
            _note(ax, f"no {label.split(' (')[0]} samples in this window")
        ax.set_ylabel(label)
        ax.axvline(0.0, color=color, lw=1.2, ls=detector_style(detector))
        ax.set_xlim((lo - t) / 3600.0, (hi - t) / 3600.0)
        include: list[float | None] = []
        if ax is axes[0]:
            for y, text, c in marks:
                ax.axhline(y, color=c, ls=":" if c == "red" else "--", lw=1.1, label=f"{text} {y:.4g}")
                include.append(y)
            value = ev.get("pressure_MPa") if detector == "pressure_window" else ev.get("voltage_V")
            if value is not None:
                value = abs(value) if key == "abs_voltage_V" else value
                ax.plot(0.0, value, marker="*", ms=16, color=color, mec="black", ls="none", label="fired")
                include.append(value)
        set_robust_ylim(ax, np.concatenate([vmin, vmax]), include)
    axes[-1].set_xlabel("hours from the alert")
    to_cycle = _time_to_cycle(cycles)
    in_window = [c for c in cycles if lo <= c["t_start"] <= hi]
    if in_window:
        top = axes[0].secondary_xaxis("top")
        top.set_xticks([(c["t_start"] - t) / 3600.0 for c in in_window][:12])
        top.set_xticklabels([f"cycle {c['cycle']}" for c in in_window][:12], fontsize=7)
    elif cycles:
        axes[0].set_title(f"in cycle {to_cycle(np.array([t]))[0]:.0f}", fontsize=8, loc="right")


def _draw_charge_curves(
    ax: Axes, store: SqliteStore, cell: str, ev: dict[str, Any], steps: Sequence[dict[str, Any]], color: str
) -> None:
    """The charge curve of the cycle that fired beside the last normal one: the dip shows."""
    charges = [s for s in steps if s["step_kind"] == "charge"]
    fired = [s for s in charges if s["cycle"] == ev.get("cycle")] or charges[-1:]
    if not fired:
        _note(ax, "no charge step recorded")
        return
    normal = [s for s in charges if s["t_end"] <= fired[-1]["t_start"] and not s.get("v_dips")]
    shown = [(normal[-1], "last normal charge", "tab:gray")] if normal else []
    shown.append((fired[-1], f"charge of cycle {fired[-1]['cycle']}", color))
    values: list[np.ndarray] = []
    for step, label, c in shown:
        samples = list(store.read_samples(cell, step["t_start"], step["t_end"] + 1e-6))
        tt = np.array([s.time for s in samples], dtype=float)
        vv = np.array([np.nan if s.voltage_V is None else s.voltage_V for s in samples], dtype=float)
        hours = (tt - step["t_start"]) / 3600.0
        ax.plot(hours, vv, lw=1.0, color=c, label=label)
        values.append(vv)
        if c == color and len(vv):
            # a dip: the voltage below its running maximum while charging (deeper than 5 mV)
            below = np.fmax.accumulate(np.nan_to_num(vv, nan=-np.inf)) - vv
            dip = below > max(0.005, 0.5 * float(ev.get("max_dip_V") or 0.0))
            if dip.any():
                ax.plot(hours[dip], vv[dip], "v", ms=6, color="red", ls="none", label="dips while charging")
    if ev.get("max_dip_V"):
        ax.text(0.01, 0.97, f"deepest dip {1e3 * ev['max_dip_V']:.0f} mV", transform=ax.transAxes, va="top", fontsize=8)
    set_robust_ylim(ax, values[-1])
    ax.set_ylabel("voltage while charging (V)")
    ax.set_xlabel("hours into the charge step")


def evidence_png(store: SqliteStore, event: dict[str, Any], kind: str | None = None) -> bytes:
    """The evidence image of one alert event (a DESIGN alert dict), as PNG bytes.

    Blocking (SQLite reads and matplotlib): the daemon calls it with asyncio.to_thread.
    """
    cell, detector, ev = event.get("cell"), event["detector"], event.get("evidence") or {}
    t = event["time_s"] if "time_s" in event else datetime.fromisoformat(event["time"]).timestamp()
    color = "tab:green" if event["state"] == "resolved" else SEVERITY_COLOR.get(event["severity"], "black")
    fig = Figure(figsize=EVIDENCE_SIZE_IN, dpi=EVIDENCE_DPI)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.09, right=0.74, bottom=0.09, top=0.84, hspace=0.42)
    ax_top, ax_bottom = fig.subplots(2, 1)
    cycles = store.read_cycles(cell) if cell else []
    steps = store.read_steps(cell) if cell else []
    trend = feature_trend(detector, ev, steps, cycles)
    if cell is None:
        for ax in (ax_top, ax_bottom):
            _note(ax, "alert about a source or the daemon: no cell data")
    elif trend is not None:
        _draw_trend(ax_top, trend, color)
        states = [s for s in store.read_detector_states(cell) if s["detector"] == detector]
        _draw_statistic(ax_bottom, states, _time_to_cycle(cycles), ax_top.get_xlim(), color, ev.get("threshold"))
    elif detector == "charge_anomaly":
        _draw_charge_curves(ax_top, store, cell, ev, steps, color)
        ce = [c for c in cycles if c.get("ce") is not None]
        trend = Trend(
            np.array([c["cycle"] for c in ce], dtype=float),
            np.array([c["ce"] for c in ce], dtype=float),
            "coulombic efficiency per cycle",
            ev.get("usual_ce"),
            "usual CE",
            fired=None if ev.get("ce") is None else (ev["cycle"], ev["ce"]),
        )
        if len(trend.x):
            _draw_trend(ax_bottom, trend, color)
        else:
            _note(ax_bottom, "no coulombic efficiency recorded")
    else:
        _draw_window([ax_top, ax_bottom], store, cell, detector, ev, t, cycles, color)
    for ax in (ax_top, ax_bottom):
        ax.grid(True, lw=0.3, alpha=0.5)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    state = event["state"] + (" (reminder)" if event.get("reminder") else "")
    where = cell if cell is not None else f"source {event.get('source')}"
    fig.suptitle(f"{where} — {detector} — {event['severity']} {state}", color=color, fontsize=13, x=0.09, ha="left")
    summary = textwrap.fill(f"{event['time'][:19].replace('T', ' ')} UTC: {event.get('summary', '')}", 150)
    fig.text(0.09, 0.935, textwrap.shorten(summary, 300), fontsize=8, color="#333", va="top", wrap=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
