"""Alerts and cycle features name the cycle as the cycler numbers it (issue 7: not "cycle 11" for 12)."""

from __future__ import annotations

import dataclasses
import re

from shortwatch.daemon.pipeline import Pipeline
from shortwatch.model import RecordBatch
from shortwatch.sensors.simulator import SimulatedCell, default_spec
from shortwatch.settings import parse_settings


def run(samples: list, spec: dict) -> RecordBatch:
    p = Pipeline(parse_settings({"cells": {"X": spec}}))
    out = RecordBatch()
    p.process(samples, "test", out)
    p.finish(out)
    return out


def test_alerts_name_the_cyclers_own_cycle_number() -> None:
    scenario = "full_charge_fluct_short"
    samples = list(SimulatedCell("X", scenario, default_spec(scenario), seed=1, start=1.7e9).samples())
    spec = default_spec(scenario).model_dump()
    assert samples[0].cycle == 1  # the simulated cycler counts from 1
    base = run(samples, spec)
    shifted = run([dataclasses.replace(s, cycle=s.cycle + 11) for s in samples], spec)  # a cycler at cycle 12
    assert [c.cycle for c in base.cycles] == sorted({s.cycle for s in samples})[: len(base.cycles)]
    assert [c.cycle for c in shifted.cycles] == [c.cycle + 11 for c in base.cycles]
    said = [a.summary for a in base.alerts if a.kind == "cell"]
    assert any("Charge anomaly at cycle" in s for s in said)

    def numbers(summaries: list[str]) -> list[int]:
        return [int(n) for s in summaries for n in re.findall(r"cycle (\d+)", s)]

    assert numbers([a.summary for a in shifted.alerts if a.kind == "cell"]) == [n + 11 for n in numbers(said)]
