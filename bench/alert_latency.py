"""Alert latency: wall time from a row written (file source) or a message published (MQTT) to
its alert line in the JSONL file (alerts.jsonl_path) of a running `shortwatch run`, and to the
first notifier: a webhook POST received by a local HTTP server.

Each run is a fresh symmetric cell: a few healthy half-cycles (|V| ~ 50 mV at 0.5 mA/cm2),
then samples whose |V| has collapsed under current, one at a time: the hard_short detector
confirms on the second. The latency is taken from the write (or publish) of the sample whose
data time the alert carries to the moment its line is in the file, and to the moment the
webhook's POST arrives. Goal: median <= 200 ms.

    python bench/alert_latency.py [--runs 15] [--poll-s 2.0]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from mosquitto_broker import Broker

T0 = 1_767_600_000.0
PERIOD_S = 10.0
HALF = 30  # samples per healthy half-cycle
HALVES = 4


def history(cell: str) -> list[dict[str, Any]]:
    rows = []
    for k in range(HALF * HALVES):
        sign = 1.0 if (k // HALF) % 2 == 0 else -1.0
        rows.append({"time": T0 + PERIOD_S * k, "cell": cell, "voltage_V": sign * 0.05, "current_A": sign * 4e-4})
    return rows


def shorted(cell: str, i: int) -> dict[str, Any]:
    return {"time": T0 + PERIOD_S * (HALF * HALVES + i), "cell": cell, "voltage_V": 3e-4, "current_A": 4e-4}


def csv_row(r: dict[str, Any]) -> str:
    return f"{r['time']},{r['cell']},{r['voltage_V']},{r['current_A']}\n"


class Alerts:
    """Follows the JSONL file; hard_short firing lines per cell with the time they were seen."""

    def __init__(self, path: Path):
        self.path, self.offset, self.seen = path, 0, {}

    def poll(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        now = time.perf_counter()
        for line in data[:end].splitlines():
            e = json.loads(line)
            if e["detector"] == "hard_short" and e["state"] == "firing":
                self.seen.setdefault(e["cell"], (now, datetime.fromisoformat(e["time"]).timestamp()))

    def wait(self, cell: str, timeout: float) -> tuple[float, float] | None:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            self.poll()
            if cell in self.seen:
                return self.seen[cell]
            time.sleep(0.002)
        return None


class Webhook:
    """The first notifier's far end: records when each cell's hard_short firing arrived (the
    standard library's server: it only has to note arrival times, in a thread of its own)."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # the name http.server calls
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                now = time.perf_counter()
                for e in body.get("alerts", [body]):
                    if e.get("detector") == "hard_short" and e.get("state") == "firing":
                        owner.seen.setdefault(e["cell"], now)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, cell: str, timeout: float) -> float | None:
        deadline = time.perf_counter() + timeout
        while cell not in self.seen and time.perf_counter() < deadline:
            time.sleep(0.002)
        return self.seen.get(cell)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def stored(db: Path) -> int:
    if not db.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
        try:
            return conn.execute("SELECT COUNT(*) FROM sample").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def wait_until(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.01)


