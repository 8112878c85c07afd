"""cell_config (kind ``data``): the data contradict the cell's configured kind.

A symmetric Li|SE|Li cell rests near 0 V, and its voltage has the sign of its current. A
cell configured (or defaulted) as symmetric that rests at volts is a half or full cell:
its overpotential features are meaningless, and a discharge to a low cut-off would look
like a short. This detector says so once, and the symmetric-cell detectors stand down.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shortwatch.detectors.base import Detector, Verdict
from shortwatch.model import Sample
from shortwatch.settings import CellSpec, toml_path

if TYPE_CHECKING:
    from shortwatch.detectors.monitor import CellMonitor


class CellConfig(Detector):
    name = "cell_config"
    kind = "data"
    per_sample = True
    cell_kinds = ("symmetric",)
    params = {
        "rest_voltage_V": (0.5, "a symmetric cell resting above this is not symmetric"),
        "confirm_samples": (3, "consecutive rest samples that confirm"),
    }

    def __init__(self, spec: CellSpec, overrides: dict[str, Any] | None = None):
        super().__init__(spec, overrides)
        self.count = 0

    def on_sample(self, s: Sample, pressure: float | None, m: CellMonitor) -> Verdict | None:
        if self.state_name != "ok" or s.voltage_V is None or m.segmenter.kind != "rest":
            return None
        if abs(s.voltage_V) <= self.p["rest_voltage_V"]:
            self.count = 0
            return None
        self.count += 1
        if self.count < self.p["confirm_samples"]:
            return None
        m.kind_mismatch = True
        summary = (
            f"Cell {m.cell} is monitored as symmetric but rests at {s.voltage_V:.3f} V: a symmetric Li|SE|Li "
            "cell rests near 0 V. Symmetric-cell detectors are paused for it."
        )
        table = toml_path(["cells", m.cell])
        advice = f'Set kind = "full" (or "anode-free") in [{table}] of the config, and restart.'
        evidence = {"cycle": m.segmenter.cycle, "rest_voltage_V": s.voltage_V, "threshold": self.p["rest_voltage_V"]}
        return self.verdict(s.time, "warning", abs(s.voltage_V), self.p["rest_voltage_V"], summary, evidence, advice)
