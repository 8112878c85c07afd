"""Arbin CSV exports (MITS Pro, as BEEP reads them): one row per record.

``Data_Point,Test_Time,DateTime,Step_Time,Step_Index,Cycle_Index,Current,Voltage,...,
Temperature``. ``DateTime`` is Unix seconds, ``Test_Time`` seconds since the start. Arbin's
current is positive on charge, as shortwatch's. ``Step_Index``/``Cycle_Index`` may be
empty: the samples then carry no cycle number and segmentation counts cycles itself.
The ``*_Metadata.csv`` file Arbin writes beside the data is recognised and skipped.
"""

from __future__ import annotations

from shortwatch.sensors.table import Col, Layout

LAYOUT = Layout(
    name="arbin-csv",
    fields={
        "voltage_V": Col(("Voltage", "Voltage(V)", "Voltage (V)")),
        "current_A": Col(("Current", "Current(A)", "Current (A)")),
        "temperature_C": Col(("Temperature", "Aux_Temperature_1(C)", "Temperature (C)_1")),
        "cycle": Col(("Cycle_Index", "Cycle Index")),
        "step": Col(("Step_Index", "Step Index")),
    },
    clock=Col(("DateTime", "Date_Time", "Date Time")),
    clock_formats=("unix", "iso", "%m/%d/%Y %H:%M:%S.%f", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %I:%M:%S %p"),
    elapsed=Col(("Test_Time", "Test_Time(s)", "Test Time (s)")),
    delimiter=",",
)


def sniff(text: str) -> bool:
    first = text.split("\n", 1)[0]
    return first.startswith(("Data_Point,", "Data_Point\t", "Data Point,")) and "Test_Time" in first.replace(" ", "_")


def sniff_metadata(text: str) -> bool:
    first = text.split("\n", 1)[0]
    return "Test_ID" in first and "IV_Ch_ID" in first and "Schedule_File_Name" in first
