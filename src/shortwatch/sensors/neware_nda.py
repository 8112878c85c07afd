"""Neware BTS binary files: ``.nda`` and ``.ndax`` (a zip of XML and binary parts), via NewareNDA.

NewareNDA (BSD-3) reads a whole file into a table; it has no incremental API. The first
poll reads the file whole with ``NewareNDA.read``. A ``.nda`` is then followed record by
record (``_NdaFollower``): it is a header followed by fixed-length records, so a poll of a
grown file reads only the bytes after the last complete record, decodes the new complete
records (a partial one waits for the next poll) and keeps NewareNDA's whole-table post-
processing (duplicate Index dropped, ``Step`` counted from changes, the software ``Cycle``,
the aux temperature joined by Index) as a few numbers carried from record to record. The
rows passed on are the rows a whole read of the final file gives. The checkpoint holds
those numbers, so a restart goes on following without a whole read.

Anything unexpected (the file shrank, its head or the last record read changed, a record
out of place, an unknown layout, a different run, NewareNDA's helpers giving other rows
than its own reader) falls back to a whole read (logged once), which sets up following
again. A whole read passes on only the rows after the last one passed on before. What was
passed on is recognised by the first row and the last row passed on (index and
timestamp): a file whose rows there differ is another run and is read from the start.

A whole read costs time in proportion to the file (the 700k-record .ndax: ~5-8 s), so a
changed file on whole reads (an ``.ndax``, or an .nda that cannot be followed) is read
again at most every ten times its last read took: the CPU spent stays under ~10 %, at the
price of latency on very large files.

An ``.ndax`` is a zip whose central directory is written last, so while Neware writes it
the file is not a valid zip; it is read only once it is one again (complete). A ``.nda``
that NewareNDA cannot read yet (being written) is tried again at the next change.

Mapping: time = ``Timestamp`` (a time without a zone is local, in the configured zone);
voltage ``Voltage``; current ``Current(mA)`` / 1000, signed by Neware (discharge negative)
and checked against ``Status`` (``CC_Chg``, ``CC_DChg``, ``CV_Chg``, ``Rest``), which also
gives the mode; cycle ``Cycle``; step ``Step_Index`` (the protocol's step); temperature ``T1``.
"""

from __future__ import annotations

import logging
import math
import mmap
import os
import time
import warnings
import zipfile
import zlib
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import numpy as np

from shortwatch.model import Rejected, Sample
from shortwatch.sensors.canonical_csv import FormatError
from shortwatch.sensors.neware_csv import neware_state

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

NDA_MAGIC = b"NEWARE"
_REQUIRED = frozenset({"Index", "Timestamp", "Voltage", "Current(mA)", "Cycle", "Status"})
ZIP_MAGIC = b"PK\x03\x04"


def sniff_nda(head: bytes) -> bool:
    return head.startswith(NDA_MAGIC)


def sniff_ndax(head: bytes) -> bool:
    """A zip whose first entries are Neware's step/test XML files."""
    return head.startswith(ZIP_MAGIC) and any(
        name in head for name in (b"Step.xml", b"TestInfo.xml", b"VersionInfo.xml", b"data.ndc")
    )


class _Surprise(Exception):
    """Something a followed .nda should not do: fall back to a whole read."""


Columns = dict[str, list[Any]]  # rows as columns: index, count (NewareNDA's Step), elapsed, V, I, T, ...
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_CHARGE_STARTS = frozenset({"CCCV_Chg", "CC_Chg", "CP_Chg"})  # NewareNDA's cycle_mode 'chg'
_CHECKED_TAIL = 2000  # rows of a whole read checked against the follower's own decoding


def _nda_helpers() -> dict[str, Any]:
    """NewareNDA's per-record helpers (a private API; see _NdaFollower for why they are used)."""
    from NewareNDA import NewareNDA as nda

    names = ("_bytes_to_list", "_bytes_to_list_BTS9", "_bytes_to_list_BTS91", "_aux_bytes_to_list")
    return {name: getattr(nda, name) for name in (*names, "_aux_bytes_to_list_BTS91")}


