"""Which detectors watch a cell, with their parameters from config."""

from __future__ import annotations

from shortwatch.detectors.base import Detector
from shortwatch.settings import CellSpec, Settings

#: detector name -> class; filled as detectors are added
DETECTORS: dict[str, type[Detector]] = {}


def build_detectors(cell: str, spec: CellSpec, settings: Settings, live: bool) -> list[Detector]:
    """One instance of every detector that applies to this cell's kind."""
    return []
