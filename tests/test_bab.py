"""Branch and bound: the chain form is the network, every bound it prunes with holds at sampled
points, its answers agree with exact MILP on tiny networks, and a deadline gives ``timeout``."""
import importlib
import time
import types

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy.optimize import linprog

from specs import Case, Conjunction, InputSet, Spec
from verifier.bounds.milp import milp_bounds
from verifier.network import Network, Node
from verifier.network import ops as O
from verifier.search.bab import BabOptions, branch_and_bound, share_percent
from verifier.search.bab_chain import as_relu_chain
from verifier.search.bab_crown import ChainBounder, apply_split, optimise
from verifier.search.bab_forward import ForwardState
from verifier.search.bab_kernels import _line_max, halfspace_rows
from verifier.search.bab_input import (InputSplitSearch, _BestFirst, _Stack, _unpack,
                                       mixture_rows)
from verifier.search.bab_relu import Domains, ReluSplitSearch
from verifier.search.branching import cap_layer_splits, child_estimates
from verifier.search.replay import Replay

bab_module = importlib.import_module("verifier.search.bab")


def mlp(seed, n0, widths, out, relu_out=False, scale=1.0):
    """A random fully connected ReLU network n0 -> widths -> out (plus a Reshape in front)."""
    rng = np.random.default_rng(seed)
    nodes = [Node("flat", O.Reshape((n0,)), ("x",), (n0,))]
    prev, n = "flat", n0
    for i, w in enumerate(list(widths) + [out]):
        W = rng.normal(size=(w, n)) * scale / np.sqrt(n)
        nodes.append(Node(f"l{i}", O.Linear(W, rng.normal(size=w) * 0.3), (prev,), (w,)))
        prev, n = f"l{i}", w
        if i < len(widths) or relu_out:
            nodes.append(Node(f"r{i}", O.Relu(), (prev,), (w,)))
            prev = f"r{i}"
    return Network("x", (n0,), tuple(nodes), prev)


def spec_of(lo, hi, conjs, m):
    return Spec((Case(InputSet(lo, hi), tuple(Conjunction(C, d) for C, d in conjs)),), len(lo), m)


# -- the chain form ---------------------------------------------------------------------------
def test_the_chain_computes_the_network():
    net = mlp(0, 4, [6, 5], 3, relu_out=True)
    chain = as_relu_chain(net)
    x = np.random.default_rng(1).normal(size=(50, 4))
    assert np.array_equal(chain.forward(x), net(x))
    assert chain.relu == (True, True, True, False)  # an exact identity layer after the last ReLU


def test_scale_and_select_become_exact_dense_layers():
    rng = np.random.default_rng(2)
    nodes = (Node("s", O.Scale(rng.normal(size=3), rng.normal(size=3)), ("x",), (3,)),
             Node("p", O.Select(np.array([2, -1, 0]), fill=0.5), ("s",), (3,)),
             Node("l", O.Linear(rng.normal(size=(2, 3)), rng.normal(size=2)), ("p",), (2,)),
             Node("r", O.Relu(), ("l",), (2,)),
             Node("o", O.Linear(rng.normal(size=(1, 2)), np.zeros(1)), ("r",), (1,)))
    net = Network("x", (3,), nodes, "o")
    chain = as_relu_chain(net)
    x = rng.normal(size=(20, 3))
    np.testing.assert_allclose(chain.forward(x), net(x), rtol=1e-14, atol=1e-14)


def test_a_branching_graph_is_not_a_chain():
    rng = np.random.default_rng(3)
    nodes = (Node("a", O.Linear(rng.normal(size=(2, 2)), np.zeros(2)), ("x",), (2,)),
             Node("r", O.Relu(), ("a",), (2,)),
             Node("s", O.Sum((1.0, 1.0)), ("r", "x"), (2,)))
    assert as_relu_chain(Network("x", (2,), nodes, "s")) is None


# -- soundness of the bounds that prune -------------------------------------------------------
def _sample_domain(chain, xl, xu, split, rng, n=4000):
    """Points of the box and their pre-activations, kept where the splits hold."""
    X = xl + (xu - xl) * rng.random((n, xl.size))
    X = np.concatenate([X, np.where(rng.random((64, xl.size)) < 0.5, xl, xu)])  # corners
    Z = chain.pre_activations(X)
    ok = np.ones(X.shape[0], dtype=bool)
    for i, s in split.items():
        ok &= np.all(np.where(s > 0, Z[i] >= 0, True) & np.where(s < 0, Z[i] <= 0, True), axis=1)
    return X[ok], [z[ok] for z in Z]


@settings(max_examples=40)
@given(seed=st.integers(0, 10 ** 6), forward=st.booleans(), optimised=st.booleans(),
       slopes=st.booleans())
