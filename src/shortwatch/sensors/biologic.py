"""BioLogic EC-Lab / BT-Lab ``.mpt`` text exports, decoded one line at a time.

The header is ``EC-Lab ASCII FILE``, then ``Nb header lines : N``; line N holds the
tab-separated column names and data starts on line N + 1. Between them EC-Lab writes the
settings block, which may hold ``Acquisition started on : MM/DD/YYYY HH:MM:SS[.fff]``
(local time, read in the decoder's ``tz``) and the technique's name.

Mapping onto :class:`~shortwatch.model.Sample`:

- time: acquisition start + ``time/s``. Without an ``Acquisition started on`` line (the
  minimal header) the origin is the Unix epoch, so a re-import gives the same times and
  dedupes.
- voltage: ``Ecell/V`` when present, else ``Ewe/V``. ``Ecell`` is the whole-cell voltage
  (WE - CE), which is what the detectors' overpotential and ASR need; in a two-electrode
  cell the two are the same.
- current: ``I/mA``, else ``<I>/mA`` (the mean over the sampling interval), converted to A;
  ``I/A`` and ``<I>/A`` are taken as they are.
- mode: the ``mode`` column, 1 galvanostatic -> ``cc``, 2 potentiostatic -> ``cv``,
  3 open circuit -> ``rest``. In a cyclic or linear sweep voltammetry file (its technique
  named in the settings block) potentiostatic rows are ``sweep``. The minimal header names no
  technique, so there a sweep is labelled ``cv``; the detectors can still tell the two apart
  from the signals.
- cycle: ``cycle number``; temperature: the first ``Temperature/...`` column, in °C.
- step stays None: ``Ns`` counts sequences of the technique, not steps of the protocol, and
  segmentation works better from mode and current than from a mislabelled step.
"""

from __future__ import annotations

import logging
from datetime import datetime
from zoneinfo import ZoneInfo

from shortwatch.model import Rejected, Sample
from shortwatch.sensors.canonical_csv import FormatError, RowError, channel_float, check_float, check_int, to_int

log = logging.getLogger(__name__)

MAGIC = ("EC-Lab ASCII FILE", "BT-Lab ASCII FILE")
_VOLTAGE_COLUMNS = ("Ecell/V", "Ewe/V")
_CURRENT_COLUMNS = (("I/mA", 1000.0), ("<I>/mA", 1000.0), ("I/A", 1.0), ("<I>/A", 1.0))  # name, per A
_SWEEP_TECHNIQUES = ("Cyclic Voltammetry", "Linear Sweep Voltammetry")
MAX_HEADER_LINES = 10_000  # EC-Lab headers run to a few hundred lines; more is a corrupt count
_START_FORMATS = ("%m/%d/%Y %H:%M:%S.%f", "%m/%d/%Y %H:%M:%S", "%m/%d/%y %H:%M:%S.%f", "%m/%d/%y %H:%M:%S")


