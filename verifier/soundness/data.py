"""Synthetic two-class points, and where their counterexamples are planted.

After SoundnessBench (Zhou et al.): inputs are uniform in ``[-r, r]`` (``r`` = 0.1), every point
gets a random label in {0, 1}, and the boxes ``[x - eps, x + eps]`` of different points are
disjoint (centres more than ``2 eps`` apart in the L-infinity norm). A *planted* point also gets
a counterexample ``x'`` with the other label, placed near the middle of a face of its box, far
from the corners where sign-gradient attacks end up:

- ``k`` coordinates (1, sometimes 2) sit near the face: ``x'_i = x_i +- u eps`` with ``u`` drawn
  from ``[0.95, 0.99]`` (strictly inside the box, with a gap of at least ``0.01 eps``), the sign
  chosen so that ``x'_i`` stays inside ``[-r, r]`` by that gap too;
- the other coordinates share one small offset ``x'_i = x_i + c``, ``c`` uniform in
  ``[-r/100, r/100]`` (clipped to ``0.01 eps`` inside ``[-r, r]``).

Every value is a float32 number (the exported models take float32 inputs), so a counterexample
replays on onnxruntime at exactly the point recorded.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Points:
    """N points of one model: centres ``x`` (N, *shape), ``labels`` (N,), ``planted`` (N,) bool,
    and the planted counterexamples ``x_cex`` (N, *shape; NaN rows for clean points)."""

    x: np.ndarray
    labels: np.ndarray
    planted: np.ndarray
    x_cex: np.ndarray

    @property
    def targets(self) -> np.ndarray:
        """The class each counterexample must reach: the other one."""
        return 1 - self.labels

    def __len__(self) -> int:
        return int(self.labels.size)


def _f32(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).astype(np.float32).astype(np.float64)


def _centres(rng, n_points: int, n: int, eps: float, r: float, tries: int = 10000) -> np.ndarray:
    """``n_points`` float32 centres in ``[-r, r]^n``, pairwise more than ``2 eps`` apart (L-inf)."""
    out: list[np.ndarray] = []
    for _ in range(tries):
        if len(out) == n_points:
            break
        c = _f32(rng.uniform(-r, r, size=n))
        if all(np.max(np.abs(c - o)) > 2 * eps for o in out):
            out.append(c)
    if len(out) < n_points:
        raise ValueError(f"could not place {n_points} disjoint boxes of radius {eps} in "
                         f"[-{r}, {r}]^{n}")
    return np.stack(out) if out else np.zeros((0, n))


def plant(rng, x: np.ndarray, eps: float, r: float) -> np.ndarray:
    """A counterexample position for the flat centre ``x`` (see module). Every coordinate ends
    at least ``0.01 eps`` inside both the box ``[x - eps, x + eps]`` and ``[-r, r]``."""
    n = x.size
    gap = 0.01 * eps
    k = min(n, 2 if rng.random() < 0.2 else 1)
    face = rng.choice(n, size=k, replace=False)
    c = rng.uniform(-r / 100, r / 100)
    x_cex = np.clip(x + c, -r + gap, r - gap)
    for i in face:
        u = rng.uniform(0.95, 0.99)
        s = 1.0 if rng.random() < 0.5 else -1.0
        if abs(x[i] + s * u * eps) > r - gap:
            s = -s
        x_cex[i] = x[i] + s * u * eps
    x_cex = _f32(x_cex)
    # float32 rounding must leave the point strictly inside both boxes
    inside = (np.abs(x_cex - x) <= eps - 0.5 * gap) & (np.abs(x_cex) <= r - 0.5 * gap)
    if not inside.all():
        raise AssertionError("a planted counterexample fell on the boundary of its box")
    return x_cex


def make_points(shape, n_planted: int, n_clean: int, eps: float, r: float = 0.1,
                seed: int = 0) -> Points:
    """Centres, labels and planted counterexamples for one model (see module); the first
    ``n_planted`` points are planted. Deterministic for ``seed``."""
    if not 0 < eps < r:
        raise ValueError(f"eps must lie in (0, {r}), got {eps}")
    shape = tuple(shape)
    n = int(np.prod(shape))
    rng = np.random.default_rng(seed)
    N = n_planted + n_clean
    x = _centres(rng, N, n, eps, r)
    labels = rng.integers(0, 2, size=N)
    planted = np.arange(N) < n_planted
    x_cex = np.full((N, n), np.nan)
    for i in range(n_planted):
        x_cex[i] = plant(rng, x[i], eps, r)
    return Points(x.reshape((N,) + shape), labels.astype(np.int64), planted,
                  x_cex.reshape((N,) + shape))
