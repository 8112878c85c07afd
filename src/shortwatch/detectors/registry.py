"""Which detectors watch a cell, with their parameters from config."""

from __future__ import annotations

import difflib
from typing import Any

from shortwatch.detectors.base import Detector
from shortwatch.detectors.cell_config import CellConfig
from shortwatch.detectors.channel_fault import ChannelFault
from shortwatch.detectors.charge_anomaly import ChargeAnomaly
from shortwatch.detectors.cv_rise import CvCurrentRise
from shortwatch.detectors.dpq import DpqDecline, PressureMechanics
from shortwatch.detectors.hard_short import HardShort
from shortwatch.detectors.load_cell import LoadCell
from shortwatch.detectors.overpotential import OverpotentialDrop
from shortwatch.detectors.polarization import PolarizationRise
from shortwatch.detectors.pressure_window import PressureWindow
from shortwatch.detectors.stale_data import StaleData
from shortwatch.settings import CellSpec, Settings, toml_key

DETECTORS: dict[str, type[Detector]] = {
    d.name: d
    for d in (
        OverpotentialDrop,
        PolarizationRise,
        CvCurrentRise,
        DpqDecline,
        PressureMechanics,
        ChargeAnomaly,
        HardShort,
        PressureWindow,
        StaleData,
        CellConfig,
        LoadCell,
        ChannelFault,
    )
}
LIVE_ONLY = {StaleData.name}


def overrides_for(name: str, spec: CellSpec, settings: Settings) -> dict[str, Any]:
    return {**settings.detectors.get(name, {}), **spec.detectors.get(name, {})}


def build_detectors(cell: str, spec: CellSpec, settings: Settings, live: bool) -> list[Detector]:
    """One instance of every detector that applies to this cell's kind."""
    out = []
    for name, cls in DETECTORS.items():
        if spec.kind not in cls.cell_kinds or (name in LIVE_ONLY and not live):
            continue
        params = overrides_for(name, spec, settings)
        if params.get("enabled", True) is False:
            continue
        out.append(cls(spec, {k: v for k, v in params.items() if k != "enabled"}))
    return out


def detector_problems(sections: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Unknown detector names or parameters in raw (key path, table) sections, one line each,
    with the closest known name when there is one."""
    problems = []
    for path, table in sections:
        for name, params in table.items():
            cls = DETECTORS.get(name)
            if cls is None:
                problems.append(f"{path}.{toml_key(name)}: {_unknown('detector', name, list(DETECTORS))}")
                continue
            if not isinstance(params, dict):
                continue  # the schema reports a non-table
            for key in params:
                if key != "enabled" and key not in cls.params:
                    known = ["enabled", *cls.params]
                    problems.append(f"{path}.{toml_key(name)}.{toml_key(key)}: {_unknown('parameter', key, known)}")
    return problems


def _unknown(what: str, name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return f"unknown {what} {name!r}, did you mean {close[0]!r}?"
    return f"unknown {what} {name!r}; known: {', '.join(known)}"
