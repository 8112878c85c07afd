"""MQTT ingest: sustained samples/s from a real mosquitto into the pipeline and the SQLite store.

For single-sample and batched JSON payloads, the same messages are queued at a real broker
for two persistent QoS 1 sessions (a stopped consumer's backlog, so publishing speed is out
of the figure), then drained:
- by `mosquitto_sub` alone (C, prints the payloads to /dev/null): the ceiling;
- by the daemon's MQTT source -> validation -> CellMonitors -> SQLite commit -> PUBACK.
It prints samples/s of each and their ratio, and the pipeline alone (the same samples handed
over in batches of 5000 without MQTT) as a reference for where the time goes.

    python bench/mqtt_ingest.py [--samples 100000] [--batch 50] [--cells 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from live_daemon import Daemon
from mosquitto_broker import Broker
from shortwatch.daemon.runner import Runner
from shortwatch.model import Sample
from shortwatch.settings import Settings, parse_settings

T0 = 1_767_600_000.0


def samples(n: int, cells: int) -> list[Sample]:
    """Healthy symmetric cells, 10-s samples, half-cycles of 60 samples."""
    out = []
    for k in range(n // cells):
        sign = 1.0 if (k // 60) % 2 == 0 else -1.0
        for c in range(cells):
            out.append(Sample(T0 + 10 * k, f"C{c}", voltage_V=sign * (0.05 + 1e-5 * (k % 60)), current_A=sign * 4e-4))
    return out


def as_obj(s: Sample) -> dict[str, Any]:
    return {"time": s.time, "voltage_V": s.voltage_V, "current_A": s.current_A}


def messages(data: list[Sample], batch: int, prefix: str) -> list[tuple[str, bytes]]:
    by_cell: dict[str, list[Sample]] = {}
    for s in data:
        by_cell.setdefault(s.cell, []).append(s)
    out = []
    for cell, rows in by_cell.items():
        topic = f"{prefix}/{cell}/telemetry"
        for i in range(0, len(rows), batch):
            chunk = [as_obj(s) for s in rows[i : i + batch]]
            out.append((topic, json.dumps(chunk[0] if batch == 1 else chunk).encode()))
    return out


def publish(port: int, msgs: list[tuple[str, bytes]]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    acked: set[int] = set()
    client.on_publish = lambda _c, _u, mid, _rc, _p: acked.add(mid)
    client.connect("127.0.0.1", port)
    client.loop_start()
    mids = [client.publish(t, p, qos=1).mid for t, p in msgs]
    while not acked.issuperset(mids):
        time.sleep(0.01)
    client.disconnect()
    client.loop_stop()


def settings_for(work: Path, port: int, prefix: str, cells: int, protocol: str = "5") -> Settings:
    return parse_settings(
        {
            "daemon": {"station": "bench", "state_dir": str(work / prefix), "checkpoint_interval_s": 30},
            "cells": {f"C{c}": {"kind": "symmetric"} for c in range(cells)},
            "sources": [
                {
                    "type": "mqtt",
                    "port": port,
                    "topics": [prefix + "/{cell}/telemetry"],
                    "protocol": protocol,
                    "client_id": f"bench-{prefix}-{protocol}",  # one session per daemon
                }
            ],
        }
    )


async def drain_daemon(s: Settings, total: int) -> float:
    """Seconds from start to every sample committed."""
    t = time.perf_counter()
    async with Daemon(s) as d:
        while d.runner.pipeline.samples_accepted < total:
            await asyncio.sleep(0.005)
            if time.perf_counter() - t > 600:
                raise SystemExit(f"only {d.runner.pipeline.samples_accepted} of {total} samples arrived")
        await d.store.flush()
        dt = time.perf_counter() - t
        assert d.store.count("sample") == total
    return dt


async def make_session(s: Settings) -> None:
    """Start the daemon once, so the broker holds its persistent session and subscriptions."""
    async with Daemon(s) as d:
        await d.wait_up()
        await asyncio.sleep(0.2)


class ListSource:
    """The same samples handed to the runner in batches, without MQTT (the pipeline alone)."""

    name = "list"

    def __init__(self, data: list[Sample]):
        self.data = data

    async def run(self, emit: Any) -> None:
        for i in range(0, len(self.data), 5000):
            await emit(self.data[i : i + 5000])

    def checkpoint(self) -> dict[str, Any]:
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        pass


async def pipeline_alone(s: Settings, data: list[Sample]) -> float:
    from shortwatch.cli import _open_store

    store = _open_store(s)
    runner = Runner(s, [ListSource(data)], store, live=False, use_checkpoints=False)
    t = time.perf_counter()
    try:
        await runner.run()
        await store.flush()
        return time.perf_counter() - t
    finally:
        store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--single", type=int, default=20_000, help="samples sent one per message")
    ap.add_argument("--batch", type=int, default=50, help="samples per message in the batched run")
    ap.add_argument("--cells", type=int, default=8)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, Broker(Path(tmp) / "broker") as broker:
        work = Path(tmp)
        for label, n, batch in (("single", args.single, 1), (f"batch of {args.batch}", args.samples, args.batch)):
            prefix = f"b{batch}"
            data = samples(n, args.cells)
            msgs = messages(data, batch, prefix)
            daemons = {p: settings_for(work / p, broker.port, prefix, args.cells, p) for p in ("5", "3.1.1")}
            for s in daemons.values():  # every session subscribed before publishing: each gets the backlog
                asyncio.run(make_session(s))
            sub = ["mosquitto_sub", "-p", str(broker.port), "-q", "1", "-c", "-i", f"sub-{prefix}", "-t", f"{prefix}/#"]
            subprocess.run([*sub, "-E"], check=True)
            publish(broker.port, msgs)
            t = time.perf_counter()
            subprocess.run([*sub, "-C", str(len(msgs))], check=True, stdout=subprocess.DEVNULL)
            ceiling = len(data) / (time.perf_counter() - t)
            rates = {p: len(data) / asyncio.run(drain_daemon(s, len(data))) for p, s in daemons.items()}
            alone_s = settings_for(work / "alone", broker.port, prefix, args.cells)
            alone = len(data) / asyncio.run(pipeline_alone(alone_s, data))
            rows.append((label, len(data), len(msgs), ceiling, rates["5"], rates["3.1.1"], alone))
    print(f"{'payload':<13}{'samples':>8}{'messages':>9}{'mosquitto_sub/s':>16}{'MQTT 5/s':>10}{'ratio':>7}"
          f"{'MQTT 3.1.1/s':>13}{'ratio':>7}{'pipeline alone/s':>17}")  # fmt: skip
    for label, n, m, ceiling, v5, v3, alone in rows:
        print(
            f"{label:<13}{n:>8}{m:>9}{ceiling:>16,.0f}{v5:>10,.0f}{v5 / ceiling:>7.1%}{v3:>13,.0f}{v3 / ceiling:>7.1%}"
            f"{alone:>17,.0f}"
        )
    print("MQTT 5 / 3.1.1: the daemon's source -> parse -> validation -> detectors -> SQLite commit -> PUBACK, QoS 1,")
    print("draining the broker's backlog; mosquitto_sub: the same backlog to /dev/null (no parsing, no storage);")
    print("pipeline alone: the same samples handed to the runner without MQTT.")


if __name__ == "__main__":
    main()
