"""One writer per state_dir: a second `run`, or a `replay` into a running daemon's store, is
refused with a clear message instead of interleaving checkpoints and alert logs.

An advisory ``flock`` on ``state_dir/shortwatch.lock``: the kernel drops it when the process
dies, kill -9 included, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


class StateDirBusyError(RuntimeError):
    """Another shortwatch process writes to this state_dir."""


@contextlib.contextmanager
def state_dir_lock(state_dir: Path, command: str) -> Iterator[None]:
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "shortwatch.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            raise StateDirBusyError(
                f"{state_dir} is in use by {holder}: one shortwatch process writes to a state_dir at a time. "
                "Stop it first, or give this command a config with another daemon.state_dir "
                "(a backfill into InfluxDB can use its own state_dir and the same InfluxDB)."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"shortwatch {command} (pid {os.getpid()})\n".encode(), 0)
        yield
    finally:
        os.close(fd)
