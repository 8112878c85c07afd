"""Which notifier gets which event: min_severity, cell and detector globs, kinds."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

from shortwatch.alerts.notifiers.base import SEVERITY_RANK
from shortwatch.settings import NotifierBase

STATION = "_station"  # what a cells glob matches for alerts about a source or the daemon


def routes(cfg: NotifierBase, e: dict[str, Any]) -> bool:
    """True when the notifier configured by ``cfg`` takes event ``e``."""
    if SEVERITY_RANK.get(e["severity"], 0) < SEVERITY_RANK[cfg.min_severity]:
        return False
    if e.get("kind", "cell") not in cfg.kinds:
        return False
    cell = e["cell"] if e.get("cell") is not None else STATION
    if not any(fnmatchcase(cell, pat) for pat in cfg.cells):
        return False
    return any(fnmatchcase(e["detector"], pat) for pat in cfg.detectors)
