"""The low-rank (Burer-Monteiro) SDP: its bound is sound (below the exact MILP minimum and every
sample) whatever the optimiser reached, its multipliers come out of least squares, and on small
networks it lands close to the full SDP."""
import numpy as np
import pytest
from test_lp_nets import random_mlp, samples

from verifier.bounds.lp import layer_bounds
from verifier.bounds.lp_program import relu_program
from verifier.bounds.milp import milp_bounds
from verifier.bounds.sdp import solve_dual
from verifier.bounds.sdp_certificate import certify
from verifier.bounds.sdp_lowrank import (LowRankOptions, lbfgs, lowrank_bound,
                                         recover_multipliers, sdp_lowrank_bounds)
from verifier.bounds.sdp_operator import LowRankOperator
from verifier.bounds.sdp_program import lift, reduce_program, sdp_data

TOL = 1e-7


def _row(seed, sizes=(3, 6, 5, 2), width=1.0):
    net = random_mlp(list(sizes), seed=seed)
    rng = np.random.default_rng(seed)
    c = rng.uniform(-0.3, 0.3, sizes[0])
    lo, hi = c - width / 2, c + width / 2
    prog = relu_program(net)
    C, d = np.array([[1.0, -1.0]]), np.array([0.0])
    pre, _ = layer_bounds(prog, lo, hi)
    red = reduce_program(prog, pre, prog.output.rows(C, d))
    data = sdp_data(red, lo, hi, red.output.row(0))
    xs = samples(lo, hi, 200, seed)
    acts, _ = prog.forward(xs)
    vals = (net(xs) @ C.T - d)[:, 0]
    start = lift(red, acts)[int(np.argmin(vals))]
    return net, lo, hi, C, d, data, start, vals


def test_lbfgs_minimises_a_convex_quadratic():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((30, 30))
    H = A @ A.T + np.eye(30)
    b = rng.standard_normal(30)
    z = lbfgs(lambda z: (0.5 * z @ H @ z - b @ z, H @ z - b), np.zeros(30), 500)
    assert np.allclose(z, np.linalg.solve(H, b), atol=1e-6)


def test_the_pattern_products_match_dense_ones():
    *_, data, start, _ = _row(0)
    prob = LowRankOperator(data)
    rng = np.random.default_rng(1)
    V = rng.standard_normal((data.n, 3))
    G = V @ V.T
    assert np.allclose(prob.values(V), data.constraint_values(G))
    w = rng.standard_normal(data.m)
    assert np.allclose(prob.mat_times(w, V), data.matrix(w) @ V)
    assert np.allclose(prob.mat_times(w, V, const=False),
                       (data.matrix(np.zeros(data.m)) - data.matrix(w)) @ V)
    assert np.isclose(prob.objective(V), data.C0 @ G.reshape(-1))
    R = rng.standard_normal(V.shape)
    assert np.allclose(prob.sym_values(R, V), data.constraint_values(0.5 * (R @ V.T + V @ R.T)))
    assert prob.lin.size > 0 and prob.quad.size > 0  # both kinds of constraint are present


def test_least_squares_recovers_the_multipliers_of_the_full_sdp_solution():
    *_, data, start, _ = _row(1)
    y, s, status = solve_dual(data)
    M = data.matrix(data.project(y))
    M[0, 0] -= s
    ev, Q = np.linalg.eigh(M)
    V = Q[:, ev < 1e-6 * np.abs(ev).max()]  # the primal lives in M's null space
    prob = LowRankOperator(data)
    yr, sr = recover_multipliers(prob, V, y)
    cert = certify(data, yr, sr)
    assert cert.bound <= certify(data, y, s).bound + 1e-6  # both sound: no better than SDP
    assert cert.bound >= certify(data, y, s).bound - 1e-3


@pytest.mark.parametrize("seed", [0, 1])
def test_lowrank_bound_is_sound_even_when_cut_short(seed):
    net, lo, hi, C, d, data, start, vals = _row(seed)
    exact = milp_bounds(net, lo, hi, C, d).lower[0, 0]
    for limit in (0.5, 5.0):
        cert, stats = lowrank_bound(data, start, LowRankOptions(time_limit=limit))
        assert cert.bound <= exact + TOL and cert.bound <= vals.min() + TOL


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3])
def test_lowrank_lands_within_one_percent_of_the_full_sdp(seed):
    net, lo, hi, C, d, data, start, vals = _row(seed, sizes=(3, 5, 4, 2))
    y, s, _ = solve_dual(data)
    full = certify(data, y, s).bound
    cert, _ = lowrank_bound(data, start, LowRankOptions(time_limit=60.0))
    assert cert.bound <= full + 1e-5
    assert cert.bound >= full - 0.01 * max(abs(full), 0.1)


def test_sdp_lowrank_bounds_entry_point_is_sound():
    net = random_mlp([3, 5, 4, 2], seed=4)
    lo, hi = -0.4 * np.ones(3), 0.4 * np.ones(3)
    r = sdp_lowrank_bounds(net, lo, hi, options=LowRankOptions(time_limit=2.0))
    exact = milp_bounds(net, lo, hi)
    assert np.all(r.lower <= exact.lower + TOL) and np.all(r.upper >= exact.upper - TOL)
    vals = net(samples(lo, hi, 500, 4))
    assert np.all(vals >= r.lower) and np.all(vals <= r.upper)


def test_the_low_rank_run_escalates_and_stops_by_itself_once_the_certificate_stalls():
    # before: the rank only grew once the violation was below 1e-4 and the run only stopped at
    # its time limit (or after al_rounds * max_rank rounds), so a tiny net took a minute a row
    net, lo, hi, C, d, data, start, vals = _row(2, sizes=(3, 5, 4, 2))
    cert, stats = lowrank_bound(data, start, LowRankOptions(time_limit=None))
    assert stats.get("stalled") and stats["rounds"] < 100 and stats["rank"] > 2
    y, s, _ = solve_dual(data)
    full = certify(data, y, s).bound
    assert full - 0.01 * max(abs(full), 0.1) <= cert.bound <= full + 1e-5
