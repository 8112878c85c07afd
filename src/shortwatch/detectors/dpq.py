"""pressure_dpq_decline and pressure_mechanics: full cells in a press (Lim et al. 2023; Ham et al. 2022).

d(dP)_Q = d(dP) / Q: the pressure change over a discharge per Ah/g of cathode. Li that
goes into the bulk layer moves the stack; Li that fills cracks and pores does not. A slow
decline is normal early on; a decline faster than the cell's own earlier trend means Li is
penetrating the separator (seed 003: gradual to cycle ~13, then rapid, short at cycle 20).

The detector extrapolates a line through the cell's recent unsuspicious cycles and runs a
one-sided CUSUM of the standardised shortfall below it. Its allowance (1.5 sigma) and the
cycles within it that keep shaping the line let a slow decline that goes on (an anode-free
cell's pores filling over 10-20 cycles, read through a daily temperature swing) pass;
penetration drops d(dP)_Q by several sigmas per cycle. A decline that levels off or turns
up sits above the extrapolated line, so it stays quiet; a rising trend is held at its last
value rather than extrapolated, so a rise that levels off is quiet too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shortwatch.detectors.base import Detector, Verdict
from shortwatch.detectors.stats import Cusum, RobustWindow, TrendResidual
from shortwatch.model import CycleFeatures
from shortwatch.settings import CellSpec

if TYPE_CHECKING:
    from shortwatch.detectors.monitor import CellMonitor

DPQ_ADVICE = (
    "Li is likely filling cracks and pores of the separator instead of the bulk layer: an internal "
    "short may follow within a few cycles (Lim et al. 2023). Consider stopping the cell for post-mortem, "
    "or lower the current density and check the stack pressure."
)


class DpqDecline(Detector):
    name = "pressure_dpq_decline"
    cell_kinds = ("full", "anode-free")
    params = {
        "reference_cycles": (10, "cycles in the reference trend"),
        "min_reference": (5, "cycles needed before judging"),
        "skip_first_cycles": (1, "formation cycle(s) are not part of the trend"),
        "allowance_sigma": (1.5, "CUSUM k, in residual sigmas"),
        "threshold_sigma": (6.0, "CUSUM h, in residual sigmas"),
        "sigma_floor": (
            0.025,
            "residual sigma at least this share of the predicted value (dP read from two noisy samples)...",
        ),
        "sigma_floor_abs": (0.1, "...and at least this (MPa g/Ah): a flat pressure trace gives 0"),
        "min_capacity_share": (0.5, "skip cycles with less than this share of the usual capacity"),
        "constant_pressure": (False, "judge constant-pressure fixtures too (their swing is mostly noise)"),
    }

    def __init__(self, spec: CellSpec, overrides: dict[str, Any] | None = None):
        super().__init__(spec, overrides)
        self.trend = TrendResidual(self.p["reference_cycles"], self.p["min_reference"])
        self.cusum = Cusum(k=self.p["allowance_sigma"])
        self.capacity = RobustWindow(7)
        self.seen = 0
        self.decline_start: int | None = None
        self.first_dpq: float | None = None

    def on_cycle(self, c: CycleFeatures, m: CellMonitor) -> Verdict | None:
        dpq, q = c.dpq_MPa_g_per_Ah, c.q_discharge_Ah_g
        if dpq is None or q is None or c.gap_s > 0:
            return None  # no d(dP)_Q, or a data gap left its capacity incomplete
        if self.spec.fixture == "constant-pressure" and not self.p["constant_pressure"]:
            return None  # a servo holds the stack: d(dP) is a small, noise-dominated number
        typical_q = self.capacity.median()
        if typical_q is not None and q < self.p["min_capacity_share"] * typical_q:
            return None  # a partial discharge: its d(dP) is not comparable
        self.capacity.add(q)
        self.seen += 1
        if self.seen <= self.p["skip_first_cycles"]:
            return None
        if self.first_dpq is None:
            self.first_dpq = dpq
        pred = self.trend.predict(c.cycle)
        if pred is None:
            self.trend.add(c.cycle, dpq)
            return None
        expected, slope, sigma = pred
        if slope > 0:  # a rising trend is not extrapolated: levelling off after it is no decline
            expected -= slope * (c.cycle - self.trend.xs[-1])
        sigma = max(sigma, self.p["sigma_floor"] * abs(expected), self.p["sigma_floor_abs"])
        z = (expected - dpq) / sigma  # > 0: below the cell's own trend
        s = self.cusum.update(z)
        if s == 0.0:
            self.decline_start = None
        elif self.decline_start is None:
            self.decline_start = c.cycle
        if z < self.p["allowance_sigma"] or (z < 2.0 and s == 0.0):
            # only unsuspicious cycles shape the reference: those within the allowance (which
            # the CUSUM itself does not count against the cell) always, so a slow decline
            # that goes on (an anode-free cell's pore filling levelling off over 10-20 cycles)
            # is followed, while a penetration falls several sigmas at once and is not
            self.trend.add(c.cycle, dpq)
        h = self.p["threshold_sigma"]
        if s > h:
            state = "warning"
            summary = (
                f"d(dP)_Q fell to {dpq:.1f} MPa g/Ah at cycle {c.cycle}, {expected - dpq:.1f} below its own "
                f"trend ({expected:.1f}) since cycle {self.decline_start}: Li penetration suspected"
            )
        elif s > h / 3:
            state = "watch"
            summary = f"d(dP)_Q {dpq:.1f} MPa g/Ah is below its trend ({expected:.1f}); watching"
        else:
            state = "ok"
            summary = f"d(dP)_Q {dpq:.1f} MPa g/Ah follows its trend"
        evidence = {
            "cycle": c.cycle,
            "dpq_MPa_g_per_Ah": round(dpq, 3),
            "expected_dpq_MPa_g_per_Ah": round(expected, 3),
            "reference_slope_per_cycle": round(slope, 4),
            "residual_sigma": round(sigma, 4),
            "z": round(z, 3),
            "first_dpq_MPa_g_per_Ah": round(self.first_dpq, 3),
            "declining_since_cycle": self.decline_start,
            "dP_discharge_MPa": c.dP_discharge_MPa,
            "q_discharge_Ah_g": round(q, 5),
            "statistic": round(s, 3),
            "threshold": h,
        }
        return self.verdict(c.t_end, state, s, h, summary, evidence, DPQ_ADVICE)


class PressureMechanics(Detector):
    """Peak stack pressure relative to the start of the test (fixed-gap fixtures: 139 % of the
    start before a short in Ham et al. 2022) and a creeping pressure baseline (side reactions)."""

    name = "pressure_mechanics"
    cell_kinds = ("full", "anode-free")
    params = {
        "reference_cycles": (3, "the first cycles' peak pressure is the reference"),
        "peak_ratio_warning": (1.35, "peak / reference peak that warns (fixed-gap)"),
        "creep_watch_MPa": (1.0, "baseline (cycle minimum) risen this much: watch"),
    }

    def __init__(self, spec: CellSpec, overrides: dict[str, Any] | None = None):
        super().__init__(spec, overrides)
        self.ref_peaks = RobustWindow(self.p["reference_cycles"])
        self.ref_floor: float | None = None

    def on_cycle(self, c: CycleFeatures, m: CellMonitor) -> Verdict | None:
        if c.p_max is None or c.p_min is None:
            return None
        if len(self.ref_peaks) < self.p["reference_cycles"]:
            self.ref_peaks.add(c.p_max)
            self.ref_floor = c.p_min if self.ref_floor is None else min(self.ref_floor, c.p_min)
            return None
        ref = self.ref_peaks.median()
        ratio = c.p_max / ref if ref else 1.0
        creep = c.p_min - self.ref_floor  # type: ignore[operator]
        fixed_gap = self.spec.fixture == "fixed-gap"
        if fixed_gap and ratio >= self.p["peak_ratio_warning"]:
            state = "warning"
            summary = (
                f"Peak stack pressure {c.p_max:.2f} MPa at cycle {c.cycle} is {100 * ratio:.0f}% of the first "
                f"cycles' peak ({ref:.2f} MPa): dendrite growth or a short may follow"
            )
        elif creep >= self.p["creep_watch_MPa"]:
            state = "watch"
            summary = f"Pressure baseline has crept up {creep:.2f} MPa since the first cycles (side reactions)"
        else:
            state = "ok"
            summary = f"Peak pressure {100 * ratio:.0f}% of the first cycles', baseline creep {creep:+.2f} MPa"
        evidence = {
            "cycle": c.cycle,
            "peak_pressure_MPa": round(c.p_max, 3),
            "reference_peak_MPa": round(ref or 0.0, 3),
            "peak_ratio": round(ratio, 3),
            "baseline_creep_MPa": round(creep, 3),
            "fixture": self.spec.fixture,
            "statistic": round(ratio, 3),
            "threshold": self.p["peak_ratio_warning"],
        }
        advice = "Check the fixture and load cell; if the pressure keeps rising, stop the cell before it shorts."
        return self.verdict(c.t_end, state, ratio, self.p["peak_ratio_warning"], summary, evidence, advice)
