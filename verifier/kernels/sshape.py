"""Sound linear relaxations of sigmoid (kind 0), tanh (kind 1) and softplus (kind 2).

A line ``k z + t`` is chosen in two steps. The slope k is a heuristic (CROWN's tangent/secant
choice: tangent at the midpoint on a convex piece, secant on a concave piece, and on an interval
that straddles the inflection point the tangent through the far endpoint, found by bisection).
The intercept is then computed *rigorously* for that slope: ``t_lo <= min_{[l,u]} f(z) - k z``.
Sigmoid and tanh are convex on z <= 0 and concave on z >= 0, softplus is convex everywhere, so
``g(z) = f(z) - k z`` has the same shape; its minimum over the convex piece [a, b] is bounded
below by the tangent of g at the stationary point p (clipped into [a, b]),
``g(p) + min(g'(p)(a - p), g'(p)(b - p))`` -- valid for any p of a convex piece, so an inexact p
only costs tightness -- and over the concave piece the minimum is at an endpoint. Upper lines of
sigmoid/tanh follow from the odd symmetry (f(-z) = 1 - f(z), resp. -f(z)); softplus's upper
line is the secant, whose intercept is the maximum of g at the endpoints.

Rounding: evaluating f, f' (libm, a few ulp), the products and sums, stays below
``16 u (F + |k| Z + (D + |k|)(u - l))`` with F = max|f| on [l, u], Z = max(|l|, |u|), D = max f',
plus 4 u absolute for sigmoid (whose forward formula 0.5 (1 + tanh(z/2)) has absolute error) and
1e-300 for underflow; intercepts move outward by that amount, and then by one more ulp.
"""
import math

import numpy as np
from numba import njit

U = 2.0 ** -53
_TINY = 1e-300


@njit(cache=True)
def _f(z, kind):
    if kind == 0:
        if z >= 0.0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)
    if kind == 1:
        return math.tanh(z)
    if z > 0.0:
        return z + math.log1p(math.exp(-z))
    return math.log1p(math.exp(z))


@njit(cache=True)
def _df(z, kind):
    if kind == 0:
        return _f(z, 0) * _f(-z, 0)
    if kind == 1:
        c = math.cosh(z)
        return 1.0 / (c * c)
    return _f(z, 0)


@njit(cache=True)
def _dmax(kind):
    return 0.25 if kind == 0 else 1.0


@njit(cache=True)
def _abs_err(kind):
    return 4.0 * U if kind == 0 else 0.0


@njit(cache=True)
def _convex_root(k, kind):
    """The z on the convex piece where f'(z) = k (-inf / the inflection point when none)."""
    if k <= 0.0:
        return -np.inf
    if kind == 0:
        if k >= 0.25:
            return 0.0
        q = 2.0 * k / (1.0 + math.sqrt(1.0 - 4.0 * k))
        return math.log(q) - math.log1p(-q)
    if kind == 1:
        if k >= 1.0:
            return 0.0
        return -math.atanh(math.sqrt(1.0 - k))
    if k >= 1.0:
        return np.inf
    return math.log(k) - math.log1p(-k)


@njit(cache=True)
def _margin(l, u, k, kind):
    F = max(abs(_f(l, kind)), abs(_f(u, kind)))
    Z = max(abs(l), abs(u))
    return 16.0 * U * (F + abs(k) * Z + (_dmax(kind) + abs(k)) * (u - l)) + _abs_err(kind) + _TINY


@njit(cache=True)
def _min_g(l, u, k, kind):
    """A value <= min over [l, u] of f(z) - k z in exact arithmetic, before the margin."""
    c = 0.0 if kind < 2 else np.inf
    best = np.inf
    if l <= c:
        a = l
        b = min(u, c)
        p = min(max(_convex_root(k, kind), a), b)
        gp = _f(p, kind) - k * p
        dg = _df(p, kind) - k
        best = gp + min(dg * (a - p), dg * (b - p))
    if u >= c:
        a2 = max(l, c)
        best = min(best, min(_f(a2, kind) - k * a2, _f(u, kind) - k * u))
    return best


