"""Replaying candidate counterexamples on the original model before ``sat`` is said.

A candidate ``x`` becomes a counterexample only when all of these hold, with no tolerance:

1. ``x`` is exactly representable in the model's input precision (the runner's ``dtype``:
   float32 for most ONNX files), so that the point onnxruntime evaluates is the point we report;
2. ``x`` lies in the input set of some case of the spec (box and linear constraints, checked in
   float64 on the reported value);
3. ``y = f(x)`` computed by onnxruntime on the original ONNX file (or by the ``Network`` itself
   when no file is given) lies in an unsafe conjunction of that same case
   (``Spec.violated_by``).

Candidates are first moved to the nearest values of that precision inside the box (one ulp
inward where rounding to nearest left the box); a box thinner than the spacing of that precision
yields no candidate.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


def snap(x: np.ndarray, lower: np.ndarray, upper: np.ndarray, dtype=np.float32) -> np.ndarray:
    """Round ``x`` (B, n) to values of ``dtype`` and move any that left ``[lower, upper]`` one
    ulp (of ``dtype``) back inward. The result is float64 holding ``dtype``-representable
    values; entries still outside the box (a box narrower than one ulp) are left for the
    containment check to reject."""
    dtype = np.dtype(dtype).type
    xs = np.asarray(x, dtype=np.float64).astype(dtype)
    lo = np.broadcast_to(lower, xs.shape)
    hi = np.broadcast_to(upper, xs.shape)
    above = xs.astype(np.float64) > hi
    xs[above] = np.nextafter(xs[above], dtype(-np.inf))
    below = xs.astype(np.float64) < lo
    xs[below] = np.nextafter(xs[below], dtype(np.inf))
    return xs.astype(np.float64)


def snap_to_float32(x: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """``snap(x, lower, upper, np.float32)``."""
    return snap(x, lower, upper, np.float32)


@dataclass
class Counterexample:
    """A confirmed violation: flat input ``x`` (n,), the output ``y`` (m,) that the checking
    model computed for it, and the index of the case it violates."""

    x: np.ndarray
    y: np.ndarray
    case: int


class Replay:
    """Callable that confirms candidate counterexamples.

    ``Replay(spec, runner=None, net=None)``: ``runner`` is an ``OnnxRunner`` on the original
    ONNX file (x (B, n) float64 -> y (B, m) float64, evaluated in the model's own precision,
    ``runner.dtype``, float32 when the runner does not say); without it ``net`` (a ``Network``,
    float64) computes ``y`` and candidates are used as they are. ``replay(X)`` with X (B, n)
    returns the first confirmed ``Counterexample`` or None. ``calls`` and ``candidates`` count
    the work done."""

    def __init__(self, spec, runner=None, net=None):
        if runner is None and net is None:
            raise ValueError("Replay needs an onnxruntime runner or a network")
        self.spec = spec
        self.runner = runner
        self.dtype = np.dtype(getattr(runner, "dtype", np.float32)).type
        self.net = net
        self.calls = 0
        self.candidates = 0

    @property
    def uses_onnx(self) -> bool:
        return self.runner is not None

    def _evaluate(self, X: np.ndarray) -> np.ndarray:
        if self.runner is not None:
            return np.asarray(self.runner(X), dtype=np.float64).reshape(X.shape[0], -1)
        return np.asarray(self.net(X), dtype=np.float64).reshape(X.shape[0], -1)

    def _prepare(self, X: np.ndarray, case: int | None) -> np.ndarray:
        """Candidates in the model precision, each snapped into the box of every case it is
        tried against (one block of rows per case)."""
        if self.runner is None or self.dtype is np.float64:
            return X
        cases = range(len(self.spec.cases)) if case is None else [case]
        blocks = [snap(X, self.spec.cases[c].input.lower, self.spec.cases[c].input.upper,
                       self.dtype) for c in cases]
        return np.concatenate(blocks, axis=0)

    def __call__(self, X, case: int | None = None) -> Counterexample | None:
        """First confirmed counterexample among the rows of ``X`` (B, n), or None. ``case``
        restricts the snapping to that case's box (every case still counts as violated)."""
        X = np.asarray(X, dtype=np.float64).reshape(-1, self.spec.n_inputs)
        if X.shape[0] == 0:
            return None
        X = self._prepare(X, case)
        inside = np.zeros(X.shape[0], dtype=bool)
        for c in self.spec.cases:
            inside |= c.input.contains(X)
        X = X[inside]
        if X.shape[0] == 0:
            return None
        X = np.unique(X, axis=0)
        self.calls += 1
        self.candidates += X.shape[0]
        Y = self._evaluate(X)
        if Y.shape[1] != self.spec.n_outputs:
            raise ValueError(f"the checking model returned {Y.shape[1]} outputs, the property "
                             f"has {self.spec.n_outputs}")
        hits = np.flatnonzero(self.spec.violated_by(X, Y))
        if hits.size == 0:
            return None
        i = int(hits[0])
        ci = next(k for k, c in enumerate(self.spec.cases)
                  if c.violated_by(X[i:i + 1], Y[i:i + 1])[0])
        log.info("counterexample confirmed (case %d, %s)", ci,
                 "onnxruntime" if self.runner is not None else "network")
        return Counterexample(X[i].copy(), Y[i].copy(), ci)
