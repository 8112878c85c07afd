"""The detector interface: what a detector sees and what it answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from shortwatch.model import CycleFeatures, Sample, StepFeatures
from shortwatch.settings import CellSpec
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
    Per-sample hooks return a Verdict only when their state changes (they run on the
    hot path and every verdict is stored). ``params`` documents every tunable with its
    default; config overrides them globally ([detectors.NAME]) or per cell
    ([cells.X.detectors.NAME]).
    """

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "cell"  # "cell" health or "data" (instrument, stream)
    per_sample: ClassVar[bool] = False  # on_sample is only called when True (hot path)
    cell_kinds: ClassVar[tuple[str, ...]] = ("symmetric", "full", "anode-free")
    params: ClassVar[dict[str, tuple[Any, str]]] = {}  # name -> (default, what it means)
    _transient = ("p", "spec")

    def __init__(self, spec: CellSpec, overrides: dict[str, Any] | None = None):
        self.spec = spec
        self.p = {name: default for name, (default, _) in self.params.items()} | (overrides or {})
        self.state_name = "ok"

    def verdict(
        self,
        time: float,
        state: str,
        statistic: float | None = None,
        threshold: float | None = None,
        summary: str = "",
        evidence: dict[str, Any] | None = None,
        advice: str = "",
    ) -> Verdict:
        """Build a Verdict and remember the state (for change-only reporting)."""
        self.state_name = state
        return Verdict(time, state, statistic, threshold, summary, evidence or {}, advice)

    def on_sample(self, s: Sample, pressure: float | None, m: CellMonitor) -> Verdict | None:
        return None

    def on_step(self, f: StepFeatures, m: CellMonitor) -> Verdict | None:
        return None

    def on_cycle(self, c: CycleFeatures, m: CellMonitor) -> Verdict | None:
        return None
