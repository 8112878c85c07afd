"""channel_fault (kind ``data``): a channel that keeps reading impossible values.

The validator drops a non-finite or physically impossible value (and quarantines the raw
sample), keeping the rest of the sample. One such value is a glitch; a channel that does it
sample after sample is a sensor fault or a unit error (an open thermocouple at -2500 C, a
load cell read in newtons), and the user must hear about it, not find it in the quarantine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shortwatch.detectors.base import Detector, Verdict
from shortwatch.model import Sample
from shortwatch.settings import CellSpec

if TYPE_CHECKING:
    from shortwatch.detectors.monitor import CellMonitor

CHANNELS = ("voltage_V", "current_A", "pressure_MPa", "temperature_C")


class ChannelFault(Detector):
    name = "channel_fault"
    kind = "data"
    per_sample = True
    params = {
        "confirm_samples": (10, "consecutive impossible values of one channel that make a fault"),
        "recover_samples": (10, "consecutive good values that end it"),
    }

    def __init__(self, spec: CellSpec, overrides: dict[str, Any] | None = None):
        super().__init__(spec, overrides)
        self.bad: dict[str, int] = {}  # channel -> consecutive impossible values
        self.good: dict[str, int] = {}  # faulty channel -> consecutive good values since
        self.detail: dict[str, str] = {}

    def fault(self, channels: tuple[str, ...], detail: str, t: float, m: CellMonitor) -> Verdict | None:
        """The validator dropped these channels of a sample of this cell."""
        for ch in channels:
            self.bad[ch] = self.bad.get(ch, 0) + 1
            self.good[ch] = 0
            self.detail[ch] = detail
        faulty = sorted(ch for ch, n in self.bad.items() if n >= self.p["confirm_samples"])
        if self.state_name != "ok" or not faulty:
            return None
        summary = (
            f"{', '.join(faulty)} of cell {m.cell} read impossible values in {self.p['confirm_samples']}+ "
            "consecutive samples: a sensor fault or wrong units; the channel is ignored meanwhile"
        )
        evidence = {"channels": faulty, "example": self.detail[faulty[0]][:300], "cycle": m.segmenter.cycle}
        advice = "Check the sensor and its wiring, and the unit the instrument exports (V, A, MPa, degC)."
        return self.verdict(
            t, "warning", float(len(faulty)), float(self.p["confirm_samples"]), summary, evidence, advice
        )

    def on_sample(self, s: Sample, pressure: float | None, m: CellMonitor) -> Verdict | None:
        if not self.bad:
            return None  # the common case: nothing pending, nothing to do
        for ch in list(self.bad):
            if getattr(s, ch) is None:
                continue
            self.good[ch] = self.good.get(ch, 0) + 1
            if self.good[ch] >= self.p["recover_samples"]:
                del self.bad[ch], self.good[ch]
        if self.state_name != "ok" and not any(n >= self.p["confirm_samples"] for n in self.bad.values()):
            self.bad.clear()
            self.good.clear()
            return self.verdict(s.time, "ok", 0.0, None, f"All channels of {m.cell} read plausible values again")
        return None
