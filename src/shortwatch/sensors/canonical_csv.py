"""The canonical CSV format (DESIGN.md "Canonical CSV"): a line-at-a-time decoder and a writer.

The decoder is hand-written rather than built on the ``csv`` module because replay must move
~200k samples/s end to end: creating a ``csv.reader`` per line (the reader has to be fed
lines one at a time, since :class:`~shortwatch.sensors.files.FileReader` tracks byte
offsets) costs more than the whole fast path below. Unquoted lines, the normal case, are
split with ``str.split``; only lines with a quote character go through ``csv``.

Every row takes a fast path with no per-field checks; when anything in it fails, a slow,
column-by-column path (:meth:`CanonicalCsvDecoder._decode_slowly`) decodes the row again
to name the reason and column. The slow path is complete on its own, so it also accepts
the rare rows the fast path is too strict for (e.g. ``mode`` written as ``CC``).

This module also holds :class:`FormatError` and the row-checking helpers the other line
decoders share.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Literal, TextIO
from zoneinfo import ZoneInfo

from shortwatch.model import CSV_COLUMNS, MODES, Rejected, Sample, iso_time

log = logging.getLogger(__name__)

_MODE_SET = frozenset(MODES)
_SIGNALS = ("voltage_V", "current_A", "pressure_MPa")


class FormatError(Exception):
    """A file cannot be decoded at all (unknown format, or a header without required columns)."""


class RowError(Exception):
    """One data row is bad; ``reason`` is a Rejected reason, ``detail`` names the column."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def strict_float(text: str) -> float:
    """``float(text)`` without the Python literal forms no export writes: ``1_000`` is refused."""
    if "_" in text:
        raise ValueError(text)
    return float(text)


def check_float(column: str, text: str) -> float | None:
    """A numeric field: empty is missing; garbage or NaN/inf raise RowError naming the column."""
    text = text.strip()
    if not text:
        return None
    try:
        value = strict_float(text)
    except ValueError:
        raise RowError("parse_error", f"{column}: not a number: {text!r}") from None
    if value - value:  # NaN for NaN and +-inf, 0.0 otherwise
        raise RowError("non_finite", f"{column}: {text!r} is not finite")
    return value


def channel_float(column: str, text: str) -> float | None:
    """A measured channel: empty is missing, garbage raises RowError. NaN/inf pass through:
    the validator drops just that channel and quarantines the sample, keeping the rest."""
    text = text.strip()
    if not text:
        return None
    try:
        return strict_float(text)
    except ValueError:
        raise RowError("parse_error", f"{column}: not a number: {text!r}") from None


def check_int(column: str, text: str) -> int | None:
    """An integer field; accepts integral floats such as ``3.0`` or ``3.000E+000`` (cycler exports)."""
    value = check_float(column, text)
    if value is None:
        return None
    if not value.is_integer():
        raise RowError("parse_error", f"{column}: not an integer: {text.strip()!r}")
    return int(value)


def to_int(text: str) -> int:
    """``int(text)`` that also takes integral floats; raises ValueError otherwise."""
    if text.isdigit():
        return int(text)
    value = strict_float(text)
    if not value.is_integer():
        raise ValueError(text)
    return int(value)


