"""`shortwatch alerts test`: a clearly marked test alert, with a sample evidence plot, through
each notifier; it reports what each server answered. The first thing a lab runs after
setting up Slack or email."""

from __future__ import annotations

import dataclasses
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from shortwatch.model import CycleFeatures, DetectorStatus, RecordBatch, StepFeatures, iso_time

TEST_CELL = "TEST"
TEST_DETECTOR = "overpotential_drop"


def test_event(station: str, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    t = iso_time(now)
    return {
        "id": str(uuid.uuid4()),
        "episode": f"{TEST_CELL}/{TEST_DETECTOR}/{t}",
        "time": t,
        "station": station,
        "cell": TEST_CELL,
        "source": None,
        "detector": TEST_DETECTOR,
        "kind": "cell",
        "severity": "warning",
        "state": "firing",
        "reminder": False,
        "summary": "TEST ALERT from shortwatch (not a real cell): ASR fell 12% below its peak since cycle 20",
        "evidence": {
            "cycle": 26,
            "half_cycle": 52,
            "baseline_asr_ohm_cm2": 60.0,
            "asr_ohm_cm2": 52.8,
            "asr_raw_ohm_cm2": 52.8,
            "statistic": 0.55,
            "threshold": 0.4,
            "test": True,
        },
        "advice": "Nothing to do: this is a test. A real alert says here what to do next.",
    }


def sample_png(event: dict[str, Any]) -> bytes:
    """The evidence plot of the test event, drawn by the real code from a throw-away store
    holding a made-up symmetric cell whose ASR peaks at cycle 20 and then falls."""
    from shortwatch.report import evidence_png
    from shortwatch.storage.sqlite import SqliteStore

    t_end = datetime.fromisoformat(event["time"]).timestamp()
    blank_step = dict.fromkeys((f.name for f in dataclasses.fields(StepFeatures)), None)
    blank_cycle = dict.fromkeys((f.name for f in dataclasses.fields(CycleFeatures)), None)
    batch = RecordBatch()
    for k in range(30):
        t1 = t_end - (26 - k) * 7200.0
        asr = 50.0 + 0.5 * k if k <= 20 else 60.0 - 1.2 * (k - 20)
        for j, kind in enumerate(("charge", "discharge")):
            batch.steps.append(
                StepFeatures(
                    **blank_step
                    | {
                        "cell": TEST_CELL,
                        "step_index": 2 * k + j,
                        "step_kind": kind,
                        "cycle": k,
                        "t_start": t1 - 7200 + 3600 * j,
                        "t_end": t1 - 3600 + 3600 * j,
                        "n_samples": 360,
                        "duration_s": 3600.0,
                        "capacity_Ah": 1e-4,
                        "gap_s": 0.0,
                        "v_dips": 0,
                        "max_dip_V": 0.0,
                        "asr_ohm_cm2": asr + (0.4 if j else -0.4),
                    }
                )
            )
        batch.cycles.append(
            CycleFeatures(
                **blank_cycle
                | {
                    "cell": TEST_CELL,
                    "cycle": k,
                    "t_start": t1 - 7200,
                    "t_end": t1,
                    "n_steps": 2,
                    "q_charge_Ah": 1e-4,
                    "q_discharge_Ah": 1e-4,
                    "gap_s": 0.0,
                    "charge_v_dips": 0,
                    "asr_ohm_cm2": asr,
                }
            )
        )
        stat = max(0.0, 0.1 * (k - 20))
        state = "warning" if stat >= 0.4 else "ok"
        batch.detector_states.append(DetectorStatus(t1, TEST_CELL, TEST_DETECTOR, stat, 0.4, state))
    with tempfile.TemporaryDirectory() as tmp, SqliteStore(Path(tmp) / "test.sqlite") as store:
        store.write_sync(batch)
        return evidence_png(store, event)
