"""Cutting planes for the triangle LP: the convex hull of one ReLU over the box of its inputs.

The triangle relaxation of ``a = relu(z)``, ``z = w'v + b``, sees the inputs ``v`` only through
the interval ``[l, u]`` of ``z``. Over the box ``L <= v <= U`` the convex hull of the graph is
tighter; Anderson et al. (2020, "Strong mixed-integer programming formulations for trained
neural networks") give it with a binary ``delta`` (1 when the neuron is active): for every
subset ``I`` of the inputs, with ``L~_i, U~_i`` the ends of ``v_i`` where ``w_i v_i`` is least /
largest,

    a <= sum_{i in I} w_i (v_i - L~_i (1 - delta)) + (b + sum_{i not in I} w_i U~_i) delta.

The LP here has no ``delta``; it is projected out with the bounds the big-M relaxation gives
it (``a / u <= delta <= 1 + (a - z) / l``): with ``kappa = b + sum_I w_i L~_i + sum_not_I w_i
U~_i``, ``delta`` is replaced by its upper end when ``kappa >= 0`` and by its lower end when
``kappa < 0``, which leaves a row ``p a + q'v <= h`` with ``p > 0`` (``separate``). At a point
``(v*, a*)`` (an LP optimum, or the point a bound propagation's lines pick) the subset is chosen
as Anderson et al. separate it, for the two ends of the point's ``delta`` interval, and a row is
kept when the point violates it. All three functions work on many rows (points) at once.

Soundness does not rest on that derivation: the right-hand side of every row is recomputed
(``certified_rhs``) as an upper bound, valid in floating point, of ``p relu(z) + q'v`` over
``{L <= v <= U, l <= z <= u}``, split into the inactive and the active part, each a box cut by
a two-sided range on ``w'v``, bounded through the Lagrangian dual of the range (valid for
every multiplier). So a row holds at every point of the domain whatever the coefficients,
and the LP bound stays a certified one (``lp.dual_bound`` with zero model error on the row).
"""
from __future__ import annotations

import numpy as np

from ..kernels.quantile import turning_points
from .lp_program import gamma, inflate
from .rounding import up

#: a point violates a row when ``p a + q'v - h`` exceeds this times ``1 + |h|``
VIOLATION = 1e-6


def range_max(f: np.ndarray, w: np.ndarray, lo_z: np.ndarray, hi_z: np.ndarray,
              xl: np.ndarray, xu: np.ndarray) -> np.ndarray:
    """Upper bounds (R,), valid in floating point, of ``max f_r'v`` over ``{xl <= v <= xu,
    lo_z[r] <= w_r'v <= hi_z[r]}`` for R rows ``f, w`` (R, n) (-inf where ``lo_z > hi_z``).

    For any multiplier ``lam`` the dual function ``phi(lam) = sum_i max((f_i - lam w_i) xl_i,
    (f_i - lam w_i) xu_i) + max(lam hi_z, lam lo_z)`` is an upper bound (weak duality); it is
    convex and piecewise linear, and its minimum is the breakpoint (of ``f_i / w_i`` and 0)
    where its slope, growing by ``|w_i| (xu_i - xl_i)`` (and ``hi_z - lo_z``) at each, turns
    >= 0 (``kernels.quantile.turning_points``). ``phi`` at that ``lam`` is then summed with the
    outward margin ``gamma_n`` times the magnitudes of its terms and of the rounding of ``f -
    lam w``."""
    f, w = np.atleast_2d(f), np.atleast_2d(w)
    lo_z, hi_z = np.atleast_1d(lo_z), np.atleast_1d(hi_z)
    R, n = f.shape
    nz = w != 0.0
    # a zero weight adds no breakpoint: its point sits at 0 with no step
    bps = np.divide(f, w, out=np.zeros_like(f), where=nz)
    steps = np.where(nz, np.abs(w) * (xu - xl), 0.0)
    # the slope far left: -max over the box of w'v, plus lo_z
    slope0 = lo_z - np.maximum(w * xl, w * xu).sum(axis=1)
    points = np.concatenate([bps, np.zeros((R, 1))], axis=1)
    incs = np.concatenate([steps, (hi_z - lo_z)[:, None]], axis=1)
    # the first breakpoint where the slope turns >= 0 (else the last); any lam is valid
    lam = turning_points(np.ascontiguousarray(points), np.ascontiguousarray(incs), -slope0)
    lam = np.where(np.isfinite(lam), lam, 0.0)
    c = f - lam[:, None] * w
    end = np.maximum(lam * hi_z, lam * lo_z)
    total = np.maximum(c * xl, c * xu).sum(axis=1) + end
    xmax = np.maximum(np.abs(xl), np.abs(xu))
    mag = ((np.abs(f) + np.abs(lam)[:, None] * np.abs(w)) * xmax).sum(axis=1) + np.abs(end)
    out = up(up(total) + inflate(gamma(n + 4) * mag))
    return np.where(lo_z > hi_z, -np.inf, out)


