"""`shortwatch status`: is it working? One screen for someone at the glovebox.

It reads what any daemon leaves in its state_dir (the checkpoint, the SQLite log, read-only)
and, when the daemon answers on ``daemon.http``, its live /healthz figures. So it works the
same for a running and a stopped daemon, and never changes anything.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shortwatch.daemon.storeview import StoreView
from shortwatch.settings import Settings
from shortwatch.state import read_json

#: exit codes of `shortwatch status`, for scripts
OK, FAILING, NOT_RUNNING = 0, 1, 3
WIDTH = 100


@dataclass
class Live:
    """What /healthz said, or why it could not be asked."""

    url: str
    code: int | None  # None: no answer
    body: dict[str, Any] | None
    error: str | None = None


def ask_healthz(address: str, timeout: float = 2.0) -> Live:
    host, _, port = address.rpartition(":")
    if host in ("0.0.0.0", "::", "[::]", ""):  # listening everywhere: ask over loopback
        host = "127.0.0.1"
    url = f"http://{host}:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return Live(url, r.status, json.loads(r.read()))
    except urllib.error.HTTPError as e:
        try:
            return Live(url, e.code, json.loads(e.read()))
        except ValueError:
            return Live(url, e.code, None, f"HTTP {e.code}")
    except (OSError, ValueError) as e:
        return Live(url, None, None, str(getattr(e, "reason", e)))


def lock_holder(state_dir: Path) -> str | None:
    """Who holds the state_dir's lock (daemon/lock.py), e.g. "shortwatch run (pid 4242)"; None
    when nobody does. Read from /proc/locks, so asking never takes the lock, not even briefly
    (a daemon starting at that moment must not find it busy). None where /proc is missing."""
    path = state_dir / "shortwatch.lock"
    try:
        st = path.stat()
        locks = Path("/proc/locks").read_text()
    except OSError:
        return None
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in locks.splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == dev:
            return path.read_text(errors="replace").strip() or f"pid {fields[4]}"
    return None


def _span(s: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s / size:.1f} {unit}" if s < 10 * size else f"{s / size:.0f} {unit}"
    return f"{s:.0f} s"


def _ago(t: float | None, now: float) -> str:
    if t is None:
        return "never"
    return "in the future" if t > now else f"{_span(now - t)} ago"


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _counts(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(d.items(), key=lambda kv: -kv[1])) or "none"


def render(settings: Settings, now: float | None = None) -> tuple[str, int]:
    """The status text and the exit code (OK, FAILING or NOT_RUNNING)."""
    now = time.time() if now is None else now
    d = settings.daemon
    lines = [f"shortwatch status: station {d.station}, state in {d.state_dir}"]
    live = ask_healthz(d.http) if d.http else None
    figures: dict[str, Any] = (live.body or {}).get("figures", {}) if live else {}
    checkpoint = read_json(d.state_dir / "checkpoint.json") or {}
    written = checkpoint.get("written")
    if live is not None and live.body is not None:
        problems = live.body.get("problems", [])
        state = "healthy" if not problems else "FAILING"
        lines.append(f"daemon    running, {state} ({live.url}), up {_span(figures.get('uptime_s', 0))}")
        lines += [f"          ! {p}" for p in problems]
        code = FAILING if problems else OK
    else:
        holder = lock_holder(d.state_dir)
        if holder is not None and live is None:
            lines.append(f"daemon    running: {holder} (daemon.http is off: no live figures)")
            code = OK
        elif holder is not None and live is not None:
            lines.append(f"daemon    running: {holder}, but FAILING: {live.url} does not answer ({live.error})")
            code = FAILING
        else:
            where = f"no answer at {live.url}: {live.error}" if live else "daemon.http is off"
            lines.append(f"daemon    not running ({where})")
            code = NOT_RUNNING
        lines.append(f"          last checkpoint: {written or 'none'}")
    pipeline = checkpoint.get("pipeline", {})
    accepted = figures.get("samples_accepted", pipeline.get("samples_accepted", 0))
    rejects = {k.removeprefix("rejected_"): v for k, v in figures.items() if k.startswith("rejected_")}
    rejects = rejects or pipeline.get("rejects", {})
    lines.append(f"samples   {accepted:,} accepted; rejected: {_counts(rejects)}")
    if figures:
        lines.append(
            f"queue     {figures['queue_depth']} batches waiting; store: {figures['store_pending_batches']} batches "
            f"pending, {figures['store_write_errors']} write errors"
        )
    for name, src in ((live.body or {}).get("sources", {}) if live else {}).items():
        state = f"DOWN: {src['problem']}" if src["problem"] else "up"
        lines.append(f"source    {name}: {state}; {src['items']:,} items, last {_ago(src['last_data_at'], now)}")
    if not settings.store_path.exists():
        lines.append(f"store     none yet at {settings.store_path}")
        return "\n".join(lines), code
    view = StoreView(settings.store_path)
    try:
        last = view.last_samples()
        status = view.cell_status()
        firing = view.firing_alerts()
        quarantine = view.quarantine_counts()
        backlogs = view.backlogs(now)
    finally:
        view.close()
    lines.append(f"cells     {len(last)}")
    for cell in sorted(last):
        t = last[cell]
        lines.append(f"  {cell:<12} {status.get(cell, 'ok'):<9} last sample {_when(t)} ({_ago(t, now)})")
    lines.append(f"alerts    {len(firing)} firing")
    for a in firing:
        head = f"  {a['severity']:<9} {a['cell']:<12} {a['detector']:<22} "
        lines.append((head + a["summary"])[:WIDTH])
    live_readers = (live.body or {}).get("readers", {}) if live else {}
    for name in sorted(set(backlogs) | set(live_readers)):
        b = backlogs.get(name)
        behind = "caught up" if b is None or not b.rows else f"{b.rows:,} rows behind"
        if b is not None and b.oldest_age_s is not None:
            behind += f", the oldest waiting {_span(b.oldest_age_s)}"
        r = live_readers.get(name, {})
        if r.get("failures"):
            behind += f"; FAILING ({r['failures']} attempts): {r['last_error']}"
        lines.append(f"reader    {name}: {behind}")
    lines.append(f"quarantine {_counts(quarantine)}")
    return "\n".join(lines), code
