"""Hull cuts in the final bound of ReLU split (``verifier.search.bab_cuts``): every row holds on
the case's box, and the bound stays below every sampled point for any multipliers."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from verifier.search.bab_chain import as_relu_chain
from verifier.search.bab_crown import ChainBounder, optimise
from verifier.search.bab_cuts import CutPool, refine_intermediate

from test_bab import _sample_domain, mlp


def _root(cb, xl, xu):
    lo, hi = cb.ibp(xl[None], xu[None])
    cb.intermediate(xl[None], xu[None], lo, hi)
    return lo, hi


def _values(chain, X):
    """v_{k-1} and v_k of every ReLU layer k at the points X."""
    Z = chain.pre_activations(X)
    V = [np.maximum(z, 0.0) if r else z for z, r in zip(Z, chain.relu)]
    return {k: (X if k == 0 else V[k - 1], V[k]) for k in range(chain.L) if chain.relu[k]}


def _separate_at_bound(cb, pool, slots, res, xl, xu, split):
    """Rows cutting off the points of the bound's lines (of every row of every domain)."""
    pts: dict = {}
    cb.gradients(cb.L - 1, res.pas, xl, xu, res.alpha, split, points=pts)
    for k, (below, v) in pts.items():
        B, K, _ = v.shape
        pt, rows, viol = pool.separate(k, below.reshape(B * K, -1), v.reshape(B * K, -1),
                                       pool.slots)
        slots.fill(k, pt // K, rows, viol)


def test_every_pool_row_holds_on_sampled_points_of_the_box():
    rng = np.random.default_rng(0)
    net = mlp(0, 6, [16, 12], 3, scale=2.0)
    chain = as_relu_chain(net)
    cb = ChainBounder(chain)
    xl, xu = -np.ones(6), np.ones(6)
    lo, hi = _root(cb, xl, xu)
    pool = CutPool(cb, xl, xu, [a[0] for a in lo], [a[0] for a in hi], slots=64)
    C = rng.normal(size=(8, 3))
    res = optimise(cb, C, np.zeros(8), xl[None], xu[None], lo, hi, iterations=10)
    slots = pool.empty_slots(1, 8)
    _separate_at_bound(cb, pool, slots, res, xl[None], xu[None], None)
    assert pool.size > 0
    X = xl + (xu - xl) * rng.random((20000, 6))
    X = np.concatenate([X, np.where(rng.random((500, 6)) < 0.5, xl, xu)])
    for k, (below, v) in _values(chain, X).items():
        lhs = pool.p[k] * v[:, pool.nrn[k]] + below @ pool.Q[k].T
        assert np.all(lhs <= pool.h[k])


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10 ** 6), iterations=st.sampled_from([0, 8]))
def test_no_sampled_point_lies_below_a_bound_with_cuts_for_any_multipliers(seed, iterations):
    rng = np.random.default_rng(seed)
    n0 = int(rng.integers(2, 6))
    widths = [int(w) for w in rng.integers(3, 10, size=rng.integers(1, 4))]
    chain = as_relu_chain(mlp(seed, n0, widths, int(rng.integers(1, 4)), scale=2.0))
    cb = ChainBounder(chain)
    root_l, root_u = -np.ones(n0), np.ones(n0)
    lo0, hi0 = _root(cb, root_l, root_u)
    pool = CutPool(cb, root_l, root_u, [a[0] for a in lo0], [a[0] for a in hi0], slots=16)
    # three domains inside the root: smaller boxes with random splits
    B = 3
    c = rng.uniform(-0.5, 0.5, (B, n0))
    r = rng.uniform(0.1, 0.5, (B, n0))
    xl, xu = np.maximum(c - r, root_l), np.minimum(c + r, root_u)
    split = {i: rng.choice([-1.0, 0.0, 0.0, 1.0], size=(B, chain.widths[i]))
             for i in cb.relu_layers}
    lo, hi = cb.ibp(xl, xu, split=split)
    cb.intermediate(xl, xu, lo, hi, split=split)
    K = 6
    C, d = rng.normal(size=(K, chain.widths[-1])), rng.normal(size=K)
    res = optimise(cb, C, d, xl, xu, lo, hi, split=split, iterations=3)
    slots = pool.empty_slots(B, K)
    _separate_at_bound(cb, pool, slots, res, xl, xu, split)
    # any multipliers >= 0, on rows and on empty slots alike
    mu = {k: rng.exponential(0.5, m.shape) * (rng.random(m.shape) < 0.7)
          for k, m in slots.mu.items()}
    got = optimise(cb, C, d, xl, xu, lo, hi, split=split, alpha=res.alpha, beta=res.beta,
                   iterations=iterations, cuts=pool.view(slots.idx), mu=mu)
    for b in range(B):
        X, Z = _sample_domain(chain, xl[b], xu[b], {i: s[b] for i, s in split.items()}, rng)
        if X.shape[0]:
            assert np.all(Z[-1] @ C.T - d >= got.lb[b])


