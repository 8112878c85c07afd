"""The synchronous core shared by the live daemon and replay: items in, records out.

Keeping this free of I/O and of the event loop is what makes replay and the live daemon
give the same answers for the same samples.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from shortwatch.alerts.manager import AlertManager
from shortwatch.daemon.validation import RejectCounter, SampleValidator
from shortwatch.detectors.base import Verdict
from shortwatch.detectors.monitor import STATUS_ORDER, CellMonitor
from shortwatch.detectors.registry import build_detectors
from shortwatch.model import DetectorStatus, RecordBatch, Rejected, Sample
from shortwatch.settings import Settings
from shortwatch.state import Stateful

log = logging.getLogger(__name__)


class Pipeline:
    """Validation -> one CellMonitor per cell -> alert state machine."""

    def __init__(self, settings: Settings, live: bool = False):
        self.settings = settings
        self.live = live
        self.rejects = RejectCounter()
        self.validator = SampleValidator(settings, self.rejects, live=live)
        self.monitors: dict[str, CellMonitor] = {}
        self.alerts = AlertManager()
        self.samples_accepted = 0

    def monitor(self, cell: str) -> CellMonitor:
        m = self.monitors.get(cell)
        if m is None:
            spec = self.settings.cell_spec(cell)
            m = CellMonitor(cell, spec, build_detectors(cell, spec, self.settings, self.live))
            self.monitors[cell] = m
        return m

    def process(self, items: Iterable[Sample | Rejected], source: str, out: RecordBatch) -> None:
        """Validate and monitor a batch of items from one source, appending records to ``out``."""
        verdicts: list[tuple[str, Verdict]] = []
        check = self.validator.check
        rejected = out.rejected
        accepted = out.samples
        monitors = self.monitors
        for item in items:
            if type(item) is Rejected:
                rejected.append(item)
                self.rejects.note(item)
                continue
            s = check(item, source, rejected)  # type: ignore[arg-type]
            if self.validator.dropped is not None:  # channels of this sample were impossible
                m = monitors.get(item.cell) or self.monitor(item.cell)  # type: ignore[union-attr]
                m.channel_fault(*self.validator.dropped, item.time, verdicts)  # type: ignore[union-attr]
                self.validator.dropped = None
                if verdicts:
                    self._judge(m, verdicts, out)
            if s is None:
                continue
            accepted.append(s)
            m = monitors.get(s.cell) or self.monitor(s.cell)
            m.update(s, out, verdicts)
            if verdicts:
                self._judge(m, verdicts, out)
        self.samples_accepted = len(accepted) + self.samples_accepted
        if self.validator._unlogged:
            self.validator.report_unknown()

    def tick(self, now: float, out: RecordBatch) -> None:
        """Periodic wall-clock checks of every cell (live mode only: stale data)."""
        verdicts: list[tuple[str, Verdict]] = []
        for m in self.monitors.values():
            m.tick(now, verdicts)
            if verdicts:
                self._judge(m, verdicts, out)

    def _judge(self, m: CellMonitor, verdicts: list[tuple[str, Verdict]], out: RecordBatch) -> None:
        """Verdicts to alert transitions; a change of the cell's overall status is stored
        beside the detector statistics as detector ``cell_status``."""
        self.alerts.handle(m.cell, {n: d.kind for n, d in m.detectors.items()}, verdicts, out)
        status = m.status
        if status != m.stored_status:
            m.stored_status = status
            worst = max(verdicts, key=lambda nv: STATUS_ORDER.index(nv[1].state))[1]
            out.detector_states.append(DetectorStatus(worst.time, m.cell, "cell_status", None, None, status))
        verdicts.clear()

    def finish(self, out: RecordBatch) -> None:
        """End of a replay: close every cell's open step and cycle."""
        self.validator.report_unknown(force=True)
        for m in self.monitors.values():
            m.finish(out)

    def state(self) -> dict[str, Any]:
        return {
            "validator": self.validator.state(),
            "alerts": self.alerts.state(),
            "monitors": self._monitor_states(),
            "rejects": dict(self.rejects.counts),
            "samples_accepted": self.samples_accepted,
        }

    def _monitor_states(self) -> dict[str, Any]:
        """Each cell's state without what equals a fresh monitor's (of the same config): a
        cell seen once checkpoints a few hundred bytes, not kilobytes of initial values.
        Loading works unchanged, since ``load`` leaves what a state does not name as new."""
        fresh: dict[str, dict[str, Any]] = {}
        out = {}
        for c, m in self.monitors.items():
            st = m.state()
            fp = st["spec_fingerprint"]
            ref = fresh.get(fp)
            if ref is None:
                ref = fresh[fp] = CellMonitor("", m.spec, build_detectors("", m.spec, self.settings, self.live)).state()
            d = _delta(m, {k: v for k, v in st.items() if k != "detectors"}, ref)
            d["spec_fingerprint"] = fp
            dets = {}
            for name, ds in st["detectors"].items():
                dd = _delta(m.detectors[name], ds, ref["detectors"].get(name, {}))
                if dd:
                    dets[name] = dd
            if dets:
                d["detectors"] = dets
            out[c] = d
        return out

    def load(self, state: dict[str, Any]) -> None:
        self.validator.load(state.get("validator", {}))
        self.alerts.load(state.get("alerts", {}))
        for cell, ms in state.get("monitors", {}).items():
            self.monitor(cell).load(ms)
        self.rejects.counts.update(state.get("rejects", {}))
        self.samples_accepted = state.get("samples_accepted", 0)


_ABSENT = object()


def _delta(obj: Any, state: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``state`` (of ``obj``) that differ from ``ref``; nested Stateful objects
    recursively. Plain dicts and lists are kept whole: ``load`` replaces them whole."""
    out = {}
    for k, v in state.items():
        r = ref.get(k, _ABSENT)
        if v == r:
            continue
        sub = getattr(obj, k, None)
        if isinstance(sub, Stateful) and isinstance(v, dict) and isinstance(r, dict):
            v = _delta(sub, v, r)
        out[k] = v
    return out
