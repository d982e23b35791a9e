"""Normalisation passes: each fusion happens where it is exact, is refused where it is not, and
the normalised network computes the same function (also on random chains, by hypothesis)."""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from verifier.network.graph import Network, Node
from verifier.network.normalize import along, normalize_network
from verifier.network.ops import Conv, Linear, Relu, Reshape, Scale, Select, Sum


def build(input_shape, layers, output=None):
    shapes = {"x": tuple(input_shape)}
    nodes = []
    for name, op, inputs in layers:
        y = op.forward(*(np.zeros((1,) + shapes[i]) for i in inputs))
        shapes[name] = y.shape[1:]
        nodes.append(Node(name, op, tuple(inputs), y.shape[1:]))
    return Network("x", tuple(input_shape), nodes, output or layers[-1][0])


def same_function(a, b, rng, lo=-2, hi=2):
    x = rng.uniform(lo, hi, size=(6,) + a.input_shape)
    np.testing.assert_allclose(b(x), a(x), rtol=1e-12, atol=1e-12)


def kinds(net):
    return [type(n.op).__name__ for n in net.nodes]


RNG = np.random.default_rng(3)


def r(*s):
    return RNG.normal(size=s)


def test_input_normalisation_and_matmul_add_fold_into_one_linear():
    net = build((2, 3), [("s", Scale(r(1, 3), r(2, 3)), ["x"]), ("f", Reshape((6,)), ["s"]),
                         ("m", Linear(r(4, 6), np.zeros(4)), ["f"]),
                         ("b", Scale(np.ones(1), r(4)), ["m"]), ("y", Relu(), ["b"])])
    out = normalize_network(net)
    assert kinds(out) == ["Reshape", "Linear", "Relu"]
    same_function(net, out, RNG)


def test_batchnorm_after_conv_folds_and_before_an_unpadded_conv_folds():
    after = build((2, 5, 5), [("c", Conv(r(3, 2, 3, 3), r(3), pads=(1, 1, 1, 1)), ["x"]),
                              ("bn", Scale(r(3, 1, 1), r(3, 1, 1)), ["c"])])
    before = build((4, 5, 5), [("bn", Scale(r(4, 1, 1), r(4, 1, 1)), ["x"]),
                               ("c", Conv(r(6, 2, 2, 2), r(6), groups=2), ["bn"])])
    for net in (after, before):
        out = normalize_network(net)
        assert kinds(out) == ["Conv"]
        same_function(net, out, RNG)


def test_shift_before_a_padded_conv_is_kept_but_a_pure_scaling_folds():
    shifted = build((2, 4, 4), [("bn", Scale(r(2, 1, 1), r(2, 1, 1)), ["x"]),
                                ("c", Conv(r(3, 2, 3, 3), r(3), pads=(1, 1, 1, 1)), ["bn"])])
    scaled = build((2, 4, 4), [("bn", Scale(r(2, 1, 1), np.zeros(1)), ["x"]),
                               ("c", Conv(r(3, 2, 3, 3), r(3), pads=(1, 1, 1, 1)), ["bn"])])
    assert kinds(normalize_network(shifted)) == ["Scale", "Conv"]
    assert kinds(normalize_network(scaled)) == ["Conv"]
    for net in (shifted, scaled):
        same_function(net, normalize_network(net), RNG)


def test_a_scale_that_varies_across_the_mixed_axis_is_not_folded():
    net = build((4,), [("m", Linear(r(3, 4), r(3)), ["x"]), ("f", Reshape((3, 1)), ["m"]),
                       ("s", Scale(r(3, 1), r(1)), ["f"]), ("y", Relu(), ["s"])])
    out = normalize_network(net)
    same_function(net, out, RNG)
    conv = build((2, 3, 3), [("c", Conv(r(2, 2, 2, 2), r(2)), ["x"]),
                             ("s", Scale(r(1, 2, 2), np.zeros(1)), ["c"])])
    assert kinds(normalize_network(conv)) == ["Conv", "Scale"]


def test_a_value_with_two_consumers_is_not_fused_away():
    net = build((3,), [("m", Linear(r(3, 3), r(3)), ["x"]), ("s", Scale(r(3), r(3)), ["m"]),
                       ("res", Sum((1.0, 1.0)), ["s", "m"])])
    out = normalize_network(net)
    assert kinds(out) == ["Linear", "Scale", "Sum"]
    same_function(net, out, RNG)


def test_select_and_reshape_chains_become_one_select():
    perm = np.arange(12).reshape(3, 4).T
    pad = np.full((5, 4), -1)
    pad[1:4] = np.arange(12).reshape(3, 4)
    net = build((3, 4), [("t", Select(perm), ["x"]), ("f", Reshape((12,)), ["t"]),
                         ("u", Reshape((3, 4)), ["f"]), ("p", Select(pad, 0.0), ["u"]),
                         ("g", Select(np.array([0, 5, 19, 7])), ["p"])])
    out = normalize_network(net)
    assert kinds(out) == ["Select"]
    same_function(net, out, RNG)


def test_identities_disappear():
    net = build((2, 3), [("a", Reshape((2, 3)), ["x"]), ("b", Scale(np.ones(1), np.zeros(1)), ["a"]),
                         ("c", Select(np.arange(6).reshape(2, 3)), ["b"]), ("y", Relu(), ["c"])])
    out = normalize_network(net)
    assert kinds(out) == ["Relu"] and out.nodes[0].inputs == ("x",)
    same_function(net, out, RNG)


def test_along():
    assert np.array_equal(along(np.array([[1.0], [2.0]]), (2, 3), 0), [1.0, 2.0])
    assert along(np.array([[1.0, 2.0, 3.0]]), (2, 3), 0) is None
    assert np.array_equal(along(np.array(5.0), (2, 3), -1), [5.0, 5.0, 5.0])


LAYERS = st.sampled_from(["linear", "scale", "scale_bcast", "relu", "reshape", "perm", "pick"])


@given(st.lists(LAYERS, min_size=1, max_size=7), st.integers(0, 2 ** 31 - 1))
def test_normalisation_keeps_the_function_of_random_chains(layers, seed):
    rng = np.random.default_rng(seed)
    shape = (2, 3)
    rows, prev = [], "x"
    for k, kind in enumerate(layers):
        n = int(np.prod(shape))
        if kind == "linear":
            op, new = Linear(rng.normal(size=(shape[-1], shape[-1])), rng.normal(size=shape[-1])), shape
        elif kind == "scale":
            op, new = Scale(rng.normal(size=shape), rng.normal(size=shape)), shape
        elif kind == "scale_bcast":
            op, new = Scale(rng.normal(size=(1,) * (len(shape) - 1) + (shape[-1],)),
                            rng.normal(size=1)), shape
        elif kind == "relu":
            op, new = Relu(), shape
        elif kind == "reshape":
            new = (n,) if len(shape) == 2 else (2, n // 2)
            op = Reshape(new)
        elif kind == "perm":
            op, new = Select(rng.permutation(n).reshape(shape)), shape
        else:
            op, new = Select(rng.integers(-1, n, size=shape), float(rng.normal())), shape
        rows.append((f"v{k}", op, [prev]))
        prev, shape = f"v{k}", new
    net = build((2, 3), rows)
    out = normalize_network(net)
    assert len(out.nodes) <= len(net.nodes)
    x = rng.uniform(-2, 2, size=(4, 2, 3))
    np.testing.assert_allclose(out(x), net(x), rtol=1e-9, atol=1e-9)