def test_no_sampled_point_lies_outside_the_bounds_of_a_split_domain(seed, forward, optimised,
                                                                     slopes):
    rng = np.random.default_rng(seed)
    n0 = int(rng.integers(1, 5))
    widths = [int(w) for w in rng.integers(1, 7, size=rng.integers(1, 4))]
    net = mlp(seed, n0, widths, int(rng.integers(1, 4)), scale=2.0)
    chain = as_relu_chain(net)
    cb = ChainBounder(chain)
    B = 3
    c = rng.normal(size=(B, n0))
    r = rng.random((B, n0))
    xl, xu = c - r, c + r
    split = {i: rng.choice([-1.0, 0.0, 0.0, 1.0], size=(B, chain.widths[i]))
             for i in cb.relu_layers}
    lo, hi = cb.ibp(xl, xu, split=split)
    table = None
    if slopes:
        # any lower slopes in [0, 1] per bounded neuron, NaN (the default slope) in places
        table = {}
        for j in cb.relu_layers[1:]:
            table[j] = {}
            for i in cb.relu_layers:
                if i < j:
                    t = rng.random((2 * chain.widths[j], chain.widths[i]))
                    table[j][i] = np.where(rng.random(t.shape) < 0.3, np.nan, t)
    cb.intermediate(xl, xu, lo, hi, split=split, forward=forward, slopes=table)
    m = chain.widths[-1]
    K = 2
    C, d = rng.normal(size=(K, m)), rng.normal(size=K)
    res = optimise(cb, C, d, xl, xu, lo, hi, split=split, iterations=5 if optimised else 0)
    for b in range(B):
        X, Z = _sample_domain(chain, xl[b], xu[b], {i: s[b] for i, s in split.items()}, rng)
        if X.shape[0] == 0:
            continue
        for i in range(chain.L):
            assert np.all(Z[i] >= lo[i][b]) and np.all(Z[i] <= hi[i][b])
        assert np.all(Z[-1] @ C.T - d >= res.lb[b])


@pytest.mark.parametrize("seed", range(10))
def test_the_line_search_of_a_split_multiplier_finds_the_maximum(seed):
    # f(t) = cst t + sum_j min over [xl_j, xu_j] of (p_j - t q_j) x_j is concave and piecewise
    # linear: its maximum over t >= 0 is at 0 or at a breakpoint p_j / q_j; the larger sizes
    # take the bucketing path of the breakpoints' weighted quantile
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40)) if seed < 6 else int(rng.integers(130, 800))
    p, q = rng.normal(size=n), rng.normal(size=n)
    p[rng.random(n) < 0.2] = 0.0
    q[rng.random(n) < 0.2] = 0.0
    xl = rng.normal(size=n)
    xu = xl + rng.random(n) * (rng.random(n) < 0.9)  # a few zero widths
    cst = rng.normal() * 3

    def f(t):
        a = p - t * q
        return cst * t + np.minimum(a * xl, a * xu).sum()

    t = _line_max(p, q, cst, xl, xu, np.empty(n), np.empty(n))
    with np.errstate(divide="ignore", invalid="ignore"):
        cand = np.concatenate([[0.0], (p / q)[(p * q) > 0]])
    best = max(f(c) for c in cand)
    grows = f(cand.max() + 1.0) > f(cand.max()) + 1e-12  # no maximum: the bound grows
    assert t >= 0.0
    if grows:
        assert t > cand.max() and f(t) > best
    else:
        assert f(t) >= best - 1e-9 * (1 + abs(best))


@pytest.mark.parametrize("seed", range(4))
def test_one_first_layer_split_enters_an_input_bound_exactly(seed):
    # with one half-space s (W0_k x + b0_k) >= 0 the exact coordinate ascent is the LP optimum
    # of the row's linear function over the box cut by it
    rng = np.random.default_rng(seed)
    n0, n1, T = 6, 5, 8
    W0, b0 = rng.normal(size=(n1, n0)), rng.normal(size=n1) * 0.3
    xl, xu = -rng.random((2, n0)), rng.random((2, n0))
    box = np.arange(T) % 2
    lam = rng.normal(size=(T, n0))
    cut, sign = np.array([1, 3]), np.array([1.0, -1.0])  # box b: sign[b] z0[cut[b]] >= 0
    G, h = sign[:, None] * W0[cut], sign * b0[cut]
    gm = (np.abs(G) * np.maximum(np.abs(xl), np.abs(xu))).sum(axis=1) + np.abs(h)
    out, dc, dmag = halfspace_rows(lam, box, xl, xu, G, h, gm, np.array([0, 1, 2]), 2)
    got = dc + np.minimum(out * xl[box], out * xu[box]).sum(axis=1)
    for r in range(T):
        b = box[r]
        k, s = cut[b], sign[b]
        lp = linprog(lam[r], A_ub=-s * W0[k][None, :], b_ub=[s * b0[k]],
                     bounds=list(zip(xl[b], xu[b])), method="highs")
        assert lp.status == 0
        assert got[r] == pytest.approx(lp.fun, abs=1e-9)
        plain = np.minimum(lam[r] * xl[b], lam[r] * xu[b]).sum()
        moved = not np.array_equal(out[r], lam[r])
        assert (dmag[r] >= np.abs(lam[r]) @ np.maximum(np.abs(xl[b]), np.abs(xu[b]))) == moved
        assert got[r] >= plain - 1e-12
    assert not np.array_equal(out, lam)  # some half-space did cut


