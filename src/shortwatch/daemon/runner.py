"""The asyncio lifecycle around the pipeline: sources -> bounded queue -> pipeline -> storage.

Live and replay share this code path; replay is file sources with no pacing and no
follow. Backpressure: the queue is bounded, so a slow store makes sources wait rather than
memory grow. Checkpoints are written only after the store has committed everything that
went before, so a kill -9 resumes at a consistent point (re-read samples are ignored by
the store's primary key, and the alert manager never re-sends a transition).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from shortwatch.daemon.pipeline import Pipeline
from shortwatch.detectors.registry import DETECTORS
from shortwatch.model import AlertEvent, RecordBatch, Rejected, Sample
from shortwatch.settings import Settings
from shortwatch.state import read_json, write_json_atomic
from shortwatch.storage.sqlite import SqliteStore

log = logging.getLogger(__name__)

#: emit(items, origin): ``origin`` names the stream within a source (e.g. the file path), which
#: is the unit in which samples must arrive in time order; default: the source's name
Emit = Callable[..., Awaitable[None]]
CHECKPOINT_VERSION = 2  # 2: validator order state per cell (V/I) and per stream (auxiliary)
TICK_S = 5.0  # live mode: how often wall-clock checks (stale data) run
ALERT_DRAIN_S = 30.0  # at the end of a run, how long to wait for queued alerts to go out


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
        on_alerts: Callable[[list[AlertEvent]], None] | None = None,
    ):
        self.settings = settings
        self.sources = sources
        self.store = store
        self.live = live
        self.use_checkpoints = use_checkpoints
        self.on_alerts = on_alerts
        self.pipeline = Pipeline(settings, live=live)
        self.queue: asyncio.Queue[tuple[str, str, list[Sample | Rejected], dict[str, Any]]] = asyncio.Queue(
            maxsize=settings.daemon.queue_batches
        )
        self._alert_queue: asyncio.Queue[list[AlertEvent]] = asyncio.Queue()
        self.source_states: dict[str, dict[str, Any]] = {}
        self.items_in = 0
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
            self.pipeline.alerts.replay_log(self.store.read_alerts())
        out = RecordBatch()
        watched = {c: set() if m.relearning else set(m.detectors) for c, m in self.pipeline.monitors.items()}
        self.pipeline.alerts.resolve_orphans(watched, {n: d.kind for n, d in DETECTORS.items()}, out)
        return out

    async def write_checkpoint(self) -> None:
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
        """Run until every source has ended (replay) or ``stop`` is set (live)."""
        stop = stop or asyncio.Event()
        courier = asyncio.create_task(self._alert_courier(), name="alerts")
        try:
            await self._run(stop)
        finally:
            # alerts already committed are sent before the run ends, even when it ends badly
            # (they are in the alert log, so a restart would count them as sent)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._alert_queue.join(), timeout=ALERT_DRAIN_S)
            courier.cancel()

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
                    await self._consume(*self.queue.get_nowait())
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
                        await self._consume(*getter.result())
                if self.live and time.monotonic() - last_tick > TICK_S:
                    last_tick = time.monotonic()
                    out = RecordBatch()
                    self.pipeline.tick(time.time(), out)
                    await self._deliver(out)
                if self.use_checkpoints and time.monotonic() - self._last_checkpoint > interval:
                    await self.write_checkpoint()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            stopper.cancel()
            while not self.queue.empty():  # what sources handed over is never dropped
                await self._consume(*self.queue.get_nowait())
            if not self.live:
                out = RecordBatch()
                self.pipeline.finish(out)
                await self._deliver(out)
            if self.use_checkpoints:
                await self.write_checkpoint()
            elif self.store is not None:
                await self.store.flush()
        for t, r in zip(tasks, sources_done.result() if sources_done.done() else [], strict=False):
            if isinstance(r, Exception) and not isinstance(r, asyncio.CancelledError):
                log.error("source %s failed: %s", t.get_name(), r)

    async def _run_source(self, src: Source) -> None:
        async def emit(items: list[Sample | Rejected], origin: str | None = None) -> None:
            # the source's position is captured with its batch, so a checkpoint records
            # exactly what has been processed
            await self.queue.put((src.name, origin or src.name, items, src.checkpoint()))

        try:
            await src.run(emit)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("source %s stopped with an error", src.name)
            raise

    async def _consume(self, name: str, origin: str, items: list[Sample | Rejected], src_state: dict[str, Any]) -> None:
        out = RecordBatch()
        self.pipeline.process(items, origin, out)
        self.items_in += len(items)
        self.source_states[name] = src_state
        await self._deliver(out)

    async def _deliver(self, out: RecordBatch) -> None:
        if self.store is not None and len(out):
            await self.store.write(out)
        if out.alerts and self.on_alerts is not None:
            self._alert_queue.put_nowait(out.alerts)

    async def _alert_courier(self) -> None:
        """Send alerts in order, each once the store has committed it: after a kill -9 the
        stored alert log is what tells the restarted daemon which transitions went out. It
        runs beside the pipeline, so waiting for a commit does not stall the samples."""
        while True:
            events = await self._alert_queue.get()
            try:
                if self.store is not None:
                    await self.store.flush()
                self.on_alerts(events)  # type: ignore[misc]
            except Exception:  # a failing notifier must not stop the next alerts
                log.exception("delivering %d alert(s) failed", len(events))
            finally:
                self._alert_queue.task_done()
