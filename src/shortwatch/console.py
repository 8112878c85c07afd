"""The live terminal table: one row per cell with its latest values, features and status."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

from shortwatch.model import iso_time

STATUS_STYLE = {"ok": "green", "watch": "cyan", "warning": "bold yellow", "critical": "bold white on red"}
#: Per-cycle features: a run's last, unfinished cycle has none yet, so the table keeps each
#: cell's last known value rather than blanking them at the end.
CYCLE_FEATURES = ("asr_ohm_cm2", "dpq_MPa_g_per_Ah", "ce", "cv_peak_A")
#: What each column adds to its content: one space of padding either side and a rule.
_COLUMN_OVERHEAD = 3
_STATUS_MIN = len("critical")  # the longest status word


def _num(v: float | None, fmt: str, scale: float = 1.0) -> str:
    return "–" if v is None else format(v * scale, fmt)


def _status(s: dict[str, Any], _: dict[str, Any]) -> Text:
    status = Text(s["status"], style=STATUS_STYLE.get(s["status"], ""))
    if s.get("firing"):
        status.append(" " + ", ".join(s["firing"]))
    return status


@dataclass(frozen=True)
class Column:
    header: str
    justify: str
    #: 0 is kept longest: on a narrow terminal the highest numbers are dropped first
    priority: int
    value: Callable[[dict[str, Any], dict[str, Any]], str | Text]


COLUMNS = (
    Column("cell", "left", 0, lambda s, f: s["cell"]),
    Column("kind", "left", 12, lambda s, f: s["kind"]),
    Column(
        "data time (UTC)",
        "left",
        11,
        lambda s, f: iso_time(s["time"])[:19].replace("T", " ") if s.get("time") is not None else "–",
    ),
    Column("V", "right", 2, lambda s, f: _num(s.get("voltage_V"), ".4f")),
    Column("I mA", "right", 3, lambda s, f: _num(s.get("current_A"), ".4f", 1000.0)),
    Column("P MPa", "right", 6, lambda s, f: _num(s.get("pressure_MPa"), ".2f")),
    Column("cycle", "right", 4, lambda s, f: str(s.get("cycle", "–"))),
    Column("step", "left", 9, lambda s, f: s.get("step_kind") or "–"),
    Column("ASR Ω·cm²", "right", 5, lambda s, f: _num(f.get("asr_ohm_cm2"), ".1f")),
    Column("d(dP)_Q", "right", 7, lambda s, f: _num(f.get("dpq_MPa_g_per_Ah"), ".1f")),
    Column("CE", "right", 8, lambda s, f: _num(f.get("ce"), ".3f")),
    Column("CV peak mA", "right", 10, lambda s, f: _num(f.get("cv_peak_A"), ".4f", 1000.0)),
    Column("status", "left", 1, _status),
)


class CellTable:
    """Renders CellMonitor snapshots as a rich Table that fits the terminal: columns are
    dropped by priority, never cut, so a number is shown whole or not at all."""

    def __init__(self) -> None:
        self._known: dict[str, dict[str, float]] = {}
        # widest content seen per column: widths only grow, so a column does not flicker in
        # and out of a live display as a sign or a digit comes and goes
        self._widths: dict[str, int] = {}

    def _features(self, s: dict[str, Any]) -> dict[str, float]:
        """The cell's per-cycle features: the latest, or the last known where it has none."""
        cyc = s.get("last_cycle") or {}
        step = s.get("last_step") or {}
        known = self._known.setdefault(s["cell"], {})
        for key in CYCLE_FEATURES:
            value = cyc.get(key)
            if value is None and key == "asr_ohm_cm2":
                value = step.get(key)
            if value is not None:
                known[key] = value
        return known

    def render(self, snapshots: list[dict[str, Any]], title: str = "shortwatch", width: int | None = None) -> Table:
        rows = [(s, self._features(s)) for s in sorted(snapshots, key=lambda x: x["cell"])]
        cells = {c.header: [c.value(s, f) for s, f in rows] for c in COLUMNS}
        need = {}
        for c in COLUMNS:
            natural = max(v.cell_len if isinstance(v, Text) else cell_len(v) for v in (c.header, *cells[c.header]))
            if c.header == "status":  # may wrap between the names of firing detectors, never inside one
                words = [w for v in cells[c.header] for w in str(v).split()]
                natural = max([_STATUS_MIN, *(cell_len(w) for w in words)])
            need[c.header] = self._widths[c.header] = max(natural, self._widths.get(c.header, 0))
        shown: set[str] = set()
        used = 1  # the table's left edge
        for c in sorted(COLUMNS, key=lambda c: c.priority):
            if width is None or used + need[c.header] + _COLUMN_OVERHEAD <= width:
                shown.add(c.header)
                used += need[c.header] + _COLUMN_OVERHEAD
        table = Table(title=title, title_justify="left", expand=False)
        for c in COLUMNS:
            if c.header in shown:
                wraps = c.header == "status"
                table.add_column(
                    c.header,
                    justify=c.justify,  # type: ignore[arg-type]
                    no_wrap=not wraps,
                    overflow="fold",
                    min_width=need[c.header],
                )
        for k in range(len(rows)):
            table.add_row(*(cells[c.header][k] for c in COLUMNS if c.header in shown))
        return table
