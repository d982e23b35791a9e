"""Interval propagation through one dense affine layer in a single pass over its weights."""
import numpy as np
from numba import njit


@njit(cache=True)
def _down(x):
    """Below the exact result of the operation that gave x (see bounds.rounding.down)."""
    return min(x, x - (abs(x) * 2.0 ** -51 + 2.0 ** -1073))


@njit(cache=True)
def _up(x):
    return max(x, x + (abs(x) * 2.0 ** -51 + 2.0 ** -1073))


@njit(cache=True)
def affine_ibp(WT, b, lo, hi, g):
    """IBP through ``y = W x + b`` for a few boxes, reading the weights once per box.

    WT: (n, m) = W transposed (C-contiguous); b: (m,); lo, hi: (B, n); g: the margin factor
    (MARGIN_FACTOR gamma_N). With ``mu = (lo + hi) / 2`` and the radius ``r`` rounded up so that
    ``[mu - r, mu + r]`` holds the box: ``c = W mu + b``, ``rho = |W| r``,
    ``s = |W| (|mu| + r) + |b|``; returns ``(c - R, c + R)`` rounded outward, R = rho + g s,
    and s, each (B, m). The inner loop runs over outputs (an axpy per input), so it vectorises
    without reassociating any sum."""
    n, m = WT.shape
    B = lo.shape[0]
    out_lo = np.empty((B, m))
    out_hi = np.empty((B, m))
    out_s = np.empty((B, m))
    c = np.empty(m)
    rho = np.empty(m)
    s = np.empty(m)
    for bb in range(B):
        for i in range(m):
            c[i] = b[i]
            rho[i] = 0.0
            s[i] = abs(b[i])
        for j in range(n):
            l = lo[bb, j]
            u = hi[bb, j]
            mu = 0.5 * (l + u)
            r = _up(max(u - mu, mu - l))
            am = abs(mu) + r
            w = WT[j]
            for i in range(m):
                wij = w[i]
                aw = abs(wij)
                c[i] += wij * mu
                rho[i] += aw * r
                s[i] += aw * am
        for i in range(m):
            R = rho[i] + g * s[i]
            out_lo[bb, i] = _down(c[i] - R)
            out_hi[bb, i] = _up(c[i] + R)
            out_s[bb, i] = s[i]
    return out_lo, out_hi, out_s
