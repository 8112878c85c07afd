"""MQTT ingest: sustained samples/s from a real mosquitto into the pipeline and the SQLite store.

For single-sample and batched JSON payloads, the same messages are queued at a real broker
for two persistent QoS 1 sessions (a stopped consumer's backlog, so publishing speed is out
of the figure), then drained:
- by `mosquitto_sub` alone (C, prints the payloads to a pipe): the ceiling;
- by the daemon's MQTT source -> validation -> CellMonitors -> SQLite commit -> PUBACK.
It prints samples/s of each and their ratio, and three references for where the time goes:
- source alone: the daemon's MQTT source (receive, parse, map fields, PUBACK) handing its
  samples to a consumer that acknowledges at once (no pipeline, no store);
- pipeline alone: the same samples handed to the runner in batches of 5000 without MQTT
  (validation -> segmentation -> features -> detectors -> SQLite commit);
- SQLite alone: the same samples written to the store in batches of 5000 (no detectors), the
  floor that a store of every sample sets.

    python bench/mqtt_ingest.py [--samples 400000] [--batch 50] [--cells 8]
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
from shortwatch.model import RecordBatch, Sample
from shortwatch.sensors.mqtt import MqttSourceRunner
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


def settings_for(work: Path, port: int, prefix: str, cells: int, protocol: str = "5", session: str = "") -> Settings:
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
                    "client_id": f"bench-{prefix}-{protocol}{session}",  # one session per consumer
                }
            ],
        }
    )


async def drain_daemon(s: Settings, total: int) -> float:
    """Sustained samples/s of the whole daemon: from its first committed batch to every sample
    committed (connecting and the settling after a connect are start-up, not throughput)."""
    t = time.perf_counter()
    first: tuple[float, int] | None = None
    async with Daemon(s) as d:
        while (n := d.runner.pipeline.samples_accepted) < total:
            if first is None and n:
                first = (time.perf_counter(), n)
            await asyncio.sleep(0.002)
            if time.perf_counter() - t > 600:
                raise SystemExit(f"only {n} of {total} samples arrived")
        await d.store.flush()
        assert first is not None, "every sample came in one batch: raise --samples"
        rate = (total - first[1]) / (time.perf_counter() - first[0])
        assert d.store.count("sample") == total
    return rate


async def drain_source(s: Settings, total: int) -> float:
    """Sustained samples/s of the MQTT source alone, handing its samples to a consumer that
    acknowledges at once: from its first hand-over to the last."""
    got = 0
    first: tuple[float, int] | None = None
    done = asyncio.Event()

    async def emit(items: list[Any], origin: str | None = None, on_commit: Any = None) -> None:
        nonlocal got, first
        got += sum(type(x) is Sample for x in items)
        if first is None:
            first = (time.perf_counter(), got)
        if on_commit is not None:
            on_commit()
        if got >= total:
            done.set()

    source = MqttSourceRunner(s.sources[0], station=s.daemon.station, name="bench")
    task = asyncio.create_task(source.run(emit))
    try:
        await asyncio.wait_for(done.wait(), 600)  # a one-shot wait, not in a loop
        assert first is not None and first[1] < total, "every sample came in one batch: raise --samples"
        return (total - first[1]) / (time.perf_counter() - first[0])
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def drain_mosquitto_sub(cmd: list[str], total: int, messages: int) -> float:
    """Sustained samples/s of ``mosquitto_sub`` writing the payloads to a pipe: from its first
    byte to its end (its start-up and connect are left out, as for the daemon)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.read(1)
    t = time.perf_counter()
    while proc.stdout.read(1 << 20):
        pass
    dt = time.perf_counter() - t
    assert proc.wait() == 0
    return total * (1 - 1 / messages) / dt


async def sqlite_alone(s: Settings, data: list[Sample]) -> float:
    from shortwatch.cli import _open_store

    store = _open_store(s)
    t = time.perf_counter()
    try:
        for i in range(0, len(data), 5000):
            await store.write(RecordBatch(samples=data[i : i + 5000]))
        await store.flush()
        return time.perf_counter() - t
    finally:
        store.close()


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
    ap.add_argument("--samples", type=int, default=400_000)
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
            daemons["src"] = settings_for(work / "src", broker.port, prefix, args.cells, session="-source")
            for s in daemons.values():  # every session subscribed before publishing: each gets the backlog
                asyncio.run(make_session(s))
            sub = ["mosquitto_sub", "-p", str(broker.port), "-q", "1", "-c", "-i", f"sub-{prefix}", "-t", f"{prefix}/#"]
            subprocess.run([*sub, "-E"], check=True)
            publish(broker.port, msgs)
            ceiling = drain_mosquitto_sub([*sub, "-C", str(len(msgs))], len(data), len(msgs))
            rates = {p: asyncio.run(drain_daemon(s, len(data))) for p, s in daemons.items() if p != "src"}
            source = asyncio.run(drain_source(daemons["src"], len(data)))
            alone_s = settings_for(work / "alone", broker.port, prefix, args.cells)
            alone = len(data) / asyncio.run(pipeline_alone(alone_s, data))
            store_s = settings_for(work / "store", broker.port, prefix, args.cells)
            store = len(data) / asyncio.run(sqlite_alone(store_s, data))
            rows.append((label, len(data), len(msgs), ceiling, rates["5"], rates["3.1.1"], source, alone, store))
    print(f"{'payload':<13}{'samples':>8}{'messages':>9}{'mosquitto_sub/s':>16}{'MQTT 5/s':>10}{'ratio':>7}"
          f"{'MQTT 3.1.1/s':>13}{'ratio':>7}{'source alone/s':>15}{'ratio':>7}{'pipeline alone/s':>17}"
          f"{'SQLite alone/s':>15}{'ratio':>7}")  # fmt: skip
    for label, n, m, ceiling, v5, v3, source, alone, store in rows:
        print(
            f"{label:<13}{n:>8}{m:>9}{ceiling:>16,.0f}{v5:>10,.0f}{v5 / ceiling:>7.1%}{v3:>13,.0f}{v3 / ceiling:>7.1%}"
            f"{source:>15,.0f}{source / ceiling:>7.1%}{alone:>17,.0f}{store:>15,.0f}{store / ceiling:>7.1%}"
        )
    print("MQTT 5 / 3.1.1: the daemon's source -> parse -> validation -> detectors -> SQLite commit -> PUBACK, QoS 1,")
    print("draining the broker's backlog; mosquitto_sub: the same backlog to a pipe (no parsing, no storage);")
    print("source alone: the MQTT source to a consumer that acknowledges at once; pipeline alone: the same")
    print("samples handed to the runner without MQTT; SQLite alone: the same samples written to the store.")


if __name__ == "__main__":
    main()
