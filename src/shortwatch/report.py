"""The demo's report: one PNG per cell and an index.html that embeds them.

It reads only the store (decimated samples, cycles, alerts), so it works the same on the live
daemon's file, on a replay's, or on a copy sent by a colleague, and a year of data plots as
fast as a day. Figures are drawn on matplotlib's Agg canvas directly: no display and no
change to the process-wide pyplot backend.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
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
    """Per-cycle features at each cycle's end: ASR and CV peak (symmetric), d(dP)_Q and CE (full)."""
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
    else:
        _note(ax, f"no {left_label} values")
    ok = np.isfinite(right)
    if ok.any():
        twin = ax.twinx()
        twin.plot(x[ok], right[ok], "s--", ms=ms, lw=0.8, color="tab:cyan")
        twin.set_ylabel(right_label, color="tab:cyan")


def _mark_alerts(axes: Sequence[Axes], fired: Sequence[dict[str, Any]], t0: float) -> list[Line2D]:
    """Vertical lines at the firing times on every panel; returns legend handles."""
    detectors = sorted({a["detector"] for a in fired})
    style = {d: _DETECTOR_STYLES[i % len(_DETECTOR_STYLES)] for i, d in enumerate(detectors)}
    groups: dict[tuple[str, str], list[float]] = {}
    for a in fired:
        groups.setdefault((a["detector"], a["severity"]), []).append((a["time_s"] - t0) / 3600.0)
    handles = []
    for (detector, severity), xs in sorted(groups.items(), key=lambda g: (-_rank(g[0][1]), g[0])):
        color = SEVERITY_COLOR.get(severity, "black")
        for ax in axes:
            lines = LineCollection(
                [[(x, 0.0), (x, 1.0)] for x in xs],
                transform=ax.get_xaxis_transform(),  # x in hours, y spanning the panel
                colors=color,
                linestyles=style[detector],
                linewidths=1.2,
                alpha=0.85,
            )
            ax.add_collection(lines, autolim=False)
        handles.append(Line2D([], [], color=color, ls=style[detector], label=f"{detector} ({severity})"))
    return handles


def plot_cell(
    path: Path,
    cell: str,
    kind: str,
    status: str,
    data: dict[str, np.ndarray],
    cycles: Sequence[dict[str, Any]],
    alerts: Sequence[dict[str, Any]],
) -> None:
    """Stacked panels over hours since the cell's first sample, alert times marked on each."""
    t = data["time"]
    fallback = [c["t_start"] for c in cycles] + [a["time_s"] for a in alerts]
    t0 = float(t[0]) if len(t) else min(fallback, default=0.0)
    hours = (t - t0) / 3600.0
    has_pressure = bool(np.isfinite(data["pressure_MPa"]).any())
    fig = Figure(figsize=(12, 9), dpi=100)
    FigureCanvasAgg(fig)
    # Fixed margins: a layout engine would draw every figure twice (half the report's time).
    fig.subplots_adjust(left=0.07, right=0.93, bottom=0.06, top=0.94, hspace=0.08)
    axes = list(fig.subplots(3 + has_pressure, 1, sharex=True, squeeze=False)[:, 0])
    axes[0].plot(hours, data["voltage_V"], lw=0.7, color="tab:blue")
    axes[0].set_ylabel("voltage (V)")
    axes[1].plot(hours, data["current_A"] * 1e3, lw=0.7, color="tab:green")
    axes[1].set_ylabel("current (mA)")
    if has_pressure:
        axes[2].plot(hours, data["pressure_MPa"], lw=0.7, color="tab:purple")
        axes[2].set_ylabel("stack pressure (MPa)")
    if not len(t):
        _note(axes[0], "no samples")
    _plot_features(axes[-1], kind, cycles, t0)
    for ax in axes:
        ax.grid(True, lw=0.3, alpha=0.5)
    handles = _mark_alerts(axes, [a for a in alerts if a["state"] == "firing"], t0)
    if handles:
        axes[0].legend(handles=handles, loc="upper right", fontsize=8, title="alerts fired", title_fontsize=8)
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
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _render_cell(
    store: SqliteStore,
    out_dir: Path,
    cell: str,
    specs: Callable[[str], CellSpec] | None,
    alerts: list[dict[str, Any]],
    taken: set[str],
    samples: Future[int],
) -> CellSummary:
    """Draw one cell's PNG and summarise it for the index."""
    cycles = store.read_cycles(cell)
    kind = specs(cell).kind if specs is not None else _infer_kind(cycles)
    status = final_status(alerts)
    image = _image_name(cell, taken)
    data = store.read_samples_decimated(cell, PLOT_POINTS)
    plot_cell(out_dir / image, cell, kind, status, data, cycles, alerts)
    return CellSummary(
        cell=cell,
        kind=kind,
        samples=samples.result(),
        cycles=len(cycles),
        alerts_fired=sum(a["state"] == "firing" for a in alerts),
        worst_severity=worst_severity(alerts),
        status=status,
        image=image,
    )


def build_report(
    store: SqliteStore,
    out_dir: Path,
    cells: Iterable[str] | None = None,
    specs: Callable[[str], CellSpec] | None = None,
    title: str = "shortwatch report",
) -> Path:
    """Write one PNG per cell and index.html into ``out_dir``; returns index.html's path.

    ``cells`` defaults to every cell with samples; ``specs`` (e.g. ``Settings.cell_spec``)
    gives each cell's kind, otherwise a cell whose cycles carry per-gram features is taken
    for a full cell and the rest for symmetric cells.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(cells) if cells is not None else store.cells()
    wanted = set(names)
    all_alerts = [a for a in store.read_alerts() if a["cell"] in wanted]
    by_cell: dict[str, list[dict[str, Any]]] = {}
    for a in all_alerts:
        by_cell.setdefault(a["cell"], []).append(a)
    taken: set[str] = {"index.html"}
    summaries = []
    # Counting a cell's samples scans its rows (~0.2 s for a year); SQLite does that without
    # the GIL, so the counts run on other threads while the figures are drawn.
    with ThreadPoolExecutor(max_workers=2) as pool:
        counts = [pool.submit(store.count, "sample", cell) for cell in names]
        for cell, count in zip(names, counts, strict=True):
            summaries.append(_render_cell(store, out_dir, cell, specs, by_cell.get(cell, []), taken, count))
    index = out_dir / "index.html"
    index.write_text(render_index(title, str(store.path), summaries, all_alerts), encoding="utf-8")
    return index
