"""The alert state machine: detector verdicts in, alert transitions out.

One (cell, detector) pair is either quiet or firing at a severity. A verdict of warning or
critical fires (or re-fires at the new severity when it escalates or eases); ok or watch
resolves. Every transition is emitted exactly once: the state is checkpointed, and after
a crash it is rebuilt from the stored alert log, so samples processed again after a
restart do not send the same alert twice.
"""

from __future__ import annotations

from typing import Any

from shortwatch.detectors.base import Verdict
from shortwatch.model import AlertEvent, DetectorStatus, RecordBatch
from shortwatch.state import Stateful

FIRING_STATES = ("warning", "critical")


class AlertManager(Stateful):
    def __init__(self) -> None:
        # "cell|detector" -> [severity, time of the transition]; absent = quiet
        self.firing: dict[str, list[Any]] = {}
        self.last_transition: dict[str, float] = {}

    def handle(
        self, cell: str, detector_kind: dict[str, str], verdicts: list[tuple[str, Verdict]], out: RecordBatch
    ) -> None:
        for name, v in verdicts:
            out.detector_states.append(
                DetectorStatus(
                    time=v.time, cell=cell, detector=name, statistic=v.statistic, threshold=v.threshold, state=v.state
                )
            )
            key = f"{cell}|{name}"
            if v.time < self.last_transition.get(key, float("-inf")):
                continue  # decided before a restart (the log has a later transition): never twice
            current = self.firing.get(key)
            if v.state in FIRING_STATES:
                if current is not None and current[0] == v.state:
                    continue
                self.firing[key] = [v.state, v.time]
                event_state = "firing"
                severity = v.state
            elif current is not None:
                del self.firing[key]
                event_state = "resolved"
                severity = current[0]
            else:
                continue
            self.last_transition[key] = v.time
            out.alerts.append(
                AlertEvent(
                    time=v.time,
                    cell=cell,
                    detector=name,
                    kind=detector_kind.get(name, "cell"),  # type: ignore[arg-type]
                    severity=severity,  # type: ignore[arg-type]
                    state=event_state,  # type: ignore[arg-type]
                    summary=v.summary,
                    evidence=dict(v.evidence),
                    advice=v.advice,
                )
            )

    def replay_log(self, events: list[dict[str, Any]]) -> None:
        """Rebuild the state from stored transitions (oldest first), after a crash."""
        for e in events:
            key = f"{e['cell']}|{e['detector']}"
            t = float(e["time_s"])
            if t < self.last_transition.get(key, float("-inf")):
                continue
            self.last_transition[key] = t
            if e["state"] == "firing":
                self.firing[key] = [e["severity"], t]
            else:
                self.firing.pop(key, None)

    def resolve_orphans(self, watched: dict[str, set[str]], kinds: dict[str, str], out: RecordBatch) -> None:
        """Resolve firing alerts that nothing could ever resolve: their detector no longer
        watches the cell, re-learns from scratch (the cell's config changed), or the cell is
        no longer monitored."""
        for key in sorted(self.firing):
            cell, detector = key.split("|", 1)
            if detector in watched.get(cell, set()):
                continue
            severity, t = self.firing.pop(key)
            self.last_transition[key] = t
            out.alerts.append(
                AlertEvent(
                    time=t,
                    cell=cell,
                    detector=detector,
                    kind=kinds.get(detector, "cell"),  # type: ignore[arg-type]
                    severity=severity,
                    state="resolved",
                    summary=f"{detector} no longer judges cell {cell} as before (its config changed); it re-learns",
                )
            )
