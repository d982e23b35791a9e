"""Schedules of certified training, as functions of the optimisation step.

- ``linear_ramp``: ``v0`` before ``start``, then linear to ``v1`` over ``length`` steps, then
  ``v1``.
- ``smoothed_ramp`` (the "smoothed" epsilon schedule of Gowal et al. 2018's code and Shi et al.
  2021): over ``length`` steps from ``start``, a power curve ``a t^p`` for the first ``mid``
  fraction, then the tangent line of that curve, reaching ``v1`` exactly at the end. With
  ``m = mid * length`` and ``L = length``, continuity of value and slope at ``m`` and
  ``v(L) = v1`` give ``a = (v1 - v0) / (m^p + p m^(p-1) (L - m))``.
- ``Schedule``: the epsilon, kappa (natural-loss weight, Gowal et al.) and beta (CROWN-IBP
  weight, Zhang et al. 2020) of each step for a ``fit`` run: a natural warm-up, then the ramp,
  then constant values.
"""
from __future__ import annotations

from dataclasses import dataclass


def linear_ramp(step: float, start: float, length: float, v0: float, v1: float) -> float:
    """``v0`` for ``step <= start``, ``v1`` for ``step >= start + length``, linear between."""
    if length <= 0:
        return v1 if step >= start else v0
    t = min(max((step - start) / length, 0.0), 1.0)
    return v0 + (v1 - v0) * t


def smoothed_ramp(step: float, start: float, length: float, v0: float, v1: float,
                  mid: float = 0.25, power: float = 4.0) -> float:
    """The smoothed ramp from ``v0`` to ``v1`` over ``[start, start + length]`` (see module)."""
    if length <= 0:
        return v1 if step >= start else v0
    t = step - start
    if t <= 0:
        return v0
    if t >= length:
        return v1
    m = mid * length
    if m <= 0:
        return linear_ramp(step, start, length, v0, v1)
    a = (v1 - v0) / (m ** power + power * m ** (power - 1) * (length - m))
    if t < m:
        return v0 + a * t ** power
    return v0 + a * (m ** power + power * m ** (power - 1) * (t - m))


@dataclass(frozen=True)
class Schedule:
    """Per-step values for training: natural training for ``warmup`` steps (eps 0, kappa 1),
    then over ``ramp`` steps eps rises from 0 to ``eps`` (``shape`` "smoothed" or "linear"),
    kappa falls linearly from ``kappa_start`` to ``kappa_end``, and beta from ``beta_start``
    to ``beta_end`` over the first ``beta_ramp`` steps of the ramp (None: the whole ramp);
    afterwards all stay at their final values."""

    eps: float
    warmup: int
    ramp: int
    shape: str = "smoothed"
    kappa_start: float = 1.0
    kappa_end: float = 0.5
    beta_start: float = 1.0
    beta_end: float = 0.0
    beta_ramp: int | None = None

    def __post_init__(self):
        if self.shape not in ("smoothed", "linear"):
            raise ValueError(f"unknown ramp shape {self.shape!r} (smoothed, linear)")

    def eps_at(self, step: int) -> float:
        ramp = smoothed_ramp if self.shape == "smoothed" else linear_ramp
        return ramp(step, self.warmup, self.ramp, 0.0, self.eps)

    def kappa_at(self, step: int) -> float:
        return linear_ramp(step, self.warmup, self.ramp, self.kappa_start, self.kappa_end)

    def beta_at(self, step: int) -> float:
        ramp = self.ramp if self.beta_ramp is None else self.beta_ramp
        return linear_ramp(step, self.warmup, ramp, self.beta_start, self.beta_end)
