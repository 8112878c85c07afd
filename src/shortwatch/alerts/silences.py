"""Silences and acknowledgements, per cell or detector, each with an expiry.

A silence holds every matching notification back until it expires; what is still firing then
goes out (and a resolve whose firing went out before). An acknowledgement says "someone is on
it": no reminders for the matching alerts until it expires; transitions still go out.

They live in one JSON file under state_dir, written by `shortwatch silence` / `shortwatch ack`,
by the MQTT command topic, and read by the running daemon (it notices the file change), so no
other channel into the daemon is needed. Writers take an exclusive lock on a side file and
replace the file atomically.
"""

from __future__ import annotations

import fcntl
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

from shortwatch.state import read_json, write_json_atomic

FILE_NAME = "silences.json"
STATION = "_station"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)?\s*$")
_UNIT_S = {"s": 1, None: 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """ "90", "90s", "15m", "2h", "1d", "1w" -> seconds."""
    m = _DURATION.match(str(text))
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"duration {text!r}: use a number with s, m, h, d or w, e.g. 2h")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


@dataclass(slots=True)
class Silence:
    kind: Literal["silence", "ack"]
    until: float  # wall time (Unix seconds)
    cell: str = "*"  # glob; "_station" for alerts about a source or the daemon
    detector: str = "*"  # glob
    by: str = ""
    comment: str = ""
    created: float = 0.0
    id: str = ""

    def matches(self, e: dict[str, Any], now: float) -> bool:
        cell = e["cell"] if e.get("cell") is not None else STATION
        return now < self.until and fnmatchcase(cell, self.cell) and fnmatchcase(e["detector"], self.detector)


class Silences:
    """The silences file of one state_dir; ``current()`` re-reads it only when it changed."""

    def __init__(self, state_dir: Path):
        self.path = Path(state_dir) / FILE_NAME
        self._mtime: float | None = None
        self._items: list[Silence] = []

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    def _read(self) -> list[Silence]:
        data = read_json(self.path) or {}
        return [Silence(**s) for s in data.get("silences", [])]

    def current(self) -> list[Silence]:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            self._mtime, self._items = None, []
            return []
        if mtime != self._mtime:
            self._items, self._mtime = self._read(), mtime
        return self._items

    def add(
        self,
        kind: Literal["silence", "ack"],
        duration_s: float,
        cell: str = "*",
        detector: str = "*",
        by: str = "",
        comment: str = "",
        now: float | None = None,
    ) -> Silence:
        now = time.time() if now is None else now
        s = Silence(kind, now + duration_s, cell or "*", detector or "*", by, comment, now, uuid.uuid4().hex[:8])
        with self._locked():
            items = [x for x in self._read() if x.until > now]  # expired ones are dropped here
            items.append(s)
            write_json_atomic(self.path, {"silences": [asdict(x) for x in items]})
        return s

    def expire(self, ident: str, now: float | None = None) -> bool:
        """End a silence or acknowledgement now (by id); False when there is none."""
        now = time.time() if now is None else now
        with self._locked():
            items = self._read()
            hit = [x for x in items if x.id == ident]
            for x in hit:
                x.until = now
            write_json_atomic(self.path, {"silences": [asdict(x) for x in items if x.until > now]})
        return bool(hit)

    def active(self, now: float | None = None) -> list[Silence]:
        now = time.time() if now is None else now
        return [s for s in self.current() if s.until > now]

    def silenced_until(self, e: dict[str, Any], now: float) -> float | None:
        """When the last silence matching ``e`` expires; None when none matches."""
        ends = [s.until for s in self.current() if s.kind == "silence" and s.matches(e, now)]
        return max(ends) if ends else None

    def acked(self, e: dict[str, Any], now: float) -> bool:
        return any(s.kind == "ack" and s.matches(e, now) for s in self.current())
