"""Each Numba kernel against a plain numpy reference of the same formula, and the soundness of
the relaxation lines they build (sampled points never leave them)."""
import math

import numpy as np
import pytest

from verifier import kernels as K
from verifier.bounds.plan import pool_windows
from verifier.kernels.quantile import turning_points, weighted_quantile

RNG = np.random.default_rng(0)


def _coef(shape, rng=RNG):
    A = rng.standard_normal(shape)
    A[rng.random(shape) < 0.2] = 0.0
    return A


@pytest.mark.parametrize("Ba,Bl,Kl,Bs", [(1, 1, 1, 1), (3, 3, 1, 3), (1, 3, 4, 3), (3, 1, 4, 1)])
def test_act_backward_matches_numpy(Ba, Bl, Kl, Bs):
    K_, n = 4, 7
    A = _coef((Ba, K_, n))
    lo_k = RNG.random((Bl, Kl, n))
    lo_t, up_k, up_t = (RNG.standard_normal((Bs, n)) for _ in range(3))
    vm = RNG.random((Bs, n)) + 1.0
    bn = RNG.standard_normal(n)
    cols = np.array([0, 2, 3, 6], dtype=np.int64)
    Az, c, m = K.act_backward(A, lo_k, lo_t, up_k, up_t, vm, cols, bn)
    B = max(Ba, Bl, Bs)
    A_ = np.broadcast_to(A, (B, K_, n))[:, :, cols]
    pos = A_ > 0
    k = np.where(pos, np.broadcast_to(lo_k, (B, K_, n))[:, :, cols],
                 np.broadcast_to(up_k[:, None], (B, K_, n))[:, :, cols])
    t = np.where(pos, np.broadcast_to(lo_t[:, None], (B, K_, n))[:, :, cols],
                 np.broadcast_to(up_t[:, None], (B, K_, n))[:, :, cols])
    vv = np.broadcast_to(vm[:, None], (B, K_, n))[:, :, cols]
    np.testing.assert_allclose(Az, A_ * k, rtol=1e-15)
    np.testing.assert_allclose(c, (A_ * t + A_ * k * bn[cols]).sum(-1), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(m, (np.abs(A_ * k) * vv + np.abs(A_ * t)).sum(-1), rtol=1e-12)


def test_act_backward_skips_zero_coefficients_against_infinite_lines():
    A = np.array([[[0.0, 1.0]]])
    inf = np.array([[np.inf, 0.5]])
    Az, c, m = K.act_backward(A, np.ones((1, 1, 2)), inf, inf, inf, inf,
                              np.arange(2, dtype=np.int64), np.zeros(2))
    assert np.isfinite(Az).all() and c[0, 0] == 0.5 and np.isfinite(m).all()


def test_act_forward_matches_numpy():
    B, K_, n = 2, 3, 5
    z = RNG.standard_normal((B, K_, n))
    A = _coef((B, K_, n))
    lo_k = RNG.random((B, K_, n))
    lo_t, up_k, up_t = (RNG.standard_normal((B, n)) for _ in range(3))
    y, g = K.act_forward(z, A, lo_k, lo_t, up_k, up_t)
    np.testing.assert_allclose(y, np.where(A >= 0, lo_k * z + lo_t[:, None],
                                           up_k[:, None] * z + up_t[:, None]), rtol=1e-15)
    np.testing.assert_allclose(g, np.where(A > 0, A * z, 0.0), rtol=1e-15)


@pytest.mark.parametrize("Ba,Bs", [(1, 1), (1, 3), (3, 1), (3, 3)])
def test_products_match_numpy(Ba, Bs):
    A = _coef((Ba, 4, 9))
    l = RNG.standard_normal((Bs, 9))
    u = l + RNG.random((Bs, 9))
    w = RNG.random((Bs, 9))
    B = max(Ba, Bs)
    A_ = np.broadcast_to(A, (B, 4, 9))
    np.testing.assert_allclose(K.abs_dot(A, w), (np.abs(A_) * w[:, None]).sum(-1), rtol=1e-13)
    val, mag = K.box_lower(A, l, u)
    ref = np.where(A_ > 0, A_ * l[:, None], A_ * u[:, None]).sum(-1)
    np.testing.assert_allclose(val, ref, rtol=1e-12, atol=1e-14)
    vm = np.maximum(np.abs(l), np.abs(u))
    np.testing.assert_allclose(mag, (np.abs(A_) * vm[:, None]).sum(-1), rtol=1e-13)


def test_adam_ascent_matches_numpy():
    B, K_, n = 2, 3, 4
    alpha = RNG.random((B, K_, n))
    g = RNG.standard_normal((B, K_, n))
    m = RNG.standard_normal((B, K_, n)) * 0.1
    v = RNG.random((B, K_, n)) * 0.1
    mask = RNG.random((B, n)) < 0.6
    a0, m0, v0 = alpha.copy(), m.copy(), v.copy()
    K.adam_ascent(alpha, g, m, v, mask, 0.3, 0.9, 0.999, 1e-8, 3)
    mm = 0.9 * m0 + 0.1 * g
    vv = 0.999 * v0 + 0.001 * g * g
    step = 0.3 * (mm / (1 - 0.9 ** 3)) / (np.sqrt(vv / (1 - 0.999 ** 3)) + 1e-8)
    M = mask[:, None, :]
    np.testing.assert_allclose(alpha, np.where(M, np.clip(a0 + step, 0, 1), a0), rtol=1e-14)
    np.testing.assert_allclose(m, np.where(M, mm, m0), rtol=1e-13)
    np.testing.assert_allclose(v, np.where(M, vv, v0), rtol=1e-13)
    # with no upper bound (beta-CROWN's multipliers) only the projection onto >= 0 remains
    b = a0 + 1.0
    K.adam_ascent(b, g, m0.copy(), v0.copy(), mask, 0.3, 0.9, 0.999, 1e-8, 3, np.inf)
    np.testing.assert_allclose(b, np.where(M, np.maximum(a0 + 1.0 + step, 0), a0 + 1.0),
                               rtol=1e-14)


def test_select_backward_is_the_transpose_of_select():
    idx = np.array([2, 0, -1, 2, 1], dtype=np.int64)
    A = _coef((2, 3, 5))
    Ain, c = K.select_backward(A, idx, 4, 0.7)
    x = RNG.standard_normal(4)
    y = np.where(idx >= 0, x[np.maximum(idx, 0)], 0.7)
    np.testing.assert_allclose((Ain * x).sum(-1) + c, (A * y).sum(-1), rtol=1e-12)


def test_window_kernels_match_numpy():
    win = pool_windows((2, 4, 5), (2, 2, 3), (2, 2), (2, 2), (0, 1, 0, 1), (1, 1))
    l = RNG.standard_normal((3, 40))
    u = l + RNG.random((3, 40))
    safe = np.where(win >= 0, win, 0)
    ref = np.where(win >= 0, l[:, safe], -np.inf).max(-1)
    np.testing.assert_array_equal(K.window_max(l, win), ref)
    jstar, U, exact = K.maxpool_relax(l, u, win)
    np.testing.assert_array_equal(l[np.arange(3)[:, None], jstar], ref)
    np.testing.assert_array_equal(U, np.where(win >= 0, u[:, safe], -np.inf).max(-1))
    A = _coef((3, 2, 12))
    Ain, c = K.maxpool_backward(A, jstar, U, exact, 40)
    ref_in = np.zeros((3, 2, 40))
    ref_c = np.zeros((3, 2))
    for b in range(3):
        for r in range(2):
            for o in range(12):
                a = A[b, r, o]
                if a > 0 or (a < 0 and exact[b, o]):
                    ref_in[b, r, jstar[b, o]] += a
                elif a < 0:
                    ref_c[b, r] += a * U[b, o]
    np.testing.assert_allclose(Ain, ref_in, rtol=1e-15)
    np.testing.assert_allclose(c, ref_c, rtol=1e-15)


def test_relu_relax_lines_are_sound_and_adaptive():
    l = np.array([[-2.0, -1.0, 0.5, -3.0, -1.0]])
    u = np.array([[1.0, 3.0, 2.0, -0.5, 1.0]])
    lo_k, up_k, up_t = K.relu_relax(l, u, 0)
    np.testing.assert_array_equal(lo_k, [[0.0, 1.0, 1.0, 0.0, 1.0]])
    assert up_k[0, 0] >= 1.0 / 3.0 and up_k[0, 0] - 1.0 / 3.0 < 1e-15
    z = np.clip(np.linspace(l, u, 1001), l, u)
    y = np.maximum(z, 0)
    assert (y <= up_k * z + up_t).all() and (y >= lo_k * z).all()
    for mode, expect in ((1, 0.0), (2, 1.0)):
        assert K.relu_relax(l, u, mode)[0][0, 0] == expect


@pytest.mark.parametrize("alpha", [0.0, 0.01, 0.3, 1.0, 2.5])
def test_leaky_relax_lines_are_sound(alpha):
    rng = np.random.default_rng(1)
    l = rng.standard_normal((1, 200)) * 3
    u = l + rng.random((1, 200)) * 4
    lo_k, lo_t, up_k, up_t = K.leaky_relax(l, u, alpha)
    t = np.concatenate([np.zeros((1, 1, 200)), np.ones((1, 1, 200)), rng.random((1, 50, 200))],
                       axis=1)
    z = np.clip(l[:, None] + t * (u - l)[:, None], l[:, None], u[:, None])
    y = np.where(z >= 0, z, alpha * z)
    assert _below(-y, -lo_k[:, None], z, -lo_t[:, None])
    assert _below(y, up_k[:, None], z, up_t[:, None])


def _below(y, k, z, t):
    """y <= k z + t up to the rounding of evaluating the line and y in float64 (4 ulps of the
    terms): the lines are exact-arithmetic bounds; the rounding of their use is covered by the
    CROWN margin."""
    return (y <= k * z + t + 2.0 ** -51 * (np.abs(k * z) + np.abs(t) + np.abs(y))).all()


_F = {0: lambda z: 0.5 * (1 + np.tanh(0.5 * z)), 1: np.tanh, 2: lambda z: np.logaddexp(0, z)}


def _intervals(rng):
    c = rng.standard_normal(400) * np.array([0.5, 3, 12, 40])[rng.integers(0, 4, 400)]
    w = np.exp(rng.uniform(np.log(1e-12), np.log(60), 400))
    l, u = c - w / 2, c + w / 2
    edge = np.array([[-1.0, 1.0], [0.0, 2.0], [-2.0, 0.0], [-1e-9, 1e-9], [3.0, 3.0],
                     [-800, -700], [700, 800], [-0.01, 50], [-50, 0.01], [-30, 30]])
    return np.concatenate([l, edge[:, 0]])[None], np.concatenate([u, edge[:, 1]])[None]


@pytest.mark.parametrize("kind", [0, 1, 2])
def test_sshape_lines_are_sound_everywhere(kind):
    rng = np.random.default_rng(2 + kind)
    l, u = _intervals(rng)
    lo_k, lo_t, up_k, up_t = K.sshape_relax(l, u, kind)
    assert np.isfinite(lo_k).all() and np.isfinite(up_t).all()
    t = np.concatenate([np.zeros((1, 1)), np.ones((1, 1)), rng.random((1, 300)),
                        np.linspace(0, 1, 101)[None]], axis=1)[:, :, None]
    z = np.clip(l[:, None] + t * (u - l)[:, None], l[:, None], u[:, None])
    with np.errstate(over="ignore"):
        y = _F[kind](z)
    assert _below(-y, -lo_k[:, None], z, -lo_t[:, None])
    assert _below(y, up_k[:, None], z, up_t[:, None])
    lo, hi = K.sshape_ibp(l, u, kind)
    assert (y >= lo[:, None]).all() and (y <= hi[:, None]).all()


@pytest.mark.parametrize("kind", [0, 1, 2])
def test_sshape_lines_are_tight_where_exact(kind):
    """A tiny interval is enclosed to within about its width times the slope error."""
    l = np.array([[0.3, -2.0, 5.0]])
    u = l + 1e-6
    lo_k, lo_t, up_k, up_t = K.sshape_relax(l, u, kind)
    f = _F[kind]
    gap = (up_k * u + up_t) - (lo_k * u + lo_t)
    assert (gap < 1e-9).all()
    assert (np.abs(lo_k * l + lo_t - f(l)) < 1e-9).all()


def test_sshape_on_unbounded_intervals_gives_constant_lines():
    l = np.array([[-np.inf, -1.0]])
    u = np.array([[1.0, np.inf]])
    lo_k, lo_t, up_k, up_t = K.sshape_relax(l, u, 1)
    assert lo_k[0, 0] == 0 and lo_t[0, 0] <= -1.0 and up_k[0, 1] == 0 and up_t[0, 1] >= 1.0
    assert math.isclose(lo_t[0, 0], -1.0, rel_tol=1e-12)


def test_affine_ibp_matches_the_blas_formula():
    from verifier.bounds.rounding import centre_radius, down, up
    W = RNG.standard_normal((6, 9))
    b = RNG.standard_normal(6)
    lo = RNG.standard_normal((3, 9))
    hi = lo + RNG.random((3, 9))
    g = 1e-12
    l2, h2, s2 = K.affine_ibp(np.ascontiguousarray(W.T), b, lo, hi, g)
    mu, r = centre_radius(lo, hi)
    c = mu @ W.T + b
    s = (np.abs(mu) + r) @ np.abs(W).T + np.abs(b)
    R = r @ np.abs(W).T + g * s
    np.testing.assert_allclose(s2, s, rtol=1e-13)
    np.testing.assert_allclose(l2, down(c - R), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(h2, up(c + R), rtol=1e-12, atol=1e-13)


def test_threaded_split_equals_the_single_thread_result(monkeypatch):
    from verifier.kernels import parallel
    B, K_, n = 7, 5, 6
    A = _coef((B, K_, n))
    lo_k = RNG.random((B, 1, n))
    lo_t, up_k, up_t = (RNG.standard_normal((B, n)) for _ in range(3))
    vm = RNG.random((B, n))
    cols = np.arange(n, dtype=np.int64)
    one = K.act_backward(A, lo_k, lo_t, up_k, up_t, vm, cols, np.zeros(n))
    f1 = K.act_forward(A.copy(), A, lo_k, lo_t, up_k, up_t)
    monkeypatch.setattr(parallel, "MIN_WORK", 0)
    monkeypatch.setattr(parallel, "threads", lambda: 3)
    many = K.act_backward(A, lo_k, lo_t, up_k, up_t, vm, cols, np.zeros(n))
    f2 = K.act_forward(A.copy(), A, lo_k, lo_t, up_k, up_t)
    for x, y in zip(one + f1, many + f2):
        np.testing.assert_array_equal(x, y)


def test_centre_radius_contains_the_interval_and_never_returns_a_subnormal_radius():
    # ReLU outputs pinned at [0, 0] once got the radius up(0) = 2**-1073 (subnormal): every
    # product with it was ~100 times slower and made IBP in branch and bound ten times slower
    from verifier.bounds.rounding import R_MIN, centre_radius
    tiny = np.finfo(np.float64).tiny
    lo = np.array([0.0, 0.0, -3.0, 1e-310, 5e-324, -1e-300, 0.1, -2.0 ** -1070])
    hi = np.array([0.0, 1e-320, 2.0, 1e-310, 1e-300, -1e-300, 0.1 + 2 ** -55, 2.0 ** -1070])
    mu, r = centre_radius(lo, hi)
    assert not ((r > 0) & (r < tiny)).any()
    assert (r == 0).sum() == 3 and (r[r > 0] >= R_MIN).all()
    # [mu - r, mu + r] holds [lo, hi] exactly: compare with exact rationals
    from fractions import Fraction as F
    for m, rr, a, b in zip(mu, r, lo, hi):
        assert F(m) - F(rr) <= F(a) and F(b) <= F(m) + F(rr)


@pytest.mark.parametrize("m", [0, 1, 7, 60, 61, 400, 2000])
def test_the_weighted_quantile_of_the_breakpoints_is_the_sorted_answer(m):
    # the smallest tb_k whose weight sum over tb_j <= tb_k reaches need: read off a sort, with
    # ties (rounded values) and zero weights, need at both ends and beyond the total
    rng = np.random.default_rng(m)
    tb = np.round(np.abs(rng.standard_cauchy(m)), 1) + 0.1
    dl = rng.random(m) * (rng.random(m) < 0.8)
    order = np.argsort(tb, kind="stable")
    ts, cum = tb[order], np.cumsum(dl[order])
    total = dl.sum()
    for need in [1e-9, 0.1 * total, 0.5 * total, 0.999 * total, total + 1.0]:
        if need <= 0.0:
            continue  # the line search asks only for a positive slope's worth
        got = weighted_quantile(tb.copy(), dl.copy(), m, need)
        if need > total:
            assert got == (2.0 * tb.max() + 1.0 if m else 1.0)
            continue
        k = np.flatnonzero(cum >= need * (1 - 1e-12))[0]
        # the first value reaching need, up to the order in which the weights are summed
        assert ts[k] <= got <= ts[np.flatnonzero(cum >= need * (1 + 1e-12))[0]]


def test_turning_points_are_where_the_sorted_slope_turns():
    # the first sorted point where -need + the increments so far >= 0; the smallest for
    # need <= 0, the largest when the increments never get there
    rng = np.random.default_rng(3)
    points = np.round(rng.normal(size=(40, 300)), 2)
    incs = rng.random((40, 300)) * (rng.random((40, 300)) < 0.7)
    total = incs.sum(axis=1)
    need = total * rng.uniform(-0.2, 1.2, size=40)
    got = turning_points(points, incs, need)
    for r in range(40):
        order = np.argsort(points[r], kind="stable")
        ts, cum = points[r][order], np.cumsum(incs[r][order])
        if need[r] <= 0.0:
            assert got[r] == ts[0]
        elif total[r] < need[r]:
            assert got[r] == ts[-1]
        else:
            assert ts[np.flatnonzero(cum >= need[r] * (1 - 1e-12))[0]] <= got[r]
            assert got[r] <= ts[np.flatnonzero(cum >= need[r] * (1 + 1e-12))[0]]