def nda_layout(mm: Any, size: int) -> dict[str, Any] | None:
    """Version, data start and record length of an .nda, found as NewareNDA's ``_read_nda_29`` /
    ``_read_nda_130`` find them; None while the file is too short for them to be certain (a
    v29 start is certain once the record after it is there; a BTS 9.1 record length once the
    second record's first bytes are)."""
    if size < 15:
        return None
    version = mm[14]
    if version == 29:
        length, marker = 86, b"\x00\x00\x00\x00\x55\x00"
        at = mm.find(marker)
        while at != -1 and at + 4 + length < size and (mm[at + 4 + length] != 0x55 or mm[at + 4 + 12] == 0):
            at = mm.find(marker, at + 4)
        if at == -1 or at + 4 + length >= size:
            return None
        return {"version": 29, "start": at + 4, "length": length, "ident": ""}
    if version == 130:
        if size < 1030:
            return None
        length = 88
        if mm[1024] == 0x55:  # BTS 9.1: its own record length, up to the next record's first bytes
            nxt = mm.find(mm[1024:1026], 1026)
            if nxt == -1:
                return None
            length = nxt - 1024
        if size < 1024 + length:
            return None
        return {"version": 130, "start": 1024, "length": length, "ident": bytes(mm[1024:1030]).hex()}
    return None


def _head_crc(f: Any, layout: dict[str, Any]) -> int:
    """Checksum of what identifies a run: the first bytes (magic, creation date, version) and the
    first record. Not the rest of the header: a BTS 9.1 header holds offsets of the footer,
    which Neware may update while it writes."""
    f.seek(0)
    first = f.read(16)
    f.seek(layout["start"])
    return zlib.crc32(first + f.read(layout["length"]))