def test_first_layer_splits_tighten_the_intermediate_bounds_soundly():
    # a deep layer's neuron over the box and under its first layer's splits: bounded with the
    # half-spaces it is tighter than without, and still holds at every sampled point
    rng = np.random.default_rng(5)
    net = mlp(5, 6, [12, 12], 2, scale=2.0)
    chain = as_relu_chain(net)
    cb = ChainBounder(chain)
    B = 16
    xl, xu = -np.ones((B, 6)), np.ones((B, 6))
    split = {0: np.zeros((B, 12))}
    for b in range(B):
        split[0][b, rng.choice(12, size=4, replace=False)] = rng.choice([-1.0, 1.0], size=4)
    got = {}
    for on in (False, True):
        lo, hi = cb.ibp(xl, xu, split=split)
        if not on:
            cb.first_layer_cuts = lambda split, w0: None
        cb.intermediate(xl, xu, lo, hi, split=split)
        cb.__dict__.pop("first_layer_cuts", None)
        got[on] = (lo[1], hi[1])
    assert np.all(got[True][0] >= got[False][0]) and np.all(got[True][1] <= got[False][1])
    assert (got[True][1] - got[True][0]).sum() < 0.9 * (got[False][1] - got[False][0]).sum()
    for b in range(B):
        X, Z = _sample_domain(chain, xl[b], xu[b], {0: split[0][b]}, rng, n=20000)
        assert X.shape[0] > 0
        assert np.all(Z[1] >= got[True][0][b]) and np.all(Z[1] <= got[True][1][b])


@pytest.mark.parametrize("seed", range(4))
def test_the_root_slopes_reproduce_the_optimised_intermediate_bounds(seed):
    # subdomains re-bound their neurons from the slopes alpha-CROWN found at the root: over
    # the root's own box they give back its bounds (each layer from the same lower bounds)
    net = mlp(seed, 4, [8, 8, 8], 2, scale=2.0)
    cb = ChainBounder(as_relu_chain(net))
    xl, xu = -np.ones((1, 4)), np.ones((1, 4))
    lo, hi = cb.ibp(xl, xu)
    cb.intermediate(xl, xu, lo, hi)
    crown = [a.copy() for a in lo]
    slopes: dict = {}
    cb.optimise_intermediate(xl, xu, lo, hi, iterations=20, slopes=slopes)
    assert sorted(slopes) == [1, 2] and sorted(slopes[2]) == [0, 1]
    assert lo[2].sum() > crown[2].sum()  # alpha-CROWN did tighten
    again_lo, again_hi = cb.ibp(xl, xu)
    cb.intermediate(xl, xu, again_lo, again_hi, slopes=slopes)
    for j in (1, 2):
        np.testing.assert_allclose(again_lo[j], lo[j], rtol=0, atol=1e-3)
        np.testing.assert_allclose(again_hi[j], hi[j], rtol=0, atol=1e-3)


@pytest.mark.parametrize("seed", range(3))
def test_fsb_estimates_are_the_childrens_bounds_from_the_parents_pass(seed):
    # the children's pass continues from the parent's below the split layer: up to float32
    # products it is the full backward pass of each child (parent's alpha, beta, bounds)
    rng = np.random.default_rng(seed)
    net = mlp(seed, 4, [8, 8, 8], 3, scale=2.0)
    cb = ChainBounder(as_relu_chain(net))
    N = 3
    xl, xu = -np.ones((N, 4)), np.ones((N, 4))
    split = {i: np.zeros((N, 8)) for i in cb.relu_layers}
    split[0][1, 2], split[1][2, 5] = 1.0, -1.0
    lo, hi = cb.ibp(xl, xu, split=split)
    cb.intermediate(xl, xu, lo, hi, split=split)
    C, d = rng.normal(size=(2, 3)), rng.normal(size=2)
    res = optimise(cb, C, d, xl, xu, lo, hi, split=split, iterations=5)
    parent, layer, side, nrn = [], [], [], []
    for b in range(N):
        for i in cb.relu_layers:
            for q in np.flatnonzero((lo[i][b] < 0) & (hi[i][b] > 0))[:2]:
                for sd in (-1.0, 1.0):
                    parent.append(b), layer.append(i), nrn.append(q), side.append(sd)
    parent, layer, nrn, side = map(np.array, (parent, layer, nrn, side))
    assert len(set(layer.tolist())) == 3
    est = child_estimates(cb, res.pas, lo, hi, res.alpha, res.beta, split, xl, xu, parent,
                          layer, nrn, side)
    lo2, hi2 = [a[parent] for a in lo], [a[parent] for a in hi]
    sp2 = {i: s[parent] for i, s in split.items()}
    t = np.arange(parent.size)
    for i in cb.relu_layers:
        r = t[layer == i]
        sp2[i][r, nrn[r]] = side[r]
        lo2[i][r, nrn[r]], hi2[i][r, nrn[r]] = apply_split(lo2[i][r, nrn[r]], hi2[i][r, nrn[r]],
                                                           side[r])
    full = optimise(cb, C, d, xl[parent], xu[parent], lo2, hi2, split=sp2,
                    alpha={i: a[parent] for i, a in res.alpha.items()},
                    beta={i: b[parent] for i, b in res.beta.items()}, iterations=0)
    np.testing.assert_allclose(est, full.lb, rtol=1e-4, atol=1e-4)


def test_row_products_are_made_in_float64_where_float32_could_overflow():
    net = mlp(3, 3, [5, 4], 2)
    cb = ChainBounder(as_relu_chain(net))
    xl, xu = -np.ones((2, 3)), np.ones((2, 3))
    lo, hi = cb.ibp(xl, xu)
    w = cb.magnitudes(1, xl, xu, lo, hi)
    box = np.array([0, 1, 1])
    for scale, exact in ((1.0, False), (1e37, True)):
        g = np.random.default_rng(0).normal(size=(3, 4)) * scale
        tiny = np.zeros(3)
        lam = cb._product32(g, 1, box, xl, xu, lo, hi, w, tiny)
        if exact:  # float32 would give inf here
            np.testing.assert_array_equal(lam, g @ cb.W[1])
            assert not tiny.any()
        else:
            np.testing.assert_allclose(lam, g @ cb.W[1], rtol=1e-5)
            assert np.all(tiny > 0)


