"""BioLogic EC-Lab binary ``.mpr`` files, read incrementally while EC-Lab writes them.

Written here rather than taken from galvani or yadg (both GPL-3.0; shortwatch is MIT). The
format is not published; these facts were learnt from reading those projects and checked
on real files:

- The file starts with ``BIO-LOGIC MODULAR FILE\\x1a``, padded with spaces to 48 bytes, then
  4 zero bytes. Modules follow, each ``MODULE`` + a header: short name (10 bytes), long name
  (25), then either length, version (u4 each) and a date (8 bytes), or, from EC-Lab 11.50 on,
  0xFFFFFFFF, length, two version words and the date.
- The ``VMP data`` module holds the record count (u4), the column count (u1) and the column
  ids (u2; big-endian when the module version is 10 or more), then, from offset 0x195
  (version 2), 0x196 (3) or 0x3EF (10, 11), fixed-size little-endian records. A record's
  layout follows from its column ids: six ids are bits of one shared flags byte (mode in
  bits 0-1), the others are numbers whose type the id tells (the id modulo 256 in newer
  files, e.g. 467 = 211, 368 = 112).
- The ``VMP LOG`` module, after the data, holds the acquisition start as an OLE date
  (days since 1899-12-30, local time) at offset 0x249 of its data.

Incremental reading: each poll re-reads the module headers and decodes only the records
between the last one read and the smaller of the record count in the header and the
complete records present (a record being written is left for the next poll). What was
read is recognised by checksums of the magic, the column ids, the first record and the
last record read; EC-Lab rewrites the whole file when a text export is made, and a file
whose checksums still match is a rewrite of the same run, so reading goes on from the
record count. A file whose checksums differ is another run and is read from the start.

Samples match EC-Lab's own .mpt export of the same file (biologic.py): voltage ``Ewe``,
current ``I`` or ``<I>``, or, when the file has neither, dq/dt as EC-Lab computes ``<I>``;
cycle number, or the half cycle // 2; mode from the flags byte (potentiostatic is ``cv``:
unlike the .mpt, the technique's name is not read, so a sweep is not told apart).
"""

from __future__ import annotations

import logging
import math
import os
import struct
import time
import zlib
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from shortwatch.model import Rejected, Sample
from shortwatch.sensors.canonical_csv import FormatError
from shortwatch.state import read_json, write_json_atomic

log = logging.getLogger(__name__)

MAGIC = b"BIO-LOGIC MODULAR FILE\x1a"
LIVE_WRITE_S = 600.0  # a file written this recently is being written now (for the start time)
CLOCK_SKEW_S = 60.0  # a share's clock may run this far ahead of ours
_FILE_HEADER = 52
_MODULE = b"MODULE"
_OLE_EPOCH = datetime(1899, 12, 30)
_LOG_OLE_OFFSET = 0x249
_RECORDS_AT = {2: 0x195, 3: 0x196, 10: 0x3EF, 11: 0x3EF}
_FLAG_IDS = {1: 0x03, 2: 0x04, 3: 0x08, 21: 0x10, 31: 0x20, 65: 0x80}  # id -> bits of the flags byte

