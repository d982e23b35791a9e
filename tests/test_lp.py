"""The LP (triangle) relaxation: sound against exact MILP minima and samples, valid for any
duals, never looser than CROWN on the same intermediate bounds; LP-All and splits."""
import numpy as np
import pytest
from test_lp_nets import mixed_net, random_mlp, samples

from verifier.bounds.lp import (LPOptions, dual_bound, layer_bounds, lp_all_bounds, lp_bounds)
from verifier.bounds.lp_program import relu_program
from verifier.bounds.milp import milp_bounds
from verifier.network import Network, Node
from verifier.network import ops as O

TOL = 1e-7


def _box(n, seed, width=0.6):
    rng = np.random.default_rng(seed)
    c = rng.uniform(-0.5, 0.5, n)
    return c - width / 2, c + width / 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lp_and_lp_all_lie_between_crown_free_bounds_and_the_exact_milp_range(seed):
    net = random_mlp([3, 7, 6, 2], seed=seed)
    lo, hi = _box(3, seed)
    C = np.array([[1.0, -1.0], [0.5, 2.0]])
    d = np.array([0.1, -0.2])
    exact = milp_bounds(net, lo, hi, C, d)
    lp = lp_bounds(net, lo, hi, C, d)
    lpa = lp_all_bounds(net, lo, hi, C, d)
    # sound: below the exact minimum, above the exact maximum
    assert np.all(lp.lower <= exact.lower + TOL) and np.all(lp.upper >= exact.upper - TOL)
    assert np.all(lpa.lower <= exact.lower + TOL) and np.all(lpa.upper >= exact.upper - TOL)
    # LP-All only tightens
    assert np.all(lpa.lower >= lp.lower - TOL) and np.all(lpa.upper <= lp.upper + TOL)
    # and every sampled value lies inside
    vals = net(samples(lo, hi, 500, seed)) @ C.T - d
    assert np.all(vals >= lp.lower) and np.all(vals <= lp.upper)
    assert np.all(vals >= lpa.lower) and np.all(vals <= lpa.upper)


def test_lp_is_sound_on_a_net_with_conv_scale_residual_and_select():
    net = mixed_net(seed=4)
    lo, hi = -0.5 * np.ones(9), 0.5 * np.ones(9)
    r = lp_all_bounds(net, lo, hi, intermediate={})  # the interval pass alone
    vals = net(samples(lo, hi, 1000, 1)).reshape(-1, 3)
    assert np.all(vals >= r.lower) and np.all(vals <= r.upper)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_lp_is_never_looser_than_crown_on_the_same_intermediate_bounds(seed):
    from verifier.bounds import compute
    net = random_mlp([4, 10, 8, 3], seed=seed)
    lo, hi = _box(4, seed, 1.0)
    crown = compute(net, lo[None], hi[None], method="crown", intermediate=True)
    lp = lp_bounds(net, lo, hi, intermediate=crown.intermediate)
    assert np.all(lp.lower >= crown.lower - 1e-9)
    assert np.all(lp.upper <= crown.upper + 1e-9)


def test_batched_boxes_give_the_bounds_of_each_box_alone():
    net = random_mlp([3, 6, 2], seed=5)
    boxes = [_box(3, s) for s in range(3)]
    lo, hi = np.stack([b[0] for b in boxes]), np.stack([b[1] for b in boxes])
    both = lp_bounds(net, lo, hi)
    for i, (l, h) in enumerate(boxes):
        one = lp_bounds(net, l, h)
        assert np.allclose(both.lower[i], one.lower[0]) and np.allclose(both.upper[i],
                                                                        one.upper[0])


def _model(seed=0):
    net = random_mlp([3, 8, 8, 2], seed=seed)
    lo, hi = _box(3, seed, 0.8)
    prog = relu_program(net)
    pre, model = layer_bounds(prog, lo, hi)
    c, c0, err = model.objective(prog.output.row(0))
    exact = milp_bounds(net, lo, hi, np.eye(2)[:1])
    return net, lo, hi, model, c, c0, err, exact.lower[0, 0]


