"""Numba kernels of the chain bounds (``njit(cache=True)``, never ``fastmath``; serial, since
branch and bound runs one process per core).

``relu_step`` fuses one ReLU step of the backward pass with the bias and magnitude terms of the
affine layer below it (see ``bab_crown``): for box b, row r, neuron j and ``a = lam[b, r, j]``,

    g = a * k_lo  (a >= 0)   or   a * k_up  (a < 0),     g -= beta * split,
    const[b, r] += sum_j (min(a, 0) * t_up + g * bias)
    mag[b, r]   += sum_j (|min(a, 0) * t_up| + |g| * zw)

where ``k_lo`` is alpha[b, r, j] on unstable neurons (when given) else the default slope, and
``zw = zmax + w`` joins the ReLU step's magnitude (``|g| zmax``) with the affine step's
(``|g| w``, w = |W| vmax + |b|). ``concretise`` is the input step: ``sum_j min(a xl, a xu)`` and
its magnitude ``sum_j |a| max(|xl|, |xu|)``. Empty arrays (size 0) stand for absent alpha/beta.
"""
import numpy as np
from numba import njit

from ..kernels.quantile import weighted_quantile


@njit(cache=True)
def relu_step(lam, k_lo, k_up, t_up, zw, bias, unstable, alpha, beta, split):
    """lam (Ba, K, n) with Ba in (1, B); k_lo, k_up, t_up, zw (B, n); bias (n,); unstable
    (B, n) uint8; alpha (B, Ka, n) with Ka in (1, K) or size 0; beta (B, Kb, n) or size 0;
    split (B, n) float64 (read when beta is given). Returns g (B, K, n), const (B, K),
    mag (B, K)."""
    B = k_lo.shape[0]
    Ba, K, n = lam.shape
    has_alpha = alpha.size > 0
    has_beta = beta.size > 0
    Ka = alpha.shape[1] if has_alpha else 1
    Kb = beta.shape[1] if has_beta else 1
    g = np.empty((B, K, n))
    const = np.zeros((B, K))
    mag = np.zeros((B, K))
    for b in range(B):
        ba = b if Ba > 1 else 0
        for r in range(K):
            ra = r if Ka > 1 else 0
            rb = r if Kb > 1 else 0
            c = 0.0
            m = 0.0
            for j in range(n):
                a = lam[ba, r, j]
                if a >= 0.0:
                    if has_alpha and unstable[b, j]:
                        gg = a * alpha[b, ra, j]
                    else:
                        gg = a * k_lo[b, j]
                else:
                    gg = a * k_up[b, j]
                    t = t_up[b, j]
                    if t != 0.0:
                        at = a * t
                        c += at
                        m -= at
                if has_beta:
                    s = split[b, j]
                    if s != 0.0:
                        gg -= beta[b, rb, j] * s
                g[b, r, j] = gg
                if gg != 0.0:
                    c += gg * bias[j]
                    m += abs(gg) * zw[b, j]
            const[b, r] = c
            mag[b, r] = m
    return g, const, mag


@njit(cache=True)
def concretise(lam, xl, xu):
    """Box minimum of ``lam[b, r] . x`` over ``xl[b] <= x <= xu[b]`` and its magnitude.
    lam (Ba, K, n); xl, xu (B, n). Returns val, mag (B, K)."""
    B, n = xl.shape
    Ba, K, _ = lam.shape
    val = np.zeros((B, K))
    mag = np.zeros((B, K))
    for b in range(B):
        ba = b if Ba > 1 else 0
        for r in range(K):
            s = 0.0
            m = 0.0
            for j in range(n):
                a = lam[ba, r, j]
                if a > 0.0:
                    s += a * xl[b, j]
                elif a < 0.0:
                    s += a * xu[b, j]
                else:
                    continue
                m += abs(a) * max(abs(xl[b, j]), abs(xu[b, j]))
            val[b, r] = s
            mag[b, r] = m
    return val, mag


@njit(cache=True)
def relu_step_rows(lam, box, k_lo, k_up, t_up, zw, bias, unstable, alpha):
    """``relu_step`` for a flat list of rows, each of its own box: lam (T, n), box (T,) int64
    indices into the per-box arrays k_lo, k_up, t_up, zw, unstable (B, n); bias (n,). No beta.
    alpha (T, n): the lower slope of row r on the unstable neurons where not NaN (else the
    default slope), or size 0 for the default slopes everywhere. Returns g (T, n), const (T,),
    mag (T,)."""
    T, n = lam.shape
    has_alpha = alpha.size > 0
    g = np.empty((T, n))
    const = np.zeros(T)
    mag = np.zeros(T)
    for r in range(T):
        b = box[r]
        c = 0.0
        m = 0.0
        for j in range(n):
            a = lam[r, j]
            if a >= 0.0:
                gg = a * k_lo[b, j]
                if has_alpha and unstable[b, j]:
                    s = alpha[r, j]
                    if s == s:
                        gg = a * s
            else:
                gg = a * k_up[b, j]
                t = t_up[b, j]
                if t != 0.0:
                    at = a * t
                    c += at
                    m -= at
            g[r, j] = gg
            if gg != 0.0:
                c += gg * bias[j]
                m += abs(gg) * zw[b, j]
        const[r] = c
        mag[r] = m
    return g, const, mag