class CanonicalCsvDecoder:
    """Decode canonical CSV one line at a time: the first non-empty line is the header.

    ``default_cell`` is the cell id for rows without one (no ``cell`` column, or an empty
    field); ``tz`` is the IANA zone for ISO times written without an offset.
    """

    def __init__(self, source: str, default_cell: str | None = None, tz: str = "UTC"):
        self.source = source
        self.default_cell = default_cell
        self._zone = ZoneInfo(tz)
        self._columns: tuple[str, ...] | None = None
        self._iso = False  # whether the last time field was ISO; files rarely mix the two
        self._minute_cache: dict[str, float] = {}

    @property
    def ready(self) -> bool:
        """True once the header has been read."""
        return self._columns is not None

    def feed(self, line: str) -> Sample | Rejected | None:
        """Decode one line (trailing ``\\r``/``\\n`` allowed); None for the header and blank lines."""
        line = line.rstrip("\r\n")
        if not line:
            return None
        if self._columns is None:
            self._read_header(line)
            return None
        try:
            parts = line.split(",") if '"' not in line else _split_quoted(line)
        except ValueError as exc:
            return Rejected(self.source, "parse_error", line, detail=str(exc))
        if len(parts) != self._n:
            return Rejected(
                self.source,
                "wrong_field_count",
                line,
                detail=f"{len(parts)} fields, the header has {self._n}",
            )
        # Absent columns point at this extra empty field, so the fast path needs no branches.
        parts.append("")
        if "_" in line and any("_" in parts[i] for i in self._numeric):  # float() takes "1_000"
            return self._decode_slowly(line, parts)
        i_time, i_cell, i_voltage, i_current, i_pressure, i_temp, i_cycle, i_step, i_mode = self._index
        try:
            text = parts[i_time]
            t = self._iso_time(text) if self._iso else float(text)
            cell = parts[i_cell] or self.default_cell
            text = parts[i_voltage]
            voltage = float(text) if text else None
            text = parts[i_current]
            current = float(text) if text else None
            text = parts[i_pressure]
            pressure = float(text) if text else None
            text = parts[i_temp]
            temperature = float(text) if text else None
            text = parts[i_cycle]
            cycle = (int(text) if text.isdigit() else to_int(text)) if text else None
            text = parts[i_step]
            step = (int(text) if text.isdigit() else to_int(text)) if text else None
            mode = parts[i_mode] or None
        except ValueError:
            return self._decode_slowly(line, parts)
        # t - t is 0.0 for a finite t and NaN (truthy) for NaN/inf. Non-finite channel values
        # pass: the validator drops that channel alone and quarantines the sample.
        if t - t or cell is None or (mode is not None and mode not in _MODE_SET):
            return self._decode_slowly(line, parts)
        return Sample(t, cell, voltage, current, pressure, temperature, cycle, step, mode)

    def _read_header(self, line: str) -> None:
        try:
            names = [name.strip() for name in _split_quoted(line.lstrip("\ufeff"))]
        except ValueError as exc:
            raise FormatError(f"{self.source}: unreadable header: {exc}") from None
        known = set(CSV_COLUMNS)
        index = {}
        for i, name in enumerate(names):
            if name in index:
                raise FormatError(f"{self.source}: column {name!r} appears twice in the header")
            if name in known:
                index[name] = i
        if "time" not in index or not any(name in index for name in _SIGNALS):
            raise FormatError(
                f"{self.source}: not canonical CSV: the header needs a 'time' column and at least "
                f"one of {', '.join(_SIGNALS)}; it has {', '.join(repr(n) for n in names)}"
            )
        extra = [name for name in names if name and name not in known]
        if extra:
            log.warning("%s: ignoring unknown columns %s", self.source, ", ".join(extra))
        self._n = len(names)
        # Field positions in CSV_COLUMNS order; an absent column gets the empty field feed() appends.
        self._index = tuple(index.get(name, self._n) for name in CSV_COLUMNS)
        numeric = zip(CSV_COLUMNS, self._index, strict=True)
        self._numeric = tuple(i for name, i in numeric if name not in ("cell", "mode"))
        self._columns = tuple(names)

    def _iso_time(self, text: str) -> float:
        """ISO-8601 to Unix seconds; a time without an offset is read in the decoder's zone.

        Rows of one file share their date, hour, minute and offset for minutes at a time, so
        "YYYY-MM-DDTHH:MM:SS[.f]+HH:MM" is split into that prefix (cached: parsed once a
        minute) and the seconds (a float). This halves the cost of ISO times. The seconds are
        checked to be SS[.fff] below 60: float() alone would take "99" or "1e9".
        """
        if len(text) >= 25 and text[16] == ":" and text[-6] in "+-" and text[-3] == ":":
            sec = text[17:-6]
            if not (sec[:2].isdigit() and sec < "60" and (len(sec) == 2 or (sec[2] == "." and sec[3:].isdigit()))):
                raise ValueError(f"bad seconds in {text!r}")
            key = text[:16] + text[-6:]
            base = self._minute_cache.get(key)
            if base is None:
                if len(self._minute_cache) > 4096:
                    self._minute_cache.clear()
                base = self._minute_cache[key] = datetime.fromisoformat(text[:16] + ":00" + text[-6:]).timestamp()
            return base + float(sec)
        dt = datetime.fromisoformat(text)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=self._zone)
        return dt.timestamp()

    def _decode_slowly(self, line: str, parts: list[str]) -> Sample | Rejected:
        """Decode column by column, to name what is wrong with a row the fast path refused."""
        i_time, i_cell, i_voltage, i_current, i_pressure, i_temp, i_cycle, i_step, i_mode = self._index
        cell = parts[i_cell] or self.default_cell
        text = parts[i_time].strip()
        if not text:
            return Rejected(self.source, "missing_time", line, cell=cell, detail="time: empty")
        try:
            t = self._learn_time(text)
        except ValueError:
            return Rejected(
                self.source,
                "parse_error",
                line,
                cell=cell,
                detail=f"time: neither ISO-8601 nor Unix seconds: {text!r}",
            )
        if t - t:
            return Rejected(self.source, "non_finite", line, cell=cell, detail=f"time: {text!r}")
        if cell is None:
            return Rejected(
                self.source,
                "parse_error",
                line,
                time=t,
                detail="cell: empty, and the file gives no default cell",
            )
        mode = parts[i_mode].strip().lower() or None
        if mode is not None and mode not in _MODE_SET:
            return Rejected(
                self.source,
                "bad_mode",
                line,
                cell=cell,
                time=t,
                detail=f"mode: {mode!r} is not one of {', '.join(MODES)}",
            )
        try:
            return Sample(
                t,
                cell,
                channel_float("voltage_V", parts[i_voltage]),
                channel_float("current_A", parts[i_current]),
                channel_float("pressure_MPa", parts[i_pressure]),
                channel_float("temperature_C", parts[i_temp]),
                check_int("cycle", parts[i_cycle]),
                check_int("step", parts[i_step]),
                mode,
            )
        except RowError as exc:
            return Rejected(self.source, exc.reason, line, cell=cell, time=t, detail=exc.detail)

    def _learn_time(self, text: str) -> float:
        """Unix seconds or ISO-8601, remembering which so that the fast path tries it first."""
        try:
            t = strict_float(text)
        except ValueError:
            t = self._iso_time(text)
            self._iso = True
        else:
            self._iso = False
        return t


def _split_quoted(line: str) -> list[str]:
    """Split a line with quoted fields; ValueError when its quoting cannot be parsed."""
    try:
        return next(csv.reader((line,)), [])
    except csv.Error as exc:
        raise ValueError(f"unparseable CSV quoting: {exc}") from None


def write_csv(samples: Iterable[Sample], out: TextIO, time_format: Literal["iso", "unix"] = "iso") -> int:
    """Write canonical CSV (header + one row per sample); returns the number of rows.

    Floats are written with ``repr``, the shortest text that reads back to the same float,
    so a round trip is exact. ISO times carry microseconds (exact to 1 µs); ``unix`` times
    round-trip bit for bit.
    """
    if time_format not in ("iso", "unix"):
        raise ValueError(f"time_format must be 'iso' or 'unix', not {time_format!r}")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    fmt_time = iso_time if time_format == "iso" else repr
    n = 0
    for s in samples:
        if "\n" in s.cell or "\r" in s.cell:
            raise ValueError(f"cell id {s.cell!r} has a line break, which a CSV row cannot hold")
        # csv.writer writes None as "" and floats with repr().
        row = s.row()
        writer.writerow((fmt_time(row[0]), *row[1:]))
        n += 1
    return n