def test_dual_bound_stays_valid_when_the_duals_are_perturbed():
    net, lo, hi, model, c, c0, err, exact = _model(1)
    best = model.minimum(c, c0, err)
    A, rlo, rhi, rerr = model.constraint_data()
    y = np.asarray(model.h.getSolution().row_dual)
    rng = np.random.default_rng(0)
    assert best <= exact + TOL
    assert best >= exact - 1.0  # the LP is not vacuous here
    for scale in (1e-8, 1e-4, 1e-2, 1.0, 100.0):
        for _ in range(5):
            yp = y + scale * rng.standard_normal(y.size)
            assert dual_bound(A, rlo, rhi, rerr, model.x_lo, model.x_hi, c, c0, err, yp) \
                <= exact + TOL
    # random duals of any sign and size, and no duals at all
    for yp in (rng.standard_normal(y.size) * 10, np.zeros(y.size), -np.abs(y)):
        assert dual_bound(A, rlo, rhi, rerr, model.x_lo, model.x_hi, c, c0, err, yp) \
            <= exact + TOL


def test_dual_bound_tracks_the_lp_optimum_closely():
    net, lo, hi, model, c, c0, err, exact = _model(2)
    bound = model.minimum(c, c0, err)
    obj = model.h.getInfo().objective_function_value + c0
    assert obj - 1e-7 <= bound <= obj + 1e-9


@pytest.mark.parametrize("iters", [1, 2, 5])
def test_an_early_stopped_lp_still_gives_a_valid_bound(iters):
    net = random_mlp([3, 8, 8, 2], seed=3)
    lo, hi = _box(3, 3, 0.8)
    exact = milp_bounds(net, lo, hi)
    early = lp_bounds(net, lo, hi, options=LPOptions(iteration_limit=iters))
    assert np.all(early.lower <= exact.lower + TOL) and np.all(early.upper >= exact.upper - TOL)


def test_splits_bound_each_branch_and_their_worse_branch_bounds_the_whole_box():
    net = random_mlp([3, 8, 6, 2], seed=6)
    lo, hi = _box(3, 6, 1.0)
    prog = relu_program(net)
    pre, _ = layer_bounds(prog, lo, hi)
    l1, u1 = pre[0]
    i = int(np.flatnonzero((l1 < 0) & (u1 > 0))[0])
    xs = samples(lo, hi, 3000, 2)
    _, zs = prog.forward(xs)
    vals = net(xs)
    whole = lp_bounds(net, lo, hi)
    worst = np.full(2, np.inf)
    for side in (-1, 1):
        mask = np.zeros(8, dtype=np.int8)
        mask[i] = side
        r = lp_bounds(net, lo, hi, splits={"relu0": mask})
        inside = (zs[0][:, i] >= 0) if side > 0 else (zs[0][:, i] <= 0)
        assert np.all(vals[inside] >= r.lower[0]) and np.all(vals[inside] <= r.upper[0])
        assert np.all(r.lower >= whole.lower - TOL)  # a split never loosens the bound
        worst = np.minimum(worst, r.lower[0])
    assert np.all(worst <= milp_bounds(net, lo, hi).lower[0] + TOL)


def test_contradictory_splits_are_proven_empty_by_a_farkas_ray():
    # z1 = x - 0.5 >= 0 and z2 = -x - 0.5 >= 0 cannot both hold; each alone can
    W = np.array([[1.0], [-1.0]])
    nodes = (Node("lin", O.Linear(W, np.array([-0.5, -0.5])), ("x",), (2,)),
             Node("relu", O.Relu(), ("lin",), (2,)),
             Node("out", O.Linear(np.array([[1.0, 1.0]]), np.zeros(1)), ("relu",), (1,)))
    net = Network("x", (1,), nodes, "out")
    lo, hi = np.array([-1.0]), np.array([1.0])
    both = lp_bounds(net, lo, hi, splits={1: np.array([1, 1])})
    assert both.lower[0, 0] == np.inf
    one = lp_bounds(net, lo, hi, splits={1: np.array([1, 0])})
    assert np.isfinite(one.lower[0, 0]) and one.lower[0, 0] <= 0.0 + TOL


