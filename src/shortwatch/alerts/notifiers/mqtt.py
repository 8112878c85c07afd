"""MQTT: every transition as JSON on ``{prefix}/alerts/{cell}/{detector}`` (QoS 1), and the
cell's status, retained, on ``{prefix}/status/{cell}``; alerts about a source or the daemon
use ``_station`` for {cell}. Lab automation (a script that pauses a cycler channel on a
critical alert) subscribes to these.

The status is the worst severity still firing per cell, as this notifier has published it;
it is kept in a small JSON file under state_dir so a restart goes on from it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiomqtt

from shortwatch.alerts.notifiers.base import SEVERITY_RANK, Message
from shortwatch.settings import MqttNotifier, resolve_secret
from shortwatch.state import read_json, write_json_atomic

STATION = "_station"


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

    async def aclose(self) -> None:
        return None