@settings(max_examples=30)
@given(seed=st.integers(0, 10 ** 6))
def test_forward_linear_bounds_contain_sampled_values(seed):
    rng = np.random.default_rng(seed)
    n0 = int(rng.integers(1, 6))
    net = mlp(seed, n0, [int(rng.integers(1, 8)), int(rng.integers(1, 8))], 2, scale=2.0)
    chain = as_relu_chain(net)
    cb = ChainBounder(chain)
    c = rng.normal(size=(2, n0))
    r = rng.random((2, n0)) * 2
    xl, xu = c - r, c + r
    fs = ForwardState(xl, xu)
    lo, hi = [], []
    for i in range(chain.L):
        fl, fu = fs.affine(chain.W[i], np.abs(chain.W[i]), chain.b[i], cb.eps)
        lo.append(fl)
        hi.append(fu)
        fs.relu(fl, fu) if chain.relu[i] else fs.identity()
    for b in range(2):
        X, Z = _sample_domain(chain, xl[b], xu[b], {}, rng)
        for i in range(chain.L):
            assert np.all(Z[i] >= lo[i][b]) and np.all(Z[i] <= hi[i][b])


def test_optimised_bounds_are_at_least_the_starting_ones_and_beta_gradients_are_exact():
    rng = np.random.default_rng(5)
    net = mlp(5, 3, [8, 8], 2, scale=2.0)
    cb = ChainBounder(as_relu_chain(net))
    xl, xu = -np.ones((2, 3)), np.ones((2, 3))
    split = {i: np.zeros((2, 8)) for i in cb.relu_layers}
    split[0][:, :2] = [1.0, -1.0]
    lo, hi = cb.ibp(xl, xu, split=split)
    cb.intermediate(xl, xu, lo, hi, split=split)
    C, d = rng.normal(size=(1, 2)), np.zeros(1)
    base = optimise(cb, C, d, xl, xu, lo, hi, split=split, iterations=0)
    better = optimise(cb, C, d, xl, xu, lo, hi, split=split, iterations=15)
    assert np.all(better.lb >= base.lb)
    # d lb / d beta from the forward evaluation matches a finite difference
    top = cb.L - 1
    alpha, beta = better.alpha, {0: np.full((2, 1, 8), 0.3)}
    lb0, pas = cb.backward(top, C[None], -d[None], xl, xu, lo, hi, alpha=alpha, beta=beta,
                           split=split, keep=True)
    _, gb = cb.gradients(top, pas, xl, xu, alpha, split, want_beta=True)
    step = np.zeros((2, 1, 8))
    step[:, :, 0] = 1e-6
    lb1, _ = cb.backward(top, C[None], -d[None], xl, xu, lo, hi, alpha=alpha,
                         beta={0: beta[0] + step}, split=split)
    np.testing.assert_allclose(lb1 - lb0, (gb[0] * step).sum(axis=2), atol=1e-9)


@settings(max_examples=20)
@given(seed=st.integers(0, 10 ** 6), shared=st.booleans())
def test_settled_domains_stop_iterating_and_the_others_are_bounded_as_before(seed, shared):
    # optimise(settled=...) drops the settled domains from the iterations (their arrays are
    # compacted away); every bound must stay sound, and the domains never settled must get
    # the bounds and slopes of a run without the test
    rng = np.random.default_rng(seed)
    n0 = int(rng.integers(1, 5))
    net = mlp(seed, n0, [int(w) for w in rng.integers(2, 8, size=rng.integers(1, 4))], 3,
              scale=2.0)
    chain = as_relu_chain(net)
    cb = ChainBounder(chain)
    B, K = 8, 2
    c = rng.normal(size=(B, n0))
    r = rng.random((B, n0))
    xl, xu = c - r, c + r
    lo, hi = cb.ibp(xl, xu)
    cb.intermediate(xl, xu, lo, hi)
    C = rng.normal(size=(K, 3)) if shared else rng.normal(size=(B, K, 3))
    d = rng.normal(size=K)
    calls = []

    def settled(best, idx):
        calls.append(idx.copy())
        return idx % 2 == 0  # every other domain settles after the first iteration

    plain = optimise(cb, C, d, xl, xu, lo, hi, iterations=6)
    res = optimise(cb, C, d, xl, xu, lo, hi, iterations=6, settled=settled)
    assert len(calls) == 6 and calls[0].tolist() == list(range(B))
    assert all(idx.tolist() == list(range(1, B, 2)) for idx in calls[1:])
    odd = np.arange(1, B, 2)
    np.testing.assert_allclose(res.lb[odd], plain.lb[odd], rtol=1e-12, atol=1e-12)
    for j in res.alpha:
        np.testing.assert_allclose(res.alpha[j][odd], plain.alpha[j][odd], atol=1e-12)
    first = optimise(cb, C, d, xl, xu, lo, hi, iterations=1)
    np.testing.assert_allclose(res.lb[::2], first.lb[::2], rtol=1e-12, atol=1e-12)
    Cb = np.broadcast_to(C, (B, K, 3))
    for b in range(B):
        X, Z = _sample_domain(chain, xl[b], xu[b], {}, rng, n=500)
        assert np.all(Z[-1] @ Cb[b].T - d >= res.lb[b])


