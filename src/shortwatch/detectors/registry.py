"""Which detectors watch a cell, with their parameters from config."""

from __future__ import annotations

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
from shortwatch.settings import CellSpec, ConfigError, Settings

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


def check_detector_params(settings: Settings) -> None:
    """Unknown detector names or parameters are config errors, named with their key path."""
    problems = []
    sections = [("detectors", settings.detectors)] + [
        (f"cells.{c}.detectors", spec.detectors) for c, spec in settings.cells.items()
    ]
    for path, table in sections:
        for name, params in table.items():
            cls = DETECTORS.get(name)
            if cls is None:
                problems.append(f"{path}.{name}: unknown detector; known: {', '.join(DETECTORS)}")
                continue
            for key in params:
                if key != "enabled" and key not in cls.params:
                    problems.append(f"{path}.{name}.{key}: unknown parameter; known: enabled, {', '.join(cls.params)}")
    if problems:
        raise ConfigError(problems)
