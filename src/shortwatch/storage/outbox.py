"""Readers of the durable log: each remote (the alerts JSONL file, InfluxDB, every notifier)
follows the store's tables through a cursor of its own (DESIGN "One durable log, many readers").

A reader is a :class:`LogConsumer`; a :class:`Pump` moves it along one table. The cursor moves
only after ``deliver`` returned, and it is stored in the same SQLite file, so a reader that is
down only falls behind and catches up in order when it is back, a kill -9 repeats at most the
rows that were being delivered, and nothing here ever waits on a remote while samples are
stored. One mechanism for every reader, rather than a queue per remote: the log is already
durable, ordered and on disk.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from typing import Any, Protocol, runtime_checkable

from shortwatch.aio import wait_event
from shortwatch.storage.sqlite import SqliteStore

log = logging.getLogger(__name__)

RETRY_FIRST_S = 1.0
RETRY_MAX_S = 300.0
IDLE_POLL_S = 1.0  # a reader looks again this often even without a commit signal
FAILURE_LOG_EVERY_S = 60.0


@runtime_checkable
class LogConsumer(Protocol):
    """What a reader of the log provides.

    ``deliver(rows)`` gets rows in log order (``SqliteStore.log_read`` dicts). Returning means
    acknowledged: the cursor moves past them, durably. Raising means not delivered: the same
    rows come again after a backoff, never skipped. Rows that can never be delivered (bad data)
    are the reader's to set aside (quarantine, dead-letter log) before it returns.

    Optional attributes: ``ephemeral = True`` (the cursor starts at the log's head and is never
    stored: replay's output), ``start_at_head = True`` (a reader seen for the first time starts
    at the head instead of sending the whole history: notifiers), and
    ``async resume(position, store) -> position`` (called once before the first read, to
    correct the stored position from the remote's own record, e.g. the JSONL file's last line).
    """

    name: str
    table: str
    batch_rows: int

    async def deliver(self, rows: list[dict[str, Any]]) -> None: ...


class Pump:
    """Moves one consumer along one log table."""

    def __init__(self, store: SqliteStore, consumer: LogConsumer):
        self.store = store
        self.consumer = consumer
        self.position = 0
        self.recorded = 0  # the position last stored in the cursor table
        self.wake = asyncio.Event()
        self.failures = 0
        self.last_error: str | None = None
        self.delivered = 0
        self.record_logged = -math.inf  # when a failure to record the position was last logged

    @property
    def persistent(self) -> bool:
        return not getattr(self.consumer, "ephemeral", False)

    async def run(self) -> None:
        """Deliver forever (until cancelled); call :meth:`start` first. Nothing ends it but a
        cancellation: a remote that fails, or a store that cannot be read or acknowledged for a
        while (locked, disk full), is retried with backoff; the rows stay in the log."""
        c = self.consumer
        delay = RETRY_FIRST_S
        last_logged = 0.0
        while True:
            self.wake.clear()  # before the read: a commit during it wakes the wait below at once
            try:
                rows = await asyncio.to_thread(self.store.log_read, c.table, self.position, c.batch_rows)
                if rows:
                    await c.deliver(rows)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                now = time.monotonic()
                if self.failures == 1 or now - last_logged > FAILURE_LOG_EVERY_S:
                    last_logged = now
                    log.error(
                        "%s: delivering %s rows failed (%d attempts so far): %s; retrying in %.0f s",
                        c.name,
                        c.table,
                        self.failures,
                        self.last_error,
                        delay,
                    )
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            if not rows:
                await self._record()  # a position whose recording failed is recorded when idle
                await wait_event(self.wake, IDLE_POLL_S)
                continue
            if self.failures:
                log.info("%s: delivering again after %d failed attempts", c.name, self.failures)
            self.failures = 0
            self.last_error = None
            delay = RETRY_FIRST_S
            self.position = rows[-1]["seq"]
            self.delivered += len(rows)
            await self._record()

    async def _record(self) -> None:
        """Store the position durably. A failure is not fatal: the rows were delivered, and
        the next attempt records this position or a later one (a crash before then repeats
        them, which at-least-once delivery allows)."""
        if not self.persistent or self.recorded >= self.position:
            return
        c = self.consumer
        try:
            await asyncio.to_thread(self.store.ack, c.name, c.table, self.position)
        except Exception as exc:
            self.last_error = f"delivered, but recording the position failed: {type(exc).__name__}: {exc}"
            now = time.monotonic()
            if now - self.record_logged > FAILURE_LOG_EVERY_S:
                self.record_logged = now
                log.warning("%s: recording position %d failed (%s); trying again", c.name, self.position, exc)
        else:
            self.recorded = self.position
            self.last_error = None

    async def start(self) -> None:
        """Find the position to deliver from."""
        c = self.consumer
        store = self.store
        if not self.persistent:
            self.position = await asyncio.to_thread(store.log_position, c.table)
        else:
            stored = await asyncio.to_thread(store.cursor, c.name, c.table)
            if stored is None:
                # first start: from the log's beginning, or its head for readers that must not
                # send history; stored at once, so a crash before the first ack keeps the start
                stored = 0
                if getattr(c, "start_at_head", False):
                    stored = await asyncio.to_thread(store.log_position, c.table)
                await asyncio.to_thread(store.ack, c.name, c.table, stored)
            self.position = stored
            resume = getattr(c, "resume", None)
            if resume is not None:
                self.position = await resume(self.position, store)
            self.recorded = self.position

    async def caught_up(self, target: int, timeout: float) -> bool:
        """Wait until the consumer has delivered everything up to ``target``, and its position
        is stored (bounded): a position whose recording failed would be delivered again by the
        next run, an alert notified twice."""
        deadline = time.monotonic() + timeout
        while self.position < target or (self.persistent and self.recorded < self.position):
            if time.monotonic() > deadline:
                return False
            if self.position < target:  # (a position not stored yet is retried at the reader's idle pass)
                self.wake.set()
            await asyncio.sleep(0.05)
        return True
