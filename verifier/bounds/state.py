"""The per-call store of a bound computation: bounds of every value, their magnitudes, the
relaxations built from them, and (for alpha-CROWN) per-row slopes and recorded coefficients."""
from __future__ import annotations

import numpy as np

from .plan import Plan
from .rounding import vmax


class State:
    """Bounds of the values of one network over a batch of B boxes, all flat (B, n).

    ``lo``/``hi``: bounds by value name (the input included); ``w``: for affine ops, the
    magnitude vector ``|M| vmax(input) + |bias|`` (B, n) used by CROWN's rounding margin;
    ``relax``: relaxation lines by node name (built lazily from the input's final bounds);
    ``alpha``: per-row lower slopes (B, K, n) of ReLU nodes during alpha-CROWN; ``record``:
    when a dict, the backward pass stores there the coefficient reaching each value."""

    def __init__(self, plan: Plan, l0: np.ndarray, u0: np.ndarray, relu_mode: int = 0):
        self.plan = plan
        self.B = l0.shape[0]
        self.l0 = l0
        self.u0 = u0
        self.lo = {plan.input_name: l0}
        self.hi = {plan.input_name: u0}
        self.w: dict[str, np.ndarray] = {}
        self._vmax: dict[str, np.ndarray] = {}
        self.relax: dict = {}
        self.alpha: dict[str, np.ndarray] = {}
        self.record: dict | None = None
        self.relu_mode = relu_mode
        self.empty = np.zeros(self.B, dtype=bool)
        self.cache: dict = {}

    def set(self, name: str, lo: np.ndarray, hi: np.ndarray, w: np.ndarray | None = None):
        self.lo[name] = lo
        self.hi[name] = hi
        if w is not None:
            self.w[name] = w
        self._vmax.pop(name, None)

    def mark_empty(self, lo: np.ndarray, hi: np.ndarray):
        """Record the boxes where ``lo > hi`` somewhere: bounds of a nonempty set never cross,
        so only intersections with split constraints or known bounds can empty a box."""
        self.empty |= np.any(lo > hi, axis=1)

    def vmax(self, name: str) -> np.ndarray:
        """``max(|lo|, |hi|)`` of a value, (B, n)."""
        v = self._vmax.get(name)
        if v is None:
            v = vmax(self.lo[name], self.hi[name])
            self._vmax[name] = v
        return v
