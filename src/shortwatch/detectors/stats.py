"""Online statistics shared by the detectors: O(1) per update, bounded memory, checkpointable.

- :class:`Ewma`: exponentially weighted mean, the smoothed level of a feature series.
- :class:`RobustWindow`: median and MAD of the last N values: a baseline that one outlier
  (a glitchy cycle) cannot drag.
- :class:`Cusum`: one-sided CUSUM of a deviation series: sustained small shifts add up,
  isolated noise does not (Page 1954).
- :class:`PageHinkley`: the classic drift test, used by the benchmark as a generic baseline.
- :class:`TrendResidual`: a line fitted to a reference window of past values, and the
  standardised residual of the newest value: "faster than its own earlier trend".
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from shortwatch.state import Stateful

K_B_EV = 8.617333e-5  # Boltzmann constant, eV/K


class Ewma(Stateful):
    _transient = ("alpha",)

    def __init__(self, alpha: float):
        self.alpha = alpha
        self.value: float | None = None
        self.n = 0

    def update(self, x: float) -> float:
        self.n += 1
        self.value = x if self.value is None else self.value + self.alpha * (x - self.value)
        return self.value


class RobustWindow(Stateful):
    """Median / MAD of the last ``size`` values (size is small: tens of cycles)."""

    def __init__(self, size: int):
        self.values: deque[float] = deque(maxlen=size)

    def add(self, x: float) -> None:
        self.values.append(x)

    def __len__(self) -> int:
        return len(self.values)

    def median(self) -> float | None:
        return float(np.median(self.values)) if self.values else None

    def mad(self) -> float | None:
        """Median absolute deviation scaled to a normal sigma (x1.4826)."""
        if len(self.values) < 3:
            return None
        a = np.asarray(self.values)
        return float(1.4826 * np.median(np.abs(a - np.median(a))))


class Cusum(Stateful):
    """One-sided CUSUM: S = max(0, S + x - k); the caller compares S with its threshold h."""

    _transient = ("k",)

    def __init__(self, k: float):
        self.k = k
        self.s = 0.0

    def update(self, x: float) -> float:
        self.s = max(0.0, self.s + x - self.k)
        return self.s

    def reset(self) -> None:
        self.s = 0.0


class PageHinkley(Stateful):
    """Page-Hinkley test for a decrease of the mean (delta: tolerated drift, lam: threshold)."""

    _transient = ("delta", "lam", "min_n")

    def __init__(self, delta: float, lam: float, min_n: int = 30):
        self.delta = delta
        self.lam = lam
        self.min_n = min_n
        self.n = 0
        self.mean = 0.0
        self.m = 0.0
        self.m_max = 0.0

    def update(self, x: float) -> bool:
        self.n += 1
        self.mean += (x - self.mean) / self.n
        self.m += x - self.mean + self.delta
        self.m_max = max(self.m_max, self.m)
        return self.n >= self.min_n and self.m_max - self.m > self.lam


class TrendResidual(Stateful):
    """A reference trend of a feature series, to judge a new value against.

    Keeps the last ``size`` accepted points; ``predict`` extrapolates a least-squares line
    through them. The caller adds only values it did not find suspicious, so a decline that
    has begun is judged against the cell's own earlier behaviour, not absorbed into it.
    """

    _transient = ("min_ref",)

    def __init__(self, size: int = 10, min_ref: int = 5):
        self.min_ref = min_ref
        self.xs: deque[float] = deque(maxlen=size)
        self.ys: deque[float] = deque(maxlen=size)

    def add(self, x: float, y: float) -> None:
        self.xs.append(x)
        self.ys.append(y)

    def __len__(self) -> int:
        return len(self.ys)

    def predict(self, x: float) -> tuple[float, float, float] | None:
        """(predicted value at x, reference slope, residual sigma), or None while learning."""
        if len(self.ys) < self.min_ref:
            return None
        xs = np.asarray(self.xs)
        ys = np.asarray(self.ys)
        slope, intercept = np.polyfit(xs, ys, 1)
        sigma = float(1.4826 * np.median(np.abs(ys - (slope * xs + intercept))))
        return float(slope * x + intercept), float(slope), sigma


def arrhenius_factor(temp_C: float, ref_C: float, ea_eV: float) -> float:
    """Multiply a resistance measured at temp_C by this to refer it to ref_C (R ~ exp(Ea/kT))."""
    return math.exp(ea_eV / K_B_EV * (1.0 / (ref_C + 273.15) - 1.0 / (temp_C + 273.15)))


def temperature_step_C(min_step_C: float, swing_C: float, dt_s: float) -> float:
    """The smallest temperature change over ``dt_s`` that is a step (an oven), not the day: at
    least ``min_step_C``, and beyond the most a daily swing of amplitude ``swing_C`` (half its
    peak-to-peak) moves the temperature in that time."""
    return max(min_step_C, 2.0 * swing_C * math.sin(math.pi * min(max(dt_s, 0.0), 43200.0) / 86400.0))


def temperature_allowance(t_ref_C: float | None, t_now_C: float | None, ea_uncertainty_eV: float) -> float:
    """ln-resistance change that an activation energy off by ``ea_uncertainty_eV`` makes
    between two temperatures: a change of ASR this small is explained by the temperature."""
    if t_ref_C is None or t_now_C is None:
        return 0.0
    return ea_uncertainty_eV / K_B_EV * abs(1.0 / (t_ref_C + 273.15) - 1.0 / (t_now_C + 273.15))
