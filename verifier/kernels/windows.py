"""Index-driven kernels: the transpose of Select (a scatter-add) and MaxPool windows.

A window table ``win`` (n_out, w) lists, for each output element, the flat indices of the input
elements in its window; -1 marks padding (ignored: MaxPool pads with -inf)."""
import numpy as np
from numba import njit


@njit(cache=True)
def select_backward(A, idx, n_in, fill):
    """Transpose of ``y[o] = x[idx[o]]`` (or ``fill`` where idx[o] = -1) applied to rows of A.

    ``A_in[b, r, i] = sum_{o: idx[o] = i} A[b, r, o]`` and
    ``const[b, r] = fill * sum_{o: idx[o] = -1} A[b, r, o]``.
    A: (Ba, K, n_out); idx: (n_out,) int64; returns A_in (Ba, K, n_in), const (Ba, K)."""
    Ba, K, n_out = A.shape
    out = np.zeros((Ba, K, n_in))
    const = np.zeros((Ba, K))
    for p in range(Ba * K):
        b = p // K
        r = p - b * K
        c = 0.0
        for o in range(n_out):
            i = idx[o]
            if i >= 0:
                out[b, r, i] += A[b, r, o]
            else:
                c += A[b, r, o]
        const[b, r] = fill * c
    return out, const


@njit(cache=True)
def window_max(x, win):
    """``y[b, o] = max_{i in win[o], i >= 0} x[b, i]``. x: (B, n_in); win: (n_out, w) int64."""
    B = x.shape[0]
    n_out, w = win.shape
    y = np.empty((B, n_out))
    for b in range(B):
        for o in range(n_out):
            m = -np.inf
            for q in range(w):
                i = win[o, q]
                if i >= 0 and x[b, i] > m:
                    m = x[b, i]
            y[b, o] = m
    return y


@njit(cache=True)
def maxpool_relax(l, u, win):
    """MaxPool lines on the input box [l, u]: ``y_o >= x_{j*}`` with j* the argmax of the lower
    bounds in the window, and ``y_o <= U_o = max u`` over the window; ``exact[b, o]`` when
    ``l_{j*} >= u_i`` for every other i of the window (then ``y_o = x_{j*}``).
    l, u: (B, n_in); win: (n_out, w). Returns jstar (B, n_out) int64 (flat input index),
    U (B, n_out) float64, exact (B, n_out) bool."""
    B = l.shape[0]
    n_out, w = win.shape
    jstar = np.empty((B, n_out), dtype=np.int64)
    U = np.empty((B, n_out))
    exact = np.empty((B, n_out), dtype=np.bool_)
    for b in range(B):
        for o in range(n_out):
            best = -1
            lbest = -np.inf
            umax = -np.inf
            for q in range(w):
                i = win[o, q]
                if i < 0:
                    continue
                if best < 0 or l[b, i] > lbest:
                    best = i
                    lbest = l[b, i]
                if u[b, i] > umax:
                    umax = u[b, i]
            other = -np.inf
            for q in range(w):
                i = win[o, q]
                if i >= 0 and i != best and u[b, i] > other:
                    other = u[b, i]
            jstar[b, o] = best
            U[b, o] = umax
            exact[b, o] = lbest >= other
    return jstar, U, exact


@njit(cache=True)
def maxpool_backward(A, jstar, U, exact, n_in):
    """Backward substitution through the MaxPool lines of ``maxpool_relax`` (lower side).

    a = A[b, r, o] > 0 (or any sign when exact): ``A_in[b, r, jstar] += a``; a < 0 otherwise:
    ``const[b, r] += a U``. A: (Ba, K, n_out); jstar, U, exact: (Bs, n_out);
    returns A_in (B, K, n_in), const (B, K), B = max(Ba, Bs)."""
    Ba, K, n_out = A.shape
    Bs = jstar.shape[0]
    B = max(Ba, Bs)
    out = np.zeros((B, K, n_in))
    const = np.zeros((B, K))
    for p in range(B * K):
        b = p // K
        r = p - b * K
        ba = b if Ba > 1 else 0
        bs = b if Bs > 1 else 0
        c = 0.0
        for o in range(n_out):
            a = A[ba, r, o]
            if a > 0.0 or (a < 0.0 and exact[bs, o]):
                out[b, r, jstar[bs, o]] += a
            elif a < 0.0:
                c += a * U[bs, o]
        const[b, r] = c
    return out, const
