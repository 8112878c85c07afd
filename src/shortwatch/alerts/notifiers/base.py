"""What every notifier shares: the protocol, the message, its wording, the dead-letter log.

A notifier turns one message (one alert event, or a group of warnings of one detector) into
one request to its server and returns what the server answered. It raises on failure:
``PermanentError`` when the server refused the message for good (a retry cannot help: the
events go to the dead-letter log), anything else when a later retry may succeed.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from shortwatch.model import iso_time

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
#: Evidence keys that say what was compared, shown first among the key numbers.
_KEY_FIRST = ("cycle", "statistic", "threshold")


_ADDRESS = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")


def is_address(owner: str) -> bool:
    """An owner that is an email address (the others are Slack mentions such as <@U024BE7LH>)."""
    return bool(_ADDRESS.match(owner))


class PermanentError(Exception):
    """The server refused the message and would refuse it again (a 4xx, a bad address)."""


@dataclass(slots=True)
class Message:
    """What one notification carries: the events (DESIGN alert dicts, in log order), the
    evidence PNGs by event id, and the owners of the cells involved (emails, Slack mentions)."""

    events: list[dict[str, Any]]
    images: dict[str, bytes] = field(default_factory=dict)
    owners: list[str] = field(default_factory=list)
    test: bool = False

    @property
    def grouped(self) -> bool:
        return len(self.events) > 1

    @property
    def severity(self) -> str:
        return max((e["severity"] for e in self.events), key=lambda s: SEVERITY_RANK.get(s, 0))


class Notifier(Protocol):
    """One notification channel; ``send`` returns the server's answer, raises on failure."""

    name: str

    async def send(self, msg: Message) -> str: ...

    async def aclose(self) -> None: ...


def where(e: dict[str, Any]) -> str:
    """The cell, or the source / station an alert without a cell is about."""
    if e.get("cell") is not None:
        return str(e["cell"])
    return f"source {e['source']}" if e.get("source") else f"station {e.get('station', '')}"


def title(msg: Message) -> str:
    """One line: [TEST] SEVERITY state: what, where (a group: how many and which)."""
    e = msg.events[0]
    prefix = "[TEST] " if msg.test else ""
    reminder = " (reminder)" if any(x.get("reminder") for x in msg.events) else ""
    if msg.grouped:
        firing = sum(x["state"] == "firing" for x in msg.events)
        resolved = len(msg.events) - firing
        counts = ", ".join(f"{n} {s}" for n, s in ((firing, "firing"), (resolved, "resolved")) if n)
        cells = ", ".join(where(x) for x in msg.events[:6]) + (" ..." if len(msg.events) > 6 else "")
        return f"{prefix}{msg.severity.upper()} {e['detector']}: {len(msg.events)} alerts ({counts}): {cells}"
    return f"{prefix}{e['severity'].upper()} {e['state']}{reminder}: {e['detector']} on {where(e)}"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if not math.isfinite(v):
            return "n/a"
        return f"{v:.4g}"
    if isinstance(v, list | tuple):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


def key_numbers(e: dict[str, Any], limit: int = 10) -> list[tuple[str, str]]:
    """The evidence as (name, value) pairs: cycle, statistic and threshold first, then the
    rest in the detector's order, skipping empty values and long free text."""
    ev = e.get("evidence") or {}
    keys = [k for k in _KEY_FIRST if k in ev] + [k for k in ev if k not in _KEY_FIRST]
    out = []
    for k in keys:
        v = ev[k]
        if v is None or v == [] or (isinstance(v, str) and len(v) > 80):
            continue
        out.append((k, _fmt(v)))
    return out[:limit]


def plain_text(msg: Message) -> str:
    """The message as plain text: the same content the HTML and Slack forms show."""
    lines = [title(msg), ""]
    if msg.test:
        lines += ["This is a test alert sent by `shortwatch alerts test`. No cell is affected.", ""]
    for e in msg.events:
        lines.append(f"{where(e)}  {e['detector']}  {e['severity']}  {e['state']}  at {e['time']}")
        lines.append(f"  {e['summary']}")
        nums = key_numbers(e)
        if nums:
            lines.append("  " + "; ".join(f"{k} = {v}" for k, v in nums))
        if e.get("advice"):
            lines.append(f"  What to do: {e['advice']}")
        lines.append(f"  episode {e.get('episode', '')}  id {e.get('id', '')}")
        lines.append("")
    if msg.owners:
        lines.append("Owners: " + ", ".join(msg.owners))
    return "\n".join(lines).rstrip() + "\n"


class DeadLetters:
    """JSON lines under state_dir of the events a notifier gave up on, with the reason:
    a person can read them and send them again by hand."""

    def __init__(self, state_dir: Path, name: str):
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        self.path = Path(state_dir) / "dead-letter" / f"{safe}.jsonl"

    def add(self, events: list[dict[str, Any]], reason: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            for e in events:
                fh.write(json.dumps({"failed_at": iso_time(time.time()), "reason": reason, "event": e}) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line]


def http_failure(status: int, body: str) -> Exception:
    """The error for an HTTP answer other than 2xx: 4xx (but 408 and 429) is permanent."""
    text = f"HTTP {status}: {body[:300]}"
    if 400 <= status < 500 and status not in (408, 429):
        return PermanentError(text)
    return RuntimeError(text)