@njit(cache=True)
def concretise_rows(lam, box, xl, xu):
    """``concretise`` for a flat list of rows: lam (T, n), box (T,); returns val, mag (T,)."""
    T, n = lam.shape
    val = np.zeros(T)
    mag = np.zeros(T)
    for r in range(T):
        b = box[r]
        s = 0.0
        m = 0.0
        for j in range(n):
            a = lam[r, j]
            if a > 0.0:
                s += a * xl[b, j]
            elif a < 0.0:
                s += a * xu[b, j]
            else:
                continue
            m += abs(a) * max(abs(xl[b, j]), abs(xu[b, j]))
        val[r] = s
        mag[r] = m
    return val, mag


@njit(cache=True)
def fwd_concretise(Z, zc, xl, xu, xmax):
    """Forward linear bounds, concretised: Z (2n, B, n0) holds the lower functions of n neurons
    (rows < n) then their upper functions; zc (2n, B) their constants; xl, xu, xmax (B, n0).
    Returns lo_val, hi_val (n, B): ``min`` of the lower / ``max`` of the upper function over
    the box, and mag (2n, B): ``|Z| xmax + |zc|``."""
    n2, B, n0 = Z.shape
    n = n2 // 2
    lo_val = np.empty((n, B))
    hi_val = np.empty((n, B))
    mag = np.empty((n2, B))
    for q in range(n2):
        upper = q >= n
        for b in range(B):
            s = zc[q, b]
            m = abs(s)
            for j in range(n0):
                a = Z[q, b, j]
                if a > 0.0:
                    s += a * (xu[b, j] if upper else xl[b, j])
                elif a < 0.0:
                    s += a * (xl[b, j] if upper else xu[b, j])
                m += abs(a) * xmax[b, j]
            mag[q, b] = m
            if upper:
                hi_val[q - n, b] = s
            else:
                lo_val[q, b] = s
    return lo_val, hi_val, mag


@njit(cache=True)
def fwd_relu(Z, zc, Ez, mag, l, u, up_factor, err_unit):
    """Forward linear bounds through a ReLU with bounds l <= z <= u (n, B): the lower function
    times ``a`` (1 if l >= 0 or (l < 0 < u and u >= -l), else 0; exact), the upper function
    times ``s`` (1 if l >= 0, 0 if u <= 0, else ``u / (u - l) * up_factor``) plus ``t = -s l``.
    Z (2n, B, n0), zc (2n, B) as in ``fwd_concretise``; Ez (n, B) the error of z's functions;
    mag (2n, B) their magnitudes. Returns A (2n, B, n0), c (2n, B), E (n, B) with
    ``E = max(a, s) Ez + err_unit (|s Zu| xmax-magnitude + |s zu| + |t|)`` on unstable neurons,
    and M (n, B), an upper bound of the magnitudes of the new functions."""
    n2, B, n0 = Z.shape
    n = n2 // 2
    A = np.empty_like(Z)
    c = np.empty_like(zc)
    E = np.empty((n, B))
    M = np.empty((n, B))
    for q in range(n):
        for b in range(B):
            lq = l[q, b]
            uq = u[q, b]
            if lq >= 0.0:
                a = 1.0
                s = 1.0
                t = 0.0
            elif uq <= 0.0:
                a = 0.0
                s = 0.0
                t = 0.0
            else:
                a = 1.0 if uq >= -lq else 0.0
                s = (uq / (uq - lq)) * up_factor
                t = -s * lq
            for j in range(n0):
                A[q, b, j] = a * Z[q, b, j]
                A[n + q, b, j] = s * Z[n + q, b, j]
            c[q, b] = a * zc[q, b]
            c[n + q, b] = s * zc[n + q, b] + t
            mu = s * mag[n + q, b] + abs(t)
            e = max(a, s) * Ez[q, b]
            if lq < 0.0 < uq:
                e += err_unit * mu
            E[q, b] = e
            M[q, b] = max(a * mag[q, b], mu * (1.0 + err_unit))
    return A, c, E, M


