"""Row-wise products of a coefficient tensor with per-box vectors: box concretisation and the
magnitudes that the rounding margins are built from. Inner loops run over contiguous rows with
selects instead of branches, and keep four independent partial sums (the compiler may not
reassociate floating-point sums itself: no fastmath)."""
import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def _absmul(a, w):
    return abs(a) * w if a != 0.0 else 0.0


@njit(cache=True, inline="always")
def _corner(a, l, u, vm):
    """(a l if a > 0 else a u, |a| vm), both 0 when a = 0."""
    nz = a != 0.0
    return (a * (l if a > 0.0 else u) if nz else 0.0), (abs(a) * vm if nz else 0.0)


@njit(cache=True)
def abs_dot(A, w):
    """``out[b, r] = sum_j |A[b, r, j]| w[b, j]`` over nonzero A (so 0 * inf is never formed).

    A: (Ba, K, n); w: (Bw, n) with w >= 0; out: (max(Ba, Bw), K)."""
    Ba, K, n = A.shape
    Bw = w.shape[0]
    B = max(Ba, Bw)
    out = np.zeros((B, K))
    for b in range(B):
        ww = w[b if Bw > 1 else 0]
        for r in range(K):
            arow = A[b if Ba > 1 else 0, r]
            s0 = s1 = s2 = s3 = 0.0
            j = 0
            while j + 4 <= n:
                s0 += _absmul(arow[j], ww[j])
                s1 += _absmul(arow[j + 1], ww[j + 1])
                s2 += _absmul(arow[j + 2], ww[j + 2])
                s3 += _absmul(arow[j + 3], ww[j + 3])
                j += 4
            while j < n:
                s0 += _absmul(arow[j], ww[j])
                j += 1
            out[b, r] = (s0 + s1) + (s2 + s3)
    return out


@njit(cache=True)
def box_lower(A, l, u):
    """Minimum of ``A[b, r] . x`` over the box ``l[b] <= x <= u[b]`` and its magnitude.

    ``val[b, r] = sum_j (A l if A > 0 else A u)``, ``mag[b, r] = sum_j |A| max(|l|, |u|)``
    (zero coefficients skipped). A: (Ba, K, n); l, u: (Bs, n); val, mag: (max(Ba, Bs), K)."""
    Ba, K, n = A.shape
    Bs = l.shape[0]
    B = max(Ba, Bs)
    val = np.zeros((B, K))
    mag = np.zeros((B, K))
    vm = np.empty(n)
    for b in range(B):
        lb = l[b if Bs > 1 else 0]
        ub = u[b if Bs > 1 else 0]
        for j in range(n):
            vm[j] = max(abs(lb[j]), abs(ub[j]))
        for r in range(K):
            arow = A[b if Ba > 1 else 0, r]
            s0 = s1 = s2 = s3 = 0.0
            m0 = m1 = m2 = m3 = 0.0
            j = 0
            while j + 4 <= n:
                x, y = _corner(arow[j], lb[j], ub[j], vm[j])
                s0 += x
                m0 += y
                x, y = _corner(arow[j + 1], lb[j + 1], ub[j + 1], vm[j + 1])
                s1 += x
                m1 += y
                x, y = _corner(arow[j + 2], lb[j + 2], ub[j + 2], vm[j + 2])
                s2 += x
                m2 += y
                x, y = _corner(arow[j + 3], lb[j + 3], ub[j + 3], vm[j + 3])
                s3 += x
                m3 += y
                j += 4
            while j < n:
                x, y = _corner(arow[j], lb[j], ub[j], vm[j])
                s0 += x
                m0 += y
                j += 1
            val[b, r] = (s0 + s1) + (s2 + s3)
            mag[b, r] = (m0 + m1) + (m2 + m3)
    return val, mag
