"""One reader of the alert log per notifier: routing, grouping, quiet hours, silences,
acknowledgements, reminders and inhibition, then the notifier's send.

Each ``NotifierConsumer`` is a LogConsumer (storage/outbox.py) on table "alert", named
"notify:<name>": the log is its queue, its cursor says what it has taken. Events it must
deliberately hold back (a warning waiting ``group_wait_s`` for others of its detector, quiet
hours, a silence) are kept in a small JSON state file under state_dir, written before the
cursor moves, together with the ids already sent and the critical episodes still firing (for
reminders). So a restart neither repeats nor loses a notification: only a crash between a send
and the write of its record can repeat that one message, with the same event ids.

A server that is down makes ``deliver`` raise: the pump retries with backoff and this
notifier falls behind alone; a background task sends held events when they fall due.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import random
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from shortwatch.alerts.notifiers.base import DeadLetters, Message, Notifier, PermanentError
from shortwatch.alerts.routing import routes
from shortwatch.alerts.silences import Silences
from shortwatch.model import iso_time
from shortwatch.settings import NotifierBase, Settings, parse_quiet_hours
from shortwatch.state import read_json, write_json_atomic
from shortwatch.storage.sqlite import alert_event

log = logging.getLogger(__name__)

SENT_IDS_KEPT = 5000  # ids of sent events remembered, to drop a row delivered twice
IMAGES_PER_MESSAGE = 6  # evidence plots attached to one message at most
RELEASE_POLL_S = 1.0
RETRY_FIRST_S, RETRY_MAX_S = 1.0, 300.0
#: Detectors whose alerts a firing source alert inhibits for the cells behind that source.
INHIBITED_BY_SOURCE = ("stale_data",)
SOURCE_DETECTORS = ("source_down",)


def quiet_until(quiet_hours: str | None, tz: str, now: float) -> float | None:
    """The end of the quiet period ``now`` falls in (wall time), None outside quiet hours."""
    if not quiet_hours:
        return None
    start, end = parse_quiet_hours(quiet_hours)
    local = datetime.fromtimestamp(now, ZoneInfo(tz))
    minute = local.hour * 60 + local.minute
    inside = start <= minute < end if start <= end else (minute >= start or minute < end)
    if not inside:
        return None
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    until = midnight + timedelta(minutes=end)
    if until <= local:
        until += timedelta(days=1)
    return until.timestamp()


class NotifierConsumer:
    """Reads the alert log for one notifier (LogConsumer protocol)."""

    table = "alert"
    batch_rows = 200
    start_at_head = True  # a notifier added to a running lab does not mail the whole history

    def __init__(
        self,
        cfg: NotifierBase | None,
        notifier: Notifier,
        settings: Settings,
        store: Any = None,
        *,
        live: bool = True,
        clock: Any = time.time,
    ):
        self.cfg = cfg
        self.notifier = notifier
        self.name = f"notify:{notifier.name}"
        self.settings = settings
        self.store = store
        self.live = live
        self.clock = clock
        state_dir = settings.daemon.state_dir
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in notifier.name)
        self.state_path = Path(state_dir) / "notify" / f"{safe}.json"
        self.dead = DeadLetters(state_dir, notifier.name)
        self.silences = Silences(state_dir)
        st = read_json(self.state_path) or {}
        self.held: list[dict[str, Any]] = st.get("held", [])  # {"event", "due", "why"}
        self.sent: dict[str, float] = st.get("sent", {})  # event id -> wall time sent
        # episode -> {"event": last event sent, "at": wall time, "silenced": bool}: what is firing
        self.episodes: dict[str, dict[str, Any]] = st.get("episodes", {})
        # source -> cells behind it, while its source alert fires (inhibition)
        self.sources_down: dict[str, list[str]] = st.get("sources_down", {})
        self.inhibited: list[str] = st.get("inhibited", [])  # episodes held back by a source alert
        self.lock = asyncio.Lock()
        self._releaser: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ the LogConsumer side

    async def resume(self, position: int, store: Any) -> int:
        """Called once by the pump before the first read: start the task that sends held
        events when they fall due (and reminders)."""
        self.store = self.store or store
        if self._releaser is None:
            self._releaser = asyncio.create_task(self._release_loop(), name=f"release:{self.name}")
        listen = getattr(self.notifier, "listen", None)
        if self.live and listen is not None and getattr(self.cfg, "commands", False) and self._listener is None:
            self._listener = asyncio.create_task(listen(self.silences), name=f"commands:{self.name}")
        return position

    async def deliver(self, rows: list[dict[str, Any]]) -> None:
        async with self.lock:
            now = self.clock()
            known = set(self.sent) | {h["event"]["id"] for h in self.held}
            # episodes this notifier has told about (or will): their later events always follow,
            # so a critical-only channel hears that its critical eased or resolved
            told = set(self.episodes) | {h["event"]["episode"] for h in self.held}
            added = False
            for row in rows:
                e = alert_event(row)
                if e.get("id") in known or not (self.cfg is None or routes(self.cfg, e) or e["episode"] in told):
                    continue
                self.held.append({"event": e, "due": self._due(e, now), "why": "new"})
                known.add(e["id"])
                told.add(e["episode"])
                added = True
            if added:
                await asyncio.to_thread(self._save)
            await self._send_due(now)

    def _due(self, e: dict[str, Any], now: float) -> float:
        """When a new event may go out: criticals at once; warnings after the group window
        (counted from the first of their detector still waiting) and after quiet hours."""
        if e["severity"] == "critical" or not self.live:
            return now
        first = min(
            (h["due"] for h in self.held if h["event"]["detector"] == e["detector"] and h["why"] == "new"),
            default=None,
        )
        due = first if first is not None else now + self.settings.alerts.group_wait_s
        quiet = quiet_until(self.settings.alerts.quiet_hours, self.settings.daemon.timezone, now)
        return max(due, quiet or 0.0)

    # ------------------------------------------------------------ sending

    async def _send_due(self, now: float) -> None:
        """Send every held event that is due, grouped; raise when a server failed (the events
        stay held: the pump or the release task tries again)."""
        due = [
            h
            for h in self.held
            if h["due"] <= now or (h["why"] == "silence" and self.silences.silenced_until(h["event"], now) is None)
        ]  # a silence ended early (`silence --expire`) releases what it held
        if not due:
            return
        ready: list[dict[str, Any]] = []
        for h in due:
            until = self.silences.silenced_until(h["event"], now)
            if until is not None:
                h["due"], h["why"] = until, "silence"  # held back until the silence expires
            else:
                ready.append(h)
        ready = self._collapse_silenced(ready)
        for group in self._messages([h["event"] for h in ready]):
            await self._send(group, now)
        await asyncio.to_thread(self._save)

    def _collapse_silenced(self, ready: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """After a silence: only the latest event of each episode, and a resolve only when its
        firing had gone out before the silence (otherwise there is nothing to take back)."""
        released = [h for h in ready if h["why"] == "silence"]
        if not released:
            return ready
        latest: dict[str, dict[str, Any]] = {}
        for h in released:
            latest[h["event"]["episode"]] = h
        out = [h for h in ready if h["why"] != "silence"]
        for ep, h in latest.items():
            if h["event"]["state"] == "resolved" and ep not in self.episodes:
                self._forget([x for x in released if x["event"]["episode"] == ep], "silenced; resolved meanwhile")
                continue
            out.append(h)
            self._forget([x for x in released if x["event"]["episode"] == ep and x is not h], "superseded")
        return out

    def _forget(self, held: list[dict[str, Any]], why: str) -> None:
        ids = {h["event"]["id"] for h in held}
        now = self.clock()
        for i in ids:
            self.sent[i] = now
        self.held = [h for h in self.held if h["event"]["id"] not in ids]
        if ids:
            log.info("%s: not sending %d held event(s): %s", self.name, len(ids), why)

    def _messages(self, events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        """Criticals one per message; other events one message per detector. Stale-data alerts
        of cells behind a source that is down are dropped (the source alert names them)."""
        for e in events:
            if e["detector"] in SOURCE_DETECTORS and e.get("source"):
                cells = list((e.get("evidence") or {}).get("cells") or [])
                if e["state"] == "firing":
                    self.sources_down[e["source"]] = cells
                else:
                    self.sources_down.pop(e["source"], None)
        behind = {c for cells in self.sources_down.values() for c in cells}
        kept: list[dict[str, Any]] = []
        for e in events:
            inhibited = e["detector"] in INHIBITED_BY_SOURCE and (
                e.get("cell") in behind or e["episode"] in self.inhibited
            )
            if inhibited:
                if e["state"] == "firing" and e["episode"] not in self.inhibited:
                    self.inhibited.append(e["episode"])
                elif e["state"] == "resolved" and e["episode"] in self.inhibited:
                    self.inhibited.remove(e["episode"])
                self._forget([h for h in self.held if h["event"]["id"] == e["id"]], "inhibited by a source alert")
                continue
            kept.append(e)
        groups: dict[str, list[dict[str, Any]]] = {}
        out: list[list[dict[str, Any]]] = []
        for e in kept:
            if e["severity"] == "critical":
                out.append([e])
            else:
                groups.setdefault(e["detector"], []).append(e)
        return out + list(groups.values())

    async def _send(self, events: list[dict[str, Any]], now: float, reminder: bool = False) -> None:
        msg = Message(events=[self._named(e) for e in events], owners=self._owners(events))
        if getattr(self.notifier, "wants_images", False) and self.store is not None:
            msg.images = await self._images(events)
        try:
            answer = await self.notifier.send(msg)
            level = logging.DEBUG if self.cfg is None else logging.INFO  # the console's lines say it all
            log.log(level, "%s: sent %d event(s): %s", self.name, len(events), answer)
        except PermanentError as exc:
            log.error("%s: gave up on %d event(s), see %s: %s", self.name, len(events), self.dead.path, exc)
            await asyncio.to_thread(self.dead.add, events, str(exc))
        ids = {e["id"] for e in events}
        for e in events:
            self.sent[e["id"]] = now
            if e["state"] == "firing":
                self.episodes[e["episode"]] = {"event": e, "at": now}
            else:
                self.episodes.pop(e["episode"], None)
        if not reminder:
            self.held = [h for h in self.held if h["event"]["id"] not in ids]
        await asyncio.to_thread(self._save)

    def _named(self, e: dict[str, Any]) -> dict[str, Any]:
        """A source alert names the cells whose stale-data alerts it holds back."""
        cells = self.sources_down.get(e.get("source") or "") if e["detector"] in SOURCE_DETECTORS else None
        if not cells or e["state"] != "firing":
            return e
        e = copy.deepcopy(e)
        e["summary"] += f" (stale-data alerts of the cells behind it held back: {', '.join(map(str, cells))})"
        return e

    def _owners(self, events: list[dict[str, Any]]) -> list[str]:
        owners: list[str] = []
        for e in events:
            if e.get("cell") is not None:
                owners += [o for o in self.settings.cell_spec(e["cell"]).owners if o not in owners]
        return owners

    async def _images(self, events: list[dict[str, Any]]) -> dict[str, bytes]:
        from shortwatch.report import evidence_png

        out: dict[str, bytes] = {}
        for e in [e for e in events if e.get("cell") is not None][:IMAGES_PER_MESSAGE]:
            try:  # matplotlib and SQLite off the event loop
                out[e["id"]] = await asyncio.to_thread(evidence_png, self.store, e)
            except Exception:  # a plot that cannot be drawn must not keep the alert from going out
                log.exception("%s: no evidence plot for %s", self.name, e["episode"])
        return out

    # ------------------------------------------------------------ reminders and the release task

    async def _remind(self, now: float) -> None:
        """A reminder for every critical still firing that was last sent repeat_critical_s ago,
        unless acknowledged or silenced: the same episode, a new id, ``reminder: true``."""
        every = self.settings.alerts.repeat_critical_s
        if not every or not self.live:
            return
        for ep, info in list(self.episodes.items()):
            e = info["event"]
            if e["severity"] != "critical" or now - info["at"] < every:
                continue
            if self.silences.acked(e, now) or self.silences.silenced_until(e, now) is not None:
                continue
            since = e["episode"].rsplit("/", 1)[-1]
            r = e | {
                "id": str(uuid.uuid4()),
                "reminder": True,
                "time": iso_time(now),
                "summary": f"Still firing since {since}: {e['summary']}",
            }
            await self._send([r], now, reminder=True)
            self.episodes[ep]["event"] = e  # the next reminder repeats the original, not this copy

    async def _release_loop(self) -> None:
        delay = RETRY_FIRST_S
        while True:
            await asyncio.sleep(RELEASE_POLL_S)
            try:
                async with self.lock:
                    now = self.clock()
                    await self._send_due(now)
                    await self._remind(now)
                delay = RETRY_FIRST_S
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("%s: sending held alerts failed: %s; retrying in %.0f s", self.name, exc, delay)
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, RETRY_MAX_S)

    def close(self) -> None:
        for task in (self._releaser, self._listener):
            if task is not None:
                task.cancel()
        self._releaser = self._listener = None

    def _save(self) -> None:
        if len(self.sent) > SENT_IDS_KEPT:
            self.sent = dict(sorted(self.sent.items(), key=lambda kv: kv[1])[-SENT_IDS_KEPT:])
        write_json_atomic(
            self.state_path,
            {
                "held": self.held,
                "sent": self.sent,
                "episodes": self.episodes,
                "sources_down": self.sources_down,
                "inhibited": self.inhibited,
            },
        )


def build_consumers(settings: Settings, store: Any, *, live: bool, console: bool) -> list[NotifierConsumer]:
    """A reader of the alert log for every configured notifier (and the console in `run`)."""
    from shortwatch.alerts.notifiers import build_notifier
    from shortwatch.alerts.notifiers.console import Console

    out = []
    for cfg in settings.alerts.notifiers:
        n = build_notifier(cfg, settings.daemon.station, settings.daemon.state_dir)
        out.append(NotifierConsumer(cfg, n, settings, store, live=live))
    if console and settings.alerts.console:
        out.append(NotifierConsumer(None, Console(), settings, store, live=False))
    return out
