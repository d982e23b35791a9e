"""Stabilised root bounds: a neuron is made stable only where no input of the box puts it on the
other side (sampled points and PGD from many starts never find one), the bounds only tighten,
forked workers prove what one process proves, domains that hold no point are dropped when trees
go on from them, and branch and bound that goes on from them (with its first stage's trees, or
from the root) still agrees with exact MILP."""
import functools
import time

import numpy as np
import pytest

from verifier.bounds.milp import milp_bounds
from verifier.search.bab import BabOptions, branch_and_bound
from verifier.search.bab_attack import pgd
from verifier.search.bab_chain import ReluChain, as_relu_chain
from verifier.search.bab_crown import ChainBounder
from verifier.search.bab_relu import Domains, ReluSplitSearch
from verifier.search.bab_stabilise import TRIAL, _hopeless, narrow, nearly_stable, stabilise
from verifier.search.replay import Replay

from test_bab import mlp, spec_of


def _stabilised(seed: int, processes: int):
    """Root bounds of a random 8-16-16-16-3 network's box before and after ``stabilise``."""
    net = mlp(seed, 8, [16, 16, 16], 3, scale=1.5)
    spec = spec_of(-np.ones(8) * 0.4, np.ones(8) * 0.4, [(np.ones((1, 3)), np.zeros(1))], 3)
    cb = ChainBounder(as_relu_chain(net))
    opt = BabOptions(stabilise_ratio=0.5, stabilise_seconds=5.0)
    case = spec.cases[0]
    lo, hi, slopes = ReluSplitSearch.root_bounds(cb, case, opt, True, time.monotonic() + 60)
    before = ([a.copy() for a in lo], [a.copy() for a in hi])
    got = stabilise(cb, net, case, lo, hi, slopes, opt, time.monotonic() + 60, processes)
    return cb, case, before, (lo, hi), got


def test_nearly_stable_neurons_come_nearest_first_with_their_side():
    lo = np.array([-1.0, -0.1, -0.5, 0.2, -3.0, -0.02])
    hi = np.array([1.0, 2.0, 0.05, 1.0, -1.0, 1.0])
    pick, below = nearly_stable(lo, hi, 0.25)
    # 0: 0.5 of its width (too far), 3 and 4 are stable already
    assert pick.tolist() == [5, 1, 2] and below.tolist() == [False, False, True]


@pytest.mark.parametrize("seed", range(6))
def test_a_stabilised_neuron_is_never_on_the_other_side(seed):
    cb, case, (lo0, hi0), (lo, hi), got = _stabilised(seed, 1)
    chain = cb.chain
    changed = 0
    for k in cb.relu_layers:
        assert np.all(lo[k] >= lo0[k]) and np.all(hi[k] <= hi0[k])  # only tightened
        made_pos = np.flatnonzero((lo0[k][0] < 0) & (lo[k][0] >= 0))
        made_neg = np.flatnonzero((hi0[k][0] > 0) & (hi[k][0] <= 0))
        changed += made_pos.size + made_neg.size
        if k == 0 or made_pos.size + made_neg.size == 0:
            continue
        # the strongest search for a point on the other side: PGD on the cut chain's neuron
        cut = ReluChain(chain.W[:k + 1], chain.b[:k + 1], chain.relu[:k] + (False,), chain.n0)
        xl, xu = case.input.lower, case.input.upper
        starts = xl + (xu - xl) * np.random.default_rng(seed).random((64, xl.size))
        for n, sign in [(n, 1.0) for n in made_pos] + [(n, -1.0) for n in made_neg]:
            row = np.zeros((1, chain.widths[k]))
            row[0, n] = sign  # minimise sign * z: <= 0 would be the other side
            _, m = pgd(cut, starts, xl, xu, row, np.zeros(1), steps=60)
            assert m.min() > 0.0, (seed, k, n)
        # the signs say which were proven, and to which side
        sign = got.sign.get(k, np.zeros(lo[k].shape[1]))
        assert set(np.flatnonzero(sign > 0)) == set(made_pos)
        assert set(np.flatnonzero(sign < 0)) == set(made_neg)
    assert changed == got.stabilised
    # sampled points lie inside the tightened bounds of every layer
    X = case.input.lower + (case.input.upper - case.input.lower) * np.random.default_rng(
        seed).random((5000, case.input.n))
    for k, z in enumerate(chain.pre_activations(X)):
        assert np.all(z >= lo[k]) and np.all(z <= hi[k])


def test_some_neurons_are_stabilised_and_workers_prove_the_same():
    one = [_stabilised(seed, 1) for seed in range(4)]
    assert sum(r[4].stabilised for r in one) > 0  # the tests above check something
    for seed, r in enumerate(one):
        two = _stabilised(seed, 2)
        assert (two[4].tried, two[4].stabilised) == (r[4].tried, r[4].stabilised)
        assert two[4].sign.keys() == r[4].sign.keys()
        assert all(np.array_equal(two[4].sign[k], r[4].sign[k]) for k in r[4].sign)
        for a, b in zip(two[3][0] + two[3][1], r[3][0] + r[3][1]):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("seed", range(6))
