"""Prometheus Alertmanager: POST /api/v2/alerts, for labs that already route alerts that way.

Labels: alertname (the detector), cell ("_station" for alerts about a source or the daemon),
detector, severity, station, kind, and source when set. Alertmanager forgets an alert
that is not re-posted within its resolve_timeout unless it carries an end time, and
shortwatch posts each transition once: a firing alert is posted with an end time
FIRING_HOLD_S ahead (a reminder or the resolve moves it), a resolve with its own time.
Severity is a label, so an escalation is a different Alertmanager alert: posting a
firing severity also ends the same alert at the other severities.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from shortwatch.alerts.notifiers.base import SEVERITY_RANK, Message, http_failure
from shortwatch.settings import AlertmanagerNotifier

FIRING_HOLD_S = 7 * 86400.0


def labels(e: dict[str, Any], severity: str | None = None) -> dict[str, str]:
    out = {
        "alertname": e["detector"],
        "cell": e["cell"] if e.get("cell") is not None else "_station",
        "detector": e["detector"],
        "severity": severity or e["severity"],
        "station": str(e.get("station", "")),
        "kind": e.get("kind", "cell"),
    }
    if e.get("source"):
        out["source"] = e["source"]
    return out


def postable(e: dict[str, Any], test: bool = False) -> list[dict[str, Any]]:
    """The Alertmanager alerts for one event (firing: also ends the other severities)."""
    t = datetime.fromisoformat(e["time"])
    try:  # the episode ends with the time of its first firing
        start = datetime.fromisoformat(str(e.get("episode", "")).rsplit("/", 1)[-1])
    except ValueError:
        start = t
    annotations = {
        "summary": e["summary"],
        "advice": e.get("advice", ""),
        "evidence": json.dumps(e.get("evidence", {})),
        "episode": str(e.get("episode", "")),
        "event_id": str(e.get("id", "")),
    }
    if test:
        annotations["test"] = "shortwatch alerts test: not a real alert"
    if e["state"] == "resolved":
        return [{"labels": labels(e), "annotations": annotations, "startsAt": _iso(start), "endsAt": _iso(t)}]
    out = [
        {
            "labels": labels(e),
            "annotations": annotations,
            "startsAt": _iso(start),
            "endsAt": _iso(max(t, datetime.now(UTC)) + timedelta(seconds=FIRING_HOLD_S)),
        }
    ]
    for other in SEVERITY_RANK:
        if other != e["severity"]:
            out.append({"labels": labels(e, other), "startsAt": _iso(start), "endsAt": _iso(t)})
    return out


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Alertmanager:
    def __init__(self, cfg: AlertmanagerNotifier):
        self.name = cfg.name
        self.url = cfg.url.rstrip("/") + "/api/v2/alerts"
        self.timeout = aiohttp.ClientTimeout(total=cfg.timeout_s)

    async def send(self, msg: Message) -> str:
        alerts = [a for e in msg.events for a in postable(e, msg.test)]
        # a session per message: alerts are rare, and nothing is left open when the daemon stops
        async with aiohttp.ClientSession(timeout=self.timeout) as session, session.post(self.url, json=alerts) as resp:
            text = await resp.text(errors="replace")
            if not 200 <= resp.status < 300:
                raise http_failure(resp.status, text)
            return f"HTTP {resp.status} ({len(alerts)} alerts posted)"

    async def aclose(self) -> None:
        return None
