"""A lower bound from any SDP multipliers, valid in floating point.

For multipliers ``y`` (projected: ``y >= 0`` on inequalities) and ``M(y) = C_0 - sum_i y_i G_i``
(``sdp_program``), every true point ``v = (1, x)`` satisfies ``obj(x) >= v'M(y)v - sum_i |y_i|
eps_i - obj_err``. Centre and scale the coordinates by their box, ``x = c + h w`` with
``c = (lo + hi)/2``, ``h >= (hi - lo)/2``, so that ``|w_i| <= 1`` at every true point, i.e.
``v = S w`` with ``S = [[1, 0], [c, diag(h)]]``. Then for every shift ``s``:

    v'M v = w' (S'M S) w = s + w' (Mbar - s e0 e0') w >= s + min(0, lambda_min(Mbar_s)) R,

    Mbar = S'M S,   R = 1 + N >= ||w||^2   (coordinates with h = 0 are constants: dropped).

That is the bound ``lb = s + min(0, lambda_min(M(s))) R`` of the design (the "const - s0" of
its notation is our ``s``, absorbed into the (0, 0) entry), with ``R`` the a-priori bound on the
trace of the (scaled) lifted matrix ``w w'``; the centring makes a negative eigenvalue cost only
``h_i^2`` per coordinate instead of ``max(lo_i^2, hi_i^2)``. ``s`` is chosen by a 1-D search
(``lambda_min(Mbar_s)`` is concave in s: the rank-one secular equation on one
eigendecomposition gives it cheaply for every s); above ``SEARCH_MAX`` coordinates a shift
given by the caller (the low-rank solver's least-squares one) is used as it is. A second,
often much cheaper, cover of the negative part ``N`` of ``Mbar_s``: with ``delta_i = sum_j |N_ij|``, ``diag(delta) + N`` is
diagonally dominant, so ``Mbar_s + diag(delta) >= 0`` (confirmed by Cholesky, like lambda_min)
and ``w'Mbar_s w >= -sum_i delta_i``; it charges only the coordinates the negative eigenvectors
touch. The larger of the two bounds is reported (both are valid).

Floating point. (1) ``M`` is computed, not exact: ``|M~ - M| <= gamma_K (|C_0| + |G_op| |y|) = E``
elementwise (K the most terms summed into one entry); forming ``S'M S`` in float adds
``gamma_{2n+4} |S'||M||S|``; with ``|w| <= 1`` the total costs ``sum_ij Ebar_ij``.
(2) ``lambda_min`` is not taken from the eigensolver: a candidate ``sigma`` a little below its
estimate is confirmed by a Cholesky factorisation of ``B = fl(Mbar_s - sigma I)``. If it runs to
completion, ``B + dB = R'R`` with ``|dB| <= gamma_{n+1} |R'||R|`` (Higham 2002, Thm 10.3, any
order of the inner products), hence ``lambda_min(B) >= -gamma_{n+1}/(1-gamma_{n+1}) tr(B)``
(Rump 2006, "Verification of positive definiteness"); the rounding of forming ``B`` and
``Mbar_s`` adds ``u max|B_ii|`` and ``u |Mbar_s[0,0]|``. (3) The final sum is taken with a
``gamma`` margin. Underflow is not modelled (entries are far from 1e-300).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

from .lp_program import U, gamma, inflate

log = logging.getLogger(__name__)

#: above this size a shift given by the caller is used as it is (one eigendecomposition less)
SEARCH_MAX = 400


@dataclass
class Certificate:
    """``bound``: the valid lower bound; ``shift`` the s used; ``lambda_min`` the smallest
    eigenvalue of ``Mbar_s`` as the eigensolver found it (an estimate, for rank escalation:
    the bound itself rests on Cholesky); ``R``; ``margin`` the rounding and model-error terms;
    ``eigvecs``: eigenvectors (unscaled coordinates, columns) of the smallest eigenvalues, when
    asked (for rank escalation)."""

    bound: float
    shift: float
    lambda_min: float
    R: float
    margin: float
    eigvecs: np.ndarray | None = None


def _lambda_min_shifted(evals, w, s):
    """Smallest eigenvalue of ``diag(evals) - s w w'`` (evals ascending) by bisection on the
    secular equation ``1 - s sum_i w_i^2 / (evals_i - lam) = 0``."""
    w2 = w * w
    d1 = evals[0]
    if s == 0 or w2.sum() == 0:
        return float(d1)
    if s > 0:  # root below d1, at least d1 - s ||w||^2
        a, b = d1 - s * w2.sum() - 1e-300, d1
    else:  # root in [d1, min(d2, d1 + |s| ||w||^2)]
        b = min(evals[1] if evals.size > 1 else np.inf, d1 - s * w2.sum())
        a = d1
    f = lambda lam: 1.0 - s * np.sum(w2 / (evals - lam))  # noqa: E731
    for _ in range(200):
        mid = 0.5 * (a + b)
        if mid <= a or mid >= b:
            break
        with np.errstate(divide="ignore", invalid="ignore"):
            val = f(mid)
        # s > 0: f decreasing on (-inf, d1); s < 0: f increasing on (d1, d2)
        if (val > 0) == (s > 0):
            a = mid
        else:
            b = mid
    return float(0.5 * (a + b))


def _certify_psd(Ms: np.ndarray, guess: float, scale: float) -> float:
    """A rigorous lower bound on ``lambda_min(Ms)`` near ``guess``, by Cholesky of the shifted
    matrix (module docstring); -inf if no candidate could be confirmed."""
    n = Ms.shape[0]
    g = gamma(n + 1)
    for slack in (1e-11, 1e-9, 1e-7, 1e-5, 1e-3, 1e-1):
        sigma = guess - slack * max(scale, 1e-300)
        B = Ms - sigma * np.eye(n)
        try:
            np.linalg.cholesky(B)
        except np.linalg.LinAlgError:
            continue
        diag = np.diag(B)
        if np.any(diag <= 0):
            continue
        tr = float(np.sum(diag)) * (1 + n * U * 2)
        return sigma - float(inflate(g / (1 - g) * tr + 2 * U * diag.max()))
    return -np.inf


def certify(data, y: np.ndarray, shift_hint: float | None = None,
            want_eigvec: bool = False) -> Certificate:
    """The valid lower bound of the SDP objective row for multipliers ``y`` (module
    docstring). ``y`` is projected first, so any values are allowed."""
    y = data.project(y)
    n = data.n
    M = data.matrix(y)
    # elementwise bound of the error of M, and of making it exactly symmetric
    K = int(np.diff(data.G_op.tocsr().indptr).max(initial=0)) + 3
    Mabs = (np.abs(data.C0) + abs(data.G_op) @ np.abs(y)).reshape(n, n)
    asym = np.abs(M - M.T)
    M = 0.5 * (M + M.T)
    E = gamma(K) * Mabs + 0.5 * asym + U * np.abs(M)
    # centred, scaled coordinates: x = c + h w, |w_i| <= 1 at every true point
    lo, hi = data.lo[1:], data.hi[1:]
    c = 0.5 * lo + 0.5 * hi
    h = np.maximum(hi - c, c - lo) * (1 + 4 * U)
    keep = np.r_[True, h > 0]
    Mx, m, m00 = M[1:, 1:], M[1:, 0], M[0, 0]
    Ex, em, e00 = E[1:, 1:], E[1:, 0], E[0, 0]
    absc = np.abs(c)
    Mc = Mx @ c
    Mbar = np.empty_like(M)
    Mbar[1:, 1:] = h[:, None] * Mx * h[None, :]
    Mbar[1:, 0] = Mbar[0, 1:] = h * (m + Mc)
    Mbar[0, 0] = m00 + 2.0 * (m @ c) + c @ Mc
    g = gamma(2 * n + 4)
    absMc = np.abs(Mx) @ absc
    Ebar = np.empty_like(M)
    Ebar[1:, 1:] = h[:, None] * (Ex + g * np.abs(Mx)) * h[None, :]
    Ebar[1:, 0] = Ebar[0, 1:] = h * (em + Ex @ absc + g * (np.abs(m) + absMc))
    Ebar[0, 0] = (e00 + 2.0 * (em @ absc) + absc @ (Ex @ absc)
                  + g * (abs(m00) + 2.0 * (np.abs(m) @ absc) + absc @ absMc))
    Mbar, Ebar = Mbar[np.ix_(keep, keep)], Ebar[np.ix_(keep, keep)]
    R = float(inflate(float(Mbar.shape[0])))
    hint = float(shift_hint) if shift_hint is not None and np.isfinite(shift_hint) else None
    s_best = hint
    if hint is None or Mbar.shape[0] <= SEARCH_MAX:
        # the s maximising the trace bound, from one eigendecomposition (the caller's hint
        # is kept where it does better)
        evals, evecs = np.linalg.eigh(Mbar)
        w = evecs[0].copy()

        def lb(s):
            return s + R * min(0.0, _lambda_min_shifted(evals, w, s))

        start = 0.0 if hint is None else hint
        step = max(1.0, abs(start), float(np.abs(Mbar).max()))
        res = minimize_scalar(lambda s: -lb(s), bracket=(start - step, start), tol=1e-12)
        cands = [start] + ([float(res.x)] if res.success and np.isfinite(res.x) else [])
        s_best = max(cands, key=lb)
    Ms = Mbar.copy()
    Ms[0, 0] = Mbar[0, 0] - s_best
    ev, Q = np.linalg.eigh(Ms)
    lam = _certify_psd(Ms, float(ev[0]), float(np.abs(Mbar).max()))
    # a cheaper cover of the negative part: if -N (the negative eigen-part of Mbar_s) is
    # dominated by diag(delta), delta_i = sum_j |N_ij|, then Mbar_s + diag(delta) >= 0 up to
    # what Cholesky confirms, and the cost is sum_i delta_i w_i^2 <= sum_i delta_i
    neg = ev < 0
    lam_trace = R * min(0.0, lam)
    delta_cost, lam_d = -np.inf, -np.inf
    if np.any(neg):
        Nabs = np.abs((Q[:, neg] * ev[neg]) @ Q[:, neg].T)
        delta = Nabs.sum(axis=1) * (1 + 1e-9) + 1e-300
        Md = Ms + np.diag(delta)
        lam_d = _certify_psd(Md, 0.0, float(np.abs(Md).max()))
        # the diagonal addition rounds: u |Md_ii| more per coordinate
        delta_cost = float(inflate(np.sum(delta) + U * np.sum(np.abs(np.diag(Md)))))
    model = float(np.abs(y) @ data.eps) + data.obj_err
    rounding = float(inflate(np.sum(Ebar))) + U * abs(Ms[0, 0]) * 1.01
    if np.isfinite(lam_d) and -delta_cost + R * min(0.0, lam_d) > lam_trace:
        lam_trace = -delta_cost + R * min(0.0, lam_d)
        lam = max(lam, lam_d) if np.isfinite(lam) else lam_d  # finite: the bound is valid
    terms = np.array([s_best, lam_trace])
    margin = float(inflate(rounding + model + gamma(4) * np.sum(np.abs(terms))))
    bound = float(terms.sum()) - margin if np.isfinite(lam) else -np.inf
    vec = None
    if want_eigvec:
        V = Q
        cols = max(1, int(np.sum(ev < 0)))
        vec = np.zeros((n, cols))  # back to v = (1, x): v = S w
        W = V[:, :cols]
        vec[0] = W[0]
        vec[np.flatnonzero(keep[1:]) + 1] = h[keep[1:], None] * W[1:] + c[keep[1:], None] * W[0]
    return Certificate(bound, s_best, float(ev[0]), R, margin, vec)
