"""The alert state machine: detector verdicts in, alert transitions out.

One (cell, detector) pair is either quiet or firing at a severity. A verdict of warning or
critical fires (or re-fires at the new severity when it escalates or eases); ok or watch
resolves. Every transition is emitted exactly once: the state is checkpointed, and after
a crash it is rebuilt from the stored alert log, so samples processed again after a
restart do not send the same alert twice. Each firing starts an episode that its
escalations and its resolve share.

State is keyed by (cell, detector) tuples in memory and nested ``{cell: {detector: ...}}``
in the checkpoint: cell ids may contain any printable character, so no separator is safe.

Timing, in data time and per detector ([alerts] pending_s, keep_firing_s, hysteresis, and
[alerts.detectors.NAME] overrides), all off by default:
- pending: a warning fires only once it has stood ``pending_s`` of the cell's data time; if
  the detector clears first, nothing is sent. A critical skips the pending period.
- keep-firing: a firing alert whose detector clears is resolved only after ``keep_firing_s``
  of data time without a new firing verdict, so a flapping output is one alert, not many.
- hysteresis: a clearing verdict whose statistic is still within ``hysteresis`` (a fraction of
  the threshold) of the threshold holds for max(2 x keep_firing_s, IN_BAND_HOLD_S): a value
  hovering at the threshold does not page again and again; a clear verdict that cannot
  be judged (no statistic) counts as outside the band. Detectors report only changes, so the
  deadlines are checked on each of the cell's later samples (``advance``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from shortwatch.detectors.base import Verdict
from shortwatch.model import AlertEvent, DetectorStatus, RecordBatch, episode_id
from shortwatch.settings import AlertSettings

FIRING_STATES = ("warning", "critical")

Key = tuple[str, str]  # (cell, detector)
#: Data seconds a clear verdict inside the hysteresis band holds before it resolves (at least).
IN_BAND_HOLD_S = 3600.0


@dataclass(slots=True)
class Waiting:
    """A transition that waits for its deadline: a pending firing or a clearing (resolve)."""

    deadline: float
    severity: str
    kind: str
    summary: str
    evidence: dict[str, Any]
    advice: str
    time: float  # data time of the verdict that started it


@dataclass(slots=True)
class Firing:
    severity: str
    since: float  # data time of the first firing of the episode
    episode: str


class AlertManager:
    def __init__(self, timing: AlertSettings | None = None) -> None:
        self.timing = timing or AlertSettings()
        self.firing: dict[Key, Firing] = {}
        self.last_transition: dict[Key, float] = {}
        self.pending: dict[Key, Waiting] = {}
        self.clearing: dict[Key, Waiting] = {}
        self.bands: dict[Key, list[float]] = {}  # [threshold, +1 higher is worse | -1 lower is worse]
        self.wake: dict[str, float] = {}  # cell -> earliest deadline of its waiting transitions

    def _params(self, detector: str) -> tuple[float, float, float]:
        o = self.timing.detectors.get(detector)
        values = [getattr(o, k, None) if o is not None else None for k in ("pending_s", "keep_firing_s", "hysteresis")]
        defaults = (self.timing.pending_s, self.timing.keep_firing_s, self.timing.hysteresis)
        return tuple(d if v is None else v for v, d in zip(values, defaults, strict=True))  # type: ignore[return-value]

    def _in_band(self, key: Key, v: Verdict, hysteresis: float) -> bool:
        band = self.bands.get(key)
        if not hysteresis or band is None or v.statistic is None:
            return False
        threshold, sign = band
        margin = hysteresis * abs(threshold)
        return v.statistic > threshold - margin if sign > 0 else v.statistic < threshold + margin

    def _schedule(self, cell: str) -> None:
        times = [w.deadline for (c, _), w in (*self.pending.items(), *self.clearing.items()) if c == cell]
        if times:
            self.wake[cell] = min(times)
        else:
            self.wake.pop(cell, None)

    def _emit(self, key: Key, state: str, w: Waiting | Verdict, kind: str, severity: str, out: RecordBatch) -> None:
        cell, name = key
        current = self.firing.get(key)
        if state == "firing":
            if current is None:
                current = Firing(severity, w.time, episode_id(cell, name, w.time))
            current.severity = severity
            self.firing[key] = current
        else:
            assert current is not None
            del self.firing[key]
            self.bands.pop(key, None)
        self.last_transition[key] = w.time
        out.alerts.append(
            AlertEvent(
                time=w.time,
                cell=cell,
                detector=name,
                kind=kind,  # type: ignore[arg-type]
                severity=current.severity,  # type: ignore[arg-type]
                state=state,  # type: ignore[arg-type]
                summary=w.summary,
                evidence=dict(w.evidence),
                advice=w.advice,
                episode=current.episode,
            )
        )

    def advance(self, cell: str, t: float, out: RecordBatch) -> None:
        """The cell's data time reached ``t``: fire pending alerts and resolve clearing ones
        whose deadline has passed. The pipeline calls it only when ``t >= wake[cell]``."""
        for key in [k for k, w in self.pending.items() if k[0] == cell and w.deadline <= t]:
            w = self.pending.pop(key)
            self._emit(key, "firing", w, w.kind, w.severity, out)
        for key in [k for k, w in self.clearing.items() if k[0] == cell and w.deadline <= t]:
            w = self.clearing.pop(key)
            if key in self.firing:
                self._emit(key, "resolved", w, w.kind, self.firing[key].severity, out)
        self._schedule(cell)

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
            kind = detector_kind.get(name, "cell")
            pending_s, keep_s, hysteresis = self._params(name)
            current = self.firing.get(key)
            if v.state in FIRING_STATES:
                self.clearing.pop(key, None)  # firing again: the clear is forgotten
                if current is None and v.state != "critical" and pending_s > 0:
                    w = self.pending.get(key)
                    if w is None:
                        w = Waiting(v.time + pending_s, v.state, kind, v.summary, dict(v.evidence), v.advice, v.time)
                        self.pending[key] = w
                    else:  # still pending: the latest words, the first deadline
                        w.severity, w.summary, w.evidence, w.advice = v.state, v.summary, dict(v.evidence), v.advice
                    self._schedule(cell)
                    continue
                self.pending.pop(key, None)
                if current is not None and current.severity == v.state:
                    self._schedule(cell)
                    continue
                if current is None and v.statistic is not None and v.threshold is not None:
                    self.bands[key] = [v.threshold, 1.0 if v.statistic >= v.threshold else -1.0]
                self._emit(key, "firing", v, kind, v.state, out)
            elif key in self.pending:
                del self.pending[key]  # cleared before it was due: nothing was sent
            elif current is not None:
                hold = max(2 * keep_s, IN_BAND_HOLD_S) if self._in_band(key, v, hysteresis) else keep_s
                if hold <= 0:
                    self._emit(key, "resolved", v, kind, current.severity, out)
                elif key not in self.clearing:
                    self.clearing[key] = Waiting(
                        v.time + hold, current.severity, kind, v.summary, dict(v.evidence), v.advice, v.time
                    )
            self._schedule(cell)

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
        for key in [k for k in self.pending if k[0] in watched and k[1] not in watched[k[0]]]:
            del self.pending[key]
        for key in sorted(self.firing):
            cell, detector = key
            if cell not in watched or detector in watched[cell]:
                continue
            f = self.firing.pop(key)
            self.clearing.pop(key, None)
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
        waiting = {
            name: [[c, d, asdict(w)] for (c, d), w in table.items()]
            for name, table in (("pending", self.pending), ("clearing", self.clearing))
        }
        bands = [[c, d, b] for (c, d), b in self.bands.items()]
        return {"firing": firing, "last_transition": last, **waiting, "bands": bands}

    def load(self, state: dict[str, Any]) -> None:
        firing = _nested(state.get("firing", {}))
        self.firing = {
            (cell, det): Firing(v[0], v[1], v[2] if len(v) > 2 else episode_id(cell, det, v[1]))
            for cell, dets in firing.items()
            for det, v in dets.items()
        }
        last = _nested(state.get("last_transition", {}))
        self.last_transition = {(cell, det): t for cell, dets in last.items() for det, t in dets.items()}
        self.pending = {(c, d): Waiting(**w) for c, d, w in state.get("pending", [])}
        self.clearing = {(c, d): Waiting(**w) for c, d, w in state.get("clearing", [])}
        self.bands = {(c, d): b for c, d, b in state.get("bands", [])}
        self.wake = {}
        for cell in {c for c, _ in (*self.pending, *self.clearing)}:
            self._schedule(cell)


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
