"""InfluxDB line protocol for the DESIGN.md schema: one log row -> one line.

Why not ``influxdb_client.Point``: building a Point per row and rendering it costs ~14 µs on
this machine, this encoder ~4 µs (a sample line; tag sets cached per cell), and a backfill sends
millions of rows. The escaping and number formatting follow Point's exactly (a property test
compares the two on random rows), so InfluxDB receives what the library would have sent.

The schema (docs/influxdb.md has units and cardinality):

=============  ==========================================  ======================================
measurement    tags                                        fields, timestamp
=============  ==========================================  ======================================
``sample``     cell, station                               voltage_V, current_A, pressure_MPa,
                                                           temperature_C, cycle (i), step (i); time
``step``       cell, station, step_kind                    every numeric StepFeatures field; t_start
``cycle``      cell, station                               every numeric CycleFeatures field; t_start
``detector``   cell, detector, station                     statistic, threshold, state; time
``alert``      cell ("_station" when null), detector,      summary, severity, state, kind, id, episode,
               station                                     reminder, source, advice, evidence (JSON); time
``daemon``     station                                     the daemon's health figures; wall time
=============  ==========================================  ======================================

A point is keyed by measurement + tags + timestamp, so re-sending a row overwrites it: the
timestamps are chosen to be stable when a record is rewritten (a step's and a cycle's
``t_start``, not their growing ``t_end``). A field whose value is None or not finite is left
out; a row with no field left is not sent (InfluxDB refuses such a line).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any, Literal

from shortwatch.model import CycleFeatures, StepFeatures

Precision = Literal["s", "ms", "us", "ns"]
PRECISIONS: tuple[str, ...] = ("s", "ms", "us", "ns")
#: The v1 API spells microseconds and nanoseconds "u" and "n".
V1_PRECISION = {"s": "s", "ms": "ms", "us": "u", "ns": "n"}
MEASUREMENTS: tuple[str, ...] = ("sample", "step", "cycle", "detector", "alert", "daemon")
#: The tag an alert about a source or the daemon itself carries in place of a cell (as on MQTT).
STATION_CELL = "_station"

# The escapes of influxdb_client.client.write.point (tag keys/values and field keys; strings).
_ESCAPE_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})
_ESCAPE_STRING = str.maketrans({'"': r"\"", "\\": r"\\"})


def escape_tag(value: str) -> str:
    """A tag key or value (a trailing backslash would escape the separator: pad it, as Point does)."""
    out = str(value).translate(_ESCAPE_KEY)
    return out + " " if out.endswith("\\") else out


def escape_string(value: str) -> str:
    return str(value).translate(_ESCAPE_STRING)


def timestamp(t: float, precision: str) -> int:
    """Unix seconds as an integer in ``precision``. A float of today's Unix time resolves
    ~0.24 µs, so nanoseconds are microseconds times 1000 (t * 1e9 would add float noise)."""
    if precision == "ms":
        return round(t * 1_000)
    if precision == "us":
        return round(t * 1_000_000)
    if precision == "ns":
        return round(t * 1_000_000) * 1_000
    if precision == "s":
        return round(t)
    raise ValueError(f"precision {precision!r}: one of {', '.join(PRECISIONS)}")


#: A field spec: (key, "key=", kind) per field, in key order; kind f float, i integer, s string, b bool.
FieldSpec = tuple[tuple[str, str, str], ...]


def _spec(kinds: dict[str, str]) -> FieldSpec:
    """Fields in key order, as Point writes them (InfluxDB does not mind; a test compares lines)."""
    return tuple((k, f"{escape_tag(k)}=", kind) for k, kind in sorted(kinds.items()))


def _fields(row: dict[str, Any], spec: FieldSpec) -> str:
    """The field set of ``row``: values that are None or not finite are left out ("" when
    none is left). "1.0" is written "1" (Point's choice; the same float). The hot loop of a
    backfill, so written out rather than composed of helpers: about twice as fast."""
    parts = []
    for key, prefix, kind in spec:
        v = row.get(key)
        if v is None:
            continue
        if kind == "f":
            v = float(v)
            if v - v != 0.0:  # NaN or an infinity
                continue
            text = repr(v)
            parts.append(prefix + (text[:-2] if text.endswith(".0") else text))
        elif kind == "i":
            if isinstance(v, float) and v - v != 0.0:
                continue
            parts.append(f"{prefix}{int(v)}i")
        elif kind == "b":
            parts.append(prefix + ("true" if v else "false"))
        else:
            parts.append(f'{prefix}"{escape_string(v)}"')
    return ",".join(parts)


def _kinds(cls: type, skip: set[str]) -> dict[str, str]:
    """Field name -> line-protocol type from a model dataclass's annotations. The declared
    type, not the value's, decides: a float field that holds a whole number must still be
    sent as a float, or InfluxDB refuses the next point with a field type conflict."""
    out: dict[str, str] = {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        text = str(f.type)
        out[f.name] = "f" if "float" in text else "i" if "int" in text else "s"
    return out


def _line(head: str, body: str, t: float | None, precision: str) -> str | None:
    """``head`` is the measurement and its tags; no line without a field or a finite time."""
    if not body or t is None or t - t != 0.0:
        return None
    return f"{head} {body} {timestamp(t, precision)}"


def _tags(**tags: Any) -> str:
    """``,k=v`` pairs sorted by key (InfluxDB's preferred order); None values are left out."""
    return "".join(f",{escape_tag(k)}={escape_tag(v)}" for k, v in sorted(tags.items()) if v not in (None, ""))


SAMPLE_FIELDS: dict[str, str] = {
    "voltage_V": "f",
    "current_A": "f",
    "pressure_MPa": "f",
    "temperature_C": "f",
    "cycle": "i",
    "step": "i",
}
STEP_FIELDS = _kinds(StepFeatures, {"cell", "step_kind", "t_start"})
CYCLE_FIELDS = _kinds(CycleFeatures, {"cell", "t_start"})
DETECTOR_FIELDS = {"statistic": "f", "threshold": "f", "state": "s"}
# No field named "detector": a field and a tag of one name make InfluxQL return "detector_1".
ALERT_FIELDS = {
    "summary": "s",
    "severity": "s",
    "state": "s",
    "kind": "s",
    "id": "s",
    "episode": "s",
    "reminder": "b",
    "source": "s",
    "advice": "s",
    "evidence": "s",
}
_SAMPLE, _STEP, _CYCLE, _DETECTOR, _ALERT = map(
    _spec, (SAMPLE_FIELDS, STEP_FIELDS, CYCLE_FIELDS, DETECTOR_FIELDS, ALERT_FIELDS)
)


class LineEncoder:
    """Encodes log rows (dicts, as the store's log reader yields them) into lines.

    Tag sets are cached per (cell, station, ...): a cell's tags are escaped once, not per row.
    """

    def __init__(self, precision: str = "ms"):
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: one of {', '.join(PRECISIONS)}")
        self.precision = precision
        self._tag_cache: dict[tuple[Any, ...], str] = {}
        self.encoders: dict[str, Callable[[dict[str, Any]], str | None]] = {
            "sample": self.sample,
            "step": self.step,
            "cycle": self.cycle,
            "detector": self.detector,
            "alert": self.alert,
        }

    def _head(self, measurement: str, **tags: Any) -> str:
        """The measurement and its escaped tags, cached: a cell's tags are escaped once."""
        key = (measurement, *sorted(tags.items()))
        out = self._tag_cache.get(key)
        if out is None:
            if len(self._tag_cache) > 100_000:  # cells x detectors is small; bound it anyway
                self._tag_cache.clear()
            out = self._tag_cache[key] = measurement + _tags(**tags)
        return out

    def encode(self, table: str, row: dict[str, Any]) -> str | None:
        return self.encoders[table](row)

    def sample(self, row: dict[str, Any]) -> str | None:
        head = self._head("sample", cell=row["cell"], station=row.get("station"))
        return _line(head, _fields(row, _SAMPLE), row["time"], self.precision)

    def step(self, row: dict[str, Any]) -> str | None:
        head = self._head("step", cell=row["cell"], station=row.get("station"), step_kind=row.get("step_kind"))
        return _line(head, _fields(row, _STEP), row["t_start"], self.precision)

    def cycle(self, row: dict[str, Any]) -> str | None:
        head = self._head("cycle", cell=row["cell"], station=row.get("station"))
        return _line(head, _fields(row, _CYCLE), row["t_start"], self.precision)

    def detector(self, row: dict[str, Any]) -> str | None:
        head = self._head("detector", cell=row["cell"], detector=row["detector"], station=row.get("station"))
        return _line(head, _fields(row, _DETECTOR), row["time"], self.precision)

    def alert(self, row: dict[str, Any]) -> str | None:
        """An alert event (the DESIGN JSON dict plus ``time_s``)."""
        cell = row.get("cell")
        head = self._head(
            "alert", cell=STATION_CELL if cell is None else cell, detector=row["detector"], station=row.get("station")
        )
        values = dict(row)
        evidence = values.get("evidence")
        if evidence is not None and not isinstance(evidence, str):
            values["evidence"] = json.dumps(evidence, separators=(",", ":"), default=str)
        return _line(head, _fields(values, _ALERT), row["time_s"], self.precision)

    def daemon(self, station: str, t: float, figures: dict[str, Any]) -> str | None:
        """The daemon's health point. Numbers are always sent as floats (a counter that is an
        int now and a float later would be a field type conflict); strings and bools as such."""
        kinds = {k: "b" if isinstance(v, bool) else "s" if isinstance(v, str) else "f" for k, v in figures.items()}
        return _line(self._head("daemon", station=station), _fields(figures, _spec(kinds)), t, self.precision)
