"""Delimited cycler exports (a preamble, one line of column names, then rows), decoded line by line.

Neware, Arbin and Maccor text exports, and any export a user maps with ``columns``, differ
only in where each canonical field comes from: the column names, a unit scale, how time is
written, and whether the current's sign is in a separate state column. :class:`Layout` says
that; :class:`TableDecoder` does the rest, so every such format shares one decoder with the
same checks and the same Rejected reasons.

Time, in the order tried:
- ``elapsed`` and ``clock`` both given: the test start is the first row's clock minus its
  elapsed time, and each row's time is start + elapsed. Cycler clocks are written to the
  second while elapsed times have sub-second digits; this keeps those digits and stays
  monotonic. Because the start comes from the first data row, the decoder reports
  ``context_ready`` only after it has seen that row (a reader resuming mid-file feeds lines
  from the start until then, see files.FileReader.restore).
- ``clock`` only: each row's own clock (Unix seconds, ISO-8601 or strptime formats, local
  times read in the configured zone).
- ``elapsed`` only: seconds since 1970-01-01 UTC (logged once), as for an EC-Lab export
  without a start time.
"""

from __future__ import annotations

import csv
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from shortwatch.model import Rejected, Sample
from shortwatch.sensors.canonical_csv import FormatError

log = logging.getLogger(__name__)

#: canonical fields a column can feed, besides time
FIELDS = ("voltage_V", "current_A", "pressure_MPa", "temperature_C", "cycle", "step")
_MAX_PREAMBLE = 200  # lines before the column names; more means this is not the layout's file
_DURATION = re.compile(
    r"\s*(?:(?P<d>\d+)\s*(?:d|days?)\s*,?\s*|(?P<dd>\d+)\.(?=\d+:\d+:))?"
    r"(?P<h>\d+):(?P<m>\d+):(?P<s>\d+(?:\.\d*)?)\s*$"
)


@dataclass(frozen=True)
class Col:
    """Where one canonical field comes from: the first of ``names`` present, times ``scale``."""

    names: tuple[str, ...]
    scale: float = 1.0


@dataclass(frozen=True)
class Layout:
    """What one delimited export looks like (see the module docstring for time)."""

    name: str
    fields: dict[str, Col]
    clock: Col | None = None
    clock_formats: tuple[str, ...] = ("unix", "iso")
    elapsed: Col | None = None  # seconds (number or [d] h:m:s text) times ``scale``
    delimiter: str | None = None  # None: tab, ';' or ',' from the header line
    state: str | None = None  # column whose text gives the current's sign and the mode
    state_rule: Callable[[str], tuple[int, str | None]] | None = None  # text -> (sign or 0, mode)
    normalise_name: Callable[[str], str] = str.strip


def parse_duration(text: str) -> float:
    """Seconds from ``12.5``, ``144:01:18`` (hours past 24), ``1 day, 02:03:04``, ``2d 02:52:51.57``
    or ``1.02:03:04``; ValueError otherwise."""
    if ":" not in text:
        return float(text)
    m = _DURATION.match(text)
    if m is None:
        raise ValueError(f"not a duration: {text!r}")
    days = int(m["d"] or m["dd"] or 0)
    return days * 86400.0 + int(m["h"]) * 3600.0 + int(m["m"]) * 60.0 + float(m["s"])


class ClockParser:
    """Absolute times from text; remembers which of its formats worked last."""

    def __init__(self, formats: tuple[str, ...], zone: ZoneInfo):
        self.formats = formats
        self.zone = zone
        self._last = formats[0]

    def __call__(self, text: str) -> float:
        text = text.strip()
        for fmt in (self._last, *self.formats):
            try:
                t = self._parse(fmt, text)
            except ValueError:
                continue
            self._last = fmt
            return t
        raise ValueError(f"not a time in {' or '.join(self.formats)}: {text!r}")

    def _parse(self, fmt: str, text: str) -> float:
        if fmt == "unix":
            t = float(text)
            if t - t:
                raise ValueError(text)
            return t
        dt = datetime.fromisoformat(text) if fmt == "iso" else datetime.strptime(text, fmt)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=self.zone)
        return dt.timestamp()


def _number(text: str) -> float | None:
    """A number; a decimal comma (European exports, never a field separator here) is read as a point."""
    text = text.strip()
    return float(text.replace(",", ".")) if text else None


def _integer(text: str) -> int | None:
    value = _number(text)
    if value is None:
        return None
    if not value.is_integer():
        raise ValueError(f"not an integer: {text.strip()!r}")
    return int(value)


@dataclass
class Context:
    """Fields a row inherits from rows above it (the nested Neware export's cycle and step rows)."""

    cycle: int | None = None
    step: int | None = None
    state: str | None = None


