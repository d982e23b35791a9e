"""The LP/SDP relaxations through the common interface: ``verifier.bounds.compute(method=...)``
bounds are sound (below the exact MILP minimum and every sample), never looser than CROWN,
batched like the other methods; ``verify(method=...)`` proves only from certified bounds and
turns a solver failure into ``error``; the command line offers every relaxation."""
import json

import numpy as np
import pytest
from test_attack import spec_of
from test_lp_nets import random_mlp, samples

import verifier.bounds.lp as lp_module
from verifier import cli
from verifier.bounds import RELAXATION_METHODS, compute
from verifier.bounds.lp import LPOptions
from verifier.bounds.sdp_lowrank import LowRankOptions
from verifier.errors import UnsupportedOpError
from verifier.network import Network, Node
from verifier.network import ops as O
from verifier.verify import METHODS, VerifyOptions, verify

TOL = 1e-7
NO_BAB = VerifyOptions(branch_and_bound=False, final_attack_rounds=1)
FAST = {"sdp-lowrank": LowRankOptions(time_limit=3.0)}


def _problem(seed=0):
    net = random_mlp([3, 7, 6, 2], seed=seed)
    lo = np.array([-0.3, -0.2, 0.0])
    hi = lo + 0.6
    C = np.array([[1.0, -1.0], [0.5, 2.0]])
    d = np.array([0.1, -0.2])
    return net, lo, hi, C, d


def test_verify_and_bounds_know_the_same_relaxations():
    assert set(RELAXATION_METHODS) <= set(METHODS)
    assert RELAXATION_METHODS == ("lp", "lp-all", "milp", "sdp", "sdp-lowrank")


@pytest.mark.parametrize("method", RELAXATION_METHODS)
def test_every_relaxation_is_sound_and_never_looser_than_crown(method):
    net, lo, hi, C, d = _problem()
    res = compute(net, lo, hi, C, d, method=method, options=FAST.get(method))
    exact = compute(net, lo, hi, C, d, method="milp")
    crown = compute(net, lo, hi, C, d, method="crown")
    assert res.lower.shape == res.upper.shape == (1, 2) and res.method == method
    vals = net(samples(lo, hi, 500, 0)) @ C.T - d
    assert np.all(vals >= res.lower - (TOL if method == "milp" else 0.0))
    assert np.all(vals <= res.upper + (TOL if method == "milp" else 0.0))
    if method != "milp":
        assert np.all(res.lower <= exact.lower + TOL) and np.all(res.upper >= exact.upper - TOL)
    assert np.all(res.lower >= crown.lower - 1e-12) and np.all(res.upper <= crown.upper + 1e-12)


def test_milp_says_its_values_are_not_certificates_and_gives_a_sound_bound_beside():
    net, lo, hi, C, d = _problem(1)
    res = compute(net, lo, hi, C, d, method="milp")
    lp = compute(net, lo, hi, C, d, method="lp")
    assert res.stats["certified"] is False
    assert np.allclose(res.stats["certified_lower"], lp.lower, rtol=0, atol=1e-9)
    assert np.all(res.stats["certified_lower"] <= res.lower + TOL)


def test_boxes_with_their_own_rows_are_bounded_one_by_one():
    net, lo, hi, C, d = _problem(2)
    L, H = np.stack([lo, lo + 0.1]), np.stack([hi, hi + 0.1])
    C3, d2 = np.stack([C, -C]), np.stack([d, 2 * d])
    res = compute(net, L, H, C3, d2, method="lp", intermediate=True)
    assert res.lower.shape == (2, 2)
    for b in range(2):
        one = compute(net, L[b], H[b], C3[b], d2[b], method="lp")
        assert np.allclose(res.lower[b], one.lower[0]) and np.allclose(res.upper[b], one.upper[0])
    shared = compute(net, L, H, C, d, method="lp-all", intermediate=True)
    assert shared.lower.shape == (2, 2)
    crown = compute(net, L, H, C, d, method="crown", intermediate=True)
    for name, bd in shared.intermediate.items():  # LP-All only tightens CROWN's bounds
        assert bd.lower.shape == crown.intermediate[name].lower.shape
        assert np.all(bd.lower >= crown.intermediate[name].lower)
        assert np.all(bd.upper <= crown.intermediate[name].upper)


