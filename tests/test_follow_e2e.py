"""`shortwatch run` as an unprivileged user (so that chmod bites even when CI runs as root)
following a file that becomes unreadable for 2 s and then gets a line over 1 MiB (issue 6,
data loss 3): nothing after them is lost, the long line is quarantined once, and a restart
resumes where it stopped instead of reading the file from byte 0 again."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from daemon_process import start_run, store_rows, wait_for
from shortwatch.sensors.files import MAX_LINE_BYTES

NOBODY = 65534
DROP = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
T0 = 1_767_600_000


def _can_drop_privileges() -> str | None:
    if os.geteuid() != 0:
        return "needs root to drop privileges to an unprivileged user (and chmod would not stop root)"
    if shutil.which("setpriv") is None:
        return "setpriv (util-linux) is not installed"
    probe = subprocess.run(
        [
            "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            sys.executable,
            "-c",
            "import shortwatch",
        ],
        capture_output=True,
    )
    return None if probe.returncode == 0 else "the unprivileged user cannot run this Python"


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(_can_drop_privileges() is not None, reason=str(_can_drop_privileges())),
]


def rows(start: int, stop: int) -> str:
    return "".join(f"{T0 + 10 * k},A1,0.05,0.0004\n" for k in range(start, stop))


def counts(db: Path) -> tuple[int, list[str]]:
    n = len(store_rows(db, "SELECT 1 FROM sample"))
    return n, [r for (r,) in store_rows(db, "SELECT reason FROM quarantine ORDER BY reason")]


def stop(proc: subprocess.Popen, log: Path) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    finally:
        proc.kill()
    err = log.read_text()
    assert proc.returncode == 0, err
    return err


def test_unreadable_for_2_s_then_an_oversized_line_loses_nothing_and_restart_resumes() -> None:
    work = Path(tempfile.mkdtemp(prefix="shortwatch-e2e-"))  # not under root's private pytest folder
    try:
        data = work / "data"
        data.mkdir()
        followed = data / "A1.csv"
        followed.write_text("time,cell,voltage_V,current_A\n" + rows(0, 100))
        cfg = work / "cfg.toml"
        cfg.write_text(
            f'[daemon]\nhttp = ""\nstate_dir = "{work / "state"}"\ncheckpoint_interval_s = 0.5\n[cells.A1]\n'
            f'[[sources]]\ntype = "file"\npaths = ["{data}/*.csv"]\npoll_s = 0.2\n'
        )
        for p in (work, data, followed, cfg):
            os.chown(p, NOBODY, NOBODY)
        db = work / "state" / "shortwatch.sqlite"

        proc = start_run(cfg, prefix=DROP, log=cfg.parent / "daemon.log")
        try:
            wait_for(lambda: counts(db)[0] == 100)
            followed.chmod(0)  # permission denied for the daemon (not for this root test)
            with followed.open("a") as fh:
                fh.write(rows(100, 150))
            time.sleep(2.0)
            followed.chmod(0o644)
            with followed.open("a") as fh:
                fh.write("9" * (MAX_LINE_BYTES + 100) + "\n" + rows(150, 200))
            wait_for(lambda: counts(db)[0] == 200)
            time.sleep(1.0)  # a checkpoint after the last rows
        finally:
            err = stop(proc, cfg.parent / "daemon.log")
        assert "cannot read" in err and "Permission denied" in err
        assert counts(db) == (200, ["line_too_long"])

        with followed.open("a") as fh:
            fh.write(rows(200, 210))
        proc = start_run(cfg, prefix=DROP, log=cfg.parent / "daemon.log")
        try:
            wait_for(lambda: counts(db)[0] == 210)
            time.sleep(1.0)
        finally:
            stop(proc, cfg.parent / "daemon.log")
        assert counts(db) == (210, ["line_too_long"])  # not read from byte 0 again: no duplicates
    finally:
        shutil.rmtree(work, ignore_errors=True)
