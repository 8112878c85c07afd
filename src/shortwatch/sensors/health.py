"""A source's own health (up/down, since when, why), read by the daemon's health endpoint."""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)
class SourceHealth:
    """``since`` is the wall time of the last change of ``up``; ``reason`` says why it is so now."""

    up: bool = False
    since: float = field(default_factory=time.time)
    reason: str = "starting"

    def set(self, up: bool, reason: str) -> bool:
        """Record the state; True when ``up`` changed (the caller logs such changes once)."""
        changed = up != self.up
        if changed:
            self.since = time.time()
        self.up = up
        self.reason = reason
        return changed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def reconnect_delay(attempt: int, min_s: float, max_s: float) -> float:
    """Exponential backoff with jitter (between half and all of the step), so daemons that lost
    one broker or hub at the same moment do not all come back in the same instant."""
    step = min(max_s, min_s * 2 ** min(attempt, 30))
    return step * (0.5 + 0.5 * random.random())
