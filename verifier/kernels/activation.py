"""Elementwise relaxations (ReLU, LeakyReLU) and backward/forward substitution through any
elementwise relaxation ``lo_k z + lo_t <= y <= up_k z + up_t``.

Soundness in floating point: the slopes returned here define lines that are valid in exact
arithmetic (slopes anchored at ``l`` are rounded in the safe direction by the factors ``UP`` /
``DOWN``, which exceed the relative error of the quotient); the rounding of the intercepts and of
the substitution itself is covered by the magnitude ``mag`` that the backward kernel returns
(see ``verifier.bounds.rounding``).
"""
import numpy as np
from numba import njit

from .parallel import boxes

#: 1 + 2**-50 and 1 - 2**-50: a quotient of sums of two terms has relative error below 4 u, so
#: multiplying it by UP (DOWN) rounds it up (down) past the exact value.
UP = 1.0 + 2.0 ** -50
DOWN = 1.0 - 2.0 ** -50

#: lower-slope choices for unstable ReLUs
RELU_ADAPTIVE, RELU_ZERO, RELU_ONE, RELU_SAME = 0, 1, 2, 3


@njit(cache=True)
def relu_relax(l, u, mode):
    """ReLU lines on [l, u]: returns (lo_k, up_k, up_t), each (B, n) float64.

    Stable active (l >= 0): y = z; stable inactive (u <= 0): y = 0. Unstable (l < 0 < u):
    upper line ``y <= s (z - l)`` with ``s >= u / (u - l)`` (rounded up), so ``up_t = -s l``;
    lower line ``y >= lo_k z`` with lo_k in [0, 1]: ``mode`` 0 (adaptive, DeepPoly: 1 if
    u >= -l else 0), 1 (0), 2 (1), 3 (s, the upper slope). l, u: (B, n) float64."""
    B, n = l.shape
    lo_k = np.empty((B, n))
    up_k = np.empty((B, n))
    up_t = np.empty((B, n))
    for b in range(B):
        for j in range(n):
            lj = l[b, j]
            uj = u[b, j]
            if lj >= 0.0:
                lo_k[b, j] = 1.0
                up_k[b, j] = 1.0
                up_t[b, j] = 0.0
            elif uj <= 0.0:
                lo_k[b, j] = 0.0
                up_k[b, j] = 0.0
                up_t[b, j] = 0.0
            else:
                s = (uj / (uj - lj)) * UP
                up_k[b, j] = s
                up_t[b, j] = -s * lj
                if mode == 0:
                    lo_k[b, j] = 1.0 if uj >= -lj else 0.0
                elif mode == 1:
                    lo_k[b, j] = 0.0
                elif mode == 2:
                    lo_k[b, j] = 1.0
                else:
                    lo_k[b, j] = min(s, 1.0)
    return lo_k, up_k, up_t


@njit(cache=True)
def leaky_relax(l, u, alpha):
    """LeakyReLU (``y = z`` for z >= 0, ``alpha z`` otherwise, alpha >= 0) lines on [l, u]:
    returns (lo_k, lo_t, up_k, up_t), each (B, n).

    alpha <= 1 (convex): upper = secant anchored at (l, alpha l) with slope rounded up,
    ``y <= s (z - l) + alpha l``; lower = line through 0 with slope 1 if u >= -l else alpha.
    alpha > 1 (concave): lower = secant with slope rounded down; upper = line through 0 with
    slope 1 if u >= -l else alpha. l, u: (B, n) float64; alpha: float."""
    B, n = l.shape
    lo_k = np.empty((B, n))
    lo_t = np.zeros((B, n))
    up_k = np.empty((B, n))
    up_t = np.zeros((B, n))
    for b in range(B):
        for j in range(n):
            lj = l[b, j]
            uj = u[b, j]
            if lj >= 0.0:
                lo_k[b, j] = 1.0
                up_k[b, j] = 1.0
            elif uj <= 0.0:
                lo_k[b, j] = alpha
                up_k[b, j] = alpha
            else:
                s = (uj - alpha * lj) / (uj - lj)
                lam = 1.0 if uj >= -lj else alpha
                if alpha <= 1.0:
                    s = s * UP
                    up_k[b, j] = s
                    up_t[b, j] = lj * (alpha - s)
                    lo_k[b, j] = lam
                else:
                    s = s * DOWN
                    lo_k[b, j] = s
                    lo_t[b, j] = lj * (alpha - s)
                    up_k[b, j] = lam
    return lo_k, lo_t, up_k, up_t


@njit(cache=True, inline="always")
def _term(a, lkj, ukj, ltj, utj, bnj, vmj):
    """One neuron of ``act_backward``: (a k, a t + a k bn, |a k| vm + |a t|), zero when a = 0."""
    pos = a > 0.0
    k = lkj if pos else ukj
    t = ltj if pos else utj
    nz = a != 0.0
    na = a * k if nz else 0.0
    at = a * t if nz else 0.0
    return na, at + (na * bnj if nz else 0.0), (abs(na) * vmj if nz else 0.0) + abs(at)