@pytest.mark.parametrize("pairs", [False, True])
def test_a_mixture_row_never_exceeds_the_largest_row_of_its_conjunction(pairs):
    rng = np.random.default_rng(3)
    C, d = rng.normal(size=(4, 5)), rng.normal(size=4)
    Cm, dm = mixture_rows(C, d, pairs=pairs)
    assert Cm.shape[0] == (4 + 6 + 1 if pairs else 4 + 1)
    assert np.array_equal(Cm[:4], C) and np.array_equal(dm[:4], d)
    Y = rng.normal(size=(1000, 5)) * 10
    rows = Y @ C.T - d
    mixed = Y @ Cm[4:].T - dm[4:]
    assert np.all(mixed <= rows.max(axis=1, keepdims=True) + 1e-9)
    one = mixture_rows(C[:1], d[:1])  # a single row: nothing to mix
    assert one[0].shape == (1, 5)


def _small_input_search(seed: int, rows: int, options: BabOptions):
    """An input-split search over a random 3-output MLP of 1-3 inputs on [-1, 1]^n0 with one
    conjunction of ``rows`` random rows: (rng, n0, lo0, hi0, chain, search, C, d)."""
    rng = np.random.default_rng(seed)
    n0 = int(rng.integers(1, 4))
    net = mlp(seed, n0, [int(w) for w in rng.integers(2, 7, size=2)], 3, scale=2.0)
    lo0, hi0 = -np.ones(n0), np.ones(n0)
    C, d = rng.normal(size=(rows, 3)), rng.normal(size=rows)
    spec = spec_of(lo0, hi0, [(C, d)], 3)
    chain = as_relu_chain(net)
    search = InputSplitSearch(ChainBounder(chain), net, spec.cases[0], 0, [0],
                              Replay(spec, net=net), options, time.monotonic() + 60, {})
    search.full = hi0 - lo0
    return rng, n0, lo0, hi0, chain, search, C, d


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10 ** 6), k=st.integers(0, 3))
def test_input_split_children_bounded_within_their_parent_hold_at_sampled_points(seed, k):
    # the children's inner bounds are intersected with their parent's, and alpha optimises only
    # the k best rows of a conjunction (0: all): every row's bound still holds on the child
    rng, n0, lo0, hi0, chain, search, _, _ = _small_input_search(
        seed, 4, BabOptions(input_alpha_rows=k, input_alpha_depth=0.0))
    one = np.ones((1, 1), dtype=bool)
    lb0, _, zb = search._bound(lo0[None], hi0[None], one)
    dim = int(rng.integers(n0))
    xl = np.stack([lo0, lo0])
    xu = np.stack([hi0, hi0])
    xu[0, dim] = xl[1, dim] = 0.0
    lb, _, zc = search._bound(xl, xu, np.ones((2, 1), bool), ref=np.repeat(zb, 2, axis=0))
    assert lb.shape == (2, search.C.shape[0]) and np.isfinite(lb).all()
    for b in range(2):
        X, Z = _sample_domain(chain, xl[b], xu[b], {}, rng)
        for i, (lo_i, hi_i) in enumerate(zip(*_unpack(zc[b:b + 1], chain.widths))):
            assert np.all(Z[i] >= lo_i[0]) and np.all(Z[i] <= hi_i[0])
        assert np.all(Z[-1] @ search.C.T - search.d >= lb[b])


@settings(max_examples=20)
@given(seed=st.integers(0, 10 ** 6))
def test_lookahead_bounds_hold_at_sampled_points_and_leave_the_mixtures_out(seed):
    # the lookahead ranks bisections by the interval bounds of the spec's own rows; children
    # refuted by them are dropped, so they must hold
    rng, n0, lo0, hi0, chain, search, C, d = _small_input_search(seed, 3, BabOptions())
    B = 6
    width = rng.random((B, n0)) + 0.01
    xl = -1.0 + (2.0 - width) * rng.random((B, n0))
    xu = xl + width
    lb, lam0, zb = search._bound(xl, xu, np.ones((B, 1), dtype=bool), cheap=True)
    assert lam0 is None and zb is None and lb.shape == (B, search.C.shape[0])
    assert np.all(lb[:, ~search.base] == -np.inf) and np.isfinite(lb[:, search.base]).all()
    for b in range(B):
        X, Z = _sample_domain(chain, xl[b], xu[b], {}, rng, n=500)
        assert np.all(Z[-1] @ C.T - d >= lb[b, search.base])


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10 ** 6), n=st.integers(1, 7))
def test_best_first_queue_pops_the_lowest_bounds_across_batches(seed, n):
    # the key of a box is its weakest open conjunction's bound (NaN first); pops take the n
    # lowest keys, ties newest first, returned lowest last, with each box's own fields, the
    # same as a stable sort of the whole queue per batch (what the queue replaced)
    rng = np.random.default_rng(seed)
    K, J = 4, 2
    row_conj = np.array([0, 0, 1, 1])
    conj_lb = lambda lb: np.stack([lb[:, row_conj == j].max(axis=1) for j in range(J)], 1)
    made = 0

    def boxes(k):
        nonlocal made
        ids = np.arange(made, made + k, dtype=float)
        made += k
        open_ = rng.random((k, J)) < 0.7
        open_[~open_.any(axis=1), 0] = True
        lb = rng.integers(-3, 1, size=(k, K)).astype(float)          # many ties
        lb[rng.random((k, K)) < 0.05] = np.nan
        return (np.stack([ids, -ids], 1), None, open_, lb, rng.random((k, K, 2)), ids)

    def key(e):
        w = np.where(e[2], conj_lb(e[3]), np.inf).min(axis=1)
        return np.where(np.isnan(w), -np.inf, w)

    first = boxes(int(rng.integers(1, 10)))
    q = _BestFirst(first, conj_lb)
    queued = [(w, -t) for t, w in enumerate(key(first))]           # (key, -id) of queued boxes
    fields = {int(i): (first[3][b], first[4][b]) for b, i in enumerate(first[5])}
    while queued:
        got = q.pop(n)
        want = sorted(queued)[:n][::-1]
        assert [int(i) for i in got[5]] == [-t for _, t in want]
        assert got[1] is None and np.array_equal(got[0][:, 0], got[5])
        for b, i in enumerate(got[5]):
            assert np.array_equal(got[3][b], fields[int(i)][0], equal_nan=True)
            assert np.array_equal(got[4][b], fields[int(i)][1])
        assert len(q) == len(queued) - len(want)
        queued = sorted(queued)[n:]
        if made < 200:
            e = boxes(int(rng.integers(0, 3 * n)))
            if e[0].shape[0]:
                q.push(e)
                queued += [(w, -int(i)) for w, i in zip(key(e), e[5])]
                fields.update({int(i): (e[3][b], e[4][b]) for b, i in enumerate(e[5])})
    assert len(q) == 0


