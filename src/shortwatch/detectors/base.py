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


_COVARIATES = (
    ("pressure", "MPa", 0.3, "{:.2f}"),
    ("temperature", "C", 2.0, "{:.1f}"),
    ("J", "mA/cm2", 0.1, "{:.3g}"),
)


def covariates(before: list[float | None], now: list[float | None], over: str) -> dict[str, Any]:
    """Pressure, temperature and J ([MPa, C, mA/cm2]) at the reference and now, for the evidence:
    what explains a change in ASR was checked, and the researcher sees with which values."""
    out: dict[str, Any] = {}
    words, changed = [], []
    for (name, unit, tol, fmt), b, n in zip(_COVARIATES, before, now, strict=True):
        key = name.lower() if name != "J" else "current_density"
        out[f"{key}_before"] = None if b is None else round(b, 4)
        out[f"{key}_after"] = None if n is None else round(n, 4)
        if b is None or n is None:
            words.append(f"{name} not logged")
            continue
        words.append(f"{name} {fmt.format(b)} -> {fmt.format(n)} {unit}")
        if (abs(n - b) / abs(b) if name == "J" and b else abs(n - b)) > tol:
            changed.append(name)
    tail = f"unchanged over {over}" if not changed else f"{', '.join(changed)} changed (corrected for)"
    out["covariates"] = ", ".join(words) + ": " + tail
    return out
