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


def source_alert(
    source: str,
    detector: str,
    time: float,
    summary: str,
    evidence: dict[str, Any],
    *,
    state: str = "firing",
    severity: str = "warning",
    advice: str = "",
    episode: str = "",
) -> AlertEvent:
    """An alert about a source or the daemon itself (DESIGN: kind data, cell null, source named)."""
    return AlertEvent(
        time=time,
        cell=None,
        detector=detector,
        kind="data",
        severity=severity,  # type: ignore[arg-type]
        state=state,  # type: ignore[arg-type]
        summary=summary,
        evidence=evidence,
        advice=advice,
        episode=episode,
        source=source,
    )


def firing_from_log(events: list[dict[str, Any]], detector: str) -> dict[str | None, AlertEvent]:
    """Per source, the ``detector`` alert still firing at the end of a stored alert log
    (oldest first): what a restarted daemon must resolve, not fire again."""
    firing: dict[str | None, AlertEvent] = {}
    for e in events:
        if e.get("detector") != detector or e.get("cell") is not None:
            continue
        src = e.get("source")
        if e["state"] == "firing":
            firing[src] = source_alert(
                src,  # type: ignore[arg-type]
                detector,
                float(e["time_s"]),
                e.get("summary", ""),
                dict(e.get("evidence") or {}),
                severity=e.get("severity", "warning"),
                episode=e["episode"],
            )
        else:
            firing.pop(src, None)
    return firing


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
        self.firing = {src: ev for src, ev in firing_from_log(events, DETECTOR).items() if src}

    def check(self, now: float, health: dict[str, Any]) -> list[AlertEvent]:
        """Transitions for the sources' health now (``health``: source name -> SourceHealth)."""
        out: list[AlertEvent] = []
        for name, h in health.items():
            firing = self.firing.get(name)
            if not h.up and firing is None and now - h.since >= self.after_s:
                cells = sorted(self.cells.get(name, ()))
                ev = source_alert(
                    name,
                    DETECTOR,
                    now,
                    f"Source {name} is down for {now - h.since:.0f} s: {h.reason}"
                    + (
                        f" ({len(cells)} cells behind it: {', '.join(cells[:10])}{' ...' if len(cells) > 10 else ''})"
                        if cells
                        else ""
                    ),
                    {"reason": h.reason, "down_since": h.since, "cells": cells},
                    advice=ADVICE,
                    episode=episode_id(None, f"{DETECTOR}/{name}", now),
                )
                self.firing[name] = ev
                out.append(ev)
            elif h.up and firing is not None:
                del self.firing[name]
                out.append(
                    source_alert(
                        name,
                        DETECTOR,
                        max(now, firing.time),
                        f"Source {name} is back: {h.reason}",
                        {"cells": firing.evidence.get("cells", [])},
                        state="resolved",
                        severity=firing.severity,
                        episode=firing.episode,
                    )
                )
        return out