@njit(cache=True)
def _lower_slope(l, u, kind):
    w = u - l
    if w <= 1e-9 * (1.0 + abs(l) + abs(u)) or kind == 2 or u <= 0.0:
        return _df(0.5 * (l + u), kind)
    chord = (_f(u, kind) - _f(l, kind)) / w
    if l >= 0.0 or _df(l, kind) >= chord:
        return chord
    fu = _f(u, kind)
    lo = l
    hi = 0.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if _f(mid, kind) + _df(mid, kind) * (u - mid) - fu < 0.0:
            lo = mid
        else:
            hi = mid
    return _df(hi, kind)


@njit(cache=True)
def _lower_line(l, u, kind):
    """(k, t) with f(z) >= k z + t for all z in [l, u] (exact arithmetic)."""
    if not (math.isfinite(l) and math.isfinite(u)):
        fl = _f(l, kind)
        return 0.0, np.nextafter(fl - 16.0 * U * abs(fl) - _abs_err(kind) - _TINY, -np.inf)
    k = _lower_slope(l, u, kind)
    t = _min_g(l, u, k, kind) - _margin(l, u, k, kind)
    return k, np.nextafter(t, -np.inf)


@njit(cache=True)
def _upper_line(l, u, kind):
    """(k, t) with f(z) <= k z + t for all z in [l, u] (exact arithmetic)."""
    if kind < 2:
        k, t = _lower_line(-u, -l, kind)
        if kind == 0:
            return k, np.nextafter(1.0 - t, np.inf)
        return k, -t
    if not (math.isfinite(l) and math.isfinite(u)):
        fu = _f(u, kind)
        return 0.0, np.nextafter(fu + 16.0 * U * abs(fu) + _TINY, np.inf)
    w = u - l
    if w <= 1e-9 * (1.0 + abs(l) + abs(u)):
        k = _df(0.5 * (l + u), kind)
    else:
        k = (_f(u, kind) - _f(l, kind)) / w
    t = max(_f(l, kind) - k * l, _f(u, kind) - k * u) + _margin(l, u, k, kind)
    return k, np.nextafter(t, np.inf)


@njit(cache=True)
def sshape_relax(l, u, kind):
    """Lines ``lo_k z + lo_t <= f(z) <= up_k z + up_t`` on [l, u] for f = sigmoid (kind 0),
    tanh (1) or softplus (2). l, u: (B, n) float64 with l <= u. Returns lo_k, lo_t, up_k, up_t,
    each (B, n)."""
    B, n = l.shape
    lo_k = np.empty((B, n))
    lo_t = np.empty((B, n))
    up_k = np.empty((B, n))
    up_t = np.empty((B, n))
    for b in range(B):
        for j in range(n):
            k, t = _lower_line(l[b, j], u[b, j], kind)
            lo_k[b, j] = k
            lo_t[b, j] = t
            k, t = _upper_line(l[b, j], u[b, j], kind)
            up_k[b, j] = k
            up_t[b, j] = t
    return lo_k, lo_t, up_k, up_t


@njit(cache=True)
def sshape_ibp(l, u, kind):
    """Interval image of the monotone f (kind as in ``sshape_relax``) with outward rounding:
    ``[f(l) - e(f(l)), f(u) + e(f(u))]``, e(y) = 16 u |y| (+ 4 u for sigmoid) + 1e-300.
    l, u: (B, n). Returns lo, hi: (B, n)."""
    B, n = l.shape
    lo = np.empty((B, n))
    hi = np.empty((B, n))
    for b in range(B):
        for j in range(n):
            a = _f(l[b, j], kind)
            c = _f(u[b, j], kind)
            lo[b, j] = np.nextafter(a - 16.0 * U * abs(a) - _abs_err(kind) - _TINY, -np.inf)
            hi[b, j] = np.nextafter(c + 16.0 * U * abs(c) + _abs_err(kind) + _TINY, np.inf)
    return lo, hi