def run_mode(mode: str, runs: int, poll_s: float | None, work: Path) -> tuple[list[float], list[float]]:
    """Latencies (s) to the JSONL line and to the webhook, one per run."""
    var, data = work / "var", work / "data"
    data.mkdir(parents=True)
    cells = [f"L{k}" for k in range(runs)]
    hook = Webhook()
    text = f'[daemon]\nhttp = ""\nstation = "bench"\nstate_dir = "{var}"\n[alerts]\njsonl_path = "{var}/alerts.jsonl"\n'
    text += f'[[alerts.notifiers]]\ntype = "webhook"\nurl = "{hook.url}"\nmin_severity = "critical"\n'
    text += "".join(f'[cells.{c}]\nkind = "symmetric"\narea_cm2 = 0.785\n' for c in cells)
    broker = None
    if mode == "file":
        text += f'[[sources]]\ntype = "file"\npaths = ["{data}/*.csv"]\n'
        if poll_s is not None:
            text += f"poll_s = {poll_s}\n"
    else:
        broker = Broker(work / "broker").start()
        text += f'[[sources]]\ntype = "mqtt"\nport = {broker.port}\ntopics = ["lab/{{cell}}/telemetry"]\n'
    cfg = work / "cfg.toml"
    cfg.write_text(text)
    log = work / "daemon.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "shortwatch.cli", "run", "--config", str(cfg)], stderr=fh)
    pub = None
    try:
        ready = "MQTT connected" if mode == "mqtt" else "running"
        wait_until(lambda: ready in log.read_text(), 30, "the daemon to start")
        if mode == "mqtt":
            pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub")
            pub.connect("127.0.0.1", broker.port)  # type: ignore[union-attr]
            pub.loop_start()
        alerts = Alerts(var / "alerts.jsonl")
        db = var / "shortwatch.sqlite"
        latencies: list[float] = []
        to_hook: list[float] = []
        total = 0

        def send(rows: list[dict[str, Any]], cell: str) -> float:
            if mode == "file":
                with (data / f"{cell}.csv").open("a", encoding="utf-8") as f:
                    if f.tell() == 0:
                        f.write("time,cell,voltage_V,current_A\n")
                    f.write("".join(csv_row(r) for r in rows))
                return time.perf_counter()
            t = time.perf_counter()
            payload = json.dumps(rows if len(rows) > 1 else rows[0])
            pub.publish(f"lab/{cell}/telemetry", payload, qos=1).wait_for_publish()  # type: ignore[union-attr]
            return t

        for cell in cells:
            hist = history(cell)
            send(hist, cell)
            total += len(hist)
            wait_until(lambda: stored(db) >= total, 60, f"{cell}'s history to be stored")  # noqa: B023
            written: dict[float, float] = {}
            got = None
            for i in range(4):
                row = shorted(cell, i)
                written[row["time"]] = send([row], cell)
                got = alerts.wait(cell, 0.6 if i == 0 else 10.0)
                if got:
                    break
            if not got:
                raise SystemExit(f"{mode}: no hard_short alert for {cell}; see {log}")
            seen_at, data_time = got
            latencies.append(seen_at - written[data_time])
            posted = hook.wait(cell, 10.0)
            if posted is None:
                raise SystemExit(f"{mode}: the webhook got no hard_short alert for {cell}; see {log}")
            to_hook.append(posted - written[data_time])
            total += i + 1
        return latencies, to_hook
    finally:
        hook.close()
        proc.terminate()
        proc.wait(30)
        if pub is not None:
            pub.disconnect()
            pub.loop_stop()
        if broker is not None:
            broker.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--poll-s", type=float, default=None, help="file source poll_s (default: the config default)")
    ap.add_argument("--modes", default="file,mqtt")
    args = ap.parse_args()
    print(
        f"{'source':<10}{'to':<9}{'runs':>6}{'median ms':>11}{'p90 ms':>9}{'min ms':>9}{'max ms':>9}"
        "   goal: median <= 200 ms"
    )
    for mode in args.modes.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            results = run_mode(mode, args.runs, args.poll_s, Path(tmp))
        label = mode if mode == "mqtt" or args.poll_s is None else f"file {args.poll_s:g}s"
        for to, seconds in zip(("JSONL", "webhook"), results, strict=True):
            lat = sorted(x * 1000 for x in seconds)
            p90 = lat[min(len(lat) - 1, int(0.9 * len(lat)))]
            print(
                f"{label:<10}{to:<9}{len(lat):>6}{statistics.median(lat):>11.0f}{p90:>9.0f}{lat[0]:>9.0f}{lat[-1]:>9.0f}"
            )


if __name__ == "__main__":
    main()
