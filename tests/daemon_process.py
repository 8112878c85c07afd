"""`shortwatch run` as a real subprocess, for the end-to-end tests (SIGTERM, kill -9, restarts)."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from shortwatch.settings import load_settings


def store_rows(db: Path, sql: str) -> list[tuple]:
    """Rows of a running daemon's store, read without taking part in its writes; none while the
    file or its schema is not there yet (a daemon creates its tables just after the file)."""
    if not db.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
        try:
            return conn.execute(sql).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise


def wait_for(
    pred: Callable[[], object], timeout: float = 30.0, every: float = 0.1, what: Callable[[], str] | None = None
) -> None:
    """Poll ``pred`` until it holds; on a timeout, ``what()`` says what was seen (e.g. a log's tail)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(every)
    raise AssertionError("timed out" + (f": {what()}" if what is not None else ""))


def start_run(cfg: Path, *, prefix: Sequence[str] = (), log: Path | None = None) -> subprocess.Popen:
    """Start the daemon and wait until it holds its state_dir: its signal handlers are in place
    then, so a test's SIGTERM is a clean stop, never a kill at start-up. ``prefix`` runs it under
    another command (e.g. setpriv); ``log`` collects its stderr."""
    settings = load_settings(cfg)
    # the default 127.0.0.1:9108 is one port for every test running at once (and a developer's
    # own daemon): a test daemon that finds it taken exits, and its test times out
    assert settings.daemon.http == "", f'{cfg}: a test daemon needs http = "" in [daemon]'
    err = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115 (the child keeps it)
    proc = subprocess.Popen(
        [*prefix, sys.executable, "-m", "shortwatch.cli", "run", "--config", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=err,
    )
    if log is not None:
        err.close()
    lock = settings.daemon.state_dir / "shortwatch.lock"

    def ready() -> bool:
        assert proc.poll() is None, f"the daemon exited with {proc.returncode} at start" + (
            f": {log.read_text()[-2000:]}" if log is not None else ""
        )
        return lock.exists() and f"pid {proc.pid}" in lock.read_text()

    wait_for(ready, every=0.05)
    return proc