def test_depth_order_pops_the_newest_boxes_first():
    ids = np.arange(5.0)
    s = _Stack((ids[:3, None], None, ids[:3]))
    s.push((ids[3:, None], None, ids[3:]))
    got = s.pop(3)
    assert got[1] is None and list(got[2]) == [3.0, 4.0, 2.0] and len(s) == 2
    assert list(s.pop(3)[2]) == [0.0, 1.0] and len(s) == 0


# -- answers agree with exact MILP ------------------------------------------------------------
def _decide(net, spec, split, seconds=30.0):
    """split: "input", "relu" (filtered smart branching, intermediate bounds re-bounded from
    depth 2), "relu-none" (never re-bounded) or "relu-babsr" (re-bounded after first-layer
    splits)."""
    pairs = [(0, j) for j in range(len(spec.cases[0].unsafe))]
    split, _, variant = split.partition("-")
    opts = BabOptions(split=split, input_batch=16, relu_batch=8,
                      branching="babsr" if variant == "babsr" else "fsb",
                      relu_intermediate={"babsr": "first", "none": "none"}.get(variant, "deep"),
                      relu_intermediate_depth=2)
    return branch_and_bound(net, spec, pairs, deadline=time.monotonic() + seconds,
                            replay=Replay(spec, net=net), options=opts)


@pytest.mark.parametrize("split", ["input", "relu", "relu-none", "relu-babsr"])
@pytest.mark.parametrize("seed", range(8))
def test_answers_agree_with_the_exact_milp_minimum(seed, split):
    rng = np.random.default_rng(seed)
    n0 = 3 if split == "input" else 6
    net = mlp(seed, n0, [8, 8], 3, scale=1.5)
    lo, hi = -np.ones(n0) * 0.5, np.ones(n0) * 0.5
    C = rng.normal(size=(1, 3))
    exact = milp_bounds(net, lo, hi, C, np.zeros(1), options=None)
    true_min = float(exact.stats["argmin_value"][0, 0])
    # put the threshold a little below or above the true minimum: unsat or sat
    gap = 0.05 * (1 + abs(true_min))
    for d, expected in ((true_min - gap, "unsat"), (true_min + gap, "sat")):
        spec = spec_of(lo, hi, [(C, np.array([d]))], 3)
        res = _decide(net, spec, split)
        assert res.status == expected, (seed, split, d, true_min, res.message)
        if res.status == "sat":
            x, y = res.counterexample
            assert spec.violated_by(x[None], net(x[None]))[0]


def _barely_unsat_search(seed, relu_batch):
    """A ReLU-split search on a random 6-8-8-3 network whose threshold is 0.02 below the exact
    (MILP) minimum: unsat, but not at the root."""
    net = mlp(seed, 6, [8, 8], 3, scale=1.5)
    lo, hi = -np.ones(6) * 0.5, np.ones(6) * 0.5
    C = np.random.default_rng(seed).normal(size=(1, 3))
    exact = milp_bounds(net, lo, hi, C, np.zeros(1), options=None)
    d = float(exact.stats["argmin_value"][0, 0]) - 0.02
    spec = spec_of(lo, hi, [(C, np.array([d]))], 3)
    return ReluSplitSearch(ChainBounder(as_relu_chain(net)), net, spec.cases[0], 0, [0],
                           Replay(spec, net=net), BabOptions(relu_batch=relu_batch),
                           time.monotonic() + 30.0, {})


