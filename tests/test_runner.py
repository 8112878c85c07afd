"""The runner's delivery guarantee: an alert goes out only after the store committed it."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from shortwatch.daemon.runner import Runner
from shortwatch.model import AlertEvent, Sample
from shortwatch.settings import parse_settings
from shortwatch.storage.sqlite import SqliteStore

T0 = 1_767_600_000.0


class ListSource:
    """A source that hands over fixed batches (the runner's real Source contract)."""

    name = "list"

    def __init__(self, batches: list[list[Sample]]):
        self.batches = batches
        self.sent = 0

    async def run(self, emit) -> None:
        for batch in self.batches:
            self.sent += 1
            await emit(batch)

    def checkpoint(self) -> dict:
        return {"sent": self.sent}

    def restore(self, state: dict) -> None:
        self.sent = state["sent"]


async def test_alerts_wait_for_the_commit(tmp_path: Path) -> None:
    settings = parse_settings({"daemon": {"state_dir": str(tmp_path)}, "cells": {"A": {"kind": "symmetric"}}})
    store = SqliteStore(settings.store_path)
    store.open()
    sent: list[AlertEvent] = []
    pressures = [5.0] * 5 + [0.2] * 10  # a pressure excursion: one pressure_window alert
    source = ListSource([[Sample(T0 + 10 * k, "A", 0.01, 0.0, p) for k, p in enumerate(pressures)]])
    runner = Runner(settings, [source], store, live=False, use_checkpoints=False, on_alerts=sent.extend)
    blocker = sqlite3.connect(settings.store_path, timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holds the database
    try:
        task = asyncio.create_task(runner.run())
        await asyncio.sleep(1.0)
        assert not sent, "an alert went out before it was stored"
        assert not task.done()
    finally:
        blocker.rollback()
        blocker.close()
    await asyncio.wait_for(task, 30)
    assert [a.detector for a in sent] == ["pressure_window"]
    assert [a["detector"] for a in store.read_alerts("A")] == ["pressure_window"]
    store.close()
