"""charge_anomaly: full-cell charge curves that betray micro-shorts (seeds 000 and 001).

Four signs, each judged against the cell's own recent charges:
- the voltage dips while charging at constant current (micro-shorts open and close); the
  nucleation spike at the start of a charge is not a dip (features.NUCLEATION_S);
- the charge runs past its usual capacity without reaching the upper cut-off (over-charge:
  the current is going through a short instead of into the cathode);
- the coulombic efficiency falls below its recent level;
- self-discharge: the open-circuit voltage after a charge falls faster than the cell's own
  earlier rests did (an internal leak drains the charged cell).
Anode-free cells plate on a bare current collector: their first cycles (formation) have a
low, noisy CE and are learned, not judged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shortwatch.detectors.base import Detector, Verdict
from shortwatch.detectors.stats import Ewma, RobustWindow
from shortwatch.model import CycleFeatures, StepFeatures
from shortwatch.settings import CellSpec

if TYPE_CHECKING:
    from shortwatch.detectors.monitor import CellMonitor

ADVICE = (
    "Charge-curve anomalies are early signs of an internal short (Wang et al., Joule 2022). "
    "Inspect the last charge curves; consider a lower current or stopping the cell before it shorts."
)


class ChargeAnomaly(Detector):
    name = "charge_anomaly"
    cell_kinds = ("full", "anode-free")
    params = {
        "dips_per_charge": (3, "this many voltage dips in one charge warn"),
        "charges_with_dips": (2, "dips in this many of the last 3 charges warn"),
        "overcharge_ratio": (1.15, "charge capacity beyond this share of the usual..."),
        "cutoff_margin_V": (0.02, "...while ending this far below the usual end-of-charge voltage"),
        "ce_drop": (0.03, "CE this far below its recent median..."),
        "ce_resolution_factor": (1.5, "...and this many times the CE's resolution (a sample's charge per step)..."),
        "ce_cycles": (2, "...in this many consecutive cycles"),
        "skip_first_cycles": (1, "formation"),
        "anode_free_formation_cycles": (5, "anode-free cells: formation cycles (low, noisy CE) learned, not judged"),
        "self_discharge_ratio": (2.0, "the OCV after charge falls this many times faster than its usual rate..."),
        "self_discharge_min_V_per_h": (0.005, "...and at least this much faster (V/h)..."),
        "self_discharge_rests": (2, "...in this many consecutive rests after a charge"),
        "memory_charges": (3, "a sign is remembered for this many normal charges"),
    }

    def __init__(self, spec: CellSpec, overrides: dict[str, Any] | None = None):
        super().__init__(spec, overrides)
        self.charge_q = RobustWindow(5)
        self.charge_vend = RobustWindow(5)
        self.ce = RobustWindow(5)
        self.recent_dips: list[int] = []
        self.low_ce_run = 0
        self.step_res: dict[str, float] = {}  # step kind -> 1 / its sample intervals
        self.flags: dict[str, int] = {}  # sign -> charges left to remember it
        self.detail: dict[str, Any] = {}
        self.charges = 0
        self.rest_fall = RobustWindow(5)  # the OCV fall rate of healthy rests after a charge (V/h)
        self.fast_rests = 0
        self.rest_scatter = Ewma(alpha=0.2)  # mean |change| of the fall rate between healthy rests
        self.last_rest_fall: float | None = None
        self.after_charge = False
        self.skip = self.p["skip_first_cycles"]
        if spec.kind == "anode-free":
            self.skip = max(self.skip, self.p["anode_free_formation_cycles"])

    def on_step(self, f: StepFeatures, m: CellMonitor) -> Verdict | None:
        after_charge, self.after_charge = self.after_charge, f.step_kind in ("charge", "cv_charge")
        if f.step_kind in ("charge", "discharge") and f.n_samples > 1:
            # each capacity is known to one sample interval's charge: where a step is a few
            # dozen samples (60-s logging of a short step) the CE moves in steps of a few %
            self.step_res[f.step_kind] = 1.0 / (f.n_samples - 1)
        if f.step_kind == "rest" and after_charge:
            return self._rest(f)
        if f.step_kind != "charge" or f.n_samples < 10 or f.gap_s > 0:
            return None  # a data gap leaves the charge capacity incomplete
        self.charges += 1
        if self.charges <= self.skip:  # counted, not by cycle number: cyclers count from 0 or 1
            return None
        for k in list(self.flags):
            self.flags[k] -= 1
            if self.flags[k] <= 0:
                del self.flags[k]
        self.recent_dips = ([*self.recent_dips, f.v_dips])[-3:]
        if f.v_dips >= self.p["dips_per_charge"] or sum(d > 0 for d in self.recent_dips) >= self.p["charges_with_dips"]:
            self.flags["dips"] = self.p["memory_charges"]
            self.detail["dips_last_charges"] = list(self.recent_dips)
            self.detail["max_dip_V"] = round(f.max_dip_V, 4)
        q_med, v_med = self.charge_q.median(), self.charge_vend.median()
        over = (
            q_med is not None
            and v_med is not None
            and f.v_end is not None
            and f.capacity_Ah > self.p["overcharge_ratio"] * q_med
            and f.v_end < v_med - self.p["cutoff_margin_V"]
        )
        if over:
            self.flags["overcharge"] = self.p["memory_charges"]
            self.detail.update(
                charge_capacity_Ah=f.capacity_Ah,
                usual_charge_capacity_Ah=q_med,
                charge_end_V=f.v_end,
                usual_charge_end_V=v_med,
            )
        elif f.v_dips == 0:
            self.charge_q.add(f.capacity_Ah)
            if f.v_end is not None:
                self.charge_vend.add(f.v_end)
        return self._judge(f.t_end, f.cycle)

    def _rest(self, f: StepFeatures) -> Verdict | None:
        """Self-discharge: the OCV fall over the second half of a rest after a charge."""
        fall = f.rest_fall_V_per_h
        if fall is None or f.gap_s > 0 or f.duration_s < 600 or self.charges <= self.skip:
            return None
        med = self.rest_fall.median()
        if med is not None and len(self.rest_fall) >= 3:
            usual = max(med, 0.0)
            # the rate is read from a few late points (fewer where logged on a voltage change):
            # faster than usual means beyond 3 sigmas of the healthy rests' own scatter
            sigma = 0.886 * (self.rest_scatter.value or 0.0)  # mean |difference| of two -> sigma
            margin = max(self.p["self_discharge_min_V_per_h"], 3.0 * sigma)
            if fall > self.p["self_discharge_ratio"] * usual and fall > usual + margin:
                self.fast_rests += 1
                if self.fast_rests >= self.p["self_discharge_rests"]:
                    self.flags["self_discharge"] = self.p["memory_charges"]
                    self.detail.update(
                        ocv_fall_mV_per_h=round(1e3 * fall, 2), usual_ocv_fall_mV_per_h=round(1e3 * usual, 2)
                    )
                return self._judge(f.t_end, f.cycle)
        self.fast_rests = 0
        if self.last_rest_fall is not None:
            self.rest_scatter.update(abs(fall - self.last_rest_fall))
        self.last_rest_fall = fall
        self.rest_fall.add(fall)
        return None

    def on_cycle(self, c: CycleFeatures, m: CellMonitor) -> Verdict | None:
        if c.ce is None or c.cycle < self.skip or c.q_charge_Ah <= 0 or c.gap_s > 0:
            return None
        med = self.ce.median()
        drop = max(self.p["ce_drop"], self.p["ce_resolution_factor"] * sum(self.step_res.values()))
        if med is not None and len(self.ce) >= 3 and c.ce < med - drop:
            self.low_ce_run += 1
            if self.low_ce_run >= self.p["ce_cycles"]:
                self.flags["ce"] = self.p["memory_charges"]
                self.detail.update(ce=round(c.ce, 4), usual_ce=round(med, 4))
        else:
            self.low_ce_run = 0
            self.ce.add(c.ce)
        return self._judge(c.t_end, c.cycle)

    def _judge(self, t: float, cycle: int) -> Verdict | None:
        signs = sorted(self.flags)
        state = (
            "warning" if signs else ("watch" if any(self.recent_dips) or self.low_ce_run or self.fast_rests else "ok")
        )
        if state == self.state_name and state == "ok":
            return None
        words = {
            "dips": "the voltage dips while charging at constant current",
            "overcharge": "the charge runs past its usual capacity without reaching the cut-off",
            "ce": "the coulombic efficiency has dropped",
            "self_discharge": "the open-circuit voltage after charge falls faster than it used to (an internal leak)",
        }
        if signs:
            summary = f"Charge anomaly at cycle {cycle}: " + "; ".join(words[s] for s in signs)
        elif state == "watch":
            summary = f"A voltage dip, low CE or fast self-discharge at cycle {cycle}; watching"
        else:
            summary = f"Charge curves normal again at cycle {cycle}"
        evidence = {"cycle": cycle, "signs": signs, **self.detail, "statistic": len(signs), "threshold": 1}
        return self.verdict(t, state, float(len(signs)), 1.0, summary, evidence, ADVICE)
