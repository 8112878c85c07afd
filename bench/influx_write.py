"""InfluxDB write throughput: the sink through its durable cursor vs a plain client loop.

Starts a real influxd 1.6 (as the tests do) in a temp dir, stores N simulated samples in a
SQLite log, then, in the same run:

* **cursor**: the sink's reader ``influx:sample`` pumped along the log (storage/outbox.Pump):
  read committed rows, encode, send (v1 API, gzip, batches of ``batch_rows``), ack the cursor;
* **plain loop**: the same rows read from the same log, turned into point dicts and written
  with the ``influxdb`` (v1) client library's ``write_points`` (same batch size, gzip, us),
  with no cursor and no acknowledgement: the reference a user would write by hand.

Each writes into its own database; both counts are checked. Prints points/s of each and the
ratio.

    python bench/influx_write.py [--cells 8] [--hours 48] [--batch-rows 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from influx_servers import Influxd
from shortwatch.model import RecordBatch
from shortwatch.sensors.simulator import SimulatedCell, default_spec
from shortwatch.settings import parse_settings
from shortwatch.storage.influx import InfluxSink
from shortwatch.storage.influx_line import timestamp
from shortwatch.storage.outbox import Pump
from shortwatch.storage.sqlite import SqliteStore

START = 1_767_600_000.0
SCENARIOS = ["sym_healthy", "sym_contact", "sym_temperature", "full_healthy"]
FIELDS = ("voltage_V", "current_A", "pressure_MPa", "temperature_C", "cycle", "step")


def fill_store(store: SqliteStore, cells: int, hours: float) -> int:
    n = 0
    for c in range(cells):
        scenario = SCENARIOS[c % len(SCENARIOS)]
        sim = SimulatedCell(f"C{c}", scenario, default_spec(scenario), seed=c, start=START, duration_h=hours)
        batch: list = []
        for s in sim.samples():
            batch.append(s)
            if len(batch) == 20_000:
                store.write_sync(RecordBatch(samples=batch))
                n += len(batch)
                batch = []
        if batch:
            store.write_sync(RecordBatch(samples=batch))
            n += len(batch)
    return n


async def through_cursor(store: SqliteStore, url: str, batch_rows: int, db: str) -> float:
    storage = parse_settings(
        {"storage": {"backend": "influxdb", "api": "v1", "url": url, "database": db, "batch_rows": batch_rows}}
    ).storage
    sink = InfluxSink(storage, "bench", store, tables=("sample",))
    sink.readers[0].name = f"influx:{db}"  # a fresh cursor each round
    pump = Pump(store, sink.readers[0])
    head = store.log_position("sample")
    t0 = time.perf_counter()
    await pump.start()
    task = asyncio.create_task(pump.run())
    try:
        if not await pump.caught_up(head, timeout=3600):
            raise RuntimeError("the cursor did not catch up")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    dt = time.perf_counter() - t0
    await sink.close()
    return dt


def plain_loop(store: SqliteStore, url: str, batch_rows: int, db: str) -> float:
    from influxdb import InfluxDBClient

    host, port = url.removeprefix("http://").split(":")
    client = InfluxDBClient(host=host, port=int(port), database=db, gzip=True)
    t0 = time.perf_counter()
    after = 0
    while rows := store.log_read("sample", after, batch_rows):
        points = []
        for r in rows:
            fields = {k: r[k] for k in FIELDS if r[k] is not None}
            if fields:
                points.append(
                    {
                        "measurement": "sample",
                        "tags": {"cell": r["cell"], "station": r["station"]},
                        "fields": fields,
                        "time": timestamp(r["time"], "us"),
                    }
                )
        client.write_points(points, time_precision="u", batch_size=batch_rows)
        after = rows[-1]["seq"]
    dt = time.perf_counter() - t0
    client.close()
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=8)
    ap.add_argument("--hours", type=float, default=48.0)
    ap.add_argument("--batch-rows", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds, each into fresh databases; best kept")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = Influxd(Path(tmp) / "influxd").start()
        t_cursor = t_plain = float("inf")
        try:
            store = SqliteStore(Path(tmp) / "log.sqlite", station="bench").open()
            try:
                n = fill_store(store, args.cells, args.hours)
                print(f"{n} samples of {args.cells} cells in the log; influxd 1.6 on {server.url}")
                for r in range(args.rounds):  # alternate who goes first: shard creation, caches
                    server.query(f"CREATE DATABASE cursor{r}")
                    server.query(f"CREATE DATABASE plain{r}")
                    runs = [
                        lambda r=r: asyncio.run(through_cursor(store, server.url, args.batch_rows, f"cursor{r}")),
                        lambda r=r: plain_loop(store, server.url, args.batch_rows, f"plain{r}"),
                    ]
                    if r % 2:
                        runs.reverse()
                    times = [run() for run in runs]
                    tc, tp = times if r % 2 == 0 else times[::-1]
                    t_cursor, t_plain = min(t_cursor, tc), min(t_plain, tp)
                    got = (
                        server.count(f"cursor{r}", "sample", "voltage_V"),
                        server.count(f"plain{r}", "sample", "voltage_V"),
                    )
                    if got != (n, n):
                        raise SystemExit(f"point counts differ: cursor {got[0]}, plain {got[1]}, expected {n}")
            finally:
                store.close()
        finally:
            server.stop()
    cursor_rate, plain_rate = n / t_cursor, n / t_plain
    print(f"through the cursor (read, encode, send, ack): {cursor_rate:10,.0f} points/s ({t_cursor:.1f} s)")
    print(f"plain loop, influxdb client write_points:     {plain_rate:10,.0f} points/s ({t_plain:.1f} s)")
    print(f"ratio cursor / plain: {cursor_rate / plain_rate:.2f}")


if __name__ == "__main__":
    main()