@pytest.mark.parametrize("seed", range(4))
def test_an_unsat_relu_split_search_refutes_its_whole_tree(seed):
    # every split halves a domain's share: the refuted leaves of a finished search add up to 1
    search = _barely_unsat_search(seed, 4)
    assert search.run() == "unsat"
    assert search.stats["domains"] > 1  # not refuted at the root
    assert search.refuted == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_a_paused_relu_split_search_goes_on_where_it_stopped(seed):
    whole, paused = _barely_unsat_search(seed, 2), _barely_unsat_search(seed, 2)
    assert whole.run() == "unsat"
    calls, status = 1, paused.run(pause_at=0.0)  # a pause long past: one batch per call
    while status == "paused":
        calls, status = calls + 1, paused.run(pause_at=0.0)
    assert status == "unsat" and calls > 1
    assert paused.stats["domains"] == whole.stats["domains"]  # the same tree, root bounded once
    assert paused.refuted == pytest.approx(1.0, abs=1e-12)


class _ScriptedSearch:
    """Stands in for ReluSplitSearch: the pair (case, conjunction) ``(0, 1)`` or ``(1, 0)`` has a
    counterexample, ``(0, 0)`` holds out until the deadline (but pauses when asked)."""

    def __init__(self, cb, net, case, ci, group, replay, opt, deadline, stats, method):
        self.pair, self.deadline, self.stack, self.ce = (ci, group[0]), deadline, None, None
        self.refuted = 0.0

    @staticmethod
    def root_bounds(*args):
        return None

    def run(self, pause_at=None):
        self.stack = []
        if self.pair != (0, 0):
            self.ce = types.SimpleNamespace(x=np.zeros(20), y=np.zeros(3))
            return "sat"
        if pause_at is not None:
            return "paused"
        while time.monotonic() < self.deadline:
            time.sleep(0.01)
        return "timeout"


@pytest.mark.parametrize("cases", [1, 2])
@pytest.mark.parametrize("probe, expected", [(0.025, "sat"), (0.0, "timeout")])
def test_every_open_pair_gets_a_first_slice_of_relu_split(monkeypatch, cases, probe, expected):
    monkeypatch.setattr(bab_module, "ReluSplitSearch", _ScriptedSearch)
    net = mlp(0, 20, [4], 3)
    rows = [(np.array([[1.0, -1.0, 0.0]]), np.zeros(1)), (np.array([[0.0, 1.0, -1.0]]),
                                                           np.zeros(1))]
    box = InputSet(-np.ones(20), np.ones(20))
    if cases == 1:  # one input box, two conjunctions
        spec = spec_of(box.lower, box.upper, rows, 3)
        pairs, label = [(0, 0), (0, 1)], "0"
    else:  # two input boxes, one conjunction each
        spec = Spec(tuple(Case(box, (Conjunction(*r),)) for r in rows), 20, 3)
        pairs, label = [(0, 0), (1, 0)], "0:0"
    res = branch_and_bound(net, spec, pairs, deadline=time.monotonic() + 0.5,
                           replay=Replay(spec, net=net),
                           options=BabOptions(split="relu", relu_probe_share=probe,
                                              stabilise_after=0.0))
    assert res.status == expected
    if expected == "timeout":
        assert res.message.endswith(f"per conjunction: {label} 0.0%")  # the other never ran


@pytest.mark.parametrize("share", [0.0, 0.5, 0.9994, 0.9995, 0.99997, 1 - 4.9e-6, 1 - 1e-12,
                                   1 - 2.0 ** -52, 1.0])
def test_a_refuted_share_reads_100_percent_only_when_it_is_all(share):
    text = share_percent(share)
    value = float(text.rstrip("%")) / 100
    assert (text in ("100.0%", "100%")) == (share == 1.0), text
    assert abs(value - share) <= max(5e-4, (1.0 - share) / 2 + 1e-15), text


@pytest.mark.parametrize("split", ["input", "relu", "relu-babsr"])
def test_a_conjunction_is_refuted_only_where_some_row_is_positive(split):
    rng = np.random.default_rng(11)
    n0 = 2 if split == "input" else 5
    net = mlp(11, n0, [6, 6], 2, scale=1.5)
    lo, hi = -np.ones(n0), np.ones(n0)
    # y0 <= t0 and y1 <= t1 with t just above the joint minimum found by sampling: sat
    X = lo + (hi - lo) * rng.random((20000, n0))
    Y = net(X)
    best = np.argmin(np.max(Y - Y.min(axis=0), axis=1))
    t = Y[best] + 1e-3
    spec = spec_of(lo, hi, [(np.eye(2), t)], 2)
    res = _decide(net, spec, split)
    assert res.status == "sat"
    # an unsafe set beyond the exact maxima of both outputs: unsat
    ex = milp_bounds(net, lo, hi, -np.eye(2), np.zeros(2))
    spec = spec_of(lo, hi, [(-np.eye(2), ex.lower[0] - 0.1)], 2)  # y_k >= max_k + 0.1
    assert _decide(net, spec, split).status == "unsat"


def test_a_passed_deadline_gives_timeout_never_a_guess():
    net = mlp(3, 3, [10, 10], 2, scale=3.0)
    lo, hi = -np.ones(3), np.ones(3)
    C = np.array([[1.0, -1.0]])
    ex = milp_bounds(net, lo, hi, C, np.zeros(1))
    spec = spec_of(lo, hi, [(C, np.array([float(ex.lower[0, 0]) - 1e-4]))], 2)
    pairs = [(0, 0)]
    for split in ("input", "relu"):
        res = branch_and_bound(net, spec, pairs, deadline=time.monotonic() - 1.0,
                               replay=Replay(spec, net=net),
                               options=BabOptions(split=split))
        assert res.status == "timeout", res


