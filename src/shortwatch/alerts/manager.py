"""The alert state machine: detector verdicts in, alert transitions out.

One (cell, detector) pair is either quiet or firing at a severity. A verdict of warning or
critical fires (or re-fires at the new severity when it escalates or eases); ok or watch
resolves. Every transition is emitted exactly once: the state is checkpointed, and after
a crash it is rebuilt from the stored alert log, so samples processed again after a
restart do not send the same alert twice. Each firing starts an episode that its
escalations and its resolve share.

State is keyed by (cell, detector) tuples in memory and nested ``{cell: {detector: ...}}``
in the checkpoint: cell ids may contain any printable character, so no separator is safe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shortwatch.detectors.base import Verdict
from shortwatch.model import AlertEvent, DetectorStatus, RecordBatch, episode_id

FIRING_STATES = ("warning", "critical")

Key = tuple[str, str]  # (cell, detector)


@dataclass(slots=True)
class Firing:
    severity: str
    since: float  # data time of the first firing of the episode
    episode: str


class AlertManager:
    def __init__(self) -> None:
        self.firing: dict[Key, Firing] = {}
        self.last_transition: dict[Key, float] = {}

    def handle(
        self, cell: str, detector_kind: dict[str, str], verdicts: list[tuple[str, Verdict]], out: RecordBatch
    ) -> None:
        for name, v in verdicts:
            out.detector_states.append(
                DetectorStatus(
                    time=v.time, cell=cell, detector=name, statistic=v.statistic, threshold=v.threshold, state=v.state
                )
            )
            key = (cell, name)
            if v.time < self.last_transition.get(key, float("-inf")):
                continue  # decided before a restart (the log has a later transition): never twice
            current = self.firing.get(key)
            if v.state in FIRING_STATES:
                if current is not None and current.severity == v.state:
                    continue
                if current is None:
                    current = Firing(v.state, v.time, episode_id(cell, name, v.time))
                current.severity = v.state
                self.firing[key] = current
                event_state = "firing"
            elif current is not None:
                del self.firing[key]
                event_state = "resolved"
            else:
                continue
            self.last_transition[key] = v.time
            out.alerts.append(
                AlertEvent(
                    time=v.time,
                    cell=cell,
                    detector=name,
                    kind=detector_kind.get(name, "cell"),  # type: ignore[arg-type]
                    severity=current.severity,  # type: ignore[arg-type]
                    state=event_state,  # type: ignore[arg-type]
                    summary=v.summary,
                    evidence=dict(v.evidence),
                    advice=v.advice,
                    episode=current.episode,
                )
            )

    def replay_log(self, events: list[dict[str, Any]]) -> None:
        """Rebuild the state from stored transitions (oldest first), after a crash.
        Alerts about sources or the daemon (no cell) are not this machine's."""
        for e in events:
            if e.get("cell") is None:
                continue
            key = (e["cell"], e["detector"])
            t = float(e["time_s"])
            if t < self.last_transition.get(key, float("-inf")):
                continue
            self.last_transition[key] = t
            if e["state"] == "firing":
                old = self.firing.get(key)
                episode = e.get("episode") or (old.episode if old else episode_id(key[0], key[1], t))
                self.firing[key] = Firing(e["severity"], old.since if old else t, episode)
            else:
                self.firing.pop(key, None)

    def resolve_orphans(self, watched: dict[str, set[str]], kinds: dict[str, str], out: RecordBatch) -> None:
        """Resolve firing alerts that nothing could ever resolve: their detector no longer
        watches the cell, or re-learns from scratch (the cell's config changed).

        Only cells in ``watched`` (restored from the checkpoint) are judged: a cell that fired
        before its first checkpoint is read again from the sources' checkpointed positions,
        and its detectors decide again (the alert log keeps them from repeating the firing).
        """
        for key in sorted(self.firing):
            cell, detector = key
            if cell not in watched or detector in watched[cell]:
                continue
            f = self.firing.pop(key)
            self.last_transition[key] = f.since
            out.alerts.append(
                AlertEvent(
                    time=self.last_transition[key],
                    cell=cell,
                    detector=detector,
                    kind=kinds.get(detector, "cell"),  # type: ignore[arg-type]
                    severity=f.severity,  # type: ignore[arg-type]
                    state="resolved",
                    summary=f"{detector} no longer judges cell {cell} as before (its config changed); it re-learns",
                    episode=f.episode,
                )
            )

    def state(self) -> dict[str, Any]:
        firing: dict[str, dict[str, list[Any]]] = {}
        for (cell, det), f in self.firing.items():
            firing.setdefault(cell, {})[det] = [f.severity, f.since, f.episode]
        last: dict[str, dict[str, float]] = {}
        for (cell, det), t in self.last_transition.items():
            last.setdefault(cell, {})[det] = t
        return {"firing": firing, "last_transition": last}

    def load(self, state: dict[str, Any]) -> None:
        firing = _nested(state.get("firing", {}))
        self.firing = {
            (cell, det): Firing(v[0], v[1], v[2] if len(v) > 2 else episode_id(cell, det, v[1]))
            for cell, dets in firing.items()
            for det, v in dets.items()
        }
        last = _nested(state.get("last_transition", {}))
        self.last_transition = {(cell, det): t for cell, dets in last.items() for det, t in dets.items()}


def _nested(flat_or_nested: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Checkpoints before version 3 keyed alerts "cell|detector"; detector names have no "|"."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in flat_or_nested.items():
        if isinstance(value, dict):
            out.setdefault(key, {}).update(value)
        else:
            cell, _, det = key.rpartition("|")
            out.setdefault(cell, {})[det] = value
    return out
