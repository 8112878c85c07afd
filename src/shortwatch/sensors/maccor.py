"""Maccor text exports, in the two layouts seen in the wild.

- ``Rec#  Cyc#  Step  Test (Sec)|TestTime  Step (Sec)|StepTime  Amp-hr  Watt-hr  Amps  Volts
  State  ES  DPt Time ...`` after a one- to three-line preamble (``Today's Date ...``).
  ``TestTime`` may be written as ``2d 02:52:51.57``.
- A key/value preamble (``Name:``, ``Started``, ...; its description may hold control bytes),
  then ``Rec  Cycle P  Cycle C  Step  TestTime  StepTime  Cap. [Ah] ... Current [A]
  Voltage [V]  Md  ES  DPT Time``, where TestTime is in **minutes**.

Time is the first record's clock (``DPt Time``, local) minus its test time, plus each
record's test time. The current may be signed or not; ``State``/``Md`` says the direction:
``C`` charge, ``D`` discharge (made negative), ``R`` rest; other states keep the sign
written. Maccor's ``Cyc#`` (``Cycle C`` in the second layout) and ``Step`` are kept.
Auxiliary channel 1 is taken as the cell temperature; a disconnected thermocouple
(-2500 C) is dropped by the validator, which keeps the rest of the sample.
"""

from __future__ import annotations

from shortwatch.sensors.table import Col, Layout, TableDecoder

_CLOCK_FORMATS = ("%m/%d/%Y %H:%M:%S", "%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %H:%M")


def maccor_state(text: str) -> tuple[int, str | None]:
    """(sign of the current, mode) of a Maccor state letter."""
    state = text.strip()[:1].upper()
    if state == "C":
        return 1, None
    if state == "D":
        return -1, None
    return 0, ("rest" if state == "R" else None)


def _layout(minutes: bool) -> Layout:
    return Layout(
        name="maccor-txt",
        fields={
            "voltage_V": Col(("Volts", "Voltage [V]", "Voltage")),
            "current_A": Col(("Amps", "Current [A]", "Current")),
            "temperature_C": Col(("Aux #1", "Temp 1")),
            "cycle": Col(("Cyc#", "Cycle C", "Cycle")),
            "step": Col(("Step",)),
        },
        clock=Col(("DPt Time", "DPT Time")),
        clock_formats=_CLOCK_FORMATS,
        elapsed=Col(("Test (Sec)", "TestTime", "Test Time"), 60.0 if minutes else 1.0),
        delimiter="\t",
        state="Md" if minutes else "State",
        state_rule=maccor_state,
    )


TEXT = _layout(minutes=False)
KEYED = _layout(minutes=True)


def _header_line(text: str) -> str | None:
    return next((ln for ln in text.split("\n") if ln.startswith(("Rec#\t", "Rec\tCycle P\t"))), None)


def sniff(text: str) -> bool:
    header = _header_line(text)
    return header is not None and "Step" in header and ("Volts" in header or "Voltage [V]" in header)


def make_decoder(source: str, cell: str, tz: str, head: str) -> TableDecoder:
    header = _header_line(head) or ""
    return TableDecoder(KEYED if header.startswith("Rec\tCycle P\t") else TEXT, source, cell, tz)
