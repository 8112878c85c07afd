"""The asyncio lifecycle around the pipeline: sources -> bounded queue -> pipeline -> storage
-> the log's readers.

Live and replay share this code path; replay is file sources with no pacing and no
follow. Backpressure: the queue is bounded, so a slow store makes sources wait rather than
memory grow. Checkpoints are written only after the store has committed everything that
went before, so a kill -9 resumes at a consistent point (re-read samples are ignored by
the store's primary key, and the alert manager never re-sends a transition). Remotes (the
alerts JSONL file, InfluxDB, notifiers) read the committed log through cursors of their own
(storage/outbox.py), so none of them can hold up ingestion.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from shortwatch.alerts.sources import SourceAlerts
from shortwatch.daemon.pipeline import Pipeline
from shortwatch.detectors.registry import DETECTORS
from shortwatch.model import RecordBatch, Rejected, Sample
from shortwatch.settings import Settings
from shortwatch.state import read_json, write_json_atomic
from shortwatch.storage.outbox import LogConsumer, Pump
from shortwatch.storage.sqlite import SqliteStore, StoreClosedError

log = logging.getLogger(__name__)

#: emit(items, origin=None, on_commit=None): ``origin`` names the stream within a source (e.g.
#: the file path), which is the unit in which samples must arrive in time order (default: the
#: source's name); ``on_commit()`` is called in the event loop once the items are committed to
#: the store (at once after processing when there is no store): acknowledge them upstream then.
Emit = Callable[..., Awaitable[None]]
CHECKPOINT_VERSION = 2  # 2: validator order state per cell (V/I) and per stream (auxiliary)
TICK_S = 5.0  # live mode: how often wall-clock checks (stale data) run
DRAIN_S = 30.0  # at the end of a run, how long the log's readers get to catch up
RETENTION_EVERY_S = 3600.0  # live mode: how often old rows that every reader passed are removed


class Source(Protocol):
    """What the runner needs of a source (simulator, file, ...)."""

    name: str

    async def run(self, emit: Emit) -> None: ...

    def checkpoint(self) -> dict[str, Any]: ...

    def restore(self, state: dict[str, Any]) -> None: ...


class Runner:
    def __init__(
        self,
        settings: Settings,
        sources: list[Source],
        store: SqliteStore | None,
        *,
        live: bool,
        use_checkpoints: bool,
        consumers: list[LogConsumer] | None = None,
        drain_s: float = DRAIN_S,
    ):
        self.settings = settings
        self.sources = sources
        self.store = store
        self.live = live
        self.use_checkpoints = use_checkpoints
        self.consumers = list(consumers or [])
        self.drain_s = drain_s
        self.pipeline = Pipeline(settings, live=live)
        self.source_alerts = SourceAlerts(settings.daemon.source_down_after_s)
        # sources that report their own health (MQTT, serial): their cells are noted for source_down
        self._health = {s.name: s.health for s in sources if getattr(s, "health", None) is not None}
        self.queue: asyncio.Queue[QueueItem] = asyncio.Queue(maxsize=settings.daemon.queue_batches)
        self.pumps: list[Pump] = []
        self.pending_after_drain: dict[str, int] = {}  # reader -> rows it had not delivered at the end
        self.store_failed: str | None = None  # why the store could not be flushed at the end
        self._on_commit: collections.deque[tuple[int, Callable[[], None]]] = collections.deque()
        self._unwritten: list[tuple[RecordBatch, Callable[[], None] | None]] = []
        self.source_states: dict[str, dict[str, Any]] = {}
        self.items_in = 0
        # per source, for health: items received, wall time of the last batch, why it stopped
        self.source_items: dict[str, int] = {}
        self.source_last_data: dict[str, float] = {}
        self.source_problems: dict[str, str] = {}
        self.started = time.monotonic()
        self._last_checkpoint = time.monotonic()

    @property
    def checkpoint_path(self):
        return self.settings.daemon.state_dir / "checkpoint.json"

    def restore(self) -> RecordBatch:
        """Resume from the last checkpoint, and the alert log written after it; returns the
        resolutions of alerts whose detector the config no longer runs for their cell."""
        data = read_json(self.checkpoint_path)
        if data and data.get("version") == CHECKPOINT_VERSION:
            self.pipeline.load(data.get("pipeline", {}))
            self.source_states = data.get("sources", {})
            for src in self.sources:
                if src.name in self.source_states:
                    src.restore(self.source_states[src.name])
            log.info("resumed from checkpoint of %s", data.get("written"))
        if self.store is not None:
            logged = self.store.read_alerts()
            self.pipeline.alerts.replay_log(logged)
            self.source_alerts.replay_log(logged)
        out = RecordBatch()
        watched = {c: set() if m.relearning else set(m.detectors) for c, m in self.pipeline.monitors.items()}
        self.pipeline.alerts.resolve_orphans(watched, {n: d.kind for n, d in DETECTORS.items()}, out)
        return out

    async def write_checkpoint(self) -> None:
        """Record the consistent point: what sources handed over, all of it committed."""
        if self.store is not None:
            await self.store.flush()
        data = {
            "version": CHECKPOINT_VERSION,
            "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "sources": self.source_states,
            "pipeline": self.pipeline.state(),
        }
        await asyncio.to_thread(write_json_atomic, self.checkpoint_path, data)
        self._last_checkpoint = time.monotonic()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Run until every source has ended (replay) or ``stop`` is set (live); then let the
        log's readers catch up (bounded by ``drain_s``)."""
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()

        def listener(batch_seq: int) -> None:  # the store's writer thread, after each commit
            loop.call_soon_threadsafe(self._committed, batch_seq)

        if self.store is not None:
            self.store.add_commit_listener(listener)
            self.pumps = [Pump(self.store, c) for c in self.consumers]
        readers: list[asyncio.Task[None]] = []
        try:
            for pump in self.pumps:  # each knows where it starts before this run logs anything
                await pump.start()
            readers = [asyncio.create_task(p.run(), name=f"reader:{p.consumer.name}") for p in self.pumps]
            if self.live and self.store is not None and self.settings.storage.retention_days:
                readers.append(asyncio.create_task(self._retention(), name="retention"))
            await self._run(stop)
            await self._drain()
        finally:
            for t in readers:
                t.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            if self.store is not None:
                self.store.remove_commit_listener(listener)

    async def _retention(self) -> None:
        """Keep the local disk bounded: hourly, remove rows past ``storage.retention_days`` that
        every reader has acknowledged."""
        days = self.settings.storage.retention_days
        while True:
            try:
                readers = {p.consumer.name for p in self.pumps if p.persistent}
                deleted = await asyncio.to_thread(
                    self.store.enforce_retention,
                    days,
                    None,
                    readers,  # type: ignore[union-attr]
                )
                if any(deleted.values()):
                    log.info("retention (%g days): removed %s", days, {t: n for t, n in deleted.items() if n})
            except Exception:
                log.exception("retention failed; trying again in %.0f s", RETENTION_EVERY_S)
            await asyncio.sleep(RETENTION_EVERY_S)

    def _committed(self, batch_seq: int) -> None:
        """A commit landed: wake the readers, acknowledge what sources handed over."""
        for pump in self.pumps:
            pump.wake.set()
        while self._on_commit and self._on_commit[0][0] <= batch_seq:
            _, callback = self._on_commit.popleft()
            _call_safely(callback)

    async def _drain(self) -> None:
        """Give every reader a bounded time to deliver what is in the log now."""
        if not self.pumps or self.store_failed:
            return
        deadline = time.monotonic() + self.drain_s
        for pump in self.pumps:
            table = pump.consumer.table
            head = await asyncio.to_thread(self.store.log_position, table)  # type: ignore[union-attr]
            if not await pump.caught_up(head, max(0.0, deadline - time.monotonic())):
                pending, _ = await asyncio.to_thread(
                    self.store.log_backlog,
                    table,
                    pump.consumer.name,  # type: ignore[union-attr]
                )
                self.pending_after_drain[pump.consumer.name] = pending if pump.persistent else head - pump.position
                log.warning(
                    "%s: %d %s rows not delivered, or not recorded as delivered (%s); they stay in the log for the "
                    "next run",
                    pump.consumer.name,
                    self.pending_after_drain[pump.consumer.name],
                    table,
                    pump.last_error or "still sending",
                )

    async def _run(self, stop: asyncio.Event) -> None:
        if self.use_checkpoints:
            await self._deliver(self.restore())
        tasks = [asyncio.create_task(self._run_source(src), name=f"source:{src.name}") for src in self.sources]
        sources_done = asyncio.gather(*tasks, return_exceptions=True)
        stopper = asyncio.create_task(stop.wait())
        interval = self.settings.daemon.checkpoint_interval_s
        wait_s = min(interval, TICK_S) if self.live else interval
        last_tick = time.monotonic()
        try:
            while not stop.is_set():
                if not self.queue.empty():
                    # a store that cannot take the batch (disk full) must not keep a stop waiting
                    await _first(self._consume(*self.queue.get_nowait()), stopper)
                elif sources_done.done():
                    break
                else:
                    getter = asyncio.ensure_future(self.queue.get())
                    await asyncio.wait(
                        [getter, sources_done, stopper], timeout=wait_s, return_when=asyncio.FIRST_COMPLETED
                    )
                    if not getter.done():
                        getter.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await getter
                    elif not getter.cancelled():
                        await _first(self._consume(*getter.result()), stopper)
                if self.live and time.monotonic() - last_tick > TICK_S:
                    last_tick = time.monotonic()
                    out = RecordBatch()
                    self.pipeline.tick(time.time(), out)
                    out.alerts += self.source_alerts.check(time.time(), self._health)
                    await _first(self._deliver(out), stopper)
                # a store that cannot write (disk full) must not keep a stop request waiting
                checkpoint_due = self.use_checkpoints and time.monotonic() - self._last_checkpoint > interval
                if checkpoint_due and await _first(self._flush(), stopper):
                    await self.write_checkpoint()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            stopper.cancel()
            await self._shut_down()
        for t, r in zip(tasks, sources_done.result() if sources_done.done() else [], strict=False):
            if isinstance(r, Exception) and not isinstance(r, asyncio.CancelledError):
                log.error("source %s failed: %s", t.get_name(), r)

    async def _shut_down(self) -> None:
        """Process what sources handed over, then commit and checkpoint, all within
        ``daemon.shutdown_timeout_s``: a store that cannot write (a full disk) gets that long, then the run
        ends with ``store_failed`` set and the checkpoint left at the last committed point, so a
        restart reads again what was not stored."""

        async def finish() -> None:
            while self._unwritten:  # a batch whose write a stop request interrupted goes first
                await self._deliver(*self._unwritten.pop(0))
            while not self.queue.empty():  # what sources handed over is never dropped
                await self._consume(*self.queue.get_nowait())
            if not self.live:
                out = RecordBatch()
                self.pipeline.finish(out)
                await self._deliver(out)
            await self._flush()

        timeout = self.settings.daemon.shutdown_timeout_s
        try:
            async with asyncio.timeout(timeout):  # not wait_for: see shortwatch.aio
                await finish()
        except (TimeoutError, StoreClosedError) as exc:
            self.store_failed = (
                f"the store {getattr(self.store, 'path', '')} could not be written within {timeout:.0f} s "
                f"({self.store.stats['last_error'] if self.store is not None else exc})"
            )
            log.error("%s; the checkpoint stays at the last committed point", self.store_failed)
            if self.store is not None:  # give up: its writer stops retrying, and threads waiting on it return
                with contextlib.suppress(StoreClosedError):
                    await asyncio.to_thread(self.store.close, 5.0)
            return
        if self.use_checkpoints:
            await self.write_checkpoint()

    async def _flush(self) -> None:
        if self.store is not None:
            await self.store.flush()

    async def _run_source(self, src: Source) -> None:
        async def emit(
            items: list[Sample | Rejected], origin: str | None = None, on_commit: Callable[[], None] | None = None
        ) -> None:
            # the source's position is captured with its batch, so a checkpoint records
            # exactly what has been processed
            await self.queue.put((src.name, origin or src.name, items, src.checkpoint(), on_commit))
            self.source_items[src.name] = self.source_items.get(src.name, 0) + len(items)
            self.source_last_data[src.name] = time.time()

        try:
            await src.run(emit)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("source %s stopped with an error", src.name)
            self.source_problems[src.name] = f"stopped: {type(exc).__name__}: {exc}"
            raise
        if self.live:  # a live daemon's sources run until it stops
            self.source_problems[src.name] = "ended: it delivers no more data"

    async def _consume(
        self,
        name: str,
        origin: str,
        items: list[Sample | Rejected],
        src_state: dict[str, Any],
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        out = RecordBatch()
        self.pipeline.process(items, origin, out)
        self.items_in += len(items)
        self.source_states[name] = src_state
        if name in self._health:
            self.source_alerts.seen(name, {i.cell for i in items if type(i) is Sample})
        await self._deliver(out, on_commit)

    async def _deliver(self, out: RecordBatch, on_commit: Callable[[], None] | None = None) -> None:
        if self.store is None:
            await self._deliver_unstored(out)
            if on_commit is not None:
                _call_safely(on_commit)
            return
        try:
            batch_seq = await self.store.write(out)
        except asyncio.CancelledError:
            self._unwritten.append((out, on_commit))  # processed, not yet stored: never dropped
            raise
        if on_commit is not None:
            if self.store.committed >= batch_seq:
                _call_safely(on_commit)
            else:
                self._on_commit.append((batch_seq, on_commit))

    async def _deliver_unstored(self, out: RecordBatch) -> None:
        """Without a store there is no log: alert readers get the events directly (replay
        --no-store), with no durability to offer."""
        if not out.alerts:
            return
        station = self.settings.daemon.station
        rows = [e.to_json_dict(station) | {"time_s": e.time, "seq": 0} for e in out.alerts]
        for c in self.consumers:
            if c.table == "alert":
                try:
                    await c.deliver(rows)
                except Exception:
                    log.exception("%s: delivering %d alert(s) failed", c.name, len(rows))


QueueItem = tuple[str, str, list[Sample | Rejected], dict[str, Any], Callable[[], None] | None]


def _call_safely(callback: Callable[[], None]) -> None:
    try:
        callback()
    except Exception:  # an upstream acknowledgement failing must not stop the pipeline
        log.exception("commit callback failed")


async def _first(work: Awaitable[None], stopper: asyncio.Task[Any]) -> bool:
    """Await ``work`` unless ``stopper`` finishes first (then cancel it): True when it finished."""
    task = asyncio.ensure_future(work)
    await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return False
