"""`source_down`: a data alert about a source (a broker, a serial port) rather than a cell.

A source reports its own health (sensors/health.py); one that stays down for
``daemon.source_down_after_s`` of wall time raises a warning naming the cells last seen
through it, so the notifiers can hold back those cells' stale-data alerts (inhibition) and
say why in one message. It resolves, in the same episode, when the source is back. Wall
time, like stale_data: it is about the instrument chain, not the cells' data.
"""

from __future__ import annotations

from typing import Any

from shortwatch.model import AlertEvent, episode_id

DETECTOR = "source_down"
ADVICE = (
    "Check the link to the instrument: the broker or gateway (MQTT), the USB-serial adapter and its "
    "cable (serial). Data the cells produce meanwhile is lost unless the instrument buffers it."
)


class SourceAlerts:
    """Per source: firing or not, from its health; rebuilt from the stored alert log at start."""

    def __init__(self, after_s: float):
        self.after_s = after_s
        self.firing: dict[str, AlertEvent] = {}  # source -> its firing event
        self.cells: dict[str, set[str]] = {}  # source -> cells seen through it

    def seen(self, source: str, cells: set[str]) -> None:
        known = self.cells.setdefault(source, set())
        if not cells <= known:
            known |= cells

    def replay_log(self, events: list[dict[str, Any]]) -> None:
        """The state before a restart: the last source_down transition of each source."""
        for e in events:
            if e.get("detector") != DETECTOR or not e.get("source"):
                continue
            if e["state"] == "firing":
                self.firing[e["source"]] = AlertEvent(
                    time=e["time_s"],
                    cell=None,
                    detector=DETECTOR,
                    kind="data",
                    severity=e["severity"],
                    state="firing",
                    summary=e["summary"],
                    evidence=e.get("evidence") or {},
                    episode=e["episode"],
                    source=e["source"],
                )
            else:
                self.firing.pop(e["source"], None)

    def check(self, now: float, health: dict[str, Any]) -> list[AlertEvent]:
        """Transitions for the sources' health now (``health``: source name -> SourceHealth)."""
        out: list[AlertEvent] = []
        for name, h in health.items():
            firing = self.firing.get(name)
            if not h.up and firing is None and now - h.since >= self.after_s:
                cells = sorted(self.cells.get(name, ()))
                ev = AlertEvent(
                    time=now,
                    cell=None,
                    detector=DETECTOR,
                    kind="data",
                    severity="warning",
                    state="firing",
                    summary=f"Source {name} is down for {now - h.since:.0f} s: {h.reason}"
                    + (
                        f" ({len(cells)} cells behind it: {', '.join(cells[:10])}{' ...' if len(cells) > 10 else ''})"
                        if cells
                        else ""
                    ),
                    evidence={"reason": h.reason, "down_since": h.since, "cells": cells},
                    advice=ADVICE,
                    episode=episode_id(None, f"{DETECTOR}/{name}", now),
                    source=name,
                )
                self.firing[name] = ev
                out.append(ev)
            elif h.up and firing is not None:
                del self.firing[name]
                out.append(
                    AlertEvent(
                        time=max(now, firing.time),
                        cell=None,
                        detector=DETECTOR,
                        kind="data",
                        severity=firing.severity,
                        state="resolved",
                        summary=f"Source {name} is back: {h.reason}",
                        evidence={"cells": firing.evidence.get("cells", [])},
                        episode=firing.episode,
                        source=name,
                    )
                )
        return out
