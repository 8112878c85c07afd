"""Console: one readable log line per transition, at WARNING or above, for `shortwatch run`."""

from __future__ import annotations

import logging

from shortwatch.alerts.notifiers.base import Message, where

log = logging.getLogger("shortwatch.alerts")


def line(e: dict) -> str:
    reminder = " (reminder)" if e.get("reminder") else ""
    what = f"{e['severity'].upper()} {e['state']}{reminder} {where(e)} {e['detector']}"
    return f"ALERT {what} at {e['time']}: {e['summary']}"


class Console:
    name = "console"

    async def send(self, msg: Message) -> str:
        for e in msg.events:
            level = logging.ERROR if e["severity"] == "critical" and e["state"] == "firing" else logging.WARNING
            log.log(level, "%s%s", "[TEST] " if msg.test else "", line(e))
        return f"logged {len(msg.events)} line(s)"

    async def aclose(self) -> None:
        return None
