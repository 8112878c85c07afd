"""Neware BTS text exports: the flat CSV (one row per record) and the nested "regular" CSV.

Flat: ``DataPoint,Cycle Index,Step Index,Step Type,Time,Cumulative Time,Current(A),Voltage(V),
...,Date,...``. Nested: a cycle row (first field set), step rows (first field empty) and
record rows (first two fields empty), each kind with its own header line; the export
glues the first step row onto the first cycle row. Record rows inherit the cycle and step
of the rows above them.

Time is the first record's ``Date`` minus its total time, plus each record's total time
(``Cumulative Time`` / ``Total Time``), which Neware writes as ``hh:mm:ss`` with hours past
24, or ``1 day, 02:03:04``. The current is signed by Neware (discharge negative), and
``Step Type`` (``CC Chg``, ``CC DChg``, ``CV Chg``, ``Rest``) gives the mode and, where the
sign would disagree, the direction.
"""

from __future__ import annotations

from shortwatch.model import Rejected, Sample
from shortwatch.sensors.table import Col, Context, Layout, TableDecoder

_TEMPERATURES = ("T1(℃)", "T1(°C)", "T1(?)", "T1(C)", "T1")


def neware_state(text: str) -> tuple[int, str | None]:
    """(sign of the current, mode) of a Neware step type such as ``CC DChg`` or ``CC_Chg``."""
    kind = text.replace("_", " ").strip().lower()
    if kind == "rest":
        return 0, "rest"
    sign = -1 if "dchg" in kind else 1 if "chg" in kind else 0
    mode = "cc" if kind.startswith("cc ") else "cv" if kind.startswith("cv ") else None
    return sign, mode


def _fields(current_scale_names: bool = True) -> dict[str, Col]:
    return {
        "voltage_V": Col(("Voltage(V)",)),
        "current_A": Col(("Current(A)",)) if current_scale_names else Col(("Current(mA)",), 1e-3),
        "temperature_C": Col(_TEMPERATURES),
        "cycle": Col(("Cycle Index", "Cycle ID")),
        "step": Col(("Step Index", "Step ID")),
    }


def _layout(name: str, current_in_A: bool) -> Layout:
    return Layout(
        name=name,
        fields=_fields(current_in_A),
        clock=Col(("Date", "Realtime", "Absolute Time")),
        clock_formats=("iso", "%Y/%m/%d %H:%M:%S", "%m/%d/%Y %H:%M:%S"),
        elapsed=Col(("Cumulative Time", "Total Time", "Total Time(h:min:s.ms)")),
        delimiter=",",
        state="Step Type",
        state_rule=neware_state,
    )


FLAT = _layout("neware-csv", True)
FLAT_mA = _layout("neware-csv", False)


def sniff_flat(text: str) -> bool:
    first = text.split("\n", 1)[0]
    return first.startswith(("DataPoint,", "Record ID,", "Record Index,")) and "Step Type" in first


def sniff_nested(text: str) -> bool:
    lines = text.split("\n", 3)
    return (
        len(lines) > 2
        and lines[0].startswith("Cycle Index,")
        and lines[1].startswith(",Step Index")
        and lines[2].startswith(",,")
    )


def make_decoder(source: str, cell: str, tz: str, head: str) -> TableDecoder | NewareNestedDecoder:
    if sniff_nested(head):
        return NewareNestedDecoder(source, cell, tz, "Current(mA)" in head.split("\n", 3)[2])
    first = head.split("\n", 1)[0]
    return TableDecoder(FLAT_mA if "Current(mA)" in first and "Current(A)" not in first else FLAT, source, cell, tz)


class NewareNestedDecoder:
    """The nested export: cycle and step rows set the context of the record rows below them.

    ``context_ready`` stays False: a reader resuming mid-file must feed every line before the
    resume point, so that the cycle and step rows above it are known again.
    """

    context_ready = False

    def __init__(self, source: str, cell: str, tz: str, current_in_mA: bool = False):
        self.source = source
        self.cell = cell
        self._records = TableDecoder(_layout("neware-csv (nested)", not current_in_mA), source, cell, tz)
        self._header_lines = 0
        self._cycle_width = 0
        self._step_names: list[str] = []
        self._context = Context()

    @property
    def ready(self) -> bool:
        """True once the three header lines (cycle, step and record columns) are read."""
        return self._header_lines >= 3 and self._records.ready

    def feed(self, line: str) -> Sample | Rejected | None:
        line = line.rstrip("\r\n")
        if self._header_lines < 3:
            self._header_lines += 1
            if self._header_lines == 1:
                self._cycle_width = len(line.split(","))
            elif self._header_lines == 2:
                self._step_names = [n.strip() for n in line.split(",")]
            else:
                self._records.feed(line[2:])
            return None
        if not line.strip():
            return None
        if line.startswith(",,"):
            return self._records.feed(line[2:], self._context)
        parts = line.split(",")
        try:
            if line.startswith(","):
                self._step_row(parts)
            else:
                self._context.cycle = int(parts[0])
                if len(parts) > self._cycle_width:  # the first step row, glued on
                    self._step_row(["", *parts[self._cycle_width :]])
        except (ValueError, IndexError) as exc:
            return Rejected(self.source, "parse_error", line, cell=self.cell, detail=f"cycle or step row: {exc}")
        return None

    def _step_row(self, parts: list[str]) -> None:
        row = dict(zip(self._step_names, parts, strict=False))
        self._context.step = int(row["Step Index"])
        self._context.state = row.get("Step Type", "")
