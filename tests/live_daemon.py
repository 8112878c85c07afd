"""The live runner in the test's event loop, with the real SQLite store (tests of live sources)."""

from __future__ import annotations

import asyncio
import time

from shortwatch.cli import _open_store, build_sources
from shortwatch.daemon.runner import Runner
from shortwatch.settings import Settings


class Daemon:
    """The runner in this event loop, with the real SQLite store."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.sources = build_sources(settings)
        self.store = _open_store(settings)
        self.runner = Runner(settings, self.sources, self.store, live=True, use_checkpoints=True)
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Daemon:
        self.task = asyncio.create_task(self.runner.run(self.stop))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 20)  # type: ignore[arg-type]
        await asyncio.sleep(0.2)  # the source's linger task sends the last acks
        self.store.close()

    async def wait_samples(self, n: int, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while self.store.count("sample") < n and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await self.store.flush()
        return self.store.count("sample")

    async def wait_up(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not self.sources[0].health.up:
            assert time.monotonic() < deadline, self.sources[0].health
            await asyncio.sleep(0.02)
