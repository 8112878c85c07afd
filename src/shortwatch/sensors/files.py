"""Cycler export files: format detection and an incremental reader that resumes at a byte offset.

The reader is hand-written rather than built on pandas or ``csv`` because the daemon follows
files while the cycler is still writing them and must resume after a restart exactly where
it stopped: it has to know the byte offset of the first unconsumed byte, never consume a
half-written last line, and notice when a file is truncated or replaced. pandas and ``csv``
read whole files or text streams and cannot report or resume at a byte offset.
"""

from __future__ import annotations

import logging
import os
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from shortwatch.model import Rejected, Sample
from shortwatch.sensors.biologic_mpr import StartTimes
from shortwatch.sensors.canonical_csv import FormatError
from shortwatch.sensors.formats import (
    CONFIG_FORMATS,
    FORMATS,
    LineDecoder,
    RecordDecoder,
    detect,
    unknown_format_message,
)

__all__ = ["BinaryFileReader", "FileReader", "FormatError", "detect_format", "iter_file", "open_reader"]

log = logging.getLogger(__name__)

_CHUNK = 1 << 20  # bytes per read(): few syscalls, bounded memory
_HEAD = 4096  # bytes read to detect a format, and fingerprinted to recognise a file again
_SNIFF_LINES = 16  # complete lines after which a file no sniffer knows is of unknown format
MAX_LINE_BYTES = 1 << 20  # no export has a 1 MiB line: a longer one is skipped and quarantined
_TAIL = 1024  # bytes just before the offset, fingerprinted to notice a rewrite that keeps the head
_RAW_MAX = 1000  # characters of a skipped line kept as its quarantined raw text

Item = Sample | Rejected


def detect_format(path: str | Path) -> str:
    """The format of a file, from its first bytes (the extension only breaks ties)."""
    path = Path(path)
    with path.open("rb") as f:
        fmt = detect(f.read(_HEAD), path)
    if fmt is None:
        raise FormatError(unknown_format_message(path))
    return fmt.name


def _check_format(fmt: str) -> None:
    if fmt != "auto" and fmt not in CONFIG_FORMATS:
        raise FormatError(f"unknown format {fmt!r}; supported: auto, {', '.join(CONFIG_FORMATS)}")


def open_reader(
    path: Path,
    fmt: str = "auto",
    cell: str | None = None,
    tz: str = "UTC",
    options: dict[str, Any] | None = None,
    idle_line_s: float | None = None,
    start_times: StartTimes | None = None,
) -> FileReader | BinaryFileReader:
    """The reader for a file: a line reader for text formats, a record reader for binary ones.

    With ``auto``, a file must have its first bytes (an empty file is read as text, whose
    format is decided when its first line arrives). ``idle_line_s`` is given when the file is
    followed; so is ``start_times``, which keeps the start chosen for an .mpr without its LOG module."""
    _check_format(fmt)
    path = Path(path)
    name = fmt
    if fmt == "auto":
        with path.open("rb") as f:
            found = detect(f.read(_HEAD), path)
        name = found.name if found is not None else "auto"
    if name != "auto" and FORMATS[name].binary:
        return BinaryFileReader(path, name, cell, tz, start_times=start_times)
    return FileReader(path, fmt, cell, tz, options, idle_line_s=idle_line_s)


