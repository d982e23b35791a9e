"""Row-wise products of a coefficient tensor with per-box vectors: box concretisation and the
magnitudes that the rounding margins are built from. Inner loops run over contiguous rows with
selects instead of branches, so that they vectorise."""
import numpy as np
from numba import njit


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
            s = 0.0
            for j in range(n):
                a = arow[j]
                s += abs(a) * ww[j] if a != 0.0 else 0.0
            out[b, r] = s
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
            s = 0.0
            m = 0.0
            for j in range(n):
                a = arow[j]
                x = lb[j] if a > 0.0 else ub[j]
                nz = a != 0.0
                s += a * x if nz else 0.0
                m += abs(a) * vm[j] if nz else 0.0
            val[b, r] = s
            mag[b, r] = m
    return val, mag
