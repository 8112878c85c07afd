"""File source: cycler exports read from the start and, in live mode, followed as they grow.

Replay is this source with ``follow=False``: every file is read to its end as fast as the
CPU allows, and the last partial line is decoded (a truncated row is quarantined).
"""

from __future__ import annotations

import asyncio
import glob
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shortwatch.daemon.runner import Emit
from shortwatch.sensors.files import FileReader, FormatError

log = logging.getLogger(__name__)

BATCH_LINES = 5000


class FileSource:
    """Reads a set of files (paths or glob patterns) through incremental FileReaders."""

    def __init__(
        self,
        patterns: list[str],
        *,
        fmt: str = "auto",
        cell: str | None = None,
        tz: str = "UTC",
        follow: bool = True,
        poll_s: float = 2.0,
        name: str = "file",
        on_progress: Callable[[str, int], None] | None = None,
        retire_after_s: float = 3600.0,
        idle_check_s: float = 30.0,
    ):
        self.name = name
        self.patterns = patterns
        self.fmt = fmt
        self.cell = cell
        self.tz = tz
        self.follow = follow
        self.poll_s = poll_s
        self.on_progress = on_progress
        self.readers: dict[str, FileReader] = {}
        self.failed: dict[str, str] = {}  # path -> why it could not be read
        self._restored: dict[str, dict[str, Any]] = {}
        # Following: a file that has not grown for retire_after_s is retired (its position kept),
        # so a folder of finished daily exports is not reopened every poll; it is looked at
        # again every idle_check_s, and revived when its size or mtime changes.
        self.retire_after_s = retire_after_s
        self.idle_check_s = idle_check_s
        self.idle: dict[str, dict[str, Any]] = {}  # path -> {"state", "size", "mtime"}
        self._last_growth: dict[str, float] = {}
        self._next_idle_check = 0.0

    def _discover(self) -> None:
        now = time.monotonic()
        check_idle = now >= self._next_idle_check
        if check_idle:
            self._next_idle_check = now + self.idle_check_s
        for pattern in self.patterns:
            matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
            for path in matches:
                if path in self.readers or path in self.failed:
                    continue
                if path in self.idle:
                    if not check_idle or not self._changed(path):
                        continue
                    self._restored[path] = self.idle.pop(path)["state"]  # it grew again: revive
                if not Path(path).is_file():
                    if not glob.has_magic(pattern) and not self.follow:
                        self._fail(path, "no such file")
                    continue
                try:
                    reader = FileReader(Path(path), self.fmt, self.cell, self.tz)
                except (FormatError, OSError) as exc:
                    self._fail(path, str(exc))
                    continue
                if path in self._restored:
                    reader.restore(self._restored.pop(path))
                self.readers[path] = reader
                self._last_growth[path] = now

    def _changed(self, path: str) -> bool:
        try:
            st = os.stat(path)
        except OSError:
            return False
        idle = self.idle[path]
        return (st.st_size, st.st_mtime_ns) != (idle["size"], idle["mtime"])

    def _retire_idle(self) -> None:
        now = time.monotonic()
        for path, reader in list(self.readers.items()):
            if now - self._last_growth.get(path, now) < self.retire_after_s:
                continue
            try:
                st = os.stat(path)
            except OSError:
                continue  # gone for now: the reader keeps waiting for it
            self.idle[path] = {"state": reader.checkpoint(), "size": st.st_size, "mtime": st.st_mtime_ns}
            del self.readers[path]
            log.info(
                "%s: no growth for %.0f s; checked every %.0f s from now on",
                path,
                self.retire_after_s,
                self.idle_check_s,
            )

    async def run(self, emit: Emit) -> None:
        while True:
            self._discover()
            got_any = False
            for path, reader in list(self.readers.items()):
                while True:
                    try:
                        if self.follow:  # live: decode off the event loop, it has other work
                            items = await asyncio.to_thread(reader.read_available, BATCH_LINES)
                        else:  # replay: nothing else waits, and a thread would only contend for the GIL
                            items = reader.read_available(BATCH_LINES)
                    except FileNotFoundError:
                        if self.follow:  # rotated or being replaced: the reader keeps its place
                            break
                        self._fail(path, "the file disappeared")
                        break
                    except Exception as exc:  # one bad file must not stop the others
                        self._fail(path, str(exc))
                        break
                    if not items:
                        break
                    got_any = True
                    self._last_growth[path] = time.monotonic()
                    await emit(items, path)
                    if self.on_progress is not None:
                        self.on_progress(path, reader.offset)
            if not self.follow:
                for path, reader in list(self.readers.items()):
                    try:
                        tail = reader.finish()
                    except Exception as exc:
                        self._fail(path, str(exc))
                        continue
                    if tail:
                        await emit(tail, path)
                return
            if not got_any:
                self._retire_idle()
                await asyncio.sleep(self.poll_s)

    def _fail(self, path: str, why: str) -> None:
        """Stop reading one file (and say so); the other files go on."""
        log.error("%s: stopped reading: %s", path, why)
        self.failed[path] = why
        self.readers.pop(path, None)

    def checkpoint(self) -> dict[str, Any]:
        files = {p: v["state"] for p, v in self.idle.items()}
        files.update({p: r.checkpoint() for p, r in self.readers.items()})
        return {"files": files}

    def restore(self, state: dict[str, Any]) -> None:
        self._restored = dict(state.get("files", {}))
