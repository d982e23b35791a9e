"""Counterexample search inside the branch-and-bound tree. Nothing here proves anything: every
point found is only a candidate that the caller replays on the original model.

* ``pgd``: batched sign-gradient descent of a conjunction's margin ``max_k (C y - d)_k`` on the
  chain, from given starting points (the bound minimisers x* of the weakest subproblems), inside
  the box ``[xl, xu]``; it returns every iterate's final point and margin.
* ``region_minimiser``: for a subproblem whose ReLUs are all fixed the chain is affine on it,
  ``y = G x + h``, and ``min t s.t. C (G x + h) - d <= t, pattern signs, xl <= x <= xu`` is an LP
  (HiGHS via scipy); its solution is the candidate of that linear region.
"""
from __future__ import annotations

import logging

import numpy as np
from scipy.optimize import linprog

log = logging.getLogger(__name__)


def margins(chain, X: np.ndarray, C: np.ndarray, d: np.ndarray) -> np.ndarray:
    """(P,) float64 margins ``max_k (C f(X) - d)_k`` of a conjunction (<= 0: violated)."""
    return (chain.forward(X) @ C.T - d).max(axis=1)


def pgd(chain, X0: np.ndarray, xl: np.ndarray, xu: np.ndarray, C: np.ndarray, d: np.ndarray,
        steps: int = 30, step_max: float = 0.1, step_min: float = 0.001):
    """Sign-gradient descent of ``max_k (C f(x) - d)_k`` from X0 (P, n0) in the box (n0,) or
    (P, n0) with a cosine step schedule (fractions of the box width). Returns the best point of
    every start (P, n0) and its margin (P,)."""
    X = np.clip(np.asarray(X0, dtype=np.float64).copy(), xl, xu)
    width = xu - xl
    best_x = X.copy()
    best_m = np.full(X.shape[0], np.inf)
    for t in range(steps + 1):
        zs, v = [], X
        for W, b, r in zip(chain.W, chain.b, chain.relu):
            z = v @ W.T + b
            zs.append(z)
            v = np.maximum(z, 0.0) if r else z
        Z = v @ C.T - d
        m = Z.max(axis=1)
        better = m < best_m
        best_m = np.where(better, m, best_m)
        best_x[better] = X[better]
        if t == steps:
            break
        g = C[np.argmax(Z, axis=1)]
        for i in range(chain.L - 1, -1, -1):
            if chain.relu[i]:
                g = g * (zs[i] > 0.0)
            g = g @ chain.W[i]
        frac = step_min + 0.5 * (step_max - step_min) * (1.0 + np.cos(np.pi * t / max(steps, 1)))
        X = np.clip(X - frac * width * np.sign(g), xl, xu)
    return best_x, best_m


def region_minimiser(chain, pattern: dict, xl: np.ndarray, xu: np.ndarray, C: np.ndarray,
                     d: np.ndarray) -> np.ndarray | None:
    """The LP minimiser of the conjunction's margin over the linear region where every ReLU
    has the sign ``pattern[i]`` (n_i,) in {+1, -1} (active / inactive), inside the box; None
    when the LP solver finds no point. xl, xu: (n0,)."""
    n0 = xl.size
    G = np.eye(n0)
    h = np.zeros(n0)
    A_ub, b_ub = [], []
    for i, (W, b, r) in enumerate(zip(chain.W, chain.b, chain.relu)):
        G, h = W @ G, W @ h + b
        if r:
            s = pattern[i]
            # active: z >= 0  <=>  -G x <= h ; inactive: z <= 0  <=>  G x <= -h
            A_ub.append(-s[:, None] * G)
            b_ub.append(s * h)
            G = G * (s > 0)[:, None]
            h = h * (s > 0)
    k = C.shape[0]
    # variables (x, t): minimise t subject to C (G x + h) - d - t <= 0
    A_ub.append(np.hstack([C @ G, -np.ones((k, 1))]))
    b_ub.append(d - C @ h)
    A = np.vstack([np.hstack([a, np.zeros((a.shape[0], 1))]) for a in A_ub[:-1]] + [A_ub[-1]])
    bvec = np.concatenate(b_ub)
    cost = np.zeros(n0 + 1)
    cost[-1] = 1.0
    bounds = [(lo, hi) for lo, hi in zip(xl, xu)] + [(None, None)]
    try:
        res = linprog(cost, A_ub=A, b_ub=bvec, bounds=bounds, method="highs")
    except ValueError as exc:  # a malformed LP (e.g. non-finite data): no candidate
        log.debug("region LP failed: %s", exc)
        return None
    if res.status != 0 or res.x is None:
        return None
    return np.clip(res.x[:n0], xl, xu)