class _NdaFollower:
    """Where a followed .nda is, and NewareNDA's whole-table post-processing carried from row to row.

    The records are decoded by NewareNDA's own per-record helpers (``_bytes_to_list``...),
    not by a struct layout of ours: the rows must be exactly the rows ``NewareNDA.read``
    gives (the first read and the fallback), scaling tables and date handling included,
    which a second decoder would have to track release by release. They are a private API
    and pyproject does not pin NewareNDA, so every whole read checks the follower's rows
    against NewareNDA's own table (the last rows, whose step and cycle counters carry the
    whole history); any difference or exception keeps the file on whole reads (logged).

    State, O(1) per record: the byte offset after the last record accounted for, checksums
    of the file's head (see _head_crc) and of that record, the Index range passed on (a duplicate Index is
    dropped as NewareNDA drops it; an Index that would sort before the last one is a
    surprise), the raw step and the step count (``_count_changes``), the charge/cycle state
    of ``_generate_cycle_number`` (cycle_mode 'chg'), and whether temperatures came.

    Aux records written apart from their data record (v29, BTS 9.0) are joined by Index
    as NewareNDA joins them: once a file has shown one, the last data record of a poll is
    held until the next data record (or the end) is read, so an aux record written just
    after its data record still finds it. An aux record later than that is not joined (a
    whole read would join it); such files were not available to test.
    """

    def __init__(self, layout: dict[str, Any], head_crc: int, helpers: dict[str, Any]):
        self.layout = layout
        self.head_crc = head_crc
        self.h = helpers
        self.offset = int(layout["start"])
        self.last_crc = 0
        self.lo: int | None = None
        self.hi: int | None = None
        self.contiguous = True
        self.raw_step: int | None = None
        self.step = 0
        self.charging = False
        self.cycle = 1
        self.discharged = False  # the Flag of _generate_cycle_number
        self.has_t1 = False
        self.aux_apart = False
        self.ended = False
        self.n = 0
        self.more = False  # the last read stopped at max_rows

    _FIELDS = (
        "offset", "last_crc", "lo", "hi", "contiguous", "raw_step", "step", "charging",
        "cycle", "discharged", "has_t1", "aux_apart", "ended", "n",
    )  # fmt: skip

    def state(self) -> dict[str, Any]:
        return {"layout": self.layout, "head_crc": self.head_crc, **{k: getattr(self, k) for k in self._FIELDS}}

    @classmethod
    def from_state(cls, state: dict[str, Any], helpers: dict[str, Any]) -> _NdaFollower:
        follower = cls(dict(state["layout"]), int(state["head_crc"]), helpers)
        for name in cls._FIELDS:
            setattr(follower, name, state[name])
        return follower

    def check(self, f: Any, size: int) -> None:
        """The file is still the one followed: not shorter, same head, same last record."""
        if _head_crc(f, self.layout) != self.head_crc:
            raise _Surprise("the file's head changed")
        if size < self.offset:
            raise _Surprise(f"the file shrank ({size} bytes, {self.offset} read)")
        length = int(self.layout["length"])
        if self.offset > self.layout["start"]:
            f.seek(self.offset - length)
            if zlib.crc32(f.read(length)) != self.last_crc:
                raise _Surprise("the last record read changed")

    def _records(self, f: Any, size: int) -> Iterator[tuple[int, bytes]]:
        """(offset after it, bytes) of each complete record from self.offset, read in chunks."""
        length = int(self.layout["length"])
        pos = self.offset
        while pos + length <= size:
            f.seek(pos)
            buf = f.read(min(1024, (size - pos) // length) * length)
            for k in range(0, len(buf) - length + 1, length):
                yield pos + k + length, buf[k : k + length]
            if len(buf) < length:
                return
            pos += len(buf) // length * length

    def _decode(self, rec: bytes) -> tuple[list[Any] | None, list[Any] | None, bool]:
        """(data row, aux row, end) of one record, as NewareNDA's record loops decode it."""
        h, lay = self.h, self.layout
        if lay["version"] == 29:
            if rec[82:86] != b"\x00\x00\x00\x00":
                return None, None, False
            if rec[0:2] == b"\x55\x00":
                return h["_bytes_to_list"](rec), None, False
            if rec[0:1] == b"\x65":
                return None, h["_aux_bytes_to_list"](rec), False
            return None, None, False
        if rec[0:1] == b"\x55":
            aux = h["_aux_bytes_to_list_BTS91"](rec) if lay["length"] == 56 else None
            return h["_bytes_to_list_BTS91"](rec), aux, False
        if rec[0:6].hex() == lay["ident"]:
            return h["_bytes_to_list_BTS9"](rec[4:]), None, False
        if rec[0:5] == b"\x00\x00\x00\x00\x65":
            return None, h["_aux_bytes_to_list"](rec[4:]), False
        return None, None, rec[0:1] == b"\x81"

    def read(self, f: Any, size: int, max_rows: int | None, final: bool) -> list[list[Any]]:
        """The rows of the complete records after the last one read, at most max_rows; the
        state moves past them. Raises _Surprise (the state is then unchanged). After the end
        record (BTS 9 footer) the file has ended, for NewareNDA too, while that record is there."""
        found: list[tuple[int, list[Any] | None, list[Any] | None]] = []  # (end offset, data, aux)
        n_data, ended, aux_apart = 0, False, self.aux_apart
        for end_at, rec in self._records(f, size):
            data, aux, ended = self._decode(rec)
            if ended:
                break
            if data is not None and not data:
                raise _Surprise(f"a record with Index or Status 0 before byte {end_at}")
            if aux is not None and data is None:
                aux_apart = True
            found.append((end_at, data, aux))
            n_data += data is not None
            if max_rows is not None and n_data > max_rows:
                break
        self.more = max_rows is not None and n_data > max_rows  # records left for the next poll
        # the aux join: a whole read of the file so far has a T1 column once any record has one
        has_t1, temps = self.has_t1, dict[int, float]()
        for _, _, aux in found:
            if aux is not None and aux[1] == 1:
                has_t1 = True
                temps.setdefault(aux[0], float(np.float32(aux[2])))
        if (max_rows is not None and n_data > max_rows) or (aux_apart and not (final or ended)):
            # pass on the data records before the last one read (one too many, or one whose aux
            # record may still come); what follows the last one passed on is read again next time
            last = max((k for k, (_, data, _) in enumerate(found) if data is not None), default=len(found))
            found = found[:last]
            end = max((at for at, data, _ in found if data is not None), default=self.offset)
        else:
            end = found[-1][0] if found else self.offset
        # NewareNDA's post-processing, row by row, on a copy (a surprise leaves the state as it was)
        lo, hi, contiguous, raw_step, step = self.lo, self.hi, self.contiguous, self.raw_step, self.step
        charging, cycle, discharged, n = self.charging, self.cycle, self.discharged, self.n
        rows: list[list[Any]] = []
        for _, data, _ in found:
            if data is None:
                continue
            index = data[0]
            if hi is not None and index <= hi:
                if contiguous and lo is not None and index >= lo:
                    continue  # a duplicate Index: NewareNDA keeps the first
                raise _Surprise(f"record Index {index} out of place (after {hi})")
            if hi is not None and index != hi + 1:
                contiguous = False
            lo = index if lo is None else lo
            hi = index
            if data[2] != raw_step:
                step, raw_step = step + 1, data[2]
            status = data[4]
            starts = status in _CHARGE_STARTS
            rising = starts and not charging if n else True
            charging = starts
            if "_" in status:
                if rising and discharged:
                    cycle, discharged = cycle + 1, False
                elif status.split("_", 1)[1] == "DChg":
                    discharged = True
            elif status == "SIM":
                discharged = True
            n += 1
            row = [data[0], cycle, step, *data[3:13]]
            row.append(temps.get(index, math.nan) if has_t1 else None)
            rows.append(row)
        if end != self.offset:
            f.seek(end - int(self.layout["length"]))
            self.last_crc = zlib.crc32(f.read(int(self.layout["length"])))
        self.offset, self.ended, self.aux_apart = end, ended, aux_apart
        self.lo, self.hi, self.contiguous, self.raw_step, self.step = lo, hi, contiguous, raw_step, step
        self.charging, self.cycle, self.discharged, self.has_t1, self.n = charging, cycle, discharged, has_t1, n
        return rows

    def columns(self, rows: list[list[Any]]) -> Columns:
        """Rows as the columns NewareDecoder converts, with NewareNDA's dtypes (float32 numbers)."""
        cols = list(zip(*rows, strict=True))

        def f32(k: int, scale: float = 1.0) -> list[Any]:
            return (np.array(cols[k], dtype="float32").astype("float64") * scale).tolist()  # type: ignore[no-any-return]

        return {
            "index": list(cols[0]),
            "count": list(cols[2]),
            "elapsed": f32(5),
            "V": f32(6),
            "I": f32(7, 1e-3),
            "T": f32(13) if self.has_t1 else [None] * len(rows),
            "cycle": list(cols[1]),
            "step": list(cols[3]),
            "status": list(cols[4]),
            "stamp": list(cols[12]),
        }


class NewareDecoder:
    """Polls one .nda/.ndax file; each poll returns rows not returned before."""

    reread_factor = 10.0  # a changed file read whole is read again after this many times its last read took

    def __init__(self, source: str, default_cell: str, tz: str = "UTC"):
        self.source = source
        self.cell = default_cell
        self._zone = ZoneInfo(tz)
        self.n_done = 0  # rows returned
        self.first_key: list[Any] | None = None  # (Index, Unix time) of the first row
        self.last_key: list[Any] | None = None  # of the last row returned
        self._read_size = 0  # the file size when it was last read whole
        self._seen: tuple[int, int] | None = None  # (size, mtime_ns) of the last complete read
        self._rows: list[Sample | Rejected] = []  # problems to report
        self._pending: Columns | None = None  # rows read and not yet returned
        self._pending_times: list[float] = []  # their sample times
        self._pending_stamps: list[float] = []  # and the file's own stamps (for first_key, last_key)
        self._at = 0  # the next pending row to return
        self._problem = ""
        self._said: set[str] = set()  # fallbacks logged
        self._next_read = 0.0  # monotonic time before which a changed file is not read whole again
        self._follower: _NdaFollower | None = None  # set while a .nda is followed record by record
        # the causal sub-second state (see _sub_second): every stamp whole so far, a step time
        # with a fraction seen, the step and its start
        self._sub: list[Any] = [True, False, None, None]

    @property
    def offset(self) -> int:
        """Bytes of the file accounted for (progress)."""
        return self._follower.offset if self._follower is not None else self._read_size

    def state(self) -> dict[str, Any]:
        out = {"n_done": self.n_done, "first_key": self.first_key, "last_key": self.last_key, "offset": self.offset}
        if self._follower is not None and self._pending is None:  # else a restart reads the file whole
            out["follow"] = {**self._follower.state(), "sub": self._sub}
        return out

    def load(self, state: dict[str, Any]) -> None:
        self.n_done = int(state["n_done"])
        self.first_key, self.last_key, self._read_size = state["first_key"], state["last_key"], int(state["offset"])
        follow = state.get("follow")
        if follow is not None:
            try:
                self._follower = _NdaFollower.from_state(follow, _nda_helpers())
                self._sub = list(follow["sub"])
            except (AttributeError, ImportError, KeyError, TypeError) as exc:  # another NewareNDA, an old state
                self._fall_back(f"cannot follow on from the checkpoint ({type(exc).__name__}: {exc})")

    def poll(self, path: Path, max_records: int = 5000, final: bool = False) -> list[Sample | Rejected]:
        if self._pending is None and not self._rows:
            self._refresh(path, final, max_records)
        if self._rows:
            out, self._rows = self._rows, []
            return out
        if self._pending is None:
            return []
        cols, times, stamps, a = self._pending, self._pending_times, self._pending_stamps, self._at
        b = min(a + max_records, len(times))
        if self.first_key is None:
            self.first_key = [cols["index"][a], stamps[a]]
        self.last_key = [cols["index"][b - 1], stamps[b - 1]]
        self.n_done += b - a
        self._at = b
        if b == len(times):
            self._pending, self._pending_times, self._pending_stamps = None, [], []
        return self._samples(cols, times, a, b)

    def _refresh(self, path: Path, final: bool, max_records: int) -> None:
        st = os.stat(path)
        key = (st.st_size, st.st_mtime_ns)
        if self._follower is not None:
            if key != self._seen or final:
                self._follow(path, st.st_size, key, max_records, final)
            if self._follower is not None:
                return
        elif key == self._seen:
            return
        self._read_whole(path, st.st_size, key, final)

    def _follow(self, path: Path, size: int, key: tuple[int, int], max_records: int, final: bool) -> None:
        """The records appended since the last poll become pending rows; a surprise ends following."""
        follower = self._follower
        assert follower is not None
        try:
            with path.open("rb") as f:
                follower.check(f, size)
                rows = follower.read(f, size, max_records, final)
        except _Surprise as exc:
            self._fall_back(str(exc))
            return
        except Exception as exc:  # NewareNDA's private helpers changed: a whole read is the safe reader
            self._fall_back(f"NewareNDA's record helpers failed: {type(exc).__name__}: {exc}")
            return
        if not follower.more:
            self._seen = key  # all read (but a record held for its aux record) until the file changes
        if rows:
            cols = follower.columns(rows)
            self._set_pending(cols, [self._seconds(t) for t in cols["stamp"]], 0)

    def _fall_back(self, why: str) -> None:
        """Stop following: the next poll reads the file whole."""
        self._say(why)
        self._follower = None
        self._seen = None

    def _say(self, why: str) -> None:
        if why not in self._said:
            self._said.add(why)
            log.warning("%s: %s; reading the file whole", self.source, why)

    def _read_whole(self, path: Path, size: int, key: tuple[int, int], final: bool) -> None:
        started = time.monotonic()
        if not final and started < self._next_read:
            return  # see the module docstring: bounded CPU for large files
        with path.open("rb") as f:
            head = f.read(8)
        if not (head.startswith(NDA_MAGIC) or head.startswith(ZIP_MAGIC)) and len(head) >= 6:
            raise FormatError(f"{self.source}: not a Neware .nda/.ndax file (it starts with {head!r})")
        if head.startswith(ZIP_MAGIC) and not zipfile.is_zipfile(path):
            if final:
                self._report("truncated_record", "the .ndax is not a complete zip file")
            return  # being written: its directory comes last
        import NewareNDA  # here, not at the top: it loads pandas, which adds 0.5 s to every start

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                df = NewareNDA.read(str(path))
        except Exception as exc:  # NewareNDA raises many kinds on a file it cannot (yet) read
            if final:
                self._report("bad_structure", f"NewareNDA cannot read the file: {type(exc).__name__}: {exc}")
            else:
                log.debug("%s: not readable yet (%s); trying again when it changes", self.source, exc)
            # not again until it changes, nor sooner than the budget: a file that cannot be read must
            # not be read whole on every poll
            self._seen = key
            self._next_read = started + self.reread_factor * (time.monotonic() - started)
            return
        self._seen = key
        missing = _REQUIRED.difference(df.columns)
        if missing:
            self._report("bad_structure", f"NewareNDA gave no {', '.join(sorted(missing))} column")
            return
        self._next_read = started + self.reread_factor * (time.monotonic() - started)
        cols, stamps = self._columns(df), self._times(df["Timestamp"])
        follower = self._start_following(path, size, cols, stamps) if head.startswith(NDA_MAGIC) else None
        if follower is not None:  # a last record held for its aux record comes with the next poll
            cols, stamps = {k: v[: follower.n] for k, v in cols.items()}, stamps[: follower.n]
        if self.n_done and not self._same_run(cols["index"], stamps):
            log.warning("%s: the file now holds another run; reading it from the start", self.source)
            self.n_done, self.first_key, self.last_key = 0, None, None
        self._read_size = size
        if len(stamps) < self.n_done:
            return  # fewer rows than already passed on: the same run, being rewritten (read whole again)
        self._follower = follower
        self._sub = [True, False, None, None]
        self._set_pending(cols, stamps, self.n_done)

    def _start_following(self, path: Path, size: int, cols: Columns, stamps: list[float]) -> _NdaFollower | None:
        """A follower at the end of the file, when its own decoding gives the rows NewareNDA just gave."""
        try:
            with path.open("rb") as f:
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                try:
                    layout = nda_layout(mm, size)
                    if layout is None:
                        return None  # too short to be sure where its records are: read whole again
                    follower = _NdaFollower(layout, _head_crc(f, layout), _nda_helpers())
                    tail: deque[list[Any]] = deque(maxlen=_CHECKED_TAIL)
                    while True:
                        at = follower.offset
                        tail.extend(follower.read(f, size, 100_000, final=False))
                        if follower.offset == at or not follower.more:
                            break
                finally:
                    mm.close()
            differs = ""
            if not 0 <= len(stamps) - follower.n <= follower.aux_apart:  # one row may wait for its aux record
                differs = f"{follower.n} rows, not {len(stamps)}"
            elif tail:
                differs = self._differs(follower.columns(list(tail)), cols, stamps, follower.n - len(tail))
        except _Surprise as exc:
            self._say(str(exc))
            return None
        except Exception as exc:  # a private API: anything else keeps the file on whole reads
            self._say(f"NewareNDA's record helpers failed: {type(exc).__name__}: {exc}")
            return None
        if differs:
            self._say(f"its records decoded one by one differ from NewareNDA's table ({differs})")
            return None
        return follower

    def _differs(self, mine: Columns, theirs: Columns, stamps: list[float], first: int) -> str:
        """The first column where the follower's rows differ from NewareNDA's (from row first), or ''."""
        n = len(mine["index"])
        for name in ("index", "count", "cycle", "step", "status", "elapsed", "V", "I", "T"):
            if not _same(mine[name], theirs[name][first : first + n]):
                return name
        if not _same([self._seconds(t) for t in mine["stamp"]], stamps[first : first + n]):
            return "Timestamp"
        return ""

    def _set_pending(self, cols: Columns, stamps: list[float], skip: int) -> None:
        """Rows from ``skip`` on wait to be returned; the sub-second state moves over all of them."""
        times = self._sub_second(cols["count"], stamps, cols["elapsed"])
        if len(stamps) > skip:
            self._pending, self._pending_times, self._pending_stamps, self._at = cols, times, stamps, skip

    def _same_run(self, index: list[int], times: list[float]) -> bool:
        """NaN-equal keys: a stamp in a DST gap or overlap of the zone is no time (NaN)."""
        if len(index) < self.n_done or self.first_key is None or self.last_key is None:
            return len(index) > 0 and _same([index[0], times[0]], self.first_key or [])
        k = self.n_done - 1
        return _same([index[0], times[0]], self.first_key) and _same([index[k], times[k]], self.last_key)

    def _sub_second(self, steps: list[int], times: list[float], elapsed: list[float]) -> list[float]:
        """Older .nda files stamp records to the whole second while logging every 0.1-0.5 s, so
        several records share a time (and the validator would quarantine all but one). There
        the step time ``Time`` (which starts at 0 in each step) gives the fraction: time = the
        step's start + Time, the start being the latest ``Timestamp - Time`` so far in the step
        (a whole-second stamp is at most 1 s late, never early). Causal, so that a file read
        while it grows gives the times a whole read gives: rows are corrected while every stamp
        so far is whole and some step time so far had a fraction. The checks of what was
        already read use the stamps themselves."""
        whole, fraction, step, start = self._sub
        if not whole:
            return times
        out = list(times)
        for k, t in enumerate(times):
            if t == t and t % 1.0:
                whole = False  # stamped to the ms: left as they are from here on
                break
            e = elapsed[k]
            fraction = fraction or bool(e % 1.0)
            s = t - e
            if steps[k] != step:
                step, start = steps[k], s
            elif start is None or s > start or start != start:
                start = s
            if fraction and start is not None:
                out[k] = start + e
        self._sub = [whole, fraction, step, start if start is None or start == start else None]
        return out

    def _times(self, ts: pd.Series) -> list[float]:
        import pandas as pd

        if ts.dtype == object:  # aware stamps with several offsets (BTS 9 across a DST change)
            ts = pd.to_datetime(ts, utc=True)
        elif ts.dt.tz is None:
            ts = ts.dt.tz_localize(self._zone, ambiguous="NaT", nonexistent="NaT")
        seconds = (ts - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
        return seconds.tolist()  # type: ignore[no-any-return]

    def _seconds(self, stamp: datetime) -> float:
        """One record's time as _times gives it, without pandas (a poll of a few records)."""
        if stamp.tzinfo is None:
            early, late = stamp.replace(tzinfo=self._zone), stamp.replace(tzinfo=self._zone, fold=1)
            if early.utcoffset() != late.utcoffset():
                return math.nan  # ambiguous or not there in the configured zone, as tz_localize's "NaT"
            stamp = early
        return ((stamp - _EPOCH) // _MICROSECOND) / 1e6

    @staticmethod
    def _columns(df: pd.DataFrame) -> Columns:
        def col(name: str, scale: float = 1.0) -> list[Any]:
            if name not in df:
                return [None] * len(df)
            return (df[name].astype("float64") * scale).tolist()  # type: ignore[no-any-return]

        return {
            "index": df["Index"].astype("int64").tolist(),
            "count": df["Step"].astype("int64").tolist(),
            "elapsed": col("Time"),
            "V": col("Voltage"),
            "I": col("Current(mA)", 1e-3),
            "T": col("T1"),
            "cycle": df["Cycle"].astype("int64").tolist(),
            "step": df["Step_Index" if "Step_Index" in df else "Step"].astype("int64").tolist(),
            "status": df["Status"].astype(str).tolist(),
        }

    def _samples(self, cols: Columns, times: list[float], a: int, b: int) -> list[Sample | Rejected]:
        """Rows a to b as samples."""
        volts, amps, temps, cycles, steps, states = (cols[k] for k in ("V", "I", "T", "cycle", "step", "status"))
        rules = {state: neware_state(state) for state in set(states[a:b])}
        cell = self.cell
        out: list[Sample | Rejected] = []
        for k in range(a, b):
            t = times[k]
            if t != t:
                out.append(
                    Rejected(
                        self.source,
                        "missing_time",
                        f"Index={cols['index'][k]}",
                        cell=self.cell,
                        detail="no timestamp (or one that does not exist in the configured zone)",
                    )
                )
                continue
            sign, mode = rules[states[k]]
            i = amps[k]
            if sign and i == i:
                i = sign * abs(i)
            out.append(Sample(t, cell, volts[k], i, None, temps[k], cycles[k], steps[k], mode))
        return out

    def _report(self, reason: str, detail: str) -> None:
        if detail != self._problem:
            self._problem = detail
            log.warning("%s: %s", self.source, detail)
            self._rows = [Rejected(self.source, reason, "", cell=self.cell, detail=detail)]


def _same(a: list[Any], b: list[Any]) -> bool:
    """Equal lists, NaN equal to NaN."""
    return len(a) == len(b) and all(x == y or (x != x and y != y) for x, y in zip(a, b, strict=True))