# Column id (modulo 256) -> (name, numpy type). Names follow EC-Lab's .mpt column names.
_F4 = "<f4"
_F8 = "<f8"
COLUMNS: dict[int, tuple[str, str]] = {
    4: ("time/s", _F8),
    5: ("control/V/mA", _F4),
    6: ("Ewe/V", _F4),
    7: ("dq/mA.h", _F8),
    8: ("I/mA", _F4),
    9: ("Ece/V", _F4),
    11: ("<I>/mA", _F8),
    13: ("(Q-Qo)/mA.h", _F8),
    15: ("Phase(Z1)/deg", _F4),
    16: ("Analog IN 1/V", _F4),
    17: ("Analog IN 2/V", _F4),
    19: ("control/V", _F4),
    20: ("control/mA", _F4),
    23: ("dQ/mA.h", _F8),
    24: ("cycle number", _F8),
    26: ("Rapp/Ohm", _F4),
    27: ("Ewe-Ece/V", _F4),
    32: ("freq/Hz", _F4),
    33: ("|Ewe|/V", _F4),
    34: ("|I|/A", _F4),
    35: ("Phase(Z)/deg", _F4),
    36: ("|Z|/Ohm", _F4),
    37: ("Re(Z)/Ohm", _F4),
    38: ("-Im(Z)/Ohm", _F4),
    39: ("I Range", "<u2"),
    45: ("|Z1|/Ohm", _F4),
    46: ("|Z2|/Ohm", _F4),
    69: ("Rwe/Ohm", _F4),
    70: ("P/W", _F4),
    74: ("|Energy|/W.h", _F8),
    75: ("Analog OUT/V", _F4),
    76: ("<I>/mA", _F4),
    77: ("<Ewe>/V", _F4),
    78: ("Cs-2/uF-2", _F4),
    96: ("|Ece|/V", _F4),
    98: ("Phase(Zce)/deg", _F4),
    99: ("|Zce|/Ohm", _F4),
    100: ("Re(Zce)/Ohm", _F4),
    101: ("-Im(Zce)/Ohm", _F4),
    105: ("-Im(Z1)/Ohm", _F4),
    106: ("-Im(Z2)/Ohm", _F4),
    110: ("Energy ce/W.h", _F8),
    112: ("Energy we/W.h", _F8),
    115: ("Energy ce charge/W.h", _F8),
    116: ("Energy ce discharge/W.h", _F8),
    123: ("Energy charge/W.h", _F8),
    124: ("Energy discharge/W.h", _F8),
    125: ("Capacitance charge/uF", _F8),
    126: ("Capacitance discharge/uF", _F8),
    131: ("Ns", "<u2"),
    135: ("<E1>/V", _F4),
    136: ("<E2>/V", _F4),
    163: ("|Estack|/V", _F4),
    166: ("Phase(Zstack)/deg", _F4),
    167: ("|Zstack|/Ohm", _F4),
    168: ("Rcmp/Ohm", _F4),
    169: ("Cs/uF", _F4),
    172: ("Cp/uF", _F4),
    173: ("Cp-2/uF-2", _F4),
    174: ("<Ewe>/V", _F4),
    175: ("|Zwe-ce|/Ohm", _F4),
    176: ("Re(Zwe-ce)/Ohm", _F4),
    177: ("-Im(Zwe-ce)/Ohm", _F4),
    178: ("(Q-Qo)/C", _F4),
    179: ("dQ/C", _F4),
    182: ("step time/s", _F8),
    185: ("<Ece>/V", _F4),
    206: ("Temperature/C", _F4),
    211: ("Q charge/discharge/mA.h", _F8),
    212: ("half cycle", "<u4"),
    213: ("z cycle", "<u4"),
    215: ("<Ece>/V", _F4),
    253: ("Acir/Dcir Control", "<u1"),
    **{i: (f"column {i}", _F4) for i in range(217, 250)},  # harmonics, THD/NSD/NSR, Rac/Rdc: all f4
}
_MODES = {1: "cc", 2: "cv", 3: "rest"}


class MprStructureError(Exception):
    """The file's modules cannot be read as an .mpr (after a valid magic)."""


class _Layout:
    """Where the records are and how one is laid out, from the module headers."""

    def __init__(self, ids: list[int], version: int, records_at: int, n_records: int, length: int, log_at: int):
        self.ids = ids
        fields: list[tuple[str, str]] = []
        for cid in ids:
            if cid in _FLAG_IDS:
                if ("flags", "u1") not in fields:
                    fields.append(("flags", "u1"))
                continue
            known = COLUMNS.get(cid % 256)
            if known is None:
                raise MprStructureError(
                    f"column id {cid} is not known to shortwatch (its size is unknown, so no record can be read); "
                    f"column ids of this file: {ids}"
                )
            name = known[0]
            while name in dict(fields):
                name += "'"
            fields.append((name, known[1]))
        self.dtype = np.dtype(fields)
        if self.dtype.itemsize == 0:
            raise MprStructureError(f"the data module lists no columns (ids {ids})")
        self.version = version
        self.records_at = records_at  # file offset of record 0
        self.n_records = n_records
        self.length = length  # of the data module's data, as its header says
        self.log_at = log_at  # file offset where the module after the data starts, per the header
        self.ids_crc = zlib.crc32(struct.pack(f"<{len(ids)}I", *ids))


