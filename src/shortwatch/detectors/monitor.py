"""CellMonitor: everything shortwatch knows about one cell, updated one sample at a time.

The monitor segments the stream into steps and cycles, accumulates their features, and
hands samples, finished steps and finished cycles to the cell's detectors. It holds only
bounded state (no history), so it can be checkpointed and a cell can run for months.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from shortwatch.detectors.base import Detector, Verdict
from shortwatch.detectors.features import CycleAccumulator, StepAccumulator
from shortwatch.detectors.segmentation import Segmenter
from shortwatch.model import CycleFeatures, RecordBatch, Sample, StepFeatures
from shortwatch.settings import CellSpec
from shortwatch.state import Stateful

log = logging.getLogger(__name__)

STATUS_ORDER = ("ok", "watch", "warning", "critical")
#: a V/I sample without pressure takes the latest load-cell reading (a separate stream) for
#: its step features when that reading is at most this old (data seconds)
PRESSURE_MAX_AGE_S = 120.0


class Median3(Stateful):
    """Median of the last three values: one wild load-cell sample is not a pressure change."""

    def __init__(self) -> None:
        self.a: float | None = None
        self.b: float | None = None

    def __call__(self, x: float) -> float:
        a, b = self.a, self.b
        self.a, self.b = b, x
        if a is None or b is None:
            return x
        if a > b:
            a, b = b, a
        return a if x < a else (b if x > b else x)


class CellMonitor(Stateful):
    """Per-cell pipeline state: segmenter, accumulators, detectors and the latest values."""

    _transient = ("spec", "detectors", "sample_hooks", "relearning")

    def __init__(self, cell: str, spec: CellSpec, detectors: list[Detector] | None = None):
        self.cell = cell
        self.spec = spec
        self.detectors: dict[str, Detector] = {d.name: d for d in (detectors or [])}
        self.sample_hooks = [(d.name, d.on_sample) for d in self.detectors.values() if d.per_sample]
        self.segmenter = Segmenter(spec.rest_current_A)
        self.step = StepAccumulator(spec.area_cm2)
        self.cyc = CycleAccumulator()
        self.pressure_filter = Median3()
        self.step_index = 0
        self.step_open = False
        # latest values, for the live table and the stale-data detector
        self.last_time: float | None = None
        self.voltage_V: float | None = None
        self.current_A: float | None = None
        self.pressure_MPa: float | None = None
        self.pressure_time = 0.0
        self.temperature_C: float | None = None
        self.last_step: dict[str, Any] | None = None
        self.last_cycle: dict[str, Any] | None = None
        self.verdicts: dict[str, dict[str, Any]] = {}
        self.kind_mismatch = False  # set by cell_config: the data contradict spec.kind
        self.stored_status = "ok"  # the last overall status written to storage
        self.relearning = False  # restored under a changed config: detectors start afresh

    def spec_fingerprint(self) -> str:
        return hashlib.sha1(self.spec.model_dump_json().encode()).hexdigest()[:16]

    def state(self) -> dict[str, Any]:
        out = super().state()
        out["detectors"] = {name: d.state() for name, d in self.detectors.items()}
        out["spec_fingerprint"] = self.spec_fingerprint()
        return out

    def load(self, state: dict[str, Any]) -> None:
        """Resume from a checkpoint. If the cell's config changed since, step and cycle
        numbering and the open step carry on (stored rows keep their keys), but what the
        detectors learned (baselines in ohm cm2, per gram, per fixture) is dropped."""
        super().load({k: v for k, v in state.items() if k not in ("detectors", "spec_fingerprint", "verdicts")})
        if state.get("spec_fingerprint") != self.spec_fingerprint():
            log.warning("cell %s: its config changed since the checkpoint; its detectors re-learn", self.cell)
            self.relearning = True
            self.kind_mismatch = False
            self.stored_status = "ok"
            return
        for name, sub in state.get("detectors", {}).items():
            if name in self.detectors:
                self.detectors[name].load(sub)
        self.verdicts = {n: v for n, v in state.get("verdicts", {}).items() if n in self.detectors}

    @property
    def status(self) -> str:
        worst = 0
        for v in self.verdicts.values():
            worst = max(worst, STATUS_ORDER.index(v["state"]))
        return STATUS_ORDER[worst]

    def update(self, s: Sample, out: RecordBatch, verdicts: list[tuple[str, Verdict]]) -> None:
        """Feed one validated sample; finished steps/cycles go to ``out``, detector
        verdicts to ``verdicts`` (the alert manager turns them into events)."""
        self.last_time = s.time
        p = p_feat = s.pressure_MPa
        if p is not None:
            p = p_feat = self.pressure_MPa = self.pressure_filter(p)
            self.pressure_time = s.time
        elif self.pressure_MPa is not None and abs(s.time - self.pressure_time) <= PRESSURE_MAX_AGE_S:
            p_feat = self.pressure_MPa  # the load cell's latest reading, from its own stream
        if s.temperature_C is not None:
            self.temperature_C = s.temperature_C
        v, i = s.voltage_V, s.current_A
        if v is None or i is None:
            # a sample without V or I (e.g. a load-cell-only reading) cannot be segmented
            if v is not None:
                self.voltage_V = v
            if i is not None:
                self.current_A = i
        else:
            self.voltage_V = v
            self.current_A = i
            seg = self.segmenter
            open_kind, open_cycle = seg.kind, seg.cycle
            new_step, new_cycle = seg.update(v, i, s.mode, s.step, s.cycle)
            if new_step:
                if self.step_open:
                    self._close_step(open_kind or "rest", open_cycle, out, verdicts, new_cycle, run_detectors=True)
                self.step.reset()
                self.step_open = True
            self.step.add(s.time, v, i, p_feat, s.temperature_C, seg.kind)  # type: ignore[arg-type]
        for name, hook in self.sample_hooks:
            verdict = hook(s, p, self)
            if verdict is not None:
                self._record(name, verdict, verdicts)

    def finish(self, out: RecordBatch) -> None:
        """End of a replay: write out the open step and cycle (not shown to detectors,
        since they are incomplete)."""
        if self.step_open:
            seg = self.segmenter
            self._close_step(seg.kind or "rest", seg.cycle, out, [], new_cycle=True, run_detectors=False)
            self.step_open = False

    def _close_step(
        self,
        kind: str,
        cycle: int,
        out: RecordBatch,
        verdicts: list[tuple[str, Verdict]],
        new_cycle: bool,
        run_detectors: bool,
    ) -> None:
        f = self.step.features(self.cell, self.step_index, kind, cycle, self.spec)
        self.step_index += 1
        out.steps.append(f)
        self.last_step = {"kind": f.step_kind, "asr_ohm_cm2": f.asr_ohm_cm2, "eta_V": f.eta_V}
        self.cyc.add_step(self.step, f)
        if run_detectors:
            self._run_step_detectors(f, verdicts)
        if new_cycle:
            c = self.cyc.features(self.cell, cycle, self.spec)
            out.cycles.append(c)
            self.last_cycle = {
                "cycle": c.cycle,
                "ce": c.ce,
                "asr_ohm_cm2": c.asr_ohm_cm2,
                "dpq_MPa_g_per_Ah": c.dpq_MPa_g_per_Ah,
                # between CV checks, show the last check's peak
                "cv_peak_A": c.cv_peak_A if c.cv_peak_A is not None else (self.last_cycle or {}).get("cv_peak_A"),
            }
            self.cyc.reset()
            if run_detectors:
                self._run_cycle_detectors(c, verdicts)

    def _record(self, name: str, verdict: Verdict | None, verdicts: list[tuple[str, Verdict]]) -> None:
        if verdict is None:
            return
        self.verdicts[name] = {"state": verdict.state, "statistic": verdict.statistic}
        verdicts.append((name, verdict))

    @property
    def shorted(self) -> bool:
        """A hard short is firing: trend detectors freeze, their news would only restate it."""
        return self.verdicts.get("hard_short", {}).get("state") == "critical"

    def _run_step_detectors(self, f: StepFeatures, verdicts: list[tuple[str, Verdict]]) -> None:
        if self.shorted:
            return
        for d in self.detectors.values():
            self._record(d.name, d.on_step(f, self), verdicts)

    def _run_cycle_detectors(self, c: CycleFeatures, verdicts: list[tuple[str, Verdict]]) -> None:
        if self.shorted:
            return
        for d in self.detectors.values():
            self._record(d.name, d.on_cycle(c, self), verdicts)

    def channel_fault(
        self, channels: tuple[str, ...], detail: str, t: float, verdicts: list[tuple[str, Verdict]]
    ) -> None:
        """The validator dropped impossible values of these channels from a sample."""
        d = self.detectors.get("channel_fault")
        if d is not None:
            self._record(d.name, d.fault(channels, detail, t, self), verdicts)  # type: ignore[attr-defined]

    def tick(self, now: float, verdicts: list[tuple[str, Verdict]]) -> None:
        """Wall-clock checks (live mode): only the stale-data detector has one."""
        for d in self.detectors.values():
            check = getattr(d, "check", None)
            if check is not None:
                self._record(d.name, check(now, self), verdicts)

    def snapshot(self) -> dict[str, Any]:
        """The latest values and status, for the live table."""
        return {
            "cell": self.cell,
            "kind": self.spec.kind,
            "time": self.last_time,
            "voltage_V": self.voltage_V,
            "current_A": self.current_A,
            "pressure_MPa": self.pressure_MPa,
            "temperature_C": self.temperature_C,
            "cycle": self.segmenter.cycle,
            "step_kind": self.segmenter.kind,
            "last_step": self.last_step,
            "last_cycle": self.last_cycle,
            "status": self.status,
            "firing": sorted(n for n, v in self.verdicts.items() if v["state"] in ("warning", "critical")),
        }