def test_lp_all_tightens_intermediate_bounds_soundly():
    net = random_mlp([3, 10, 10, 2], seed=7)
    lo, hi = _box(3, 7, 1.0)
    plain = lp_bounds(net, lo, hi)
    tight = lp_all_bounds(net, lo, hi)
    prog = relu_program(net)
    _, zs = prog.forward(samples(lo, hi, 2000, 3))
    for name, z in zip(prog.pre_nodes, zs):
        t, p = tight.intermediate[name], plain.intermediate[name]
        assert np.all(z >= t.lower[0]) and np.all(z <= t.upper[0])
        assert np.all(t.lower >= p.lower - TOL) and np.all(t.upper <= p.upper + TOL)
    assert np.any(tight.intermediate["lin1"].upper < plain.intermediate["lin1"].upper - 1e-6)


def test_a_milp_stopped_by_its_time_limit_claims_nothing():
    from verifier.bounds.milp import MILPOptions, milp_bounds
    rng = np.random.default_rng(5)
    net = _net_for_time_limit(rng)
    lo, hi = -np.ones(8), np.ones(8)
    res = milp_bounds(net, lo, hi, np.eye(3)[:1], np.zeros(1),
                      options=MILPOptions(time_limit=1e-9))
    assert res.lower[0, 0] == -np.inf and res.upper[0, 0] == np.inf


def _net_for_time_limit(rng):
    from verifier.network import Network, Node
    from verifier.network import ops as O
    nodes, prev, n = [], "x", 8
    for i, w in enumerate([16, 16, 3]):
        nodes.append(Node(f"l{i}", O.Linear(rng.normal(size=(w, n)), rng.normal(size=w)),
                          (prev,), (w,)))
        prev, n = f"l{i}", w
        if i < 2:
            nodes.append(Node(f"r{i}", O.Relu(), (prev,), (w,)))
            prev = f"r{i}"
    return Network("x", (8,), tuple(nodes), prev)


def test_the_lp_time_limit_holds_for_each_solve_not_for_all_of_them():
    # HiGHS counts its limit against the instance's total run time: without a per-solve reset
    # every solve after the first 0.2 s stopped at once, with a weak (still valid) bound
    net = random_mlp([20, 60, 60, 4], seed=5)
    prog = relu_program(net)
    lo, hi = _box(20, 5, 1.0)
    _, model = layer_bounds(prog, lo, hi, options=LPOptions(time_limit=0.2))
    _, free = layer_bounds(prog, lo, hi)
    obj = prog.output.rows(np.eye(4), np.zeros(4))
    rows = [model.objective(obj.row(i)) for i in range(4)]
    for n in range(10_000):  # run past the limit in total, a few ms per solve
        model.minimum(*rows[n % 4])
        if model.h.getRunTime() > 0.5:
            break
    assert model.h.getRunTime() > 0.5
    for c, c0, err in rows:
        assert model.minimum(c, c0, err) == pytest.approx(free.minimum(c, c0, err), abs=1e-7)


def test_range_max_is_the_lp_maximum_over_a_box_cut_by_a_range_never_below_it():
    from scipy.optimize import linprog

    from verifier.bounds.lp_cuts import range_max
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 30))
        f, w = rng.normal(size=n), rng.normal(size=n) * (rng.random(n) < 0.8)
        xl = rng.uniform(-1, 0.5, n)
        xu = xl + rng.uniform(0, 1, n)
        a, b = sorted(rng.uniform(-3, 3, 2))
        exact = linprog(-f, A_ub=np.vstack([w, -w]), b_ub=[b, -a], bounds=list(zip(xl, xu)),
                        method="highs")
        if exact.status == 2:  # the range misses the box: any value is an upper bound
            continue
        got = range_max(f[None], w[None], np.array([a]), np.array([b]), xl, xu)[0]
        assert -exact.fun - 1e-9 <= got <= -exact.fun + 1e-6


