"""The live terminal table: one row per cell with its latest values, features and status."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from shortwatch.model import iso_time

STATUS_STYLE = {"ok": "green", "watch": "cyan", "warning": "bold yellow", "critical": "bold white on red"}


def _num(v: float | None, fmt: str, scale: float = 1.0) -> str:
    return "–" if v is None else format(v * scale, fmt)


def cell_table(snapshots: list[dict[str, Any]], title: str = "shortwatch") -> Table:
    """Render CellMonitor snapshots as a rich Table."""
    table = Table(title=title, title_justify="left", expand=False)
    for col, justify in (
        ("cell", "left"),
        ("kind", "left"),
        ("data time (UTC)", "left"),
        ("V", "right"),
        ("I mA", "right"),
        ("P MPa", "right"),
        ("cycle", "right"),
        ("step", "left"),
        ("ASR Ω·cm²", "right"),
        ("d(dP)_Q", "right"),
        ("CE", "right"),
        ("CV peak mA", "right"),
        ("status", "left"),
    ):
        table.add_column(col, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for s in sorted(snapshots, key=lambda x: x["cell"]):
        cyc = s.get("last_cycle") or {}
        step = s.get("last_step") or {}
        asr = cyc.get("asr_ohm_cm2") or step.get("asr_ohm_cm2")
        status = Text(s["status"], style=STATUS_STYLE.get(s["status"], ""))
        if s.get("firing"):
            status.append(" " + ",".join(s["firing"]))
        table.add_row(
            s["cell"],
            s["kind"],
            iso_time(s["time"])[:19].replace("T", " ") if s.get("time") is not None else "–",
            _num(s.get("voltage_V"), ".4f"),
            _num(s.get("current_A"), ".4f", 1000.0),
            _num(s.get("pressure_MPa"), ".2f"),
            str(s.get("cycle", "–")),
            s.get("step_kind") or "–",
            _num(asr, ".1f"),
            _num(cyc.get("dpq_MPa_g_per_Ah"), ".1f"),
            _num(cyc.get("ce"), ".3f"),
            _num(cyc.get("cv_peak_A"), ".4f", 1000.0),
            status,
        )
    return table
