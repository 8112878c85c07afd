"""The `shortwatch replay` command line the benchmarks run in a child process."""

from __future__ import annotations

import sys
from pathlib import Path


def replay_command(cfg: Path, files: list[Path], alerts_out: Path | str, store: bool) -> list[str]:
    """argv for `shortwatch replay` over ``files``, without a progress bar."""
    cmd = [sys.executable, "-m", "shortwatch.cli", "replay", "--config", str(cfg), "--no-progress"]
    cmd += ["--alerts-out", str(alerts_out)]
    if not store:
        cmd.append("--no-store")
    return cmd + [str(f) for f in files]
