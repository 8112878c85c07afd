"""How many messages reach people, and how fast a critical does, through the real notifier path
(store -> pump -> NotifierConsumer -> webhook -> a local HTTP receiver).

    python bench/alert_noise.py

Scenarios, each against its reference measured in the same run (one message per event, the
way a notifier without grouping or timing behaves):
- storm: 20 cells of one station go stale together;
- flapping: a statistic hovering at its threshold for 10 h (20 flaps), through the alert state
  machine with keep_firing_s / hysteresis, against the machine with them off;
- critical latency: from the store's commit of a critical to the receiver's request (median
  of 20), while warnings wait in a group window.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.alert_servers import HttpRecorder

from shortwatch.alerts.manager import AlertManager
from shortwatch.alerts.notifiers.webhook import Webhook
from shortwatch.alerts.notify import NotifierConsumer
from shortwatch.detectors.base import Verdict
from shortwatch.model import AlertEvent, RecordBatch
from shortwatch.settings import parse_settings
from shortwatch.storage.outbox import Pump
from shortwatch.storage.sqlite import SqliteStore

T0 = 1_767_600_000.0


async def messages_for(events: list[AlertEvent], group_wait_s: float, settle_s: float) -> tuple[int, float]:
    """(requests the receiver got, seconds until the last) for events committed in one batch."""
    rec = HttpRecorder()
    await rec.start()
    with tempfile.TemporaryDirectory() as tmp:
        s = parse_settings(
            {
                "daemon": {"state_dir": tmp},
                "alerts": {"group_wait_s": group_wait_s, "notifiers": [{"type": "webhook", "url": rec.url}]},
            }
        )
        with SqliteStore(Path(tmp) / "s.sqlite") as store:
            c = NotifierConsumer(s.alerts.notifiers[0], Webhook(s.alerts.notifiers[0]), s, store)
            pump = Pump(store, c)
            loop = asyncio.get_running_loop()
            store.add_commit_listener(lambda seq: loop.call_soon_threadsafe(pump.wake.set))  # as the runner does
            await pump.start()
            task = asyncio.create_task(pump.run())
            t0 = time.perf_counter()
            await store.write(RecordBatch(alerts=events))
            await store.flush()
            while time.perf_counter() - t0 < settle_s and not rec.requests:
                await asyncio.sleep(0.01)
            took = time.perf_counter() - t0
            await asyncio.sleep(1.0 if rec.requests else 0.0)  # anything else still on its way
            task.cancel()
            c.close()
    await rec.stop()
    return len(rec.requests), took


def stale(cell: str) -> AlertEvent:
    return AlertEvent(T0, cell, "stale_data", "data", "warning", "firing", f"No data from {cell}")


async def critical_latency(n: int = 20) -> list[float]:
    rec = HttpRecorder()
    await rec.start()
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        s = parse_settings(
            {
                "daemon": {"state_dir": tmp},
                "alerts": {"group_wait_s": 30, "notifiers": [{"type": "webhook", "url": rec.url}]},
            }
        )
        with SqliteStore(Path(tmp) / "s.sqlite") as store:
            c = NotifierConsumer(s.alerts.notifiers[0], Webhook(s.alerts.notifiers[0]), s, store)
            pump = Pump(store, c)
            loop = asyncio.get_running_loop()
            store.add_commit_listener(lambda seq: loop.call_soon_threadsafe(pump.wake.set))  # as the runner does
            await pump.start()
            task = asyncio.create_task(pump.run())
            for k in range(n):
                crit = AlertEvent(T0 + k, f"C{k}", "hard_short", "cell", "critical", "firing", "short")
                t0 = time.perf_counter()
                await store.write(RecordBatch(alerts=[crit, stale(f"W{k}")]))
                await store.flush()
                await rec.wait_for(k + 1, timeout=30)
                out.append(time.perf_counter() - t0)
            task.cancel()
            c.close()
    await rec.stop()
    return out


def flapping(**timing: float) -> int:
    am = AlertManager(parse_settings({"alerts": timing}).alerts)
    out = RecordBatch()
    t = T0
    for _ in range(20):
        for state, stat in (("warning", 0.42), ("ok", 0.38)):
            am.handle("A1", {"overpotential_drop": "cell"}, [("overpotential_drop", Verdict(t, state, stat, 0.4))], out)
            if t >= am.wake.get("A1", float("inf")):
                am.advance("A1", t, out)
            t += 900
    return len(out.alerts)


async def main() -> None:
    events = [stale(f"S{i:02d}") for i in range(20)]
    # reference: a notifier without grouping; measured through the same path, one event per batch
    ref = 0
    for e in events:
        n, _ = await messages_for([e], group_wait_s=0, settle_s=10)
        ref += n
    grouped, took = await messages_for(events, group_wait_s=2, settle_s=15)
    print(
        f"storm (20 cells stale): {grouped} message(s) vs {ref} without grouping (ratio {grouped / ref:.2f}); "
        f"the first out {took:.1f} s after the commit (group_wait_s = 2)"
    )
    off, on_h, on_k = flapping(), flapping(hysteresis=0.2), flapping(keep_firing_s=1800)
    print(
        f"flapping (20 flaps in 10 h): {on_h} transition(s) with hysteresis 0.2, {on_k} with keep_firing_s 1800, "
        f"vs {off} with neither"
    )
    lat = await critical_latency()
    print(
        f"critical, commit -> webhook request while warnings wait 30 s: median {1e3 * statistics.median(lat):.0f} ms, "
        f"max {1e3 * max(lat):.0f} ms (n={len(lat)})"
    )


if __name__ == "__main__":
    asyncio.run(main())
