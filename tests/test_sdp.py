"""The full SDP relaxation and its certificate: every constraint holds at true points, the
certified bound is sound for any multipliers, below the exact MILP minimum, and with triangle
cuts never looser than the LP."""
import numpy as np
import pytest
from test_lp_nets import random_mlp, samples

from verifier.bounds import compute
from verifier.bounds.lp import layer_bounds, lp_bounds
from verifier.bounds.lp_program import relu_program
from verifier.bounds.milp import milp_bounds
from verifier.bounds.sdp import SDPOptions, sdp_bounds, solve_dual
from verifier.bounds.sdp_certificate import _certify_psd, certify
from verifier.bounds.sdp_program import lift, reduce_program, sdp_data

TOL = 1e-7


def _setup(seed, sizes=(3, 6, 5, 2), width=1.0, triangle=True):
    net = random_mlp(list(sizes), seed=seed)
    rng = np.random.default_rng(seed)
    c = rng.uniform(-0.3, 0.3, sizes[0])
    lo, hi = c - width / 2, c + width / 2
    prog = relu_program(net)
    C, d = np.array([[1.0, -1.0]]), np.array([0.05])
    obj = prog.output.rows(C, d)
    pre, _ = layer_bounds(prog, lo, hi)
    red = reduce_program(prog, pre, obj)
    data = sdp_data(red, lo, hi, red.output.row(0), triangle)
    return net, lo, hi, C, d, prog, red, data


@pytest.mark.parametrize("seed", [0, 1])
def test_every_constraint_holds_at_true_points_and_the_objective_matches(seed):
    net, lo, hi, C, d, prog, red, data = _setup(seed)
    xs = samples(lo, hi, 300, seed)
    acts, _ = prog.forward(xs)
    v = lift(red, acts)
    for vi, yi in zip(v, net(xs) @ C.T - d):
        g = data.constraint_values(np.outer(vi, vi))
        assert np.all(g[~data.equality] >= -data.eps[~data.equality] - 1e-12)
        assert np.all(np.abs(g[data.equality]) <= data.eps[data.equality] + 1e-12)
        assert abs(vi @ data.C0.reshape(data.n, data.n) @ vi - yi[0]) <= 1e-12


def test_the_lagrangian_lies_below_the_objective_at_true_points_for_any_multipliers():
    net, lo, hi, C, d, prog, red, data = _setup(2)
    xs = samples(lo, hi, 200, 2)
    acts, _ = prog.forward(xs)
    v = lift(red, acts)
    obj = (net(xs) @ C.T - d)[:, 0]
    rng = np.random.default_rng(0)
    for _ in range(5):
        y = data.project(rng.standard_normal(data.m) * 3)
        M = data.matrix(y)
        assert np.all(np.einsum("bi,ij,bj->b", v, M, v) <= obj + 1e-9)


def test_cholesky_confirmed_lambda_min_is_below_the_true_one():
    rng = np.random.default_rng(0)
    for n in (5, 40, 120):
        A = rng.standard_normal((n, n))
        M = A + A.T
        true = np.linalg.eigvalsh(M)[0]
        cert = _certify_psd(M, true, float(np.abs(M).max()))
        assert cert <= true and cert >= true - 1e-6 * np.abs(M).max()


@pytest.mark.parametrize("seed", [0, 3])
def test_the_certificate_is_sound_for_solver_perturbed_and_zero_multipliers(seed):
    net, lo, hi, C, d, prog, red, data = _setup(seed)
    exact = milp_bounds(net, lo, hi, C, d).lower[0, 0]
    y, s, status = solve_dual(data)
    assert status.startswith("optimal")
    best = certify(data, y, s)
    assert best.bound <= exact + TOL
    assert best.bound >= s - 1e-5 * (1 + abs(s))  # the certificate loses little
    rng = np.random.default_rng(seed)
    for scale in (1e-6, 1e-3, 1e-1, 10.0):
        yp = y + scale * rng.standard_normal(y.size) * (1 + np.abs(y))
        c = certify(data, yp, s + scale)
        assert c.bound <= exact + TOL and c.bound <= best.bound + 1e-9
    assert certify(data, np.zeros(data.m)).bound <= exact + TOL


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sdp_bounds_are_sound_and_with_cuts_never_looser_than_the_lp(seed):
    net = random_mlp([3, 6, 5, 2], seed=seed + 10)
    rng = np.random.default_rng(seed)
    c = rng.uniform(-0.3, 0.3, 3)
    lo, hi = c - 0.5, c + 0.5
    inter = compute(net, lo[None], hi[None], method="crown", intermediate=True).intermediate
    exact = milp_bounds(net, lo, hi, intermediate=inter)
    lp = lp_bounds(net, lo, hi, intermediate=inter)
    sdp = sdp_bounds(net, lo, hi, intermediate=inter)
    vals = net(samples(lo, hi, 500, seed))
    assert np.all(sdp.lower <= exact.lower + TOL) and np.all(sdp.upper >= exact.upper - TOL)
    assert np.all(vals >= sdp.lower) and np.all(vals <= sdp.upper)
    assert np.all(sdp.lower >= lp.lower - 1e-6) and np.all(sdp.upper <= lp.upper + 1e-6)
    no_cuts = sdp_bounds(net, lo, hi, intermediate=inter,
                         options=SDPOptions(triangle=False, upper=False))
    assert np.all(no_cuts.lower <= exact.lower + TOL)
    assert np.all(no_cuts.lower <= sdp.lower + 1e-6)


@pytest.mark.filterwarnings("ignore:Solution may be inaccurate")
def test_a_full_sdp_stopped_by_its_time_limit_still_gives_a_sound_bound():
    net = random_mlp([3, 7, 6, 2], seed=0)
    lo, hi = np.array([-0.3, -0.2, 0.0]), np.array([0.3, 0.4, 0.6])
    r = sdp_bounds(net, lo, hi, options=SDPOptions(time_limit=1e-3))
    assert set(r.stats["statuses"]) == {"user_limit"}
    exact = milp_bounds(net, lo, hi)
    assert np.all(r.lower <= exact.lower + TOL) and np.all(r.upper >= exact.upper - TOL)
