"""Done-when: `shortwatch run` killed with -9 while alerts are firing sends no repeats (beyond
the one in-flight message at-least-once allows, with the same ids) and a resolve that happens
after the restart is still sent. A real daemon process, a file source the test writes like a
cycler, and a local HTTP server as the webhook receiver."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from daemon_process import start_run, wait_for

T0 = 1_767_600_000.0
HEADER = "time,cell,voltage_V,current_A,pressure_MPa\n"


def rows(cell: str, start: int, n: int, pressure: float) -> str:
    out = []
    for k in range(start, start + n):
        sign = 1 if (k // 360) % 2 == 0 else -1  # hour-long half-cycles at 0.4 mA
        out.append(f"{T0 + 10 * k:.0f},{cell},{0.05 * sign:.4f},{0.0004 * sign},{pressure}\n")
    return "".join(out)


class Receiver:
    """A webhook receiver in a thread: every event it got, in order."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.requests = 0
        received = self.events
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                received.extend(body.get("alerts", [body]))
                outer.requests += 1
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()


@pytest.mark.slow
def test_kill_9_while_firing_repeats_nothing_and_the_resolve_still_goes_out(tmp_path: Path) -> None:
    rec = Receiver()
    data = tmp_path / "data"
    data.mkdir()
    cfg = tmp_path / "lab.toml"
    cfg.write_text(
        f"""
[daemon]
http = ""
station = "t"
state_dir = "{tmp_path / "state"}"
checkpoint_interval_s = 0.5
[alerts]
group_wait_s = 0
[[alerts.notifiers]]
type = "webhook"
url = "{rec.url}"
[[sources]]
type = "file"
paths = ["{data}/*.csv"]
poll_s = 0.2
"""
    )
    cells = ("P1", "P2")
    for cell in cells:  # 2 h in the window, then 10 min at 12 MPa: pressure_window fires
        (data / f"{cell}.csv").write_text(HEADER + rows(cell, 0, 720, 5.0) + rows(cell, 720, 60, 12.0))
    try:
        proc = start_run(cfg, log=cfg.parent / "daemon.log")
        try:
            wait_for(lambda: len(rec.events) >= 2)
            time.sleep(1.5)  # a checkpoint lands after the alerts
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            proc.kill()
        firing_ids = {e["id"] for e in rec.events}
        assert sorted((e["cell"], e["detector"], e["state"]) for e in rec.events) == [
            ("P1", "pressure_window", "firing"),
            ("P2", "pressure_window", "firing"),
        ]

        proc = start_run(cfg, log=cfg.parent / "daemon.log")  # restart: the same files; nothing new has happened
        try:
            time.sleep(4.0)
            assert all(e["id"] in firing_ids for e in rec.events[2:])  # at most the in-flight message, same ids
            for cell in cells:  # the cycler writes on: back in the window, the alerts resolve
                with open(data / f"{cell}.csv", "a") as fh:
                    fh.write(rows(cell, 780, 120, 5.0))
            wait_for(lambda: sum(e["state"] == "resolved" for e in rec.events) >= 2)
            time.sleep(1.0)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0
        finally:
            proc.kill()
    finally:
        rec.close()
    log = (tmp_path / "daemon.log").read_text()
    for cell in cells:  # the console line of `shortwatch run`, once per transition
        assert log.count(f"ALERT WARNING firing {cell} pressure_window") == 1
        assert log.count(f"ALERT WARNING resolved {cell} pressure_window") == 1
    by_episode: dict[str, list[dict]] = {}
    for e in rec.events:
        by_episode.setdefault(e["episode"], []).append(e)
    assert len(by_episode) == 2
    for events in by_episode.values():
        assert events[-1]["state"] == "resolved"
        assert len({e["id"] for e in events if e["state"] == "firing"}) == 1  # fired once
        assert len([e for e in events if e["state"] == "resolved"]) == 1  # resolved once


@pytest.mark.slow
def test_a_storm_twenty_cells_going_stale_together_is_one_message(tmp_path: Path) -> None:
    rec = Receiver()
    data = tmp_path / "data"
    data.mkdir()
    cells = [f"S{i:02d}" for i in range(20)]
    for cell in cells:  # 20 channels of one station; then the exporter stops
        (data / f"{cell}.csv").write_text(HEADER + rows(cell, 0, 60, 5.0))
    cfg = tmp_path / "lab.toml"
    cfg.write_text(
        f"""
[daemon]
http = ""
station = "t"
state_dir = "{tmp_path / "state"}"
[detectors.stale_data]
periods = 1
min_silence_s = 3
[alerts]
group_wait_s = 8
[[alerts.notifiers]]
type = "webhook"
url = "{rec.url}"
[[sources]]
type = "file"
paths = ["{data}/*.csv"]
poll_s = 0.2
"""
    )
    proc = start_run(cfg, log=cfg.parent / "daemon.log")
    try:
        wait_for(lambda: len(rec.events) >= 20, timeout=60)
        time.sleep(2.0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
        rec.close()
    assert sorted(e["cell"] for e in rec.events) == cells
    assert {(e["detector"], e["severity"], e["state"]) for e in rec.events} == {("stale_data", "warning", "firing")}
    assert rec.requests == 1  # one grouped message
