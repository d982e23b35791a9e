"""The ReluProgram form (verifier.bounds.lp_program) that the LP, MILP and SDP methods share,
and the small random networks the other relaxation tests import from here."""
import numpy as np
import pytest

from verifier.bounds.lp_program import interval_pass, relu_program
from verifier.errors import UnsupportedOpError
from verifier.network import Network, Node
from verifier.network import ops as O


def random_mlp(sizes, seed=0, scale=1.0, bias=0.3) -> Network:
    """A Linear/Relu network with layer widths ``sizes`` (input first) and Gaussian weights."""
    rng = np.random.default_rng(seed)
    nodes, prev = [], "x"
    for i in range(len(sizes) - 1):
        W = rng.normal(size=(sizes[i + 1], sizes[i])) * scale / np.sqrt(sizes[i])
        b = rng.normal(size=sizes[i + 1]) * bias
        nodes.append(Node(f"lin{i}", O.Linear(W, b), (prev,), (sizes[i + 1],)))
        prev = f"lin{i}"
        if i < len(sizes) - 2:
            nodes.append(Node(f"relu{i}", O.Relu(), (prev,), (sizes[i + 1],)))
            prev = f"relu{i}"
    return Network("x", (sizes[0],), tuple(nodes), prev)


def mixed_net(seed=0) -> Network:
    """Reshape, Conv, Scale, Relu, a residual Sum, Select and Linear: the affine ops the
    relaxations compose, with rounding to account for."""
    rng = np.random.default_rng(seed)
    nodes = [
        Node("img", O.Reshape((1, 3, 3)), ("x",), (1, 3, 3)),
        Node("conv", O.Conv(rng.normal(size=(2, 1, 2, 2)) * 0.7, rng.normal(size=2) * 0.2),
             ("img",), (2, 2, 2)),
        Node("sc", O.Scale(rng.uniform(0.5, 1.5, size=(2, 1, 1)), 0.1 * np.ones((2, 1, 1))),
             ("conv",), (2, 2, 2)),
        Node("r1", O.Relu(), ("sc",), (2, 2, 2)),
        Node("flat", O.Reshape((8,)), ("r1",), (8,)),
        Node("lin", O.Linear(rng.normal(size=(8, 8)) * 0.4, rng.normal(size=8) * 0.2),
             ("flat",), (8,)),
        Node("res", O.Sum((1.0, 0.5)), ("lin", "flat"), (8,)),
        Node("r2", O.Relu(), ("res",), (8,)),
        Node("pick", O.Select(np.array([7, 0, 3, 5, 1, 2])), ("r2",), (6,)),
        Node("out", O.Linear(rng.normal(size=(3, 6)) * 0.5, rng.normal(size=3) * 0.1),
             ("pick",), (3,)),
    ]
    return Network("x", (9,), tuple(nodes), "out")


def samples(lo, hi, count, seed=0):
    """Uniform points of the box plus its corners along random directions."""
    rng = np.random.default_rng(seed)
    pts = rng.uniform(lo, hi, size=(count, lo.size))
    corners = np.where(rng.random((count // 4, lo.size)) < 0.5, lo, hi)
    return np.vstack([pts, corners])


@pytest.mark.parametrize("make", [lambda: random_mlp([4, 7, 6, 3], seed=1), mixed_net])
def test_program_computes_what_the_network_computes(make):
    net = make()
    prog = relu_program(net)
    x = np.random.default_rng(2).uniform(-1, 1, size=(50, net.n_inputs))
    assert np.allclose(prog(x), net(x).reshape(50, -1), atol=1e-12)


def test_plain_mlp_composes_exactly_and_mixed_net_carries_rounding_bounds():
    prog = relu_program(random_mlp([4, 7, 6, 3]))
    assert all(not m.err and m.bias_err is None for m in prog.layers)
    mixed = relu_program(mixed_net())
    assert mixed.layers[0].err  # Conv then Scale: composed in float, error bound carried
    assert all(np.all(E >= 0) for m in mixed.layers for E in m.err.values())


@pytest.mark.parametrize("make", [lambda: random_mlp([4, 7, 6, 3], seed=3), mixed_net])
def test_no_sampled_pre_activation_lies_outside_the_interval_pass(make):
    net = make()
    prog = relu_program(net)
    lo, hi = -np.ones(net.n_inputs), np.ones(net.n_inputs)
    pre = interval_pass(prog, lo, hi)
    _, zs = prog.forward(samples(lo, hi, 400))
    for (l, u), z in zip(pre, zs):
        assert np.all(z >= l) and np.all(z <= u)


def test_unsupported_op_is_named_with_the_method():
    nodes = (Node("lin", O.Linear(np.eye(2), np.zeros(2)), ("x",), (2,)),
             Node("sig", O.Sigmoid(), ("lin",), (2,)))
    net = Network("x", (2,), nodes, "sig")
    with pytest.raises(UnsupportedOpError, match="sdp.*Sigmoid.*'sig'"):
        relu_program(net, "sdp")
