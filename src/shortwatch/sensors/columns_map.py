"""Any other delimited export, mapped in the file source's config (``format = "columns"``).

A user whose cycler is not on shortwatch's list names, for each column they want, the
canonical field it feeds and its unit or scale::

    columns = { "Test Time(s)" = "time", "Voltage(V)" = "voltage_V",
                "Current(mA)" = { field = "current_A", unit = "mA" } }
    time_format = "elapsed"        # or "auto" (Unix seconds or ISO-8601) or "%d.%m.%Y %H:%M:%S"
    delimiter = ";"                # default: tab, ';' or ',' as the header line shows

Rows are decoded by the same :class:`~shortwatch.sensors.table.TableDecoder` as the
Neware, Arbin and Maccor exports, with the same checks and Rejected reasons.
"""

from __future__ import annotations

from typing import Any

from shortwatch.sensors.canonical_csv import FormatError
from shortwatch.sensors.table import FIELDS, Col, Layout, TableDecoder

#: unit -> factor to the canonical unit of its field (V, A, MPa, degC, s)
UNITS: dict[str, float] = {
    "V": 1.0,
    "mV": 1e-3,
    "A": 1.0,
    "mA": 1e-3,
    "uA": 1e-6,
    "µA": 1e-6,
    "MPa": 1.0,
    "kPa": 1e-3,
    "bar": 0.1,
    "C": 1.0,
    "degC": 1.0,
    "s": 1.0,
    "min": 60.0,
    "h": 3600.0,
}


def column_scale(spec: str | dict[str, Any]) -> float:
    """The factor of one column map entry: its ``scale`` times its ``unit``'s factor."""
    if isinstance(spec, str):
        return 1.0
    return float(spec.get("scale", 1.0)) * UNITS[spec["unit"]] if "unit" in spec else float(spec.get("scale", 1.0))


def layout_from_config(columns: dict[str, Any], delimiter: str | None, time_format: str) -> Layout:
    """A Layout from the config's ``columns`` map (validated by settings.FileSource)."""
    fields: dict[str, Col] = {}
    time: Col | None = None
    for name, spec in columns.items():
        target = spec if isinstance(spec, str) else spec["field"]
        scale = column_scale(spec)
        if target == "time":
            time = Col((name,), scale)
        elif target in FIELDS:
            fields[target] = Col((name,), scale)
        else:
            raise FormatError(f"columns: {name!r} maps to {target!r}, not one of time, {', '.join(FIELDS)}")
    if time is None:
        raise FormatError("columns: no column maps to 'time'")
    if time_format == "elapsed":
        return Layout("columns", fields, elapsed=time, delimiter=delimiter)
    formats = ("unix", "iso") if time_format == "auto" else (time_format,)
    return Layout("columns", fields, clock=time, clock_formats=formats, delimiter=delimiter)


def make_decoder(source: str, cell: str, tz: str, options: dict[str, Any]) -> TableDecoder:
    if not options.get("columns"):
        raise FormatError(f"{source}: format 'columns' needs a columns map in the file source's config")
    layout = layout_from_config(options["columns"], options.get("delimiter"), options.get("time_format", "auto"))
    return TableDecoder(layout, source, cell, tz)
