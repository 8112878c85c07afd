"""cv_current_rise: the CV diagnostic's peak current turning upward (Wang et al., Joule 2022, Eq. 1-3).

I_mixed = I_ion + I_e. Interphase growth makes the peak current of a healthy cell shrink
from one CV check to the next; once it grows instead, electrons are leaking through Li
filaments. omega = (I_after - I_initial) / I_initial. When the voltammogram becomes a
straight line (I proportional to V) the cell has become a resistor: hard breakdown.
The ionic current follows Arrhenius, so each peak is referred to 25 C first: a check on a
warm afternoon is no rise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shortwatch.detectors.base import Detector, Verdict
from shortwatch.detectors.stats import arrhenius_factor
from shortwatch.model import CycleFeatures
from shortwatch.settings import CellSpec

if TYPE_CHECKING:
    from shortwatch.detectors.monitor import CellMonitor


class CvCurrentRise(Detector):
    name = "cv_current_rise"
    cell_kinds = ("symmetric", "anode-free")
    params = {
        "warmup_cycles": (6, "CV checks in these first cycles are ignored: contact improvement raises the peak too"),
        "rise_fraction": (
            0.15,
            "rise above the lowest peak so far that turns the trend (sparse logging jitters the peak)",
        ),
        "rising_checks": (2, "...seen in this many consecutive CV checks"),
        "omega_threshold": (0.20, "omega (Eq. 3) that fires on its own"),
        "linear_r2": (0.999, "an I-V fit this straight is a resistor..."),
        "hard_omega": (1.0, "...when the peak has also at least doubled: hard breakdown"),
        "step_noise": (0.02, "a change smaller than this between checks is neither rise nor fall"),
        "activation_energy_eV": (0.4, "peaks are referred to 25 C (overpotential_drop's learned Ea when it runs)"),
    }

    def __init__(self, spec: CellSpec, overrides: dict[str, Any] | None = None):
        super().__init__(spec, overrides)
        self.initial: float | None = None
        self.initial_cycle: int | None = None
        self.lowest: float | None = None
        self.lowest_cycle: int | None = None
        self.previous: float | None = None
        self.rising = 0
        self.checks = 0
        self.cycles_seen = 0

    def on_cycle(self, c: CycleFeatures, m: CellMonitor) -> Verdict | None:
        self.cycles_seen += 1
        peak = c.cv_peak_A
        if peak is None or peak <= 0 or m.kind_mismatch:
            return None
        p = self.p
        if c.temperature_C is not None:
            od = m.detectors.get("overpotential_drop")
            ea = od.activation_energy if od is not None else p["activation_energy_eV"]  # type: ignore[attr-defined]
            peak = peak / arrhenius_factor(c.temperature_C, 25.0, ea)  # I ~ 1/R
        if self.cycles_seen <= p["warmup_cycles"]:
            return None  # contact still improving: such a check is no reference for later ones
        self.checks += 1
        if self.initial is None:
            self.initial, self.initial_cycle = peak, c.cycle
            self.lowest, self.lowest_cycle = peak, c.cycle
            self.previous = peak
            return self.verdict(c.t_end, "ok", 0.0, p["omega_threshold"], "first CV check: reference peak current")
        if self.previous is not None and peak > self.previous * (1 + p["step_noise"]):
            self.rising += 1
        elif self.previous is not None and peak < self.previous * (1 - p["step_noise"]):
            self.rising = 0
        self.previous = peak
        if peak < self.lowest:  # type: ignore[operator]
            self.lowest, self.lowest_cycle = peak, c.cycle
        omega = (peak - self.initial) / self.initial
        rise = (peak - self.lowest) / self.lowest  # type: ignore[operator]
        linear = c.cv_linearity is not None and c.cv_linearity >= p["linear_r2"]
        if linear and omega >= p["hard_omega"]:
            state = "critical"
            summary = (
                f"Hard breakdown: the CV of cycle {c.cycle} is a straight line (R2 {c.cv_linearity:.4f}) "
                f"and its peak current is {1 + omega:.1f}x the first check"
            )
        elif omega >= p["omega_threshold"] or (rise >= p["rise_fraction"] and self.rising >= p["rising_checks"]):
            state = "warning"
            summary = (
                f"CV peak current is rising: {peak * 1e3:.4g} mA at cycle {c.cycle}, "
                f"{100 * rise:.0f}% above its low at cycle {self.lowest_cycle} "
                f"(omega {omega:+.2f} against the first check, cycle {self.initial_cycle}): "
                "electronic leakage (soft breakdown) suspected"
            )
        elif rise >= p["rise_fraction"] / 2 and self.rising >= 1:
            state = "watch"
            summary = f"CV peak current {100 * rise:.0f}% above its low; watching the next check"
        else:
            state = "ok"
            summary = f"CV peak current at cycle {c.cycle} is not rising"
        evidence = {
            "cycle": c.cycle,
            "peak_current_A": c.cv_peak_A,
            "peak_current_25C_A": peak,
            "initial_peak_A": self.initial,
            "initial_cycle": self.initial_cycle,
            "lowest_peak_A": self.lowest,
            "lowest_cycle": self.lowest_cycle,
            "omega": round(omega, 4),
            "rise_from_lowest": round(rise, 4),
            "rise_fraction": p["rise_fraction"],
            "consecutive_rises": self.rising,
            "rising_checks": p["rising_checks"],
            "iv_linearity_r2": c.cv_linearity,
            "statistic": round(omega, 4),
            "threshold": p["omega_threshold"],
        }
        advice = (
            "Stop cycling this cell: it behaves as a resistor (hard short). Disassemble and inspect."
            if state == "critical"
            else "Confirm with a DC polarisation or EIS check for electronic conductivity; expect a short "
            "if cycling continues (Wang et al., Joule 2022)."
        )
        return self.verdict(c.t_end, state, omega, p["omega_threshold"], summary, evidence, advice)