def test_lp_takes_split_constraints_and_the_others_refuse_them():
    net, lo, hi, C, d = _problem(3)
    crown = compute(net, lo, hi, method="crown", intermediate=True)
    z = crown.intermediate["lin0"]
    unstable = np.flatnonzero((z.lower[0] < 0) & (z.upper[0] > 0))
    assert unstable.size
    split = np.zeros(7)
    split[unstable[0]] = 1
    res = compute(net, lo, hi, C, d, method="lp", splits={"relu0": split})
    xs = samples(lo, hi, 4000, 3)
    pre = xs @ net.nodes[0].op.W.T + net.nodes[0].op.b
    inside = xs[pre[:, unstable[0]] >= 0]
    vals = net(inside) @ C.T - d
    assert np.all(vals >= res.lower) and np.all(vals <= res.upper)
    with pytest.raises(ValueError, match="split"):
        compute(net, lo, hi, C, d, method="sdp", splits={"relu0": split})


def test_an_unsupported_op_names_the_op_and_the_method():
    net = Network("x", (2,), (Node("fc", O.Linear(np.eye(2), np.zeros(2)), ("x",), (2,)),
                              Node("s", O.Sigmoid(), ("fc",), (2,))), "s")
    for method in ("milp", "sdp-lowrank"):  # (lp and lp-all take Sigmoid: test_lp_smooth)
        with pytest.raises(UnsupportedOpError) as info:
            compute(net, -np.ones(2), np.ones(2), method=method)
        assert "Sigmoid" in str(info.value) and method in str(info.value)


def test_options_of_another_method_are_refused():
    net, lo, hi, C, d = _problem()
    with pytest.raises(TypeError, match="LPOptions"):
        compute(net, lo, hi, C, d, method="lp", options=LowRankOptions())
    compute(net, lo, hi, C, d, method="lp-all", options=LPOptions(upper=False))


# --------------------------------------------------------------------------------------------
# the pipeline
# --------------------------------------------------------------------------------------------
def _threshold_spec(seed, where):
    """A property ``y0 - y1 >= t`` (unsafe: ``y0 - y1 <= t``) with t placed ``where`` between
    the LP bound and the exact minimum of y0 - y1 (0: at the LP bound, 1: the minimum)."""
    net, lo, hi, _, _ = _problem(seed)
    C = np.array([[1.0, -1.0]])
    lp = compute(net, lo, hi, C, np.zeros(1), method="lp").lower[0, 0]
    exact = compute(net, lo, hi, C, np.zeros(1), method="milp").lower[0, 0]
    assert exact - lp > 1e-3, "the example needs a gap between LP and the exact minimum"
    t = lp + where * (exact - lp)
    return net, spec_of(lo, hi, C, [t])


@pytest.mark.parametrize("method", ["lp", "lp-all", "sdp", "sdp-lowrank"])
def test_a_forced_relaxation_proves_what_it_bounds(method):
    net, spec = _threshold_spec(0, -1.0)  # t below the LP bound: every relaxation proves it
    res = verify(net, spec, timeout=60, method=method, options=NO_BAB)
    assert res.status == "unsat" and res.method == method and res.margin > 0


def test_milp_decides_from_its_certified_bound_not_from_the_solver_value():
    net, spec = _threshold_spec(0, 0.5)  # exact minimum above t, LP bound below it
    res = verify(net, spec, timeout=60, method="milp", options=NO_BAB)
    assert res.status == "unknown" and res.margin < 0


def test_a_failing_solver_is_an_error_never_unsat(monkeypatch):
    net, spec = _threshold_spec(0, -1.0)

    def broken(*args, **kwargs):
        raise RuntimeError("the LP solver broke")

    monkeypatch.setattr(lp_module, "lp_bounds", broken)
    res = verify(net, spec, timeout=60, method="lp", options=NO_BAB)
    assert res.status == "error" and "the LP solver broke" in res.message


def test_the_command_line_verifies_and_bounds_with_a_relaxation(capsys):
    from test_cli import MODEL as model
    from test_cli import ROBUST
    assert cli.main(["verify", model, ROBUST, "--method", "lp", "--timeout", "30"]) == 0
    assert capsys.readouterr().out.split()[0] == "unsat"
    assert cli.main(["bounds", model, ROBUST, "--method", "lp-all", "--json"]) == 0
    lp = json.loads(capsys.readouterr().out)
    assert cli.main(["bounds", model, ROBUST, "--method", "crown", "--json"]) == 0
    crown = json.loads(capsys.readouterr().out)
    assert lp["method"] == "lp-all"
    for a, b in zip(lp["disjuncts"], crown["disjuncts"]):
        for ra, rb in zip(a["rows"], b["rows"]):
            assert ra["lower"] >= rb["lower"] - 1e-12 and ra["upper"] <= rb["upper"] + 1e-12
