"""File source: cycler exports read from the start and, in live mode, followed as they grow.

Live: the folders of the patterns are watched with inotify (through ``watchfiles``), so new
rows reach the pipeline within tens of milliseconds of being written; every ``poll_s`` all
files are looked at anyway, which is the fallback where inotify sees nothing (network
shares) or cannot start. A read error (permission denied for a while, a file briefly
replaced by a folder...) is retried with backoff, keeping the file's position.

Replay is this source with ``follow=False``: every file is read to its end as fast as the
CPU allows, the last partial line is decoded (a truncated row is quarantined), and the files
are merged by sample time, so that a cycler file and a load-cell file of one cell replay in
the order they ran live.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import glob
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shortwatch.aio import wait_event
from shortwatch.daemon.runner import Emit
from shortwatch.model import Rejected, Sample
from shortwatch.sensors.biologic_mpr import StartTimes
from shortwatch.sensors.files import BinaryFileReader, FileReader, FormatError, open_reader

log = logging.getLogger(__name__)

BATCH_LINES = 5000
MERGE_LINES = 200_000  # replay: lines held in all per-file merge batches together
RETRY_S = (0.5, 30.0)  # backoff after a read error: first wait, longest wait
WATCH_DEBOUNCE_MS = 50  # watchfiles: longest wait to group changes (its default of 1.6 s is too slow)


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
        idle_line_s: float = 1.0,
        watch: bool = True,
        options: dict[str, Any] | None = None,
        state_dir: Path | None = None,
    ):
        self.name = name
        self.patterns = patterns
        self.fmt = fmt
        self.cell = cell
        self.tz = tz
        self.follow = follow
        self.poll_s = poll_s
        self.on_progress = on_progress
        # following: a last line without a newline is read once its file has been idle this long
        self.idle_line_s = idle_line_s
        self.watch = watch
        self.options = options or {}  # format options (the columns map, delimiter, time format)
        # following: the start chosen for an .mpr without its LOG module yet, kept across restarts
        self.start_times = StartTimes(state_dir / "mpr-start-times.json") if follow and state_dir else None
        self.readers: dict[str, FileReader | BinaryFileReader] = {}
        self.failed: dict[str, str] = {}  # path -> why it could not be read
        self._failed_states: dict[str, dict[str, Any]] = {}  # their positions, kept in checkpoints
        self._restored: dict[str, dict[str, Any]] = {}
        # Following: a file that has not grown for retire_after_s is retired (its position kept),
        # so a folder of finished daily exports is not reopened every poll; it is looked at
        # again every idle_check_s, and revived when its size or mtime changes.
        self.retire_after_s = retire_after_s
        self.idle_check_s = idle_check_s
        self.idle: dict[str, dict[str, Any]] = {}  # path -> {"state", "size", "mtime"}
        self._last_growth: dict[str, float] = {}
        self._next_idle_check = 0.0
        self._retry: dict[str, tuple[float, float]] = {}  # path -> (next attempt, current wait)
        self._unmatched: set[str] = set()  # patterns that matched nothing at the last look
        self._changed: set[str] = set()  # absolute paths the watcher saw change
        self._wake = asyncio.Event()

    def _discover(self, changed: frozenset[str] | set[str] = frozenset()) -> None:
        """Open readers for new files; revive retired ones that grew (at once when the watcher
        reported them in ``changed``, else at the next idle check)."""
        now = time.monotonic()
        check_idle = now >= self._next_idle_check
        if check_idle:
            self._next_idle_check = now + self.idle_check_s
        for pattern in self.patterns:
            matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
            if self.follow:
                self._note_matches(pattern, [p for p in matches if os.path.isfile(p)])
            for path in matches:
                if path in self.readers or path in self.failed:
                    continue
                if path in self.idle:
                    if not (check_idle or os.path.abspath(path) in changed) or not self._changed_since_retired(path):
                        continue
                    self._restored[path] = self.idle.pop(path)["state"]  # it grew again: revive
                if not Path(path).is_file():
                    if not glob.has_magic(pattern) and not self.follow:
                        self._fail(path, "no such file")
                    continue
                if self.fmt == "auto" and self.follow and os.path.getsize(path) == 0:
                    continue  # its format is told by its first bytes: wait for them
                try:
                    reader = open_reader(
                        Path(path),
                        self.fmt,
                        self.cell,
                        self.tz,
                        self.options,
                        idle_line_s=self.idle_line_s if self.follow else None,
                        start_times=self.start_times,
                    )
                    if path in self._restored:
                        reader.restore(self._restored[path])
                except FormatError as exc:
                    self._fail(path, str(exc))
                    continue
                except OSError as exc:  # unreadable for now: the position stays in _restored
                    if not self.follow:
                        self._fail(path, str(exc))
                    else:
                        self._read_error(path, exc)
                    continue
                self._restored.pop(path, None)
                if self._retry.pop(path, None) is not None:
                    log.info("%s: readable again", path)
                self.readers[path] = reader
                self._last_growth[path] = now

    def _note_matches(self, pattern: str, files: list[str]) -> None:
        """Say when a pattern matches no file, and again when it first matches some."""
        if not files and pattern not in self._unmatched:
            self._unmatched.add(pattern)
            log.warning(
                "file source %s: %r matches no file yet; looking again every %g s", self.name, pattern, self.poll_s
            )
        elif files and pattern in self._unmatched:
            self._unmatched.discard(pattern)
            log.info("file source %s: %r now matches %d file(s), e.g. %s", self.name, pattern, len(files), files[0])

    def _changed_since_retired(self, path: str) -> bool:
        try:
            st = os.stat(path)
        except OSError:
            return False
        idle = self.idle[path]
        return (st.st_size, st.st_mtime_ns) != (idle["size"], idle["mtime"])

    def _retire_idle(self) -> None:
        now = time.monotonic()
        for path, reader in list(self.readers.items()):
            if now - self._last_growth.get(path, now) < self.retire_after_s or reader.pending_bytes:
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
        if not self.follow:
            await self._replay(emit)
            return
        stop = asyncio.Event()
        watcher = asyncio.create_task(self._watch(stop), name=f"watch:{self.name}") if self.watch else None
        try:
            await self._follow(emit)
        finally:
            stop.set()  # ends the watcher's thread too, which a cancel alone would leave waiting
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher

    async def _follow(self, emit: Emit) -> None:
        next_poll = 0.0
        while True:
            now = time.monotonic()
            polling = now >= next_poll
            if polling:  # every file, and new ones: the fallback where no change is reported
                next_poll = now + self.poll_s
                self._discover()
                todo = list(self.readers)
            else:
                changed, self._changed = self._changed, set()
                by_abs = {os.path.abspath(p): p for p in self.readers}
                todo = [by_abs[a] for a in changed if a in by_abs]
                if any(a not in by_abs for a in changed):
                    self._discover(changed)  # a new file showed up, or a retired one grew
                    todo += [p for p in self.readers if p not in todo and os.path.abspath(p) in changed]
            got_any = False
            for path in todo:
                reader = self.readers.get(path)
                if reader is not None and await self._drain(path, reader, emit):
                    got_any = True
            if got_any:
                continue
            self._retire_idle()
            wait = next_poll - time.monotonic()
            if any(r.pending_bytes for r in self.readers.values()):
                wait = min(wait, self.idle_line_s / 2)  # a last line without a newline may come due
            if self._retry:
                wait = min(wait, min(at for at, _ in self._retry.values()) - time.monotonic())
                next_poll = min(next_poll, min(at for at, _ in self._retry.values()))
            if wait > 0 and not self._changed:
                await wait_event(self._wake, wait)
            self._wake.clear()
            if any(r.pending_bytes for r in self.readers.values()) and not self._changed:
                self._changed = {os.path.abspath(p) for p, r in self.readers.items() if r.pending_bytes}

    async def _drain(self, path: str, reader: FileReader, emit: Emit) -> bool:
        """Read a followed file to its current end; True when something was emitted."""
        retry = self._retry.get(path)
        if retry is not None and time.monotonic() < retry[0]:
            return False
        got = False
        while True:
            try:
                items = await asyncio.to_thread(reader.read_available, BATCH_LINES)  # off the event loop
            except FileNotFoundError:
                break  # rotated or being replaced: the reader keeps its place
            except FormatError as exc:
                self._fail(path, str(exc))
                break
            except OSError as exc:  # permission denied for a while, a folder in its place...
                self._read_error(path, exc)
                break
            if retry is not None:
                log.info("%s: readable again; reading on from byte %d", path, reader.offset)
                self._retry.pop(path, None)
                retry = None
            if not items:
                break
            got = True
            self._last_growth[path] = time.monotonic()
            await emit(items, path)
            if self.on_progress is not None:
                self.on_progress(path, reader.offset)
        return got

    def _read_error(self, path: str, exc: OSError) -> None:
        """A read failed: try again later, waiting longer each time (the position is kept)."""
        _, wait = self._retry.get(path, (0.0, 0.0))
        wait = min(RETRY_S[1], max(RETRY_S[0], 2 * wait))
        if wait == RETRY_S[0]:  # the first failure of a streak
            log.warning("%s: cannot read (%s); trying again with backoff, its position is kept", path, exc)
        self._retry[path] = (time.monotonic() + wait, wait)

    async def _watch(self, stop: asyncio.Event) -> None:
        """Wake the follower when anything changes in the folders of the patterns (inotify)."""
        try:
            from watchfiles import awatch
        except ImportError:  # pragma: no cover - a dependency; polling still works
            log.warning("watchfiles is not installed: polling every %g s", self.poll_s)
            return
        folders = sorted({_watch_root(p) for p in self.patterns})
        wanted = [os.path.abspath(p) for p in self.patterns]

        def matches(_: object, path: str) -> bool:  # fnmatch: a superset of glob's matches
            return any(fnmatch.fnmatch(path, w) for w in wanted)

        while True:
            roots = [f for f in folders if os.path.isdir(f)]
            if not roots:
                await asyncio.sleep(self.poll_s)  # no folder yet: polling will find it
                continue
            try:
                async for changes in awatch(
                    *roots,
                    watch_filter=matches,
                    debounce=WATCH_DEBOUNCE_MS,
                    step=10,
                    recursive=any("**" in p for p in self.patterns),
                    ignore_permission_denied=True,
                    stop_event=stop,
                ):
                    self._changed.update(os.path.abspath(path) for _, path in changes)
                    self._wake.set()
                    if len(roots) != sum(os.path.isdir(f) for f in folders):
                        break  # a watched folder appeared: watch it too
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # e.g. the inotify watch limit: polling goes on
                log.warning("watching %s failed (%s); polling every %g s", ", ".join(roots), exc, self.poll_s)
                return

    async def _replay(self, emit: Emit) -> None:
        """Every file to its end, merged by sample time (a k-way merge over one batch per file).

        A file's own rows keep their order (an out-of-order row is still quarantined as such);
        only files that share a cell wait for each other, so files of different cells are
        emitted in whole batches."""
        self._discover()
        files = [_Merged(p, r) for p, r in self.readers.items()]
        lines = max(100, min(BATCH_LINES, MERGE_LINES // max(1, len(files))))
        active = []
        for f in files:
            if self._refill(f, lines):
                active.append(f)
        while active:
            f = min(active, key=_Merged.head)
            limit = min((g.head() for g in active if g is not f and not g.cells.isdisjoint(f.cells)), default=math.inf)
            run = f.take(limit)
            await emit(run, f.path)
            if self.on_progress is not None:
                self.on_progress(f.path, f.reader.offset)
            if not f.items and not self._refill(f, lines):
                active.remove(f)

    def _refill(self, f: _Merged, lines: int) -> bool:
        """Read a file's next batch (its tail at the end); False when it has no more."""
        while not f.items:
            if f.done:
                return False
            try:
                batch = f.reader.read_available(lines)
                if not batch:
                    batch, f.done = f.reader.finish(), True
            except FileNotFoundError:
                self._fail(f.path, "the file disappeared")
                return False
            except Exception as exc:  # one bad file must not stop the others
                self._fail(f.path, str(exc))
                return False
            f.load(batch)
        return True

    def _fail(self, path: str, why: str) -> None:
        """Stop reading one file (and say so); the other files go on."""
        log.error("%s: stopped reading: %s", path, why)
        self.failed[path] = why
        reader = self.readers.pop(path, None)
        if reader is not None:
            self._failed_states[path] = reader.checkpoint()

    def checkpoint(self) -> dict[str, Any]:
        files = dict(self._restored)  # not yet readable again: their positions are kept
        files.update(self._failed_states)
        files.update({p: v["state"] for p, v in self.idle.items()})
        files.update({p: r.checkpoint() for p, r in self.readers.items()})
        return {"files": files}

    def restore(self, state: dict[str, Any]) -> None:
        self._restored = dict(state.get("files", {}))