@njit(cache=True, nogil=True)
def _act_backward_into(A, lo_k, lo_t, up_k, up_t, vm, cols, bn, out, const, mag, b0, b1):
    # four independent accumulator chains: the sums are not reassociated by the compiler (no
    # fastmath), so splitting them by hand hides the latency of the additions
    Ba, K, n = A.shape
    Bl, Kl, _ = lo_k.shape
    Bs = lo_t.shape[0]
    nc = cols.shape[0]
    for b in range(b0, b1):
        ba = b if Ba > 1 else 0
        bl = b if Bl > 1 else 0
        bs = b if Bs > 1 else 0
        lt = lo_t[bs]
        uk = up_k[bs]
        ut = up_t[bs]
        vv = vm[bs]
        for r in range(K):
            a_ = A[ba, r]
            lk = lo_k[bl, r if Kl > 1 else 0]
            o = out[b, r]
            c0 = c1 = c2 = c3 = 0.0
            m0 = m1 = m2 = m3 = 0.0
            q = 0
            while q + 4 <= nc:
                j = cols[q]
                o[q], x, y = _term(a_[j], lk[j], uk[j], lt[j], ut[j], bn[j], vv[j])
                c0 += x
                m0 += y
                j = cols[q + 1]
                o[q + 1], x, y = _term(a_[j], lk[j], uk[j], lt[j], ut[j], bn[j], vv[j])
                c1 += x
                m1 += y
                j = cols[q + 2]
                o[q + 2], x, y = _term(a_[j], lk[j], uk[j], lt[j], ut[j], bn[j], vv[j])
                c2 += x
                m2 += y
                j = cols[q + 3]
                o[q + 3], x, y = _term(a_[j], lk[j], uk[j], lt[j], ut[j], bn[j], vv[j])
                c3 += x
                m3 += y
                q += 4
            while q < nc:
                j = cols[q]
                o[q], x, y = _term(a_[j], lk[j], uk[j], lt[j], ut[j], bn[j], vv[j])
                c0 += x
                m0 += y
                q += 1
            const[b, r] = (c0 + c1) + (c2 + c3)
            mag[b, r] = (m0 + m1) + (m2 + m3)


def act_backward(A, lo_k, lo_t, up_k, up_t, vm, cols, bn):
    """Backward substitution through an elementwise relaxation (lower-bound side), optionally
    fused with the bias of the Linear that produced its input.

    For box b, row r, neuron j = cols[q] and a = A[b, r, j]: a > 0 uses the lower line, a < 0
    the upper line: ``a y_j >= (a k) z_j + a t``. Returns (Az, const, mag):
    ``Az[b, r, q] = a k`` (only the columns ``cols``: the others must have zero lines),
    ``const[b, r] = sum_q a t + (a k) bn[j]``,
    ``mag[b, r] = sum_q |a k| vm[b, j] + |a t|`` (the rounding-margin magnitude; ``vm`` is the
    input's largest magnitude plus, when fused, the Linear's magnitude vector); terms with a = 0
    are skipped (no 0 * inf). Shapes: A (Ba, K, n); lo_k (Bl, Kl, n) (per-row slopes for
    alpha-CROWN, or Kl = 1); lo_t, up_k, up_t, vm (Bs, n); cols (nc,) int64; bn (n,);
    Az (B, K, nc), const and mag (B, K), B = max(Ba, Bl, Bs). Large batches are split over
    threads (``parallel.boxes``)."""
    B = max(A.shape[0], lo_k.shape[0], lo_t.shape[0])
    K = A.shape[1]
    out = np.empty((B, K, cols.shape[0]))
    const = np.empty((B, K))
    mag = np.empty((B, K))
    boxes(_act_backward_into, B, B * K * cols.shape[0],
          (A, lo_k, lo_t, up_k, up_t, vm, cols, bn, out, const, mag))
    return out, const, mag


@njit(cache=True, nogil=True)
def _act_forward_into(z, A, lo_k, lo_t, up_k, up_t, y, grad, b0, b1):
    B, K, n = z.shape
    Ba = A.shape[0]
    Bl, Kl, _ = lo_k.shape
    Bs = lo_t.shape[0]
    for b in range(b0, b1):
        ba = b if Ba > 1 else 0
        bl = b if Bl > 1 else 0
        bs = b if Bs > 1 else 0
        lt = lo_t[bs]
        uk = up_k[bs]
        ut = up_t[bs]
        for r in range(K):
            arow = A[ba, r]
            zrow = z[b, r]
            lk = lo_k[bl, r if Kl > 1 else 0]
            yrow = y[b, r]
            grow = grad[b, r]
            for j in range(n):
                a = arow[j]
                zz = zrow[j]
                low = a >= 0.0
                yrow[j] = (lk[j] * zz + lt[j]) if low else (uk[j] * zz + ut[j])
                grow[j] = a * zz if a > 0.0 else 0.0


def act_forward(z, A, lo_k, lo_t, up_k, up_t):
    """Forward evaluation of the lines that ``act_backward`` chose, at row-specific points.

    ``y[b, r, j] = lo_k z + lo_t`` where ``A[b, r, j] >= 0`` else ``up_k z + up_t``, and
    ``grad[b, r, j] = A z`` where A > 0 else 0 (the derivative of the bound with respect to a
    per-row lower slope). Shapes: z (B, K, n); A (Ba, K, n); lo_k (Bl, Kl, n);
    lo_t, up_k, up_t (Bs, n). Returns y, grad: (B, K, n)."""
    y = np.empty(z.shape)
    grad = np.empty(z.shape)
    boxes(_act_forward_into, z.shape[0], z.size, (z, A, lo_k, lo_t, up_k, up_t, y, grad))
    return y, grad
