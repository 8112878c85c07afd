"""The detector interface: what a detector sees and what it answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from shortwatch.model import CycleFeatures, Sample, StepFeatures
from shortwatch.state import Stateful

if TYPE_CHECKING:
    from shortwatch.detectors.monitor import CellMonitor


@dataclass(slots=True)
class Verdict:
    """A detector's judgement after an update.

    ``state`` is ok | watch | warning | critical. The alert manager fires an alert when a
    detector enters warning or critical, escalates, or resolves it when it returns to ok;
    ``watch`` is shown in the status but does not alert.
    """

    time: float
    state: str
    statistic: float | None = None
    threshold: float | None = None
    summary: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
    advice: str = ""


class Detector(Stateful):
    """Base class: override the hooks a detector needs; each returns a Verdict or None.

    Detectors see data time only (never the wall clock), so replay and live agree.
    """

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "cell"  # "cell" health or "data" (instrument, stream)
    per_sample: ClassVar[bool] = False  # on_sample is only called when True (hot path)

    def on_sample(self, s: Sample, pressure: float | None, m: CellMonitor) -> Verdict | None:
        return None

    def on_step(self, f: StepFeatures, m: CellMonitor) -> Verdict | None:
        return None

    def on_cycle(self, c: CycleFeatures, m: CellMonitor) -> Verdict | None:
        return None