def test_a_network_that_is_not_a_chain_is_left_unknown():
    rng = np.random.default_rng(3)
    nodes = (Node("a", O.Linear(rng.normal(size=(2, 2)), np.zeros(2)), ("x",), (2,)),
             Node("r", O.Relu(), ("a",), (2,)),
             Node("s", O.Sum((1.0, 1.0)), ("r", "x"), (2,)))
    net = Network("x", (2,), nodes, "s")
    spec = spec_of(-np.ones(2), np.ones(2), [(np.eye(2)[:1], np.array([-100.0]))], 2)
    res = branch_and_bound(net, spec, [(0, 0)], deadline=time.monotonic() + 5,
                           replay=Replay(spec, net=net))
    assert res.status == "unknown"


def test_a_nan_row_bound_never_refutes_a_conjunction():
    # an overflow (inf - inf) in a bound gives NaN; "NaN <= 0" is False, so a search testing
    # "still open" with <= 0 dropped the region as if it were proven
    from verifier.search.bab_case import CaseSearch

    s = CaseSearch()
    s._set_rows([np.ones((2, 3)), np.ones((1, 3))], [np.zeros(2), np.zeros(1)])
    lb = np.array([[np.nan, -1.0, np.nan], [np.nan, 2.0, 0.5], [-3.0, -4.0, 1.0]])
    got = s._conj_lb(lb)
    assert np.array_equal(got, [[-1.0, -np.inf], [2.0, 0.5], [-3.0, 1.0]])
    assert (got <= 0.0).tolist() == [[True, True], [False, False], [True, False]]


def test_a_fully_split_leaf_is_decided_by_its_certified_lp():
    # z1 = x - 0.5, z2 = -x - 0.5 on x in [-1, 1]; output y = a1 + a2 - 0.1, unsafe y <= 0.
    # Both active needs x >= 0.5 and x <= -0.5: an empty leaf, refuted (Farkas). Both inactive
    # (|x| <= 0.5) has y = -0.1 <= 0: it stays open. z1 active only: y = x - 0.6 >= -0.1 there,
    # also open; its LP bound must not exceed the true minimum -0.1.
    W1 = np.array([[1.0], [-1.0]])
    nodes = (Node("l0", O.Linear(W1, np.array([-0.5, -0.5])), ("x",), (2,)),
             Node("r0", O.Relu(), ("l0",), (2,)),
             Node("l1", O.Linear(np.array([[1.0, 1.0]]), np.array([-0.1])), ("r0",), (1,)))
    net = Network("x", (1,), nodes, "l1")
    spec = spec_of(np.array([-1.0]), np.array([1.0]), [(np.array([[1.0]]), np.zeros(1))], 1)
    cb = ChainBounder(as_relu_chain(net))
    search = ReluSplitSearch(cb, net, spec.cases[0], 0, [0], Replay(spec, net=net),
                             BabOptions(), time.monotonic() + 30.0, {})
    lo, hi = cb.ibp(search.xl0, search.xu0)
    signs = np.array([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])
    dom = Domains.concat([Domains([a.copy() for a in lo], [a.copy() for a in hi],
                                  {0: s[None]}, {}, {}, np.full((1, 1), -np.inf),
                                  np.ones((1, 1), bool), np.zeros((1, 2), np.int64))
                          for s in signs])
    for q, s in enumerate(signs):  # the splits clip the bounds, as branching does
        dom.lo[0][q] = np.where(s > 0, np.maximum(dom.lo[0][q], 0.0), dom.lo[0][q])
        dom.hi[0][q] = np.where(s < 0, np.minimum(dom.hi[0][q], 0.0), dom.hi[0][q])
    left = search._lp_refute(dom)
    assert len(left) == 2 and list(left.split[0][:, 0]) == [-1.0, 1.0]
    assert np.all(left.lb[:, 0] <= -0.1 + 1e-9)


def test_a_layer_at_its_split_cap_leaves_the_candidates_while_another_layer_can_take_over():
    # domain 0: 2 splits in layer 1 (the cap), layer 0 has an unstable neuron -> layer 1 out;
    # domain 1: layer 1 at the cap but layer 0 has nothing unstable -> unchanged (else the
    # domain would look unsplittable); domain 2: below the cap -> unchanged
    scores = {0: np.array([[0.5, -1.0], [-1.0, -1.0], [0.1, 0.2]]),
              1: np.array([[2.0, 3.0, -1.0], [2.0, 3.0, -1.0], [2.0, 3.0, -1.0]])}
    split = {0: np.array([[0.0, 1.0], [0.0, 1.0], [0.0, 0.0]]),
             1: np.array([[-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])}
    # layer 1 splits per domain: 2, 2, 1 -> with cap 2 domains 0 and 1 are at it
    before = {i: s.copy() for i, s in scores.items()}
    cap_layer_splits(scores, split, 2)
    assert (scores[1][0] == -1.0).all() and (scores[0][0] == before[0][0]).all()
    assert (scores[1][1] == before[1][1]).all()  # nothing else unstable in domain 1
    assert (scores[1][2] == before[1][2]).all()  # below the cap
    again = {i: s.copy() for i, s in before.items()}
    cap_layer_splits(again, split, 0)  # 0: no cap
    assert all((again[i] == before[i]).all() for i in before)
