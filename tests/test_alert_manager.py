"""The alert state machine's timing in data time: pending period, keep-firing, hysteresis."""

from __future__ import annotations

import json

from shortwatch.alerts.manager import IN_BAND_HOLD_S, AlertManager
from shortwatch.detectors.base import Verdict
from shortwatch.model import RecordBatch
from shortwatch.settings import parse_settings

T0 = 1_767_600_000.0
KINDS = {"overpotential_drop": "cell", "hard_short": "cell"}


def manager(**alerts) -> AlertManager:
    return AlertManager(parse_settings({"alerts": alerts}).alerts)


def feed(
    am: AlertManager,
    out: RecordBatch,
    t: float,
    state: str,
    stat: float | None = None,
    det: str = "overpotential_drop",
    thr: float | None = 0.4,
) -> None:
    """One verdict at data time t, then a sample at t (the pipeline's advance)."""
    am.handle("A1", KINDS, [(det, Verdict(t, state, stat, thr, f"{state} at {t - T0:.0f}"))], out)
    if t >= am.wake.get("A1", float("inf")):
        am.advance("A1", t, out)


def transitions(out: RecordBatch) -> list[tuple[str, str, float]]:
    return [(e.state, e.severity, e.time - T0) for e in out.alerts]


def test_a_flapping_output_inside_the_hysteresis_band_is_one_alert() -> None:
    am, out = manager(hysteresis=0.2), RecordBatch()
    t = T0
    for _ in range(20):  # the statistic hovers around the threshold 0.4 for ~10 h
        feed(am, out, t, "warning", 0.42)
        feed(am, out, t + 900, "ok", 0.38)
        t += 1800
    assert transitions(out) == [("firing", "warning", 0.0)]
    feed(am, out, t, "ok", 0.1)  # well below the band: resolves (no keep-firing time set)
    assert transitions(out)[-1] == ("resolved", "warning", t - T0)
    assert len({e.episode for e in out.alerts}) == 1


def test_without_hysteresis_the_same_flapping_pages_every_time() -> None:
    am, out = manager(), RecordBatch()
    for k in range(5):
        feed(am, out, T0 + 1800 * k, "warning", 0.42)
        feed(am, out, T0 + 1800 * k + 900, "ok", 0.38)
    assert len(out.alerts) == 10  # the reference: what hysteresis and keep-firing prevent


def test_an_in_band_clear_still_resolves_after_the_hold() -> None:
    am, out = manager(hysteresis=0.2), RecordBatch()
    feed(am, out, T0, "warning", 0.5)
    feed(am, out, T0 + 100, "ok", 0.38)  # in band: held
    feed(am, out, T0 + IN_BAND_HOLD_S - 1, "ok", 0.38)
    assert [e.state for e in out.alerts] == ["firing"]
    am.advance("A1", T0 + 100 + IN_BAND_HOLD_S, out)  # a later sample of the cell
    assert transitions(out)[-1] == ("resolved", "warning", 100.0)


def test_keep_firing_merges_flaps_shorter_than_it() -> None:
    am, out = manager(keep_firing_s=1200), RecordBatch()
    for k in range(6):
        feed(am, out, T0 + 1800 * k, "warning", 0.5)
        feed(am, out, T0 + 1800 * k + 900, "ok", 0.1)  # clear for 900 s < 1200 s
    assert [e.state for e in out.alerts] == ["firing"]
    am.advance("A1", T0 + 1800 * 5 + 900 + 1200, out)
    assert [e.state for e in out.alerts] == ["firing", "resolved"]


def test_pending_period_a_short_warning_sends_nothing_and_a_critical_skips_it() -> None:
    am, out = manager(pending_s=600), RecordBatch()
    feed(am, out, T0, "warning", 0.5)
    feed(am, out, T0 + 300, "ok", 0.1)  # cleared within the pending period
    assert out.alerts == []
    feed(am, out, T0 + 1000, "warning", 0.5)
    am.advance("A1", T0 + 1599, out)  # (the pipeline only calls it once due; early is harmless)
    assert out.alerts == []
    am.advance("A1", T0 + 1600, out)
    assert transitions(out) == [("firing", "warning", 1000.0)]
    feed(am, out, T0 + 2000, "critical", 0.9, det="hard_short")
    assert transitions(out)[-1] == ("firing", "critical", 2000.0)  # at once
    feed(am, out, T0 + 2100, "critical", 0.9)  # a severity change notifies again, at once
    assert transitions(out)[-1] == ("firing", "critical", 2100.0)
    assert out.alerts[-1].episode == out.alerts[0].episode


def test_per_detector_overrides_and_the_timing_survives_a_checkpoint() -> None:
    am, out = manager(pending_s=0, detectors={"overpotential_drop": {"pending_s": 600}}), RecordBatch()
    feed(am, out, T0, "warning", 0.5)
    feed(am, out, T0, "critical", 0.9, det="hard_short")  # no pending for the other detector
    assert [e.detector for e in out.alerts] == ["hard_short"]
    state = json.loads(json.dumps(am.state()))
    again = manager(pending_s=0, detectors={"overpotential_drop": {"pending_s": 600}})
    again.load(state)
    assert again.wake == {"A1": T0 + 600}
    again.advance("A1", T0 + 600, out)
    assert [e.detector for e in out.alerts] == ["hard_short", "overpotential_drop"]