class _Merged:
    """Replay: one file's current batch, consumed from the front by the merge."""

    __slots__ = ("cells", "done", "items", "path", "pos", "reader")

    def __init__(self, path: str, reader: FileReader):
        self.path = path
        self.reader = reader
        self.items: list[Sample | Rejected] = []
        self.pos = 0
        self.cells: set[str] = set()  # every cell the file has shown so far
        self.done = False

    def load(self, batch: list[Sample | Rejected]) -> None:
        self.items, self.pos = batch, 0
        self.cells.update(i.cell for i in batch if type(i) is Sample)

    def head(self) -> float:
        """The time of the next item; rejected rows without a time go first."""
        t = self.items[self.pos].time
        return -math.inf if t is None else t

    def take(self, limit: float) -> list[Sample | Rejected]:
        """The items up to ``limit`` (at least one), from the front of the batch."""
        items, i, n = self.items, self.pos, len(self.items)
        if limit == math.inf:  # no other file shares a cell: the whole rest, the common case
            run, end = items[i:] if i else items, n
        else:
            end = i + 1
            while end < n and ((t := items[end].time) is None or t <= limit):
                end += 1
            run = items[i:end]
        if end == n:
            self.items, self.pos = [], 0
        else:
            self.pos = end
        return run


def _watch_root(pattern: str) -> str:
    """The folder to watch for a path or glob pattern: its longest part without wildcards."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return os.path.abspath(os.path.join(*fixed)) if fixed else os.path.abspath(".")
