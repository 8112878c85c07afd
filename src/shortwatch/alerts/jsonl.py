"""The alerts JSONL file: every alert transition, one DESIGN alert-event object per line.

A reader of the durable log like every other remote. The file is its own acknowledgement:
at start the last complete line's ``id`` says how far the file really got, so a kill -9
between a write and the cursor's ack neither repeats nor loses a line, and a half-written
last line is cut off and written again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any, TextIO

from shortwatch.storage.sqlite import SqliteStore, alert_event

log = logging.getLogger(__name__)

_TAIL_BYTES = 1 << 16  # an alert line is a few kB at most


def event_json(row: dict[str, Any]) -> str:
    """A log row as the DESIGN alert-event JSON text (without the log's own keys)."""
    return json.dumps(alert_event(row), ensure_ascii=False)


class JsonlAlertWriter:
    """Appends each alert event to a file (or a stream such as stdout)."""

    table = "alert"
    batch_rows = 500

    def __init__(
        self,
        path: Path | None = None,
        stream: TextIO | None = None,
        *,
        name: str = "jsonl",
        ephemeral: bool = False,
        fsync: bool = True,
        max_bytes: int = 64_000_000,
        keep: int = 5,
    ):
        if (path is None) == (stream is None):
            raise ValueError("give a path or a stream")
        self.name = name
        self.path = path
        self.ephemeral = ephemeral
        self.fsync = fsync
        self.max_bytes = max_bytes  # rotate past this size, keeping ``keep`` old files: years on one disk
        self.keep = keep
        self._stream = stream
        self._file: TextIO | None = None

    async def resume(self, position: int, store: SqliteStore) -> int:
        """The position after the file's last complete line, when the file got further than
        the stored cursor (a crash after the write, before the ack)."""
        if self.path is None:
            return position
        last_id = await asyncio.to_thread(_last_event_id, self.path)
        if last_id is None:
            return position
        seq = await asyncio.to_thread(store.alert_seq, last_id)
        if seq is not None and seq > position:
            log.info("%s: already holds events up to log seq %d (cursor was %d)", self.path, seq, position)
            await asyncio.to_thread(store.ack, self.name, self.table, seq)
            return seq
        return position

    async def deliver(self, rows: list[dict[str, Any]]) -> None:
        text = "".join(event_json(r) + "\n" for r in rows)
        await asyncio.to_thread(self._write, text)

    def _write(self, text: str) -> None:
        if self._stream is not None:
            self._stream.write(text)
            self._stream.flush()
            return
        if self._file is not None and self._file.tell() >= self.max_bytes:
            self._rotate()
        if self._file is None:
            assert self.path is not None
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (kept open while the daemon runs)
        self._file.write(text)
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())

    def _rotate(self) -> None:
        """alerts.jsonl -> alerts.jsonl.1 -> ... -> alerts.jsonl.<keep> (dropped). Everything in
        the file was acknowledged before this write, so the new file may start empty."""
        assert self.path is not None and self._file is not None
        self._file.close()
        self._file = None
        for n in range(self.keep, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if n == self.keep:
                older.unlink(missing_ok=True)
            newer = self.path.with_name(f"{self.path.name}.{n - 1}") if n > 1 else self.path
            if newer.exists():
                newer.rename(older)
        if self.keep == 0:
            self.path.unlink(missing_ok=True)
        log.info("%s: rotated (over %d bytes)", self.path, self.max_bytes)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _last_event_id(path: Path) -> str | None:
    """The ``id`` of the file's last complete line; a partial last line is cut off."""
    try:
        f = open(path, "r+b")  # noqa: SIM115
    except FileNotFoundError:
        return None
    with f:
        size = f.seek(0, os.SEEK_END)
        start = max(0, size - _TAIL_BYTES)
        f.seek(start)
        tail = f.read()
        if tail and not tail.endswith(b"\n"):
            cut = tail.rfind(b"\n") + 1
            log.warning("%s: cutting off a half-written last line (%d bytes)", path, len(tail) - cut)
            f.truncate(start + cut)
            tail = tail[:cut]
        for line in reversed(tail.splitlines()):
            try:
                return str(json.loads(line)["id"])
            except (ValueError, KeyError, TypeError):
                continue
    return None