def _module_header(buf: bytes, pos: int) -> tuple[str, int, int, int] | None:
    """(short name, data length, version, header size) of the module at pos; None if not all there."""
    if len(buf) < pos + 6 + 51:
        return None
    if buf[pos : pos + 6] != _MODULE:
        raise MprStructureError(f"expected a MODULE at byte {pos}, found {buf[pos : pos + 6]!r}")
    h = pos + 6
    name = buf[h : h + 10].decode("latin-1").strip()
    if buf[h + 35 : h + 39] == b"\xff\xff\xff\xff":
        if len(buf) < h + 59:
            return None
        length, old, new = struct.unpack_from("<3I", buf, h + 39)
        return name, length, old + new, 6 + 59
    length, version = struct.unpack_from("<2I", buf, h + 35)
    return name, length, version, 6 + 51


class StartTimes:
    """The start chosen for each followed .mpr, kept under state_dir: a file read again without
    its reader's checkpoint (a kill -9 before the first one, a new reader) gets the same times,
    so the store recognises its rows instead of storing them again, dated anew."""

    def __init__(self, path: Path):
        self.path = path
        self._known: dict[str, float] | None = None

    def get(self, key: str) -> float | None:
        if self._known is None:
            self._known = read_json(self.path) or {}
        return self._known.get(key)

    def put(self, key: str, origin: float) -> None:
        self.get(key)
        assert self._known is not None
        self._known[key] = origin
        write_json_atomic(self.path, self._known)  # before any record dated by it is passed on


