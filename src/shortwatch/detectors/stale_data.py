"""stale_data (live mode only, kind ``data``): a cell that stopped sending.

The only detector that reads the wall clock: silence is measured from the wall time the
last sample arrived, against the cell's own sampling period (learned from data time).
It tells "the test ended" (the current had gone to zero and stayed there: a rest longer
than ``ended_rest_s`` at the end) from "the instrument went silent" (data stopped while
current was flowing or the rest was short). Replay never runs it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from shortwatch.detectors.base import Detector, Verdict
from shortwatch.detectors.stats import Ewma
from shortwatch.model import Sample
from shortwatch.settings import CellSpec

if TYPE_CHECKING:
    from shortwatch.detectors.monitor import CellMonitor


class StaleData(Detector):
    name = "stale_data"
    kind = "data"
    per_sample = True
    params = {
        "periods": (6, "silence of this many sampling periods..."),
        "min_silence_s": (60.0, "...and at least this long is stale"),
        "ended_rest_s": (1800.0, "zero current for this long before the silence: the test ended"),
    }

    def __init__(self, spec: CellSpec, overrides: dict[str, Any] | None = None):
        super().__init__(spec, overrides)
        self.period = Ewma(alpha=0.1)
        self.last_data_time: float | None = None
        self.last_arrival: float | None = None
        self.rest_since: float | None = None  # data time the current went to ~0
        self.fired_at: float | None = None  # wall time of the last stale verdict

    def on_sample(self, s: Sample, pressure: float | None, m: CellMonitor) -> Verdict | None:
        if self.last_data_time is not None and s.time > self.last_data_time:
            self.period.update(min(s.time - self.last_data_time, 3600.0))
        self.last_data_time = s.time
        self.last_arrival = time.time()
        i = s.current_A
        if i is not None:
            if abs(i) <= m.segmenter.rest_threshold():
                self.rest_since = self.rest_since if self.rest_since is not None else s.time
            else:
                self.rest_since = None
        if self.state_name != "ok":
            summary = f"Data from the cell resumed ({m.cell})"
            # the alert fired at wall time; data time may lag it (a buffering exporter), and a
            # transition must not go back in time
            t = max(s.time, self.fired_at or s.time)
            return self.verdict(t, "ok", 0.0, None, summary, {"cycle": m.segmenter.cycle}, "")
        return None

    def check(self, now: float, m: CellMonitor) -> Verdict | None:
        """Called periodically by the live daemon with the wall clock."""
        if self.last_arrival is None or self.last_data_time is None:
            return None
        period = self.period.value or 10.0
        limit = max(self.p["periods"] * period, self.p["min_silence_s"])
        silence = now - self.last_arrival
        if silence <= limit:
            return None
        ended = self.rest_since is not None and self.last_data_time - self.rest_since >= self.p["ended_rest_s"]
        state = "watch" if ended else "warning"
        if state == self.state_name:
            return None
        evidence = {
            "cycle": m.segmenter.cycle,
            "silence_s": round(silence, 1),
            "expected_period_s": round(period, 2),
            "threshold_s": round(limit, 1),
            "last_sample_time_s": self.last_data_time,
            "zero_current_for_s": None if self.rest_since is None else round(self.last_data_time - self.rest_since),
        }
        if ended:
            summary = f"No data for {silence:.0f} s after the current stayed at zero: the test appears to have ended"
            advice = "Nothing to do if the schedule has finished; otherwise check the cycler channel."
        else:
            summary = f"No data for {silence:.0f} s (expected every {period:.0f} s) while the test was running"
            advice = "Check the instrument, its cable or network link, and the exporter feeding shortwatch."
        self.fired_at = now
        return self.verdict(now, state, silence, limit, summary, evidence, advice)
