"""Notifiers as readers of the alert log (a real store, the real pump, a real HTTP receiver):
a storm goes out as one message, a critical never waits, a server that is down delays
nothing else and is caught up, a silence holds an alert back until it expires, a restart
neither repeats nor loses, reminders, quiet hours, inhibition by a source alert."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import pytest

import alert_servers
from shortwatch.alerts.notifiers.webhook import Webhook
from shortwatch.alerts.notify import NotifierConsumer, quiet_until
from shortwatch.alerts.silences import Silences, parse_duration
from shortwatch.model import AlertEvent, RecordBatch
from shortwatch.settings import parse_settings
from shortwatch.storage.outbox import Pump
from shortwatch.storage.sqlite import SqliteStore

http_recorder = alert_servers.http_recorder  # a local HTTP server that records the requests

T0 = 1_767_600_000.0


def settings(tmp_path: Path, url: str, **alerts: Any):
    cfg = {"type": "webhook", "url": url, "name": "hook", "min_severity": "info"}
    return parse_settings(
        {
            "daemon": {"station": "lab", "state_dir": str(tmp_path / "state")},
            "alerts": {"group_wait_s": 1.0, **alerts, "notifiers": [cfg]},
        }
    )


def stale(cell: str, state: str = "firing", t: float = T0, severity: str = "warning") -> AlertEvent:
    return AlertEvent(
        time=t,
        cell=cell,
        detector="stale_data",
        kind="data",
        severity=severity,  # type: ignore[arg-type]
        state=state,  # type: ignore[arg-type]
        summary=f"No data from {cell}",
        episode=f"{cell}/stale_data/x",
    )


class Reader:
    """A NotifierConsumer driven by the real pump, as the runner drives it."""

    def __init__(self, store: SqliteStore, s, **kw: Any):
        self.consumer = NotifierConsumer(s.alerts.notifiers[0], Webhook(s.alerts.notifiers[0]), s, store, **kw)
        self.pump = Pump(store, self.consumer)
        self.task: asyncio.Task | None = None

    async def __aenter__(self) -> Reader:
        await self.pump.start()
        self.task = asyncio.create_task(self.pump.run())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.consumer.close()


def bodies(rec) -> list[Any]:
    return [json.loads(r.body) for r in rec.requests]


@pytest.fixture
def store(tmp_path: Path):
    with SqliteStore(tmp_path / "state" / "shortwatch.sqlite") as s:
        yield s


async def test_a_storm_of_twenty_stale_cells_is_one_message_and_a_critical_never_waits(tmp_path, store, http_recorder):
    s = settings(tmp_path, f"{http_recorder.url}/hook", group_wait_s=1.5)
    async with Reader(store, s):
        await store.write(RecordBatch(alerts=[stale(f"C{i:02d}") for i in range(10)]))
        await store.flush()
        await asyncio.sleep(0.3)
        crit = AlertEvent(T0, "X1", "hard_short", "cell", "critical", "firing", "Hard short")
        await store.write(RecordBatch(alerts=[crit, *[stale(f"C{i:02d}") for i in range(10, 20)]]))
        await store.flush()
        await http_recorder.wait_for(1, timeout=1.0)  # the critical, before the group window closes
        assert bodies(http_recorder)[0]["detector"] == "hard_short"
        await http_recorder.wait_for(2, timeout=5)
        await asyncio.sleep(0.5)
    assert len(http_recorder.requests) == 2
    group = bodies(http_recorder)[1]["alerts"]
    assert sorted(e["cell"] for e in group) == [f"C{i:02d}" for i in range(20)]


async def test_a_server_that_is_down_delays_nothing_else_and_is_caught_up(tmp_path, store, http_recorder):
    s_up = settings(tmp_path / "up", f"{http_recorder.url}/up", group_wait_s=0)
    down = alert_servers.HttpRecorder()  # not started yet: nothing listens on its port
    s_down = settings(tmp_path / "down", f"{down.url}/down", group_wait_s=0)
    async with Reader(store, s_up), Reader(store, s_down) as r_down:
        await store.write(RecordBatch(alerts=[AlertEvent(T0, "A1", "hard_short", "cell", "critical", "firing", "x")]))
        await store.flush()
        await http_recorder.wait_for(1, timeout=3)  # the other notifier is not held up
        await asyncio.sleep(1.5)
        assert r_down.pump.failures >= 1 and r_down.pump.position == 0  # its cursor did not move
        await down.start()
        try:
            await down.wait_for(1, timeout=10)  # retried with backoff, delivered once it is back
            await asyncio.sleep(0.3)
        finally:
            await down.stop()
    assert len(down.requests) == 1 and json.loads(down.requests[0].body)["cell"] == "A1"
    assert len(http_recorder.requests) == 1


async def test_a_silence_holds_an_alert_back_until_it_expires(tmp_path, store, http_recorder):
    s = settings(tmp_path, f"{http_recorder.url}/hook", group_wait_s=0)
    Silences(s.daemon.state_dir).add("silence", 2.0, cell="A*", detector="hard_short", by="test")
    async with Reader(store, s):
        events = [
            AlertEvent(T0, "A1", "hard_short", "cell", "critical", "firing", "silenced"),
            AlertEvent(T0, "B1", "hard_short", "cell", "critical", "firing", "not silenced"),
        ]
        await store.write(RecordBatch(alerts=events))
        await store.flush()
        await http_recorder.wait_for(1, timeout=3)
        await asyncio.sleep(0.8)
        assert [b["cell"] for b in bodies(http_recorder)] == ["B1"]  # A1 held back
        await http_recorder.wait_for(2, timeout=5)  # the silence expired: A1 goes out
    assert [b["cell"] for b in bodies(http_recorder)] == ["B1", "A1"]


async def test_a_restart_neither_repeats_nor_loses(tmp_path, store, http_recorder):
    s = settings(tmp_path, f"{http_recorder.url}/hook", group_wait_s=0)
    fire = AlertEvent(T0, "A1", "hard_short", "cell", "critical", "firing", "fired")
    async with Reader(store, s):
        await store.write(RecordBatch(alerts=[fire]))
        await store.flush()
        await http_recorder.wait_for(1)
        await asyncio.sleep(0.3)  # the send recorded (a stop during a send may repeat that one message)
    # the cursor is back before the row (as after a kill -9 between the send and the ack):
    # the notifier's own record of sent ids keeps it from sending again
    store.ack("notify:hook", "alert", 0)
    async with Reader(store, s):
        await asyncio.sleep(1.0)
        assert len(http_recorder.requests) == 1, [(r.body, r.headers) for r in http_recorder.requests]
        await store.write(
            RecordBatch(
                alerts=[
                    AlertEvent(
                        T0 + 60, "A1", "hard_short", "cell", "critical", "resolved", "recovered", episode=fire.episode
                    )
                ]
            )
        )
        await store.flush()
        await http_recorder.wait_for(2)
    first, second = bodies(http_recorder)
    assert (first["state"], second["state"]) == ("firing", "resolved")
    assert first["episode"] == second["episode"] and first["id"] != second["id"]


async def test_reminders_repeat_a_firing_critical_unless_acknowledged(tmp_path, store, http_recorder):
    s = settings(tmp_path, f"{http_recorder.url}/hook", group_wait_s=0, repeat_critical_s=1.0)
    async with Reader(store, s):
        fire = AlertEvent(T0, "A1", "hard_short", "cell", "critical", "firing", "fired")
        await store.write(RecordBatch(alerts=[fire]))
        await store.flush()
        await http_recorder.wait_for(2, timeout=6)
        reminder = bodies(http_recorder)[1]
        assert reminder["reminder"] is True and reminder["episode"] == fire.episode and reminder["id"] != fire.id
        Silences(s.daemon.state_dir).add("ack", 60, cell="A1")
        n = len(http_recorder.requests)
        await asyncio.sleep(2.5)
        assert len(http_recorder.requests) == n  # acknowledged: no more reminders


async def test_a_source_alert_holds_back_the_stale_alerts_behind_it_and_names_them(tmp_path, store, http_recorder):
    s = settings(tmp_path, f"{http_recorder.url}/hook", group_wait_s=0.5)
    down = AlertEvent(
        T0,
        None,
        "source_down",
        "data",
        "warning",
        "firing",
        "MQTT broker unreachable",
        evidence={"cells": ["A1", "A2"]},
        source="mqtt-0",
    )
    async with Reader(store, s):
        await store.write(RecordBatch(alerts=[down, stale("A1"), stale("A2"), stale("B9")]))
        await store.flush()
        await http_recorder.wait_for(2, timeout=5)
        await asyncio.sleep(0.5)
    msgs = bodies(http_recorder)
    source = next(m for m in msgs if m.get("detector") == "source_down")
    assert "A1, A2" in source["summary"] and source["cell"] is None and source["source"] == "mqtt-0"
    stale_msgs = [m for m in msgs if m.get("detector") == "stale_data"]
    assert [m["cell"] for m in stale_msgs] == ["B9"]  # not behind the source: sent


def test_quiet_hours_wrap_midnight() -> None:
    # 23:30 UTC is inside 22:00-07:00; the quiet period ends at 07:00 the next morning
    t = 1_767_655_800.0  # 2026-01-05T23:30:00Z
    assert quiet_until("22:00-07:00", "UTC", t) == t + 7.5 * 3600
    assert quiet_until("22:00-07:00", "UTC", t - 12 * 3600) is None
    assert quiet_until("01:00-02:00", "Europe/Berlin", t + 3600) == t + 1.5 * 3600  # 01:30 CET, until 02:00


async def test_quiet_hours_hold_warnings_never_criticals(tmp_path, store, http_recorder):
    s = settings(tmp_path, f"{http_recorder.url}/hook", group_wait_s=0, quiet_hours="00:00-23:59")
    async with Reader(store, s) as r:
        await store.write(
            RecordBatch(alerts=[stale("A1"), AlertEvent(T0, "A2", "hard_short", "cell", "critical", "firing", "x")])
        )
        await store.flush()
        await http_recorder.wait_for(1)
        await asyncio.sleep(1.0)
        assert [b["cell"] for b in bodies(http_recorder)] == ["A2"]
        assert [h["event"]["cell"] for h in r.consumer.held] == ["A1"]
    # held across a restart: persisted under state_dir
    again = NotifierConsumer(s.alerts.notifiers[0], Webhook(s.alerts.notifiers[0]), s, store)
    assert [h["event"]["cell"] for h in again.held] == ["A1"]


def test_durations() -> None:
    assert parse_duration("90") == 90 and parse_duration("15m") == 900 and parse_duration("2h") == 7200
    with pytest.raises(ValueError, match="duration"):
        parse_duration("soon")


async def test_a_silence_ended_early_releases_what_it_held(tmp_path, store, http_recorder):
    s = settings(tmp_path, f"{http_recorder.url}/hook", group_wait_s=0)
    silences = Silences(s.daemon.state_dir)
    sid = silences.add("silence", 3600, cell="A1").id
    async with Reader(store, s):
        await store.write(RecordBatch(alerts=[AlertEvent(T0, "A1", "hard_short", "cell", "critical", "firing", "x")]))
        await store.flush()
        await asyncio.sleep(1.2)
        assert http_recorder.requests == []
        assert silences.expire(sid)
        await http_recorder.wait_for(1, timeout=5)
    assert bodies(http_recorder)[0]["cell"] == "A1"


async def test_a_critical_only_channel_hears_how_its_critical_ends(tmp_path, store, http_recorder):
    s = settings(tmp_path, f"{http_recorder.url}/hook", group_wait_s=0)
    s.alerts.notifiers[0].min_severity = "critical"
    crit = AlertEvent(T0, "A1", "overpotential_drop", "cell", "critical", "firing", "critical")
    eased = AlertEvent(T0 + 60, "A1", "overpotential_drop", "cell", "warning", "firing", "eased", episode=crit.episode)
    gone = AlertEvent(T0 + 120, "A1", "overpotential_drop", "cell", "warning", "resolved", "ok", episode=crit.episode)
    other = AlertEvent(T0, "B1", "overpotential_drop", "cell", "warning", "firing", "a warning elsewhere")
    async with Reader(store, s):
        await store.write(RecordBatch(alerts=[crit, other, eased, gone]))
        await store.flush()
        await http_recorder.wait_for(2, timeout=5)
        await asyncio.sleep(0.5)
    got = [e for b in bodies(http_recorder) for e in b.get("alerts", [b])]
    assert [(e["cell"], e["summary"]) for e in got] == [("A1", "critical"), ("A1", "eased"), ("A1", "ok")]


async def test_what_a_server_refuses_for_good_goes_to_the_dead_letter_log(tmp_path, store, http_recorder):
    s = settings(tmp_path, f"{http_recorder.url}/hook", group_wait_s=0)
    http_recorder.status, http_recorder.reply = 400, "bad request"
    async with Reader(store, s) as r:
        first = AlertEvent(T0, "A1", "hard_short", "cell", "critical", "firing", "refused")
        await store.write(RecordBatch(alerts=[first]))
        await store.flush()
        await http_recorder.wait_for(1)
        await asyncio.sleep(0.3)
        http_recorder.status = 200
        await store.write(RecordBatch(alerts=[AlertEvent(T0, "A2", "hard_short", "cell", "critical", "firing", "ok")]))
        await store.flush()
        await http_recorder.wait_for(2)  # the next one is not stuck behind the refused one
        await asyncio.sleep(0.3)
    (dead,) = r.consumer.dead.read()
    assert dead["event"]["id"] == first.id and "HTTP 400" in dead["reason"]
    assert len(http_recorder.requests) == 2  # the refused one was not retried
