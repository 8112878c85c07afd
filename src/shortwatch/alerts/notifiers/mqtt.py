"""MQTT: every transition as JSON on ``{prefix}/alerts/{cell}/{detector}`` (QoS 1), and the
cell's status, retained, on ``{prefix}/status/{cell}``; alerts about a source or the daemon
use ``_station`` for {cell}. Lab automation (a script that pauses a cycler channel on a
critical alert) subscribes to these.

The status is the worst severity still firing per cell, as this notifier has published it;
it is kept in a small JSON file under state_dir so a restart goes on from it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import aiomqtt

from shortwatch.alerts.notifiers.base import SEVERITY_RANK, Message
from shortwatch.alerts.silences import Silences, parse_duration
from shortwatch.settings import MqttNotifier, resolve_secret
from shortwatch.state import read_json, write_json_atomic

STATION = "_station"
log = logging.getLogger(__name__)


def topic_cell(e: dict[str, Any]) -> str:
    return e["cell"] if e.get("cell") is not None else STATION


class Mqtt:
    def __init__(self, cfg: MqttNotifier, station: str, state_dir: Path):
        self.name = cfg.name
        self.cfg = cfg
        self.station = station
        self.password = resolve_secret(cfg.password_env, cfg.password_file)
        self.client_id = cfg.client_id or f"shortwatch-{station}-{cfg.name}"
        self.status_path = Path(state_dir) / f"mqtt-status-{cfg.name}.json"
        # cell -> detector -> severity now firing
        self.firing: dict[str, dict[str, str]] = (read_json(self.status_path) or {}).get("firing", {})

    def client(self, suffix: str = "") -> aiomqtt.Client:
        return aiomqtt.Client(
            self.cfg.host,
            self.cfg.port,
            username=self.cfg.username,
            password=self.password,
            identifier=self.client_id + suffix,
            timeout=self.cfg.timeout_s,
        )

    def status(self, cell: str, e: dict[str, Any]) -> dict[str, Any]:
        now = self.firing.get(cell, {})
        worst = max(now.values(), key=lambda s: SEVERITY_RANK.get(s, 0), default="ok")
        return {
            "cell": None if cell == STATION else cell,
            "station": self.station,
            "status": worst,
            "firing": dict(sorted(now.items())),
            "time": e["time"],
            "event_id": e.get("id"),
        }

    async def send(self, msg: Message) -> str:
        p = self.cfg.prefix
        changed: dict[str, dict[str, Any]] = {}
        if not msg.test:
            for e in msg.events:
                cell = topic_cell(e)
                if e["state"] == "firing":
                    self.firing.setdefault(cell, {})[e["detector"]] = e["severity"]
                else:
                    self.firing.get(cell, {}).pop(e["detector"], None)
                changed[cell] = e
        async with self.client() as client:
            for e in msg.events:
                doc = {**e, "test": True} if msg.test else e
                await client.publish(f"{p}/alerts/{topic_cell(e)}/{e['detector']}", json.dumps(doc), qos=1)
            for cell, e in changed.items():
                await client.publish(f"{p}/status/{cell}", json.dumps(self.status(cell, e)), qos=1, retain=True)
        self.firing = {c: d for c, d in self.firing.items() if d}
        write_json_atomic(self.status_path, {"firing": self.firing})
        return f"published {len(msg.events)} event(s) and {len(changed)} status(es) to {self.cfg.host}:{self.cfg.port}"

    async def listen(self, silences: Silences) -> None:
        """Take silence / ack commands from ``{prefix}/command`` (JSON: action silence | ack |
        expire, cell, detector, for, by, comment, id) and answer on ``{prefix}/command/result``.
        Runs until cancelled, reconnecting with backoff."""
        delay = 1.0
        topic = f"{self.cfg.prefix}/command"
        while True:
            try:
                async with self.client("-commands") as client:
                    await client.subscribe(topic, qos=1)
                    delay = 1.0
                    async for m in client.messages:
                        result = apply_command(silences, bytes(m.payload or b""))
                        await client.publish(f"{topic}/result", json.dumps(result), qos=1)
            except aiomqtt.MqttError as exc:
                log.warning("%s: command topic %s unavailable (%s); retrying in %.0f s", self.name, topic, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 300.0)

    async def aclose(self) -> None:
        return None


def apply_command(silences: Silences, payload: bytes) -> dict[str, Any]:
    """One command from the MQTT command topic; the answer to publish (never raises on bad input)."""
    try:
        cmd = json.loads(payload)
        if not isinstance(cmd, dict):
            raise ValueError("a command is a JSON object")
        action = cmd.get("action")
        if action == "expire":
            return {"ok": silences.expire(str(cmd["id"])), "action": action, "id": cmd["id"]}
        if action not in ("silence", "ack"):
            raise ValueError("action must be silence, ack or expire")
        if not cmd.get("cell") and not cmd.get("detector"):
            raise ValueError("give cell and/or detector (globs)")
        s = silences.add(
            action,
            parse_duration(str(cmd.get("for", "2h" if action == "silence" else "24h"))),
            str(cmd.get("cell") or "*"),
            str(cmd.get("detector") or "*"),
            str(cmd.get("by", "mqtt")),
            str(cmd.get("comment", "")),
        )
        return {"ok": True, "action": action, "id": s.id, "cell": s.cell, "detector": s.detector, "until": s.until}
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("bad MQTT command %r: %s", payload[:200], exc)
        return {"ok": False, "error": str(exc)}