class MprDecoder:
    """Polls one .mpr file; each poll returns the records not returned before."""

    def __init__(
        self,
        source: str,
        default_cell: str,
        tz: str = "UTC",
        start_times: StartTimes | None = None,
    ):
        self.source = source
        self.cell = default_cell
        self._zone = ZoneInfo(tz)
        self.start_times = start_times  # given when the daemon follows the file (not in a replay): see _origin
        self.n_done = 0  # records returned so far
        self.origin: float | None = None  # acquisition start (Unix s), decided with the first record
        self.prev_time: float | None = None  # time/s of the last record returned (for dq/dt)
        self.first_crc: int | None = None
        self.last_crc: int | None = None
        self.ids_crc: int | None = None
        self._problem = ""  # the structural problem last reported, so it is quarantined once
        self.offset = 0  # file bytes accounted for: just past the last record returned

    # --- checkpoint -------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        keys = ("n_done", "origin", "prev_time", "first_crc", "last_crc", "ids_crc", "offset")
        return {k: getattr(self, k) for k in keys}

    def load(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)

    def _start_over(self) -> None:
        self.n_done, self.origin, self.prev_time, self.offset = 0, None, None, 0
        self.first_crc = self.last_crc = self.ids_crc = None

    # --- reading ----------------------------------------------------------------------------
    def poll(self, path: Path, max_records: int = 5000, final: bool = False) -> list[Sample | Rejected]:
        """Records new since the last poll (at most max_records); [] when there are none yet."""
        with path.open("rb") as f:
            buf = f.read(_FILE_HEADER)
            if len(buf) < _FILE_HEADER:
                return self._truncated(buf) if final else []
            if not buf.startswith(MAGIC):
                raise FormatError(f"{self.source}: not an EC-Lab .mpr file (it does not start with {MAGIC!r})")
            try:
                layout, buf = self._layout(f, buf)
            except MprStructureError as exc:
                return self._report("bad_structure", str(exc), buf[-64:].hex())
            if layout is None:
                return self._truncated(buf) if final else []
            size = f.seek(0, 2)
            size_rec = layout.dtype.itemsize
            n_avail = min(layout.n_records, (size - layout.records_at) // size_rec)
            in_module = (layout.length - _RECORDS_AT[layout.version]) // size_rec
            if in_module >= 0:  # the module's length, when it has one, bounds its records too
                n_avail = min(n_avail, in_module)
            if not self._same_run(f, layout, n_avail):
                log.warning("%s: the file now holds another run; reading it from the start", self.source)
                self._start_over()
            if self.ids_crc is None:
                self.ids_crc = layout.ids_crc
            if n_avail <= self.n_done:
                if final and layout.n_records > self.n_done:
                    return self._report(
                        "truncated_record",
                        f"the data module announces {layout.n_records} records, the file holds {self.n_done}",
                        "",
                    )
                return []
            if self.origin is None:
                self.origin = self._origin(f, layout, size, n_avail, path)
            n = min(n_avail - self.n_done, max_records)
            f.seek(layout.records_at + self.n_done * size_rec)
            raw = f.read(n * size_rec)
        n = len(raw) // size_rec
        records = np.frombuffer(raw, dtype=layout.dtype, count=n)
        if self.first_crc is None:
            self.first_crc = zlib.crc32(raw[:size_rec])
        self.last_crc = zlib.crc32(raw[(n - 1) * size_rec : n * size_rec])
        self.n_done += n
        self.offset = layout.records_at + self.n_done * size_rec
        return self._samples(records, raw, size_rec)

    def _layout(self, f: Any, buf: bytes) -> tuple[_Layout | None, bytes]:
        """Walk the module headers up to the data module's records; None while they are incomplete."""
        pos = _FILE_HEADER
        while True:
            if len(buf) < pos + 6 + 59:
                buf += f.read(pos + 6 + 59 - len(buf) + 8192)
            head = _module_header(buf, pos)
            if head is None:
                return None, buf
            name, length, version, hsize = head
            data_at = pos + hsize
            if name != "VMP data":
                pos = data_at + length
                continue
            need = data_at + _RECORDS_AT.get(version, 0x3EF)
            if len(buf) < need:
                buf += f.read(need - len(buf))
            if len(buf) < data_at + 5:
                return None, buf
            if version not in _RECORDS_AT:
                raise MprStructureError(f"data module version {version} is not supported (known: 2, 3, 10, 11)")
            n_records, n_cols = struct.unpack_from("<IB", buf, data_at)
            if len(buf) < data_at + 5 + 2 * n_cols:
                return None, buf
            ids = list(struct.unpack_from(f"{'>' if version >= 10 else '<'}{n_cols}H", buf, data_at + 5))
            records_at = data_at + _RECORDS_AT[version]
            return _Layout(ids, version, records_at, n_records, length, data_at + length), buf

    def _same_run(self, f: Any, layout: _Layout, n_avail: int) -> bool:
        """Whether the records already returned are still those at the start of this file."""
        if self.n_done == 0:
            return True
        if layout.ids_crc != self.ids_crc:
            return False
        if n_avail < 1:
            return True  # the same columns, records not (re)written yet: wait
        size = layout.dtype.itemsize
        f.seek(layout.records_at)
        if zlib.crc32(f.read(size)) != self.first_crc:
            return False
        if n_avail < self.n_done:
            return True  # the same run, being rewritten: wait for the rest
        f.seek(layout.records_at + (self.n_done - 1) * size)
        return zlib.crc32(f.read(size)) == self.last_crc

    def _origin(self, f: Any, layout: _Layout, size: int, n_avail: int, path: Path) -> float:
        """Acquisition start: the one chosen before for this file and run (StartTimes), else from
        the LOG module after the data. EC-Lab writes that module after the data, so a file
        followed while it grows has none yet: if it was written in the last LIVE_WRITE_S, its
        last record is taken to have been written at its modification time (the start is then
        known to a few seconds, and a load cell's samples line up with it); else (and in a
        replay, which has no StartTimes to keep the choice in) the times are time/s counted
        from 1970. While following, the choice is kept."""
        key = None
        if self.start_times is not None:
            f.seek(layout.records_at)
            first = zlib.crc32(f.read(layout.dtype.itemsize))
            key = f"{os.path.abspath(path)}|{layout.ids_crc}|{first}"
            known = self.start_times.get(key)
            if known is not None:
                return known
        origin = self._logged_start(f, layout, size)
        if origin is None and self.start_times is not None:
            origin = self._estimated_start(f, layout, n_avail, path)
        if origin is None:
            log.warning(
                "%s: no LOG module with the acquisition start; times are time/s counted from 1970-01-01 UTC",
                self.source,
            )
            origin = 0.0
        if self.start_times is not None and key is not None:
            self.start_times.put(key, origin)
        return origin

    def _logged_start(self, f: Any, layout: _Layout, size: int) -> float | None:
        pos = layout.log_at
        if layout.n_records * layout.dtype.itemsize + layout.records_at <= pos < size:
            f.seek(pos)
            buf = f.read(6 + 59 + _LOG_OLE_OFFSET + 8)
            try:
                head = _module_header(buf, 0)
            except MprStructureError:
                head = None
            if head is not None and head[0] == "VMP LOG" and len(buf) >= head[3] + _LOG_OLE_OFFSET + 8:
                (ole,) = struct.unpack_from("<d", buf, head[3] + _LOG_OLE_OFFSET)
                if 30000.0 < ole < 80000.0:  # 1982 .. 2119: a plausible date, not stray bytes
                    local = _OLE_EPOCH + timedelta(days=ole)
                    return local.replace(tzinfo=self._zone).timestamp()
        return None

    def _estimated_start(self, f: Any, layout: _Layout, n_avail: int, path: Path) -> float | None:
        written = path.stat().st_mtime
        if "time/s" not in (layout.dtype.names or ()) or not -CLOCK_SKEW_S < time.time() - written < LIVE_WRITE_S:
            return None
        f.seek(layout.records_at + (n_avail - 1) * layout.dtype.itemsize)
        last = float(np.frombuffer(f.read(layout.dtype.itemsize), dtype=layout.dtype, count=1)["time/s"][0])
        if not math.isfinite(last):
            return None
        origin = written - last
        log.warning(
            "%s: no LOG module with the acquisition start yet (EC-Lab writes it after the data); "
            "the start is taken as %s, from the time the file was last written",
            self.source,
            datetime.fromtimestamp(origin, self._zone).isoformat(timespec="seconds"),
        )
        return origin

    def _samples(self, records: np.ndarray, raw: bytes, size: int) -> list[Sample | Rejected]:
        names = records.dtype.names or ()

        def column(*candidates: str) -> list[Any] | None:
            for c in candidates:
                if c in names:
                    return records[c].tolist()  # type: ignore[no-any-return]
            return None

        n = len(records)
        times = column("time/s")
        if times is None:
            return self._report("bad_structure", "the records have no time column (id 4)", "")
        volts = column("Ewe/V", "<Ewe>/V")
        current_mA = column("I/mA", "<I>/mA")
        dq = column("dq/mA.h", "dQ/mA.h") if current_mA is None else None
        cycles = column("cycle number")
        half = column("half cycle") if cycles is None else None
        temps = column("Temperature/C")
        flags = column("flags")
        out: list[Sample | Rejected] = []
        origin = self.origin or 0.0
        prev = self.prev_time
        for k in range(n):
            elapsed = times[k]
            if elapsed - elapsed:
                out.append(
                    Rejected(
                        self.source,
                        "non_finite",
                        raw[k * size : (k + 1) * size].hex(),
                        cell=self.cell,
                        detail=f"record {self.n_done - n + k}: time/s is {elapsed}",
                    )
                )
                continue
            if current_mA is not None:
                i_mA = current_mA[k]
            elif dq is not None:  # EC-Lab's <I>: the charge since the previous record over its interval
                dt = elapsed - prev if prev is not None else 0.0
                i_mA = dq[k] * 3600.0 / dt if dt > 0 else 0.0
            else:
                i_mA = None
            prev = elapsed
            cycle = int(cycles[k]) if cycles is not None and math.isfinite(cycles[k]) else None
            if half is not None:
                cycle = half[k] // 2
            out.append(
                Sample(
                    origin + elapsed,
                    self.cell,
                    None if volts is None else volts[k],
                    None if i_mA is None else i_mA / 1000.0,
                    None,
                    None if temps is None else temps[k],
                    cycle,
                    None,
                    None if flags is None else _MODES.get(flags[k] & 0x03),
                )
            )
        self.prev_time = prev
        return out

    def _report(self, reason: str, detail: str, raw: str) -> list[Sample | Rejected]:
        """A structural problem, quarantined once (not again on every poll)."""
        if detail == self._problem:
            return []
        self._problem = detail
        log.warning("%s: %s", self.source, detail)
        return [Rejected(self.source, reason, raw, cell=self.cell, detail=detail)]

    def _truncated(self, buf: bytes) -> list[Sample | Rejected]:
        return self._report("truncated_record", f"the file ends inside its header ({len(buf)} bytes)", buf[-64:].hex())


def sniff(head: bytes) -> bool:
    return head.startswith(MAGIC)