def certified_rhs(p: np.ndarray, Q: np.ndarray, W: np.ndarray, b: np.ndarray, me, l: np.ndarray,
                  u: np.ndarray, xl: np.ndarray, xu: np.ndarray) -> np.ndarray:
    """``h`` (R,) with ``p_r a + Q_r'v <= h_r`` for every ``v`` in the box whose exact
    pre-activation ``z*`` lies in ``[l_r, u_r]``, ``a = relu(z*)``, ``p >= 0``, when the stored
    ``z = W_r'v + b_r`` is within ``me_r`` of ``z*`` (rows: p, b, l, u (R,), Q, W (R, n); ``me``
    (R,) or a scalar): the larger of the inactive part (``a = 0``, ``z`` in ``[l - me, me]``)
    and the active part (``p a <= p (z + me)``, ``z`` in ``[-me, u + me]``)."""
    off = inflate(np.broadcast_to(me, p.shape))
    # the ranges of W'v, widened past the rounding of their ends
    pad = inflate(gamma(3) * (np.abs(l) + np.abs(u) + np.abs(b) + off))
    inactive = range_max(Q, W, l - b - off - pad, off - b + pad, xl, xu)
    f = p[:, None] * W + Q
    active = range_max(f, W, -off - b - pad, u + off - b + pad, xl, xu)
    # p z* <= p (W'v + b + me); |f~ - (p W + Q)| <= u (|p W| + |Q|) per entry
    xmax = np.maximum(np.abs(xl), np.abs(xu))
    err = ((np.abs(p[:, None] * W) + np.abs(Q)) * xmax).sum(axis=1) + np.abs(p * b) + p * off
    with np.errstate(invalid="ignore"):
        active = np.where(np.isfinite(active),
                          up(up(active + up(p * b + p * off)) + inflate(gamma(3) * err)), active)
    return np.maximum(inactive, active)


def separate(W: np.ndarray, b: np.ndarray, l: np.ndarray, u: np.ndarray, xl: np.ndarray,
             xu: np.ndarray, V: np.ndarray, A: np.ndarray, chunk: int = 1 << 22):
    """Candidate hull rows violated at the points ``V`` (P, n) of the inputs and ``A`` (P, m)
    of the unstable neurons ``z = W v + b`` (W (m, n)) with bounds ``l < 0 < u`` and input box
    ``xl, xu``: for each point and neuron, the rows of the subsets chosen at the two ends of its
    ``delta`` interval (module docstring); ``h`` is left to ``certified_rhs``. Returns
    ``(point, k, p, Q, excess)``: (R,), (R,), (R,), (R, n), (R,), ``excess`` the amount by which
    the point's ``a`` exceeds the subset's inequality. Points are taken ``chunk // (m n)`` at a
    time (the work arrays are (points, m, n))."""
    m, n = W.shape
    Lt = np.where(W >= 0.0, xl, xu)
    Ut = np.where(W >= 0.0, xu, xl)
    WL, WU = W * Lt, W * Ut
    out_pt, out_k, out_p, out_q, out_x = [], [], [], [], []
    step = max(1, chunk // max(1, m * n))
    for s in range(0, V.shape[0], step):
        v, a = V[s:s + step], A[s:s + step]
        z = v @ W.T + b
        d_lo = np.clip(a / u, 0.0, 1.0)
        d_hi = np.clip(1.0 + (a - z) / l, 0.0, 1.0)
        for delta in (d_lo, d_hi):
            inside = W * (v[:, None, :] - Lt * (1.0 - delta[:, :, None]))
            outside = WU * delta[:, :, None]
            I = inside < outside
            rhs = np.where(I, inside, outside).sum(axis=2) + b * delta
            kappa = np.where(I, WL, WU).sum(axis=2) + b
            pt, k = np.nonzero(a > rhs + VIOLATION * (1.0 + np.abs(rhs)))
            if pt.size == 0:
                continue
            kap = kappa[pt, k]
            Q = np.where(I[pt, k], -W[k], 0.0)
            pos = kap >= 0.0  # delta <= 1 + (a - z) / l, else delta >= a / u
            p = 1.0 - kap / np.where(pos, l[k], u[k])
            Q += np.where(pos, kap / l[k], 0.0)[:, None] * W[k]
            out_pt.append(pt + s)
            out_k.append(k)
            out_p.append(p)
            out_q.append(Q)
            out_x.append(a[pt, k] - rhs[pt, k])
    if not out_pt:
        return (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0),
                np.zeros((0, n)), np.zeros(0))
    return (np.concatenate(out_pt), np.concatenate(out_k), np.concatenate(out_p),
            np.concatenate(out_q), np.concatenate(out_x))