class BiologicMptDecoder:
    """Decode an ``.mpt`` export line by line into Samples (or Rejected rows) of one cell."""

    def __init__(self, source: str, default_cell: str, tz: str = "UTC"):
        self.source = source
        self.default_cell = default_cell
        self._zone = ZoneInfo(tz)
        self._line_no = 0
        self._n_header: int | None = None
        self._origin: float | None = None
        self._sweep = False
        self._columns: tuple[str, ...] | None = None

    @property
    def ready(self) -> bool:
        """True once the whole header (through the column names) has been read."""
        return self._columns is not None

    @property
    def header_detail(self) -> str:
        """Why the header is unfinished, for the error when a file ends inside it."""
        if self._n_header is None:
            return ""
        return f"line 2 says 'Nb header lines : {self._n_header}', but the file has {self._line_no} lines"

    def feed(self, line: str) -> Sample | Rejected | None:
        """Decode one line (trailing ``\\r``/``\\n`` allowed); None for header and blank lines."""
        line = line.rstrip("\r\n")
        if self._columns is None:
            self._read_header(line)
            return None
        if not line:
            return None
        # Tab-separated, so a comma can only be a decimal comma (French/German Windows).
        text_line = line.replace(",", ".") if "," in line else line
        parts = text_line.split("\t")
        n = len(parts)
        if n != self._n and not (n == self._n + 1 and not parts[-1]):  # EC-Lab ends lines with a tab
            return Rejected(
                self.source,
                "wrong_field_count",
                line,
                cell=self.default_cell,
                detail=f"{n - 1 if not parts[-1] else n} fields, the header has {self._n}",
            )
        parts.append("")  # the field that absent columns point at
        if "_" in text_line:  # float() takes "1_000"; the slow path refuses it
            return self._decode_slowly(line, parts)
        i_time, i_voltage, i_current, i_mode, i_cycle, i_temp = self._index
        try:
            t = self._t0 + float(parts[i_time])
            text = parts[i_voltage]
            voltage = float(text) if text else None
            text = parts[i_current]
            current = float(text) / self._current_per_A if text else None
            text = parts[i_mode]
            mode = self._modes[text] if text else None
            text = parts[i_cycle]
            cycle = to_int(text) if text else None
            text = parts[i_temp]
            temperature = float(text) if text else None
        except (ValueError, KeyError):
            return self._decode_slowly(line, parts)
        # t - t is 0.0 for a finite t and NaN (truthy) for NaN/inf. Non-finite channel values
        # pass: the validator drops that channel alone and quarantines the sample.
        if t - t:
            return self._decode_slowly(line, parts)
        return Sample(t, self.default_cell, voltage, current, None, temperature, cycle, None, mode)

    def _read_header(self, line: str) -> None:
        self._line_no += 1
        text = line.strip()
        if self._line_no == 1:
            if text.lstrip("\ufeff") not in MAGIC:
                raise FormatError(f"{self.source}: not an EC-Lab .mpt text export (no {MAGIC[0]!r} line)")
        elif self._line_no == 2:
            name, _, value = text.partition(":")
            value = value.strip()
            # isdigit() alone takes "²" and other non-ASCII digits that int() refuses
            if (
                name.strip() != "Nb header lines"
                or not (value.isascii() and value.isdigit())
                or not 3 <= int(value) <= MAX_HEADER_LINES
            ):
                raise FormatError(
                    f"{self.source}: line 2 should be 'Nb header lines : N' with N from 3 to "
                    f"{MAX_HEADER_LINES}, got {text[:80]!r}"
                )
            self._n_header = int(value)
        elif self._line_no < (self._n_header or 0):
            self._read_setting(text)
        else:
            self._read_columns(line)

    def _read_setting(self, text: str) -> None:
        if text.startswith(_SWEEP_TECHNIQUES):
            self._sweep = True
        name, _, value = text.partition(" : ")
        if name.strip() == "Acquisition started on":
            value = value.strip().replace(",", ".")
            for fmt in _START_FORMATS:
                try:
                    start = datetime.strptime(value, fmt)
                except ValueError:
                    continue
                self._origin = start.replace(tzinfo=self._zone).timestamp()
                return
            raise FormatError(
                f"{self.source}: cannot read 'Acquisition started on : {value}' (expected MM/DD/YYYY HH:MM:SS)"
            )

    def _read_columns(self, line: str) -> None:
        names = [name.strip() for name in line.split("\t")]
        while names and not names[-1]:
            names.pop()
        index = {name: i for i, name in enumerate(names)}
        absent = len(names)  # the empty field feed() appends
        voltage = next((index[c] for c in _VOLTAGE_COLUMNS if c in index), absent)
        current, per_A = next(((index[c], s) for c, s in _CURRENT_COLUMNS if c in index), (absent, 1.0))
        if "time/s" not in index or (voltage == absent and current == absent):
            raise FormatError(
                f"{self.source}: line {self._line_no} should name the columns, with time/s and "
                f"{' or '.join(_VOLTAGE_COLUMNS)} or {' or '.join(c for c, _ in _CURRENT_COLUMNS)}; "
                f"it has {', '.join(repr(n) for n in names[:12])}"
            )
        temperature = next((i for i, n in enumerate(names) if n.startswith("Temperature/")), absent)
        self._index = (
            index["time/s"],
            voltage,
            current,
            index.get("mode", absent),
            index.get("cycle number", absent),
            temperature,
        )
        self._labels = tuple([*names, ""][i] for i in self._index)  # for Rejected details
        self._current_per_A = per_A
        self._modes = {"1": "cc", "2": "sweep" if self._sweep else "cv", "3": "rest"}
        if self._origin is None:
            log.warning(
                "%s: no 'Acquisition started on' line; times are time/s counted from 1970-01-01 UTC",
                self.source,
            )
        self._t0 = self._origin or 0.0
        self._n = len(names)
        self._columns = tuple(names)

    def _decode_slowly(self, line: str, parts: list[str]) -> Sample | Rejected:
        """Decode column by column, to name what is wrong with a row the fast path refused."""
        i_time, i_voltage, i_current, i_mode, i_cycle, i_temp = self._index
        _, l_voltage, l_current, _, _, l_temp = self._labels
        cell = self.default_cell
        try:
            elapsed = check_float("time/s", parts[i_time])
        except RowError as exc:
            return Rejected(self.source, exc.reason, line, cell=cell, detail=exc.detail)
        if elapsed is None:
            return Rejected(self.source, "missing_time", line, cell=cell, detail="time/s: empty")
        t = self._t0 + elapsed
        try:
            current = channel_float(l_current, parts[i_current])
            code = check_int("mode", parts[i_mode])
            return Sample(
                t,
                cell,
                channel_float(l_voltage, parts[i_voltage]),
                None if current is None else current / self._current_per_A,
                None,
                channel_float(l_temp, parts[i_temp]),
                check_int("cycle number", parts[i_cycle]),
                None,
                None if code is None else self._modes.get(str(code)),
            )
        except RowError as exc:
            return Rejected(self.source, exc.reason, line, cell=cell, time=t, detail=exc.detail)