class FileReader:
    """Read one export file incrementally, following it as it grows.

    ``offset`` is the byte offset of the first unconsumed byte; only complete lines are
    consumed until :meth:`finish`. ``cell`` is the cell id for files without a cell column
    (default: the file stem); ``tz`` is the zone for times given without one.
    ``idle_line_s`` (following): a last line without a newline is read once the file has not
    grown for this long, as :meth:`finish` would read it; if the line then goes on, its rest
    is quarantined (``continued_line``) rather than read as a second line. None: never.
    A line longer than ``MAX_LINE_BYTES`` is skipped (without holding it in memory) and
    quarantined as ``line_too_long``; reading goes on after it.
    A file with a broken header raises :class:`FormatError` from the reading methods.
    """

    def __init__(
        self,
        path: Path,
        fmt: str = "auto",
        cell: str | None = None,
        tz: str = "UTC",
        options: dict[str, Any] | None = None,
        idle_line_s: float | None = None,
    ):
        _check_format(fmt)
        if fmt != "auto" and FORMATS[fmt].binary:
            raise FormatError(f"{fmt} is a binary format: read it with BinaryFileReader (open_reader)")
        self.path = Path(path)
        self.options = options or {}
        self.fmt = fmt
        self.cell = cell or self.path.stem
        self.tz = tz
        self.idle_line_s = idle_line_s
        self._reset()
        self._inode: int | None = None
        self._size = 0
        self._mtime = 0.0  # the file's modification time at the last read

    def _reset(self) -> None:
        """Forget the file's content and start at byte 0 (start, rotation, restore)."""
        self.offset = 0
        self._buf = b""  # file bytes [offset, offset + len(_buf)) read but not yet consumed
        self._head = b""  # the first min(offset, _HEAD) bytes: the file's fingerprint
        self._tail = b""  # the last min(offset, _TAIL) consumed bytes: a rewrite keeping the head changes them
        # a line being skipped: [offset where it started, reason, its first bytes as text]
        self._skip: list[Any] | None = None
        self._continued = False  # a last line was read without its newline (idle_line_s)
        self._format: str | None = None if self.fmt == "auto" else self.fmt
        self._decoder: LineDecoder | None = None
        self._encoding = ""

    @property
    def pending_bytes(self) -> int:
        """Bytes read past the last complete line (a line still being written)."""
        return len(self._buf)

    @property
    def format(self) -> str | None:
        """The file's format; None while ``auto`` has not yet seen enough of the file to tell."""
        return self._format

    def read_available(self, max_lines: int = 5000) -> list[Item]:
        """Decode up to ``max_lines`` complete lines from the current offset.

        Returns an empty list only when there is nothing more to decode for now. Raises
        FileNotFoundError when the path is gone (e.g. mid-rotation); the reader keeps its
        place, and starts over if a different file shows up at the path.
        """
        while True:  # past lines that give no items (header, blank lines)
            before = self.offset
            out = self._read(max_lines)
            if out or self.offset == before:
                return out

    def finish(self) -> list[Item]:
        """At the end of a replay: decode everything left, including a last line with no newline.

        A last partial line that does not decode is ``Rejected(reason="truncated_line")``.
        Only for complete files: on a file still being written it would consume half a line.
        """
        out: list[Item] = []
        while batch := self.read_available():
            out.extend(batch)
        if self._skip is not None:  # the skipped line ends at the end of the file
            out.append(self._skipped())
        elif self._buf and self._start_decoder(final=True):
            self._read_last_line(out)
        if self._decoder is not None and not self._decoder.ready:
            raise FormatError(f"{self.path}: the file ended inside its header{_header_detail(self._decoder)}")
        return out

    def _read_last_line(self, out: list[Item]) -> None:
        """Decode the buffered bytes as a line although no newline ends them."""
        assert self._decoder is not None
        item = self._decoder.feed(self._buf.decode(self._encoding, "replace"))
        self._advance(len(self._buf))
        if isinstance(item, Rejected):
            item.detail = f"{item.reason}: {item.detail}"
            item.reason = "truncated_line"
        if item is not None:
            out.append(item)

    def checkpoint(self) -> dict[str, Any]:
        """State to resume from after a restart: where we are, and which file that was (no I/O)."""
        return {
            "path": str(self.path),
            "format": self._format,
            "size": self._size,
            "inode": self._inode,
            "offset": self.offset,
            "head_crc32": zlib.crc32(self._head),
            "tail_crc32": zlib.crc32(self._tail),
            "skip": self._skip,
            "continued": self._continued,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Resume at a checkpoint's offset; start from 0 if the file was truncated or replaced.

        The header is read again from the start of the file (it is small), so nothing but
        the offset is needed to resume mid-file. The checksum of the first bytes catches a
        replaced file that got the old inode back, which file systems readily reuse; that of
        the bytes just before the offset a rewrite in place that kept the first bytes.
        """
        if state.get("path") != str(self.path):
            raise ValueError(f"checkpoint is for {state.get('path')!r}, not {str(self.path)!r}")
        self._reset()
        offset = int(state["offset"])
        if offset == 0:
            return
        with self.path.open("rb") as f:
            st = os.fstat(f.fileno())
            head = f.read(min(offset, _HEAD))
            tail = os.pread(f.fileno(), min(offset, _TAIL), offset - min(offset, _TAIL))
            self._inode, self._size = st.st_ino, st.st_size
            if (
                st.st_ino != state["inode"]
                or st.st_size < offset
                or zlib.crc32(head) != state["head_crc32"]
                or zlib.crc32(tail) != state.get("tail_crc32", zlib.crc32(tail))  # older checkpoints: no tail
            ):
                log.warning(
                    "%s: file was replaced, truncated or rewritten since the checkpoint; reading it again", self.path
                )
                return
            self._format = self._format or state["format"]
            f.seek(0)
            self._start_decoder(final=True, head=f.read(_HEAD))
            assert self._decoder is not None
            # Feed the header again (lines from the start until the decoder has it), then skip to offset.
            f.seek(0)
            pos = 0
            for raw in f:
                # context_ready: what a format needs from above the resume point (default: its header)
                if getattr(self._decoder, "context_ready", self._decoder.ready) or pos >= offset:
                    break
                self._decoder.feed(raw.decode(self._encoding, "replace"))
                pos += len(raw)
        self.offset, self._head, self._tail = offset, head, tail
        self._skip = state.get("skip")
        self._continued = bool(state.get("continued"))

    def _read(self, max_lines: int) -> list[Item]:
        """One pass: read what the buffer lacks with few large reads, decode complete lines."""
        with self.path.open("rb") as f:
            self._check_identity(os.fstat(f.fileno()), f)
            f.seek(self.offset + len(self._buf))
            while self._buf.count(b"\n") < max_lines and (chunk := f.read(_CHUNK)):
                self._buf += chunk
                if len(self._buf) - self._buf.rfind(b"\n") > MAX_LINE_BYTES:
                    break  # a line too long to hold: it is skipped below
        out: list[Item] = []
        if (self._skip is not None or self._continued) and not self._settle(out):
            return out  # still inside a skipped line
        buf = self._buf
        end = _end_of_lines(buf, max_lines)
        if not end:
            if len(buf) > MAX_LINE_BYTES:
                self._start_skip("line_too_long")
            elif (
                buf
                and self.idle_line_s is not None
                and time.time() - self._mtime >= self.idle_line_s
                and self._decoder is not None
                and self._decoder.ready  # a header still being written is waited for
            ):
                self._read_last_line(out)  # the writer has stopped: read it, as replay would
                self._continued = True
            return out
        if not self._start_decoder(final=False):
            return out
        assert self._decoder is not None
        # One decode and one split per batch: "\n" is one byte and one character in UTF-8 and
        # Latin-1 alike, even next to invalid bytes, so the lines are the same as split bytes.
        lines = buf[:end].decode(self._encoding, "replace").split("\n")
        lines.pop()  # the empty string after the last "\n"
        feed = self._decoder.feed
        if end > MAX_LINE_BYTES:  # only then can a batch hold an oversized line
            for line in lines:
                if len(line) >= MAX_LINE_BYTES:
                    out.append(self._too_long(line[:_RAW_MAX], len(line.encode(self._encoding, "replace")) + 1))
                elif (item := feed(line)) is not None:
                    out.append(item)
        else:
            for line in lines:
                item = feed(line)
                if item is not None:
                    out.append(item)
        self._advance(end)
        return out

    def _start_skip(self, reason: str) -> None:
        """Skip the line at the offset (too long to hold, or continued after it was read)."""
        if reason == "line_too_long" and (self._decoder is None or not self._decoder.ready):
            raise FormatError(
                f"{self.path}: no line break in the first {len(self._buf)} bytes of its header: "
                + (
                    "CR-only (classic Mac) line endings; save it with LF or CRLF line endings"
                    if b"\r" in self._buf
                    else "not a text export"
                )
            )
        self._skip = [self.offset, reason, self._buf[:_RAW_MAX].decode(self._encoding or "latin-1", "replace")]
        self._advance(len(self._buf))

    def _settle(self, out: list[Item]) -> bool:
        """Go on with a skipped line, or with a line read without its newline; True once past it."""
        buf = self._buf
        if self._continued:
            if not buf:
                return False
            self._continued = False
            if buf.startswith((b"\n", b"\r\n")):  # the newline came late: the line was complete
                self._advance(buf.index(b"\n") + 1)
                return True
            self._skip = [self.offset, "continued_line", ""]
        skip = self._skip
        assert skip is not None
        end = buf.find(b"\n")
        if skip[1] == "continued_line" and len(skip[2]) < _RAW_MAX:
            skip[2] += buf[: end if end >= 0 else _RAW_MAX][:_RAW_MAX].decode(self._encoding or "latin-1", "replace")
        if end < 0:
            self._advance(len(buf))  # drop it: skipped lines are never held in memory
            return False
        self._advance(end + 1)
        out.append(self._skipped())
        return True

    def _skipped(self) -> Rejected:
        start, reason, raw = self._skip  # type: ignore[misc]
        self._skip = None
        if reason == "line_too_long":
            return self._too_long(raw, self.offset - start)
        return Rejected(
            str(self.path),
            reason,
            raw.rstrip("\r\n"),
            detail=f"the rest of a line that was read without its newline after the file had been idle for "
            f"{self.idle_line_s} s; the line at byte {start} went on, so its rest is not read as a line",
        )

    def _too_long(self, raw: str, size: int) -> Rejected:
        return Rejected(
            str(self.path),
            "line_too_long",
            raw,
            detail=f"a line of {size} bytes (more than {MAX_LINE_BYTES}) ending at byte {self.offset}: "
            "skipped; reading goes on after it",
        )

    def _check_identity(self, st: os.stat_result, f: BinaryIO) -> None:
        """Start over when the path now holds another file, or the file shrank (rotated or
        truncated). The first bytes are compared too: a file deleted and recreated at once
        often gets the same inode back."""
        self._mtime = st.st_mtime
        if self._inode is None:
            self._inode, self._size = st.st_ino, st.st_size
            return
        what = None
        if st.st_ino != self._inode:
            what = "replaced"
        elif st.st_size < self.offset + len(self._buf):
            what = "truncated"
        elif (self._head and f.read(len(self._head)) != self._head) or (
            self._tail and os.pread(f.fileno(), len(self._tail), self.offset - len(self._tail)) != self._tail
        ):
            what = "rewritten"
        if what is not None:
            log.warning("%s: file was %s; reading it from the start", self.path, what)
            self._reset()
        self._inode, self._size = st.st_ino, st.st_size

    def _advance(self, n: int) -> None:
        """Consume the first n buffered bytes, keeping the fingerprint bytes."""
        if len(self._head) < _HEAD:
            self._head += self._buf[: min(n, _HEAD - len(self._head))]
        self._tail = (self._tail + self._buf[max(0, n - _TAIL) : n])[-_TAIL:]
        self.offset += n
        self._buf = self._buf[n:]

    def _start_decoder(self, final: bool, head: bytes | None = None) -> bool:
        """Make sure there is a decoder; False while ``auto`` still waits for the first line."""
        if self._decoder is not None:
            return True
        eol = self._buf.find(b"\n")
        if b"\r" in self._buf[: eol if eol >= 0 else len(self._buf)][:-1]:
            raise FormatError(f"{self.path}: CR-only (classic Mac) line endings; save it with LF or CRLF line endings")
        if self._format is None:
            found = detect(self._buf[:_HEAD], self.path)
            if found is not None and found.binary:
                raise FormatError(f"{self.path}: a {found.name} file, opened as text while it was empty; read again")
            if found is None:  # Maccor and nested Neware exports need a few lines to tell
                if len(self._buf) >= _HEAD or self._buf.count(b"\n") >= _SNIFF_LINES or final:
                    raise FormatError(unknown_format_message(self.path))
                return False
            self._format = found.name
        spec = FORMATS[self._format]
        if spec.skip:
            log.info("%s: %s; skipped", self.path, spec.description)
        # the factory sees the file's first bytes: some formats have layouts told apart there
        text = (self._buf[:_HEAD] if head is None else head).decode(spec.encoding, "replace").replace("\r\n", "\n")
        self._decoder = spec.make(str(self.path), self.cell, self.tz, text, self.options)
        self._encoding = spec.encoding
        return True


def _header_detail(decoder: Any) -> str:
    """What a decoder says about its unfinished header (e.g. the line count it expected)."""
    detail = getattr(decoder, "header_detail", "")
    return f" ({detail})" if detail else ""


def _end_of_lines(buf: bytes, max_lines: int) -> int:
    """The offset just past the first ``max_lines`` complete lines of buf (or all, if fewer)."""
    if buf.count(b"\n") <= max_lines:
        return buf.rfind(b"\n") + 1
    return len(buf) - len(buf.split(b"\n", max_lines)[-1])


class BinaryFileReader:
    """Read one binary cycler file (.mpr, .nda, .ndax) incrementally: the interface of FileReader.

    The format's RecordDecoder does the reading: it re-reads what it needs of the file at
    each call and returns only records it has not returned before. ``offset`` is the bytes
    of the file accounted for (for progress); the checkpoint holds the decoder's own state
    (record count and checksums), not a byte offset to seek to.
    """

    def __init__(
        self,
        path: Path,
        fmt: str,
        cell: str | None = None,
        tz: str = "UTC",
        start_times: StartTimes | None = None,
    ):
        if fmt not in FORMATS or not FORMATS[fmt].binary:
            raise FormatError(f"{fmt!r} is not a binary format")
        self.path = Path(path)
        self.cell = cell or self.path.stem
        self.fmt = fmt
        # start_times, given only while following: an .mpr may then be dated from the clock
        options = {"start_times": start_times} if start_times is not None else {}
        self._decoder: RecordDecoder = FORMATS[fmt].make(str(self.path), self.cell, tz, "", options)

    @property
    def format(self) -> str:
        return self.fmt

    @property
    def offset(self) -> int:
        return self._decoder.offset

    @property
    def pending_bytes(self) -> int:
        """Always 0: a record being written is simply left for the next read (nothing is buffered)."""
        return 0

    def read_available(self, max_lines: int = 5000) -> list[Item]:
        """Up to ``max_lines`` records new since the last call; [] when there are none for now.
        Raises FileNotFoundError when the path is gone; the reader keeps its place."""
        return self._decoder.poll(self.path, max_lines)

    def finish(self) -> list[Item]:
        """At the end of a replay: every record left, and what the file lacks is quarantined."""
        out: list[Item] = []
        while batch := self._decoder.poll(self.path, 5000, final=True):
            out.extend(batch)
        return out

    def checkpoint(self) -> dict[str, Any]:
        return {"path": str(self.path), "format": self.fmt, "offset": self.offset, "decoder": self._decoder.state()}

    def restore(self, state: dict[str, Any]) -> None:
        """Resume after the records a checkpoint had read; a replaced file is noticed at the next read."""
        if state.get("path") != str(self.path):
            raise ValueError(f"checkpoint is for {state.get('path')!r}, not {str(self.path)!r}")
        if "decoder" in state and state.get("format") == self.fmt:
            self._decoder.load(state["decoder"])


def iter_file(
    path: str | Path,
    fmt: str = "auto",
    cell: str | None = None,
    tz: str = "UTC",
    options: dict[str, Any] | None = None,
) -> Iterator[Item]:
    """Every sample and rejected row of a complete file, streamed, for tests and replay."""
    reader = open_reader(Path(path), fmt, cell, tz, options)
    while batch := reader.read_available():
        yield from batch
    yield from reader.finish()