class TableDecoder:
    """Decode one delimited export line by line into Samples of one cell."""

    def __init__(self, layout: Layout, source: str, default_cell: str, tz: str = "UTC"):
        self.layout = layout
        self.source = source
        self.default_cell = default_cell
        self._zone = ZoneInfo(tz)
        self._clock = ClockParser(layout.clock_formats, self._zone)
        self._line_no = 0
        self._index: dict[str, int] | None = None
        self._origin: float | None = None
        self._delimiter = layout.delimiter or ","
        self._n = 0

    @property
    def ready(self) -> bool:
        """True once the column names are known (the header is complete)."""
        return self._index is not None

    @property
    def context_ready(self) -> bool:
        """True once a reader resuming mid-file has fed all this decoder needs from above the
        resume point: the header and, when time is start + elapsed, the first data row."""
        return self.ready and (self._origin is not None or not (self.layout.clock and self.layout.elapsed))

    def feed(self, line: str, context: Context | None = None) -> Sample | Rejected | None:
        """Decode one line; None for the preamble, the column names and blank lines."""
        line = line.rstrip("\r\n")
        if self._index is None:
            self._line_no += 1
            self._read_header(line)
            return None
        if not line.strip():
            return None
        if '"' in line:  # a quoted field, e.g. Neware's "1 day, 02:03:04" in a CSV
            try:
                parts = next(csv.reader((line,), delimiter=self._delimiter))
            except csv.Error as exc:
                return Rejected(self.source, "parse_error", line, cell=self.default_cell, detail=f"quoting: {exc}")
        else:
            parts = line.split(self._delimiter)
        if len(parts) < self._n:
            return Rejected(
                self.source,
                "wrong_field_count",
                line,
                cell=self.default_cell,
                detail=f"{len(parts)} fields, the header has {self._n}",
            )
        try:
            return self._decode(parts, line, context)
        except (ValueError, IndexError, OverflowError) as exc:  # OverflowError: e.g. 10**400 hours
            return Rejected(self.source, "parse_error", line, cell=self.default_cell, detail=str(exc))

    def _read_header(self, line: str) -> None:
        text = line.lstrip("\ufeff")
        layout = self.layout
        delimiter = layout.delimiter or next((d for d in ("\t", ";", ",") if d in text), ",")
        names = [layout.normalise_name(n) for n in text.split(delimiter)]
        while names and not names[-1]:
            names.pop()
        position = {}
        for i, name in enumerate(names):
            position.setdefault(name, i)
        index: dict[str, int] = {}
        for key, col in [("clock", layout.clock), ("elapsed", layout.elapsed), *layout.fields.items()]:
            if col is not None:
                found = next((position[n] for n in col.names if n in position), None)
                if found is not None:
                    index[key] = found
        if layout.state and layout.state in position:
            index["state"] = position[layout.state]
        has_time = "clock" in index or "elapsed" in index
        if has_time and ("voltage_V" in index or "current_A" in index or "pressure_MPa" in index):
            self._index, self._delimiter, self._n = index, delimiter, len(names)
            return
        if self._line_no >= _MAX_PREAMBLE:
            wanted = [c.names[0] for c in (layout.clock, layout.elapsed) if c is not None]
            raise FormatError(
                f"{self.source}: no line of column names in the first {_MAX_PREAMBLE} lines: a {layout.name} "
                f"export needs a time column ({' or '.join(wanted)}) and a voltage, current or pressure column"
            )

    def _decode(self, parts: list[str], line: str, context: Context | None) -> Sample | Rejected:
        index = self._index
        assert index is not None
        layout = self.layout
        t = self._time(parts, index)
        if t is None:
            return Rejected(self.source, "missing_time", line, cell=self.default_cell, detail="time: empty")
        values: dict[str, float | int | None] = {}
        for key, col in layout.fields.items():
            i = index.get(key)
            if i is None:
                continue
            if key in ("cycle", "step"):
                values[key] = _integer(parts[i])
            else:
                v = _number(parts[i])
                values[key] = None if v is None else v * col.scale
        state = parts[index["state"]].strip() if "state" in index else None
        if context is not None:
            values.setdefault("cycle", context.cycle)
            values.setdefault("step", context.step)
            state = state if state is not None else context.state
        mode = None
        current = values.get("current_A")
        if state is not None and layout.state_rule is not None:
            sign, mode = layout.state_rule(state)
            if sign and current is not None and not math.isnan(current):
                current = sign * abs(current)
        return Sample(
            t,
            self.default_cell,
            values.get("voltage_V"),  # type: ignore[arg-type]
            current,
            values.get("pressure_MPa"),  # type: ignore[arg-type]
            values.get("temperature_C"),  # type: ignore[arg-type]
            values.get("cycle"),  # type: ignore[arg-type]
            values.get("step"),  # type: ignore[arg-type]
            mode,
        )

    def _time(self, parts: list[str], index: dict[str, int]) -> float | None:
        layout = self.layout
        if "elapsed" in index:
            text = parts[index["elapsed"]].strip()
            if not text:
                return None
            assert layout.elapsed is not None
            elapsed = parse_duration(text) * layout.elapsed.scale
            if elapsed - elapsed:
                raise ValueError(f"elapsed time {text!r} is not finite")
            if self._origin is None:
                if "clock" in index:
                    self._origin = self._clock(parts[index["clock"]]) - elapsed
                else:
                    log.warning("%s: no clock column; times are elapsed seconds from 1970-01-01 UTC", self.source)
                    self._origin = 0.0
            return self._origin + elapsed
        text = parts[index["clock"]].strip()
        return self._clock(text) if text else None