def test_searches_started_again_from_stabilised_bounds_agree_with_milp(seed):
    rng = np.random.default_rng(seed)
    net = mlp(seed, 6, [10, 10, 10], 3, scale=1.5)
    lo, hi = -np.ones(6) * 0.5, np.ones(6) * 0.5
    C = rng.normal(size=(2, 3))
    exact = milp_bounds(net, lo, hi, C, np.zeros(2), options=None)
    true_min = exact.stats["argmin_value"][0]
    gap = 0.05 * (1 + np.abs(true_min))
    for d, expected in ((true_min - gap, "unsat"), (true_min + gap * [1, -1], "sat")):
        # two conjunctions (one row each); the first stage ends at once (a counterexample at
        # its roots aside), so both go on from the stabilised bounds
        spec = spec_of(lo, hi, [(C[:1], d[:1]), (C[1:], d[1:])], 3)
        opts = BabOptions(split="relu", relu_batch=8, stabilise_after=1e-4,
                          stabilise_ratio=0.5)
        res = branch_and_bound(net, spec, [(0, 0), (0, 1)],
                               deadline=time.monotonic() + 60.0,
                               replay=Replay(spec, net=net), options=opts)
        assert res.status == expected, (seed, d, true_min, res.message)
        if expected == "unsat":  # not at the root of the first stage: proven after it
            assert "stabilise_tried" in res.stats and "proven stable" in res.message
        else:
            x, _ = res.counterexample
            assert spec.violated_by(x[None], net(x[None]))[0]


def test_a_layer_whose_nearest_candidates_fail_is_given_up():
    proven = np.zeros(40, dtype=bool)
    assert not _hopeless(proven, TRIAL - 1, 0.1)  # too few tried to judge
    assert _hopeless(proven, TRIAL, 0.1)
    proven[:2] = True  # 2 of 16 >= 10%: go on; 2 of 21 < 10%: stop
    assert not _hopeless(proven, TRIAL, 0.1) and _hopeless(proven, 21, 0.1)


def test_narrowing_drops_the_domains_that_hold_no_point_and_moves_stale_choices():
    # five domains of a chain with one ReLU layer (1) of three neurons between layers 0 and 2
    N = 5
    lo = [np.full((N, 2), -1.0), np.full((N, 3), -1.0), np.full((N, 1), -5.0)]
    hi = [np.full((N, 2), 1.0), np.full((N, 3), 1.0), np.full((N, 1), 5.0)]
    split = np.zeros((N, 3))
    split[1, 0] = -1.0  # z0 <= 0: empty once z0 > 0 is proven
    split[2, 0] = 1.0
    split[3, 2] = split[4, 1] = 1.0
    lo[1][2, 0] = lo[1][3, 2] = lo[1][4, 1] = 0.0
    hi[1][1, 0] = 0.0
    lo[2][4, 0] = 4.5  # above the root's upper bound below: empty
    dom = Domains(lo, hi, {1: split}, {1: np.zeros((N, 1, 3))}, {1: np.zeros((N, 1, 3))},
                  np.zeros((N, 1)), np.ones((N, 1), dtype=bool),
                  np.array([[1, 0], [1, 1], [1, 1], [1, 0], [1, 2]]))
    # the stabilised root: z0 > 0 proven
    root_lo = [np.full((1, 2), -2.0), np.array([[0.0, -0.5, -2.0]]), np.full((1, 1), -9.0)]
    root_hi = [np.full((1, 2), 2.0), np.array([[2.0, 0.8, 1.0]]), np.full((1, 1), 4.0)]
    kept, dropped = narrow(dom, root_lo, root_hi, {1: np.array([1, 0, 0], dtype=np.int8)})
    assert dropped == 0.5 + 0.5  # domains 1 and 4, one split deep each
    assert len(kept) == 3
    np.testing.assert_array_equal(kept.lo[1], [[0.0, -0.5, -1.0]] * 2 + [[0.0, -0.5, 0.0]])
    np.testing.assert_array_equal(kept.hi[1], [[1.0, 0.8, 1.0]] * 3)
    # domain 0 chose z0, now stable: the larger triangle is z2's (1 * 1 / 2 > 0.5 * 0.8 / 1.3);
    # domain 2 keeps z1; domain 3's z2 is split, so z1
    assert kept.choice.tolist() == [[1, 2], [1, 1], [1, 1]]


@functools.lru_cache
def _milp_case(seed: int):
    """A random 6-12-12-12-3 network, its box and two rows C, with their exact minima."""
    rng = np.random.default_rng(seed)
    net = mlp(seed, 6, [12, 12, 12], 3, scale=1.5)
    lo, hi = -np.ones(6) * 0.5, np.ones(6) * 0.5
    C = rng.normal(size=(2, 3))
    return net, lo, hi, C, milp_bounds(net, lo, hi, C, np.zeros(2)).stats["argmin_value"][0]


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
@pytest.mark.parametrize("seed,sat", [(1, False), (2, False), (5, True)])
def test_trees_carried_over_to_stabilised_bounds_agree_with_milp(seed, sat, processes):
    # a first stage of 0.3 s leaves trees open; they go on from the stabilised root bounds
    net, lo, hi, C, true_min = _milp_case(seed)
    gap = 0.01 * (1 + np.abs(true_min))
    d = true_min + gap * np.array([1, -1]) if sat else true_min - gap
    spec = spec_of(lo, hi, [(C[:1], d[:1]), (C[1:], d[1:])], 3)
    opts = BabOptions(split="relu", relu_batch=4, stabilise_after=0.005, stabilise_ratio=0.5,
                      cut_depth=2, processes=processes)
    res = branch_and_bound(net, spec, [(0, 0), (0, 1)], deadline=time.monotonic() + 60.0,
                           replay=Replay(spec, net=net), options=opts)
    assert res.status == ("sat" if sat else "unsat"), res.message
    stats = res.stats.get("bab", res.stats)
    assert stats.get("trees_kept", 0) >= 1  # a tree went on, not only searches from the root
    if sat:
        x, _ = res.counterexample
        assert spec.violated_by(x[None], net(x[None]))[0]
