"""Sigmoid and tanh layers in the LP relaxation (``lp``, ``lp-all``): the program computes
what the network computes, the bounds hold on sampled points, LP-All only tightens the
intermediate bounds, the LP is never looser than CROWN on the same intermediate bounds, and
MILP / SDP still refuse them."""
import numpy as np
import pytest
from test_lp_nets import samples

from verifier.bounds import compute
from verifier.bounds.lp import lp_all_bounds, lp_bounds
from verifier.bounds.lp_program import interval_pass, relu_program
from verifier.errors import UnsupportedOpError
from verifier.network import Network, Node
from verifier.network import ops as O

ACTS = {"sigmoid": O.Sigmoid, "tanh": O.Tanh, "relu": O.Relu}


def smooth_mlp(sizes, acts, seed=0, scale=2.0) -> Network:
    """Linear layers of widths ``sizes`` with the activations ``acts`` (one per hidden layer)
    between them; weights large enough that the activations bend over the boxes used."""
    rng = np.random.default_rng(seed)
    nodes, prev = [], "x"
    for i in range(len(sizes) - 1):
        W = rng.normal(size=(sizes[i + 1], sizes[i])) * scale / np.sqrt(sizes[i])
        nodes.append(Node(f"lin{i}", O.Linear(W, rng.normal(size=sizes[i + 1]) * 0.5),
                          (prev,), (sizes[i + 1],)))
        prev = f"lin{i}"
        if i < len(sizes) - 2:
            nodes.append(Node(f"act{i}", ACTS[acts[i]](), (prev,), (sizes[i + 1],)))
            prev = f"act{i}"
    return Network("x", (sizes[0],), tuple(nodes), prev)


CASES = [("sigmoid", "sigmoid"), ("tanh", "tanh"), ("sigmoid", "relu"), ("relu", "tanh")]


@pytest.mark.parametrize("acts", CASES)
def test_program_and_interval_pass_match_the_network(acts):
    net = smooth_mlp([4, 8, 6, 3], acts, seed=1)
    prog = relu_program(net, "lp")
    assert prog.kinds == acts
    x = samples(-np.ones(4), np.ones(4), 400, 2)
    assert np.allclose(prog(x), net(x).reshape(len(x), -1), atol=1e-12)
    pre = interval_pass(prog, -np.ones(4), np.ones(4))
    for (l, u), z in zip(pre, prog.forward(x)[1]):
        assert np.all(z >= l) and np.all(z <= u)


@pytest.mark.parametrize("acts", CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lp_and_lp_all_bounds_hold_on_samples_and_beat_crown(acts, seed):
    net = smooth_mlp([3, 10, 8, 2], acts, seed=seed)
    rng = np.random.default_rng(seed)
    c = rng.uniform(-0.5, 0.5, 3)
    lo, hi = c - 0.4, c + 0.4
    C = np.array([[1.0, -1.0], [0.5, 2.0]])
    d = np.array([0.1, -0.2])
    crown = compute(net, lo[None], hi[None], C[None], d[None], method="crown",
                    intermediate=True)
    lp = lp_bounds(net, lo, hi, C, d, intermediate=crown.intermediate)
    lpa = lp_all_bounds(net, lo, hi, C, d, intermediate=crown.intermediate)
    vals = net(samples(lo, hi, 3000, seed)) @ C.T - d
    for r in (lp, lpa):
        assert np.all(np.isfinite(r.lower)) and np.all(np.isfinite(r.upper))
        assert np.all(vals >= r.lower) and np.all(vals <= r.upper)
    # the LP holds both of CROWN's lines per neuron at the same bounds: never looser
    assert np.all(lp.lower >= crown.lower - 1e-9) and np.all(lp.upper <= crown.upper + 1e-9)
    # LP-All only tightens the pre-activation bounds (the final bound may move either way:
    # the sigmoid / tanh lines on a narrower interval are not pointwise tighter)
    for name, bd in lp.intermediate.items():
        t = lpa.intermediate[name]
        assert np.all(t.lower >= bd.lower) and np.all(t.upper <= bd.upper)
    # and the sampled range is not far inside (the relaxation is not vacuous)
    assert np.all(lp.upper - lp.lower <= 4 * (vals.max(0) - vals.min(0)) + 0.5)


def test_a_box_of_one_point_gives_the_value_there():
    net = smooth_mlp([3, 5, 4, 2], ("sigmoid", "tanh"), seed=3)
    x = np.array([0.1, -0.2, 0.3])
    r = lp_bounds(net, x, x, intermediate={})
    y = net(x[None]).reshape(-1)
    assert np.all(r.lower[0] <= y) and np.all(y <= r.upper[0])
    assert np.all(r.upper[0] - r.lower[0] < 1e-6)


@pytest.mark.parametrize("method", ["milp", "sdp", "sdp-lowrank"])
def test_milp_and_sdp_still_refuse_smooth_layers(method):
    net = smooth_mlp([3, 4, 2], ("tanh",))
    with pytest.raises(UnsupportedOpError, match=f"{method}.*Tanh"):
        relu_program(net, method)


@pytest.mark.parametrize("method", ["lp", "lp-all"])
def test_compute_dispatches_smooth_networks_to_the_lp(method):
    net = smooth_mlp([3, 6, 2], ("sigmoid",), seed=4)
    lo, hi = -0.3 * np.ones(3), 0.3 * np.ones(3)
    r = compute(net, lo[None], hi[None], method=method)
    vals = net(samples(lo, hi, 1000, 5))
    assert np.all(vals >= r.lower) and np.all(vals <= r.upper)
