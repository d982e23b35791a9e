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
``kappa < 0``, which leaves a row ``p a + q'v <= h`` with ``p > 0`` (``separate``). At an LP
point ``(v*, a*)`` the subset is chosen as Anderson et al. separate it, for the two ends of the
point's ``delta`` interval, and a row is kept when the point violates it.

Soundness does not rest on that derivation: the right-hand side of every row is recomputed
(``certified_rhs``) as an upper bound, valid in floating point, of ``p relu(z) + q'v`` over
``{L <= v <= U, l <= z <= u}``, split into the inactive and the active part, each a box cut by
a two-sided range on ``w'v``, bounded through the Lagrangian dual of the range (valid for
every multiplier). So a row holds at every point of the domain whatever the coefficients,
and the LP bound stays a certified one (``lp.dual_bound`` with zero model error on the row).
"""
from __future__ import annotations

import numpy as np

from .lp_program import gamma, inflate
from .rounding import up

#: a point violates a row when ``p a + q'v - h`` exceeds this times ``1 + |h|``
VIOLATION = 1e-6


def range_max(f: np.ndarray, w: np.ndarray, lo_z: float, hi_z: float, xl: np.ndarray,
              xu: np.ndarray) -> float:
    """An upper bound, valid in floating point, of ``max f'v`` over ``{xl <= v <= xu,
    lo_z <= w'v <= hi_z}`` (-inf when ``lo_z > hi_z``).

    For any multiplier ``lam`` the dual function ``phi(lam) = sum_i max((f_i - lam w_i) xl_i,
    (f_i - lam w_i) xu_i) + max(lam hi_z, lam lo_z)`` is an upper bound (weak duality); it is
    convex and piecewise linear, and its minimum is found from the sorted breakpoints
    ``f_i / w_i`` (and 0), where its slope grows by ``|w_i| (xu_i - xl_i)`` (and ``hi_z -
    lo_z``). ``phi`` at that ``lam`` is then summed with the outward margin ``gamma_n`` times the
    magnitudes of its terms and of the rounding of ``f - lam w``."""
    if lo_z > hi_z:
        return -np.inf
    width = xu - xl
    nz = w != 0.0
    bps = f[nz] / w[nz]
    steps = np.abs(w[nz]) * width[nz]
    # the slope far left: -max over the box of w'v, plus lo_z
    slope0 = lo_z - float(np.sum(np.maximum(w * xl, w * xu)))
    points = np.concatenate([bps, [0.0]])
    incs = np.concatenate([steps, [hi_z - lo_z]])
    order = np.argsort(points, kind="stable")
    slope = slope0 + np.cumsum(incs[order])
    k = int(np.searchsorted(slope, 0.0))  # first breakpoint where the slope turns >= 0
    lam = float(points[order[min(k, points.size - 1)]])
    if not np.isfinite(lam):
        lam = 0.0
    c = f - lam * w
    terms = np.maximum(c * xl, c * xu)
    end = max(lam * hi_z, lam * lo_z)
    total = float(np.sum(terms)) + end
    xmax = np.maximum(np.abs(xl), np.abs(xu))
    mag = float(np.sum((np.abs(f) + abs(lam) * np.abs(w)) * xmax)) + abs(end)
    return float(up(up(total) + float(inflate(gamma(f.size + 4) * mag))))


def certified_rhs(p: float, q: np.ndarray, w: np.ndarray, b: float, me: float, l: float,
                  u: float, xl: np.ndarray, xu: np.ndarray) -> float:
    """``h`` with ``p a + q'v <= h`` for every ``v`` in the box whose exact pre-activation
    ``z*`` lies in ``[l, u]``, ``a = relu(z*)``, ``p >= 0``, when the stored ``z = w'v + b`` is
    within ``me`` of ``z*``: the larger of the inactive part (``a = 0``, ``z`` in ``[l - me,
    me]``) and the active part (``p a <= p (z + me)``, ``z`` in ``[-me, u + me]``)."""
    off = float(inflate(me))

    def outward(lo_z, hi_z, mag):  # the range of w'v, widened past the rounding of its ends
        pad = float(inflate(gamma(3) * mag))
        return lo_z - pad, hi_z + pad

    mag = abs(l) + abs(u) + abs(b) + off
    inactive = range_max(q, w, *outward(l - b - off, off - b, mag), xl, xu)
    f = p * w + q
    active = range_max(f, w, *outward(-off - b, u + off - b, mag), xl, xu)
    if np.isfinite(active):
        # p z* <= p (w'v + b + me); |f~ - (p w + q)| <= u (|p w| + |q|) per entry
        xmax = np.maximum(np.abs(xl), np.abs(xu))
        err = float(np.sum((np.abs(p * w) + np.abs(q)) * xmax)) + abs(p * b) + p * off
        active = float(up(up(active + up(p * b + p * off)) + float(inflate(gamma(3) * err))))
    return max(inactive, active)


def separate(W: np.ndarray, b: np.ndarray, l: np.ndarray, u: np.ndarray, xl: np.ndarray,
             xu: np.ndarray, v: np.ndarray, a: np.ndarray):
    """Candidate hull rows ``(k, p, q)`` violated at the point ``v`` (n,) of the inputs and
    ``a`` (m,) of the unstable neurons ``z = W v + b`` (W (m, n)) with bounds ``l < 0 < u``
    and input box ``xl, xu``: for each neuron, the rows of the subsets chosen at the two ends
    of its ``delta`` interval (module docstring); ``h`` is left to ``certified_rhs``."""
    z = W @ v + b
    d_lo = np.clip(a / u, 0.0, 1.0)
    d_hi = np.clip(1.0 + (a - z) / l, 0.0, 1.0)
    Lt = np.where(W >= 0.0, xl, xu)
    Ut = np.where(W >= 0.0, xu, xl)
    out = []
    for delta in (d_lo, d_hi):
        inside = W * (v - Lt * (1.0 - delta[:, None]))
        outside = W * Ut * delta[:, None]
        I = inside < outside
        rhs = np.where(I, inside, outside).sum(axis=1) + b * delta
        A_I = np.where(I, W * Lt, 0.0).sum(axis=1)
        kappa = A_I + b + np.where(I, 0.0, W * Ut).sum(axis=1)
        for k in np.flatnonzero(a > rhs + VIOLATION * (1.0 + np.abs(rhs))):
            qI = np.where(I[k], -W[k], 0.0)
            if kappa[k] >= 0.0:  # delta <= 1 + (a - z) / l
                p = 1.0 - kappa[k] / l[k]
                q = qI + (kappa[k] / l[k]) * W[k]
            else:                # delta >= a / u
                p = 1.0 - kappa[k] / u[k]
                q = qI
            out.append((int(k), float(p), q))
    return out
