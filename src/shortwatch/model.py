"""The records that flow through shortwatch.

Samples come in from sources; CellMonitor turns them into step and cycle features and
alert events; storage writes all of them. These classes are plain slotted dataclasses
because a replay moves hundreds of thousands of them per second.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

Mode = Literal["cc", "cv", "sweep", "rest"]
MODES: tuple[str, ...] = ("cc", "cv", "sweep", "rest")

CellKind = Literal["symmetric", "full", "anode-free"]
Fixture = Literal["fixed-gap", "constant-pressure"]
Severity = Literal["info", "warning", "critical"]
AlertState = Literal["firing", "resolved"]

#: Canonical CSV columns, in order (DESIGN.md "Canonical CSV").
CSV_COLUMNS: tuple[str, ...] = (
    "time",
    "cell",
    "voltage_V",
    "current_A",
    "pressure_MPa",
    "temperature_C",
    "cycle",
    "step",
    "mode",
)


@dataclass(slots=True)
class Sample:
    """One reading of one cell at one data time.

    ``time`` is Unix seconds (UTC). Any channel may be missing (None): a load cell on a
    serial line gives only pressure, a cycler file gives no pressure.
    Current is positive on charge (Li plated on the working/negative electrode).
    """

    time: float
    cell: str
    voltage_V: float | None = None
    current_A: float | None = None
    pressure_MPa: float | None = None
    temperature_C: float | None = None
    cycle: int | None = None
    step: int | None = None
    mode: str | None = None

    def row(self) -> tuple[Any, ...]:
        """The fields in canonical CSV column order (CSV_COLUMNS)."""
        return (
            self.time,
            self.cell,
            self.voltage_V,
            self.current_A,
            self.pressure_MPa,
            self.temperature_C,
            self.cycle,
            self.step,
            self.mode,
        )


@dataclass(slots=True)
class Rejected:
    """Input that could not be accepted, kept aside in the quarantine table.

    ``raw`` is the row, payload or bytes as received (decoded for display), so that
    nothing is silently lost and a person can inspect or re-import it.
    """

    source: str
    reason: str
    raw: str
    cell: str | None = None
    time: float | None = None
    detail: str = ""


StepKind = Literal["charge", "discharge", "cv_charge", "cv_discharge", "rest", "sweep"]


@dataclass(slots=True)
class StepFeatures:
    """Features of one finished step (a CC half-cycle, a CV hold, a rest, one CV sweep).

    Values that do not apply to a step kind are None (e.g. ``asr_ohm_cm2`` of a rest).
    """

    cell: str
    step_index: int  # running count of steps seen for this cell (0-based)
    step_kind: str
    cycle: int
    t_start: float
    t_end: float
    n_samples: int
    duration_s: float
    capacity_Ah: float  # |charge| passed: sum of |I| dt, each logged current held over the interval before it
    gap_s: float  # time in data gaps (intervals over GAP_S): not integrated, features incomplete
    capacity_mAh_cm2: float | None
    current_A: float | None  # mean current (signed)
    current_density_mA_cm2: float | None  # mean |I| / area
    v_start: float | None
    v_end: float | None
    v_min: float | None
    v_max: float | None
    eta_V: float | None  # plateau |V| (median of the middle of the step), symmetric cells
    asr_ohm_cm2: float | None  # eta / J
    nucleation_V: float | None  # peak |V| at the start minus plateau |V| (>0: a nucleation peak)
    end_rise_V: float | None  # |V| at the end minus plateau |V| (>0: voids at end of strip)
    flatness: float | None  # (max-min)/plateau of |V| over the middle: small = flat, ohmic
    v_dips: int  # number of voltage dips while charging at constant current
    max_dip_V: float  # deepest such dip
    rest_decay_V_per_h: float | None  # rests: mean |dV/dt| over the rest
    rest_tau_s: float | None  # rests: time for |V| to relax to 1/e of its start (None: not reached)
    p_start: float | None
    p_end: float | None
    p_min: float | None
    p_max: float | None
    dP_MPa: float | None  # p_end - p_start
    temperature_C: float | None  # mean temperature
    sweep_peak_A: float | None  # sweeps: max |I|
    sweep_linearity: float | None  # sweeps: R^2 of I vs V (1 = a resistor)
    sweep_rate_V_s: float | None  # sweeps: mean |dV/dt|
    rest_fall_V_per_h: float | None = None  # rests: fall of |V| over the rest's second half (self-discharge)
    # symmetric cells: the rise of |V| over the step's last logged interval (>= 0). Where the end of
    # strip rises within a few samples, this much of end_rise_V depends on where the last sample fell
    end_last_rise_V: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class CycleFeatures:
    """Features of one finished cycle (charge + discharge, or one CV period)."""

    cell: str
    cycle: int
    t_start: float
    t_end: float
    n_steps: int
    q_charge_Ah: float
    q_discharge_Ah: float
    gap_s: float  # time in data gaps within the cycle's steps (its capacities are incomplete)
    ce: float | None  # q_discharge / q_charge
    q_discharge_Ah_g: float | None  # per gram of cathode active mass (full cells)
    eta_charge_V: float | None
    eta_discharge_V: float | None
    asr_ohm_cm2: float | None  # mean of the half-cycle ASRs
    current_density_mA_cm2: float | None
    p_start: float | None
    p_max: float | None
    p_min: float | None
    dP_charge_MPa: float | None
    dP_discharge_MPa: float | None  # pressure change over the discharge (d(dP))
    dpq_MPa_g_per_Ah: float | None  # |d(dP)| / Q_discharge per gram
    cv_peak_A: float | None  # largest sweep peak current of the cycle
    cv_linearity: float | None
    v_charge_end: float | None
    charge_v_dips: int
    temperature_C: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class AlertEvent:
    """One alert transition (DESIGN.md "Alert event").

    ``id`` is unique per event, so a receiver can drop the one repeat that at-least-once
    delivery allows; ``episode`` is shared by every event of one alert, from its first firing
    through escalations and reminders to its resolve. ``cell`` is None for alerts about a
    source or the daemon itself, which name their ``source``.
    """

    time: float  # data time of the sample that caused the transition (wall time for daemon alerts)
    cell: str | None
    detector: str
    kind: Literal["cell", "data"]
    severity: Severity
    state: AlertState
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    advice: str = ""
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    episode: str = ""
    source: str | None = None
    reminder: bool = False

    def __post_init__(self) -> None:
        if not self.episode:  # a first firing starts its own episode
            self.episode = episode_id(self.cell, self.detector, self.time)

    def to_json_dict(self, station: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "episode": self.episode,
            "time": iso_time(self.time),
            "station": station,
            "cell": self.cell,
            "source": self.source,
            "detector": self.detector,
            "kind": self.kind,
            "severity": self.severity,
            "state": self.state,
            "reminder": self.reminder,
            "summary": self.summary,
            "evidence": {k: _json_number(v) for k, v in self.evidence.items()},
            "advice": self.advice,
        }


def episode_id(cell: str | None, detector: str, first_firing: float) -> str:
    """The episode of an alert: its subject, its detector and the data time it first fired."""
    return f"{cell if cell is not None else '_station'}/{detector}/{iso_time(first_firing)}"


def iso_time(t: float) -> str:
    """Unix seconds to ISO-8601 with an explicit UTC offset."""
    return datetime.fromtimestamp(t, tz=UTC).isoformat()


def _json_number(v: Any) -> Any:
    if isinstance(v, float):
        if not math.isfinite(v):
            return None
        return round(v, 6)
    return v


@dataclass(slots=True)
class DetectorStatus:
    """A detector's statistic and state for one cell after a feature update (InfluxDB `detector`)."""

    time: float
    cell: str
    detector: str
    statistic: float | None
    threshold: float | None
    state: str  # ok | watch | warning | critical


@dataclass(slots=True)
class RecordBatch:
    """Everything the pipeline hands storage in one go, written in one transaction."""

    samples: list[Sample] = field(default_factory=list)
    steps: list[StepFeatures] = field(default_factory=list)
    cycles: list[CycleFeatures] = field(default_factory=list)
    alerts: list[AlertEvent] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    detector_states: list[DetectorStatus] = field(default_factory=list)

    def __len__(self) -> int:
        return (
            len(self.samples)
            + len(self.steps)
            + len(self.cycles)
            + len(self.alerts)
            + len(self.rejected)
            + len(self.detector_states)
        )