@njit(cache=True)
def _line_max(p, q, cst, xl, xu, tb, dl):
    """The ``t >= 0`` maximising the concave piecewise-linear
    ``f(t) = cst t + sum_j min((p_j - t q_j) xl_j, (p_j - t q_j) xu_j)``: its slope starts at
    ``cst - sum_j q_j x*_j`` (``x*`` the box minimiser just right of 0) and drops by
    ``|q_j| (xu_j - xl_j)`` where coefficient j changes sign (``t_j = p_j / q_j > 0``); the
    maximum is at the first such point where the slope is <= 0. Past the last one with the
    slope still > 0, f grows without end (the half-space misses the box): ``2 t_last + 1``.
    tb, dl: scratch arrays of len(p)."""
    n = p.shape[0]
    d = cst
    m = 0
    for j in range(n):
        pj = p[j]
        qj = q[j]
        # coefficient > 0 just right of 0 (x*_j = xl_j): p > 0, or p = 0 and q < 0
        right_pos = pj > 0.0 or (pj == 0.0 and qj < 0.0)
        d -= qj * (xl[j] if right_pos else xu[j])
        # a breakpoint where p_j / q_j > 0; written always, kept only then
        tb[m] = pj / qj if qj != 0.0 else 0.0
        dl[m] = abs(qj) * (xu[j] - xl[j])
        m += 1 if pj * qj > 0.0 else 0
    if d <= 0.0:
        return 0.0
    return weighted_quantile(tb, dl, m, d)


@njit(cache=True)
def _optimal(cur, q, cst, xl, xu, inside):
    """Whether ``t`` is already a maximiser of ``f(t) = cst t + sum_j min over [xl_j, xu_j] of
    (cur_j - (t - t0) q_j) x_j`` at ``t = t0`` (``cur``: the coefficients there) over t >= 0:
    the slope to the right is <= 0, and, when ``inside`` (t0 > 0), the slope to the left is
    >= 0. A zero coefficient takes the end its sign takes on that side."""
    s = 0.0
    zr = 0.0
    zl = 0.0
    nz = False
    for j in range(cur.shape[0]):
        c = cur[j]
        s += q[j] * (xl[j] if c > 0.0 else xu[j])
        nz |= c == 0.0
    if nz:
        for j in range(cur.shape[0]):
            if cur[j] == 0.0:
                qj = q[j]
                if qj < 0.0:
                    zr += qj * (xl[j] - xu[j])
                elif qj > 0.0:
                    zl += qj * (xl[j] - xu[j])
    right = cst - s - zr
    left = cst - s - zl
    return right <= 0.0 and (not inside or left >= 0.0)


@njit(cache=True)
def halfspace_rows(lam, box, xl, xu, G, h, gm, first, sweeps):
    """Lagrange multipliers of half-spaces ``G_k . x + h_k >= 0`` that hold on a box's domain,
    in the input step of a row-wise backward pass: the row's bound ``lam . x + c`` there is at
    least, for any ``mu >= 0``,

        min over the box of  (lam - sum_k mu_k G_k) . x  +  c - sum_k mu_k h_k,

    concave in mu; ``sweeps`` rounds of exact coordinate ascent (``_line_max``) choose mu.

    lam (T, n0); box (T,); xl, xu (B, n0); G (R, n0), h (R,): half-spaces, those of box b at
    ``first[b]:first[b + 1]`` (first (B + 1,)); gm (R,) their magnitudes ``|G_k| . xmax +
    |h_k|``. Returns the new coefficients (T, n0), each computed afresh from lam as ``lam -
    sum_k mu_k G_k``; the constant's change dc (T,); and dmag (T,) = ``|lam| . max(|xl|, |xu|)
    + sum_k mu_k gm_k``, the magnitude of this step (its rounding error is at most
    gamma_(S+1) times it; rows whose multipliers are all 0 are returned as they are, with
    dc = dmag = 0)."""
    T, n0 = lam.shape
    S = 0
    for b in range(first.shape[0] - 1):
        S = max(S, first[b + 1] - first[b])
    out = lam.copy()
    dc = np.zeros(T)
    dmag = np.zeros(T)
    cur = np.empty(n0)
    p = np.empty(n0)
    tb = np.empty(n0)
    dl = np.empty(n0)
    mu = np.zeros(S)
    for r in range(T):
        b = box[r]
        k0 = first[b]
        ns = first[b + 1] - k0
        if ns == 0:
            continue
        for j in range(n0):
            cur[j] = lam[r, j]
        for k in range(ns):
            mu[k] = 0.0
        for _ in range(sweeps):
            moved = False
            for k in range(ns):
                q = G[k0 + k]
                if _optimal(cur, q, -h[k0 + k], xl[b], xu[b], mu[k] > 0.0):
                    continue  # most cuts, most of the time: one pass, no breakpoints
                for j in range(n0):
                    p[j] = cur[j] + mu[k] * q[j]
                t = _line_max(p, q, -h[k0 + k], xl[b], xu[b], tb, dl)
                if t != mu[k]:
                    moved = True
                    mu[k] = t
                    for j in range(n0):
                        cur[j] = p[j] - t * q[j]
            if not moved:
                break
        c = 0.0
        m = 0.0
        used = False
        for k in range(ns):
            if mu[k] > 0.0:
                used = True
                c -= mu[k] * h[k0 + k]
                m += mu[k] * gm[k0 + k]
                for j in range(n0):
                    out[r, j] -= mu[k] * G[k0 + k, j]
        if not used:
            continue  # the row as it was: no step, no error
        for j in range(n0):
            m += abs(lam[r, j]) * max(abs(xl[b, j]), abs(xu[b, j]))
        dc[r] = c
        dmag[r] = m
    return out, dc, dmag