@pytest.mark.parametrize("seed", range(4))
def test_hull_cuts_tighten_the_lp_and_stay_sound(seed):
    net = random_mlp([6, 12, 10, 8, 2], seed=seed)
    lo, hi = _box(6, seed, 1.0)
    C = np.array([[1.0, -1.0], [0.5, 2.0]])
    d = np.array([0.1, -0.2])
    exact = milp_bounds(net, lo, hi, C, d)
    lp = lp_bounds(net, lo, hi, C, d)
    cut = lp_bounds(net, lo, hi, C, d, options=LPOptions(cut_rounds=5))
    assert cut.stats["cuts"] > 0
    assert np.all(cut.lower >= lp.lower - TOL) and np.all(cut.upper <= lp.upper + TOL)
    # strictly tighter somewhere (the triangle LP is not the hull over the inputs' box)
    assert np.any(cut.lower > lp.lower + 1e-3) or np.any(cut.upper < lp.upper - 1e-3)
    assert np.all(cut.lower <= exact.lower + TOL) and np.all(cut.upper >= exact.upper - TOL)
    vals = net(samples(lo, hi, 2000, seed)) @ C.T - d
    assert np.all(vals >= cut.lower) and np.all(vals <= cut.upper)


def test_every_hull_cut_holds_at_sampled_points_of_the_network():
    # the rows themselves, not only the bound: p a_n + q'v <= h at every sampled point
    net = random_mlp([5, 9, 8, 2], seed=7)
    lo, hi = _box(5, 7, 1.0)
    prog = relu_program(net)
    _, model = layer_bounds(prog, lo, hi, options=LPOptions(cut_rounds=3))
    for i in range(2):
        c, c0, err = model.objective(prog.output.row(i))
        model.bound(c, c0, err)
        model.bound(-c, -c0, err)
    assert model.cuts > 0
    A, _, rhi, _ = model.constraint_data()
    cuts = A[A.shape[0] - model.cuts:]
    pts = samples(lo, hi, 3000, 3)
    acts, _ = prog.forward(pts)
    X = np.hstack(acts)
    assert np.all(cuts @ X.T <= rhi[A.shape[0] - model.cuts:, None] + 1e-12)


def test_hull_cuts_prove_a_region_empty_that_the_triangle_lp_cannot():
    # an input box and split constraints with no point in common, seen only through the
    # inputs' box: the triangle LP finds a point, the hull rows a Farkas certificate
    net = random_mlp([4, 8, 8, 1], seed=11)
    lo, hi = _box(4, 11, 1.0)
    found = False
    rng = np.random.default_rng(0)
    prog = relu_program(net)
    for _ in range(60):
        splits = {1: rng.choice([-1, 0, 1], size=8, p=[0.3, 0.4, 0.3]),
                  2: rng.choice([-1, 0, 1], size=8, p=[0.3, 0.4, 0.3])}
        base = lp_bounds(net, lo, hi, options=LPOptions(upper=False), splits=splits)
        if not np.isfinite(base.lower[0, 0]):
            continue
        cut = lp_bounds(net, lo, hi, options=LPOptions(upper=False, cut_rounds=5),
                        splits=splits)
        if cut.lower[0, 0] == np.inf:
            found = True
            # and it is empty indeed: no sampled input satisfies the splits
            _, zs = prog.forward(samples(lo, hi, 20000, 1))
            ok = np.ones(len(zs[0]), bool)
            for k, s in splits.items():
                z = zs[k - 1].reshape(len(ok), -1)
                ok &= np.all((s == 0) | (s * z >= 0), axis=1)
            assert not ok.any()
            break
    assert found