def test_cuts_tighten_the_final_bound():
    """Over a few random networks, the bound with rows separated at its own points beats the
    bound without them (same iterations from the same start) somewhere, and never loses much
    (the first iterate, mu = 0, is the bound without cuts)."""
    gains = []
    for seed in range(4):
        rng = np.random.default_rng(seed)
        chain = as_relu_chain(mlp(seed, 8, [24, 24], 3, scale=2.0))
        cb = ChainBounder(chain)
        xl, xu = -np.ones(8), np.ones(8)
        lo, hi = _root(cb, xl, xu)
        C = rng.normal(size=(4, 3))
        d = np.zeros(4)
        res = optimise(cb, C, d, xl[None], xu[None], lo, hi, iterations=20)
        pool = CutPool(cb, xl, xu, [a[0] for a in lo], [a[0] for a in hi], slots=32)
        slots = pool.empty_slots(1, 4)
        for _ in range(2):
            _separate_at_bound(cb, pool, slots, res, xl[None], xu[None], None)
            res = optimise(cb, C, d, xl[None], xu[None], lo, hi, alpha=res.alpha,
                           iterations=20, cuts=pool.view(slots.idx), mu=slots.mu)
            slots.mu = res.mu
        plain = optimise(cb, C, d, xl[None], xu[None], lo, hi, iterations=60)
        gains.append(float((res.lb - plain.lb).max()))
    assert max(gains) > 1e-3


def test_the_gradient_in_a_multiplier_is_the_rows_value_at_the_bounds_point():
    """``d lb / d mu_r`` (finite differences of the backward pass) equals ``p v~_k[n] + q .
    v~_{k-1} - h`` at the point of the chosen lines (``gradients``), which ties the pass's
    use of P, Q and h to the rows themselves."""
    rng = np.random.default_rng(3)
    chain = as_relu_chain(mlp(3, 6, [16, 12], 3, scale=2.0))
    cb = ChainBounder(chain)
    xl, xu = -np.ones((1, 6)), np.ones((1, 6))
    lo, hi = _root(cb, xl[0], xu[0])
    C = rng.normal(size=(6, 3))
    res = optimise(cb, C, np.zeros(6), xl, xu, lo, hi, iterations=10)
    pool = CutPool(cb, xl[0], xu[0], [a[0] for a in lo], [a[0] for a in hi], slots=16)
    slots = pool.empty_slots(1, 6)
    _separate_at_bound(cb, pool, slots, res, xl, xu, None)
    view = pool.view(slots.idx)
    mu = {k: rng.exponential(0.3, m.shape) * (slots.idx[k][:, None, :] >= 0)
          for k, m in slots.mu.items()}
    A = C[None]
    lb, pas = cb.backward(cb.L - 1, A, np.zeros((1, 6)), xl, xu, lo, hi, alpha=res.alpha,
                          keep=True, cuts=view, mu=mu)
    _, _, gm = cb.gradients(cb.L - 1, pas, xl, xu, res.alpha, cuts=view)
    checked = agree = 0
    for k, m in mu.items():
        for s in np.flatnonzero(slots.idx[k][0] >= 0):
            step = {j: a.copy() for j, a in mu.items()}
            step[k][0, :, s] += 1e-6
            lb2, _ = cb.backward(cb.L - 1, A, np.zeros((1, 6)), xl, xu, lo, hi, alpha=res.alpha,
                                 cuts=view, mu=step)
            fd = (lb2 - lb)[0] / 1e-6
            checked += fd.size
            agree += int(np.sum(np.abs(fd - gm[k][0, :, s]) <= 1e-3 * (1 + np.abs(fd))))
    assert checked > 20 and agree >= 0.9 * checked


@pytest.mark.parametrize("seed", range(3))
def test_refined_intermediate_bounds_are_tighter_and_hold_at_sampled_points(seed):
    rng = np.random.default_rng(seed)
    chain = as_relu_chain(mlp(seed, 6, [20, 20, 20], 3, scale=2.0))
    cb = ChainBounder(chain)
    xl, xu = -np.ones((1, 6)), np.ones((1, 6))
    lo, hi = _root(cb, xl[0], xu[0])
    slopes: dict = {}
    cb.optimise_intermediate(xl, xu, lo, hi, iterations=20, slopes=slopes)
    before = [h - l for l, h in zip(lo, hi)]
    refine_intermediate(cb, xl, xu, lo, hi, slopes, slots=16)
    widths = [h - l for l, h in zip(lo, hi)]
    assert all(np.all(w <= b + 1e-12) for w, b in zip(widths, before))
    assert sum(float(b.sum() - w.sum()) for w, b in zip(widths, before)) > 1e-3
    X = xl + (xu - xl) * rng.random((20000, 6))
    X = np.concatenate([X, np.where(rng.random((500, 6)) < 0.5, xl, xu)])
    for z, l, h in zip(chain.pre_activations(X), lo, hi):
        assert np.all(z >= l[0]) and np.all(z <= h[0])
