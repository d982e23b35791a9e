"""Every gradient of certified training agrees with central finite differences: the tape's
primitives, the natural forward pass, the IBP bounds and the CROWN-IBP bounds through every
supported op (with respect to each parameter and to the input box), and every loss. The bounds
themselves contain every sampled output."""
import numpy as np
import pytest

from verifier.network import Network, Node
from verifier.network import ops as O
from verifier.train import autodiff as ad
from verifier.train.crown_ibp import crown_margin_lower
from verifier.train.interval_grad import ibp_margin_lower, interval_forward
from verifier.train.losses import (cross_entropy, forward, margin_lower, margin_matrix,
                                   robust_ce)
from verifier.train.params import get_params, param_vars

H = 1e-6
TOL = 2e-6


def check_gradient(f, arrays: dict, seed=0, n_dirs=2):
    """``f(arrays) -> (scalar Var, {key: Var leaf})``; compare the tape's gradient with central
    differences along random directions, one array at a time and all at once."""
    rng = np.random.default_rng(seed)
    out, leaves = f(arrays)
    ad.backward(out)
    grads = {k: np.zeros(np.shape(arrays[k])) if leaves[k].grad is None else leaves[k].grad
             for k in arrays}

    def value(shift):
        return float(f({k: arrays[k] + shift.get(k, 0.0) for k in arrays})[0].value)

    groups = [[k] for k in arrays] + [list(arrays)] * n_dirs
    for keys in groups:
        d = {k: rng.normal(size=np.shape(arrays[k])) for k in keys}
        fd = (value({k: H * v for k, v in d.items()}) - value({k: -H * v for k, v in d.items()}))
        fd /= 2 * H
        an = sum(float(np.vdot(grads[k], d[k])) for k in keys)
        assert abs(fd - an) <= TOL * (1 + abs(fd)), (keys, fd, an)


# --------------------------------------------------------------------------------------------
# tape primitives
# --------------------------------------------------------------------------------------------
PRIMS = {
    "add": lambda a, b: ad.add(a, b), "sub": lambda a, b: ad.sub(a, b),
    "mul": lambda a, b: ad.mul(a, b), "div": lambda a, b: ad.div(a, ad.add(ad.mul(b, b), 1.0)),
    "abs": lambda a, b: ad.absolute(a), "relu": lambda a, b: ad.relu(a) + ad.neg_part(b),
    "where": lambda a, b: ad.where(np.arange(12).reshape(3, 4) % 3 == 0, a, b),
    "matmul": lambda a, b: ad.matmul(a, ad.reshape(b, (4, 3))),
    "logsumexp": lambda a, b: ad.logsumexp(ad.mul(a, b), axis=1),
    "pick": lambda a, b: ad.pick(ad.mul(a, b), np.array([0, 3, 1])),
    "concat": lambda a, b: ad.concat([a, b], axis=1),
    "take": lambda a, b: ad.take(ad.mul(a, b), 1, 1, 3),
    "total": lambda a, b: ad.total(ad.mul(a, b), axis=0),
    "mean": lambda a, b: ad.mean(ad.mul(a, b)),
    "broadcast": lambda a, b: ad.mul(a, ad.reshape(ad.take(b, 0, 0, 1), (1, 4))),
    "elementwise": lambda a, b: ad.elementwise(np.tanh, lambda x, y: 1 - y * y, a),
}


@pytest.mark.parametrize("name", sorted(PRIMS))
def test_primitive_gradients_match_finite_differences(name):
    rng = np.random.default_rng(1)
    arrays = {"a": rng.normal(size=(3, 4)), "b": rng.normal(size=(3, 4))}
    w = rng.normal(size=64)

    def f(arr):
        a, b = ad.leaf(arr["a"]), ad.leaf(arr["b"])
        y = PRIMS[name](a, b)
        return ad.total(ad.mul(y, w[:y.value.size].reshape(y.shape))), {"a": a, "b": b}
    check_gradient(f, arrays)


# --------------------------------------------------------------------------------------------
# small networks exercising every supported op
# --------------------------------------------------------------------------------------------
def _chain(input_shape, layers):
    """A sequential network from ``(op, output shape)`` pairs."""
    nodes, prev = [], "x"
    for i, (op, shape) in enumerate(layers):
        nodes.append(Node(f"n{i}", op, (prev,), shape))
        prev = f"n{i}"
    return Network("x", input_shape, nodes, prev)


def _conv_net(rng, act, pool=None):
    conv = O.Conv(rng.normal(size=(3, 2, 3, 3)) * 0.5, rng.normal(size=3) * 0.1, stride=(1, 1),
                  pads=(1, 1, 1, 1))
    layers = [(conv, (3, 5, 5)), (act, (3, 5, 5))]
    if pool is not None:
        layers.append((pool, pool.output_shape((3, 5, 5))))
    shape = layers[-1][1]
    n = int(np.prod(shape))
    layers += [(O.Reshape((n,)), (n,)), (O.Linear(rng.normal(size=(4, n)) * 0.3,
                                                   rng.normal(size=4) * 0.1), (4,))]
    return _chain((2, 5, 5), layers)


def _mlp_net(rng, act):
    return _chain((6,), [
        (O.Linear(rng.normal(size=(5, 6)), rng.normal(size=5)), (5,)), (act, (5,)),
        (O.Scale(rng.normal(size=5), rng.normal(size=5)), (5,)),  # a BatchNorm at inference
        (O.Linear(rng.normal(size=(4, 5)), rng.normal(size=4)), (4,))])


def _residual_net(rng):
    """x -> fc -> relu -> {fc, identity} -> Sum -> Concat with a Select -> fc."""
    nodes = [
        Node("a", O.Linear(rng.normal(size=(5, 6)), rng.normal(size=5)), ("x",), (5,)),
        Node("ra", O.Relu(), ("a",), (5,)),
        Node("b", O.Linear(rng.normal(size=(5, 5)), rng.normal(size=5)), ("ra",), (5,)),
        Node("s", O.Sum((1.0, -0.5)), ("b", "ra"), (5,)),
        Node("rs", O.LeakyRelu(0.1), ("s",), (5,)),
        Node("sel", O.Select(np.array([4, -1, 0, 2]), fill=0.3), ("rs",), (4,)),
        Node("cat", O.Concat(0), ("rs", "sel"), (9,)),
        Node("out", O.Linear(rng.normal(size=(3, 9)), rng.normal(size=3)), ("cat",), (3,)),
    ]
    return Network("x", (6,), nodes, "out")


def _convt_net(rng):
    ct = O.ConvTranspose(rng.normal(size=(2, 3, 2, 2)) * 0.5, rng.normal(size=3) * 0.1,
                         stride=(2, 2))
    return _chain((2, 3, 3), [
        (ct, (3, 6, 6)), (O.Relu(), (3, 6, 6)),
        (O.AvgPool((2, 2), (2, 2)), (3, 3, 3)),
        (O.Reshape((27,)), (27,)),
        (O.Linear(rng.normal(size=(3, 27)) * 0.3, rng.normal(size=3) * 0.1), (3,))])


def _final_scale_net(rng):
    """Ends in a Scale (the spec cannot be folded into a last Linear)."""
    return _chain((4,), [
        (O.Linear(rng.normal(size=(5, 4)), rng.normal(size=5)), (5,)), (O.Relu(), (5,)),
        (O.Linear(rng.normal(size=(3, 5)), rng.normal(size=3)), (3,)),
        (O.Scale(rng.normal(size=3), rng.normal(size=3)), (3,))])


IBP_NETS = {
    "mlp-relu": lambda r: _mlp_net(r, O.Relu()),
    "mlp-leaky": lambda r: _mlp_net(r, O.LeakyRelu(0.2)),
    "mlp-sigmoid": lambda r: _mlp_net(r, O.Sigmoid()),
    "mlp-tanh": lambda r: _mlp_net(r, O.Tanh()),
    "mlp-softplus": lambda r: _mlp_net(r, O.Softplus()),
    "conv-relu": lambda r: _conv_net(r, O.Relu()),
    "conv-maxpool": lambda r: _conv_net(r, O.Relu(), O.MaxPool((2, 2), (2, 2), (0, 0, 1, 1))),
    "conv-avgpool": lambda r: _conv_net(r, O.Tanh(), O.AvgPool((3, 3), (2, 2), (1, 1, 1, 1))),
    "residual": _residual_net,
    "convtranspose": _convt_net,
    "final-scale": _final_scale_net,
}
CROWN_NETS = ["mlp-relu", "mlp-leaky", "conv-relu", "conv-avgpool-relu", "residual",
              "convtranspose", "final-scale"]


def _net(name, seed=0):
    rng = np.random.default_rng(seed)
    if name == "conv-avgpool-relu":
        return _conv_net(rng, O.Relu(), O.AvgPool((3, 3), (2, 2), (1, 1, 1, 1)))
    return IBP_NETS[name](rng)


def _problem(net, seed=1, B=3, eps=0.3):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(B,) + net.input_shape)
    labels = rng.integers(0, net.n_outputs, size=B)
    return x, labels, eps


def _bound_fn(net, kind, x, labels, eps, wrt_input=True):
    C = margin_matrix(labels, net.n_outputs)
    w = np.random.default_rng(7).normal(size=C.shape[:2])

    def f(arrays):
        pv = {k: ad.leaf(v) for k, v in arrays.items() if isinstance(k, tuple)}
        leaves = dict(pv)
        if wrt_input:
            lo, hi = ad.leaf(arrays["lo"]), ad.leaf(arrays["hi"])
            leaves.update(lo=lo, hi=hi)
        else:
            lo, hi = x - eps, x + eps
        if kind == "ibp":
            lb, _ = ibp_margin_lower(net, pv, lo, hi, C)
        elif kind == "crown":
            lb = crown_margin_lower(net, pv, lo, hi, C)
        else:  # the upper ends of every IBP box, a different path through each rule
            boxes = interval_forward(net, pv, lo, hi)
            lb = ad.total(ad.reshape(boxes[net.output_name].upper, (len(x), -1)), axis=1,
                          keepdims=True)
            return ad.total(ad.mul(lb, w[:, :1])), leaves
        return ad.total(ad.mul(lb, w)), leaves
    arrays = dict(get_params(net))
    if wrt_input:
        arrays.update(lo=x - eps, hi=x + eps)
    return f, arrays


@pytest.mark.parametrize("name", sorted(IBP_NETS))
@pytest.mark.parametrize("kind", ["ibp", "ibp-upper"])
def test_ibp_gradients_match_finite_differences(name, kind):
    net = _net(name)
    x, labels, eps = _problem(net)
    f, arrays = _bound_fn(net, kind, x, labels, eps)
    check_gradient(f, arrays)


@pytest.mark.parametrize("name", CROWN_NETS)
def test_crown_ibp_gradients_match_finite_differences(name):
    net = _net(name)
    x, labels, eps = _problem(net)
    f, arrays = _bound_fn(net, "crown", x, labels, eps)
    check_gradient(f, arrays)


@pytest.mark.parametrize("name", sorted(IBP_NETS) + ["conv-avgpool-relu"])
def test_no_sampled_margin_lies_below_the_training_bounds(name):
    net = _net(name)
    x, labels, eps = _problem(net, B=2)
    C = margin_matrix(labels, net.n_outputs)
    lo, hi = x - eps, x + eps
    bounds = [ibp_margin_lower(net, {}, lo, hi, C)[0].value]
    if name in CROWN_NETS or name == "conv-avgpool-relu":
        bounds.append(crown_margin_lower(net, {}, lo, hi, C).value)
    rng = np.random.default_rng(3)
    for b in range(len(x)):
        pts = rng.uniform(lo[b], hi[b], size=(500,) + lo.shape[1:])
        corners = np.where(rng.random((100,) + lo.shape[1:]) < 0.5, lo[b], hi[b])
        ys = net(np.concatenate([pts, corners])).reshape(600, -1)
        margins = ys @ C[b].T
        for lb in bounds:
            assert (margins >= lb[b] - 1e-9).all()


def test_crown_ibp_is_exact_on_an_affine_network():
    rng = np.random.default_rng(4)
    net = _chain((5,), [(O.Linear(rng.normal(size=(4, 5)), rng.normal(size=4)), (4,)),
                        (O.Linear(rng.normal(size=(3, 4)), rng.normal(size=3)), (3,))])
    x, labels, eps = _problem(net)
    C = margin_matrix(labels, 3)
    lb = crown_margin_lower(net, {}, x - eps, x + eps, C).value
    W = net.nodes[1].op.W @ net.nodes[0].op.W
    b = net.nodes[1].op.W @ net.nodes[0].op.b + net.nodes[1].op.b
    A = C @ W
    exact = np.einsum("bkn,bn->bk", A, x) + C @ b - eps * np.abs(A).sum(-1)
    np.testing.assert_allclose(lb, exact, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------------------------
LOSSES = {
    "natural": lambda net, pv, x, t: cross_entropy(forward(net, pv, x), t),
    "ibp": lambda net, pv, x, t: robust_ce(margin_lower(net, pv, x, t, 0.2)),
    "crown-ibp": lambda net, pv, x, t: robust_ce(margin_lower(net, pv, x, t, 0.2, beta=1.0)),
    "crown-ibp-mixed": lambda net, pv, x, t: robust_ce(margin_lower(net, pv, x, t, 0.2,
                                                                    domain=(-0.9, 0.9),
                                                                    beta=0.3)),
}


@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("name", ["mlp-relu", "conv-relu"])
def test_loss_gradients_match_finite_differences(loss, name):
    net = _net(name)
    x, labels, _ = _problem(net, B=4)

    def f(arrays):
        pv = param_vars(arrays)
        return LOSSES[loss](net, pv, x, labels), pv
    check_gradient(f, get_params(net))


def test_natural_forward_on_the_tape_matches_the_network_and_its_vjp():
    net = _net("conv-maxpool")
    x, labels, _ = _problem(net)
    xv = ad.leaf(x)
    out = forward(net, {}, xv)
    np.testing.assert_array_equal(out.value, net(x))
    g = np.random.default_rng(0).normal(size=out.shape)
    ad.backward(out, g)
    np.testing.assert_allclose(xv.grad, net.vjp(x, g), rtol=1e-12, atol=1e-12)


def test_robust_ce_is_the_cross_entropy_of_the_worst_case_logits():
    rng = np.random.default_rng(0)
    lb = rng.normal(size=(5, 9))
    z = np.concatenate([np.zeros((5, 1)), -lb], axis=1)
    ref = np.mean(np.log(np.exp(z).sum(1)))
    assert float(robust_ce(ad.const(lb)).value) == pytest.approx(ref, rel=1e-12)


def test_margin_matrix_rows_are_label_minus_other():
    C = margin_matrix(np.array([2, 0]), 4)
    assert C.shape == (2, 3, 4)
    y = np.array([1.0, 2.0, 4.0, 8.0])
    np.testing.assert_array_equal(C[0] @ y, [3.0, 2.0, -4.0])
    np.testing.assert_array_equal(C[1] @ y, [-1.0, -3.0, -7.0])


def test_unsupported_ops_fail_with_the_op_and_node_named():
    from verifier.errors import UnsupportedOpError
    net = _chain((3,), [(O.Linear(np.eye(3), np.zeros(3)), (3,)), (O.Softmax(), (3,))])
    x = np.zeros((1, 3))
    with pytest.raises(UnsupportedOpError, match="Softmax.*n1"):
        ibp_margin_lower(net, {}, x, x + 0.1, margin_matrix(np.array([0]), 3))
    net = _mlp_net(np.random.default_rng(0), O.Sigmoid())
    x = np.zeros((1, 6))
    with pytest.raises(UnsupportedOpError, match="Sigmoid"):
        crown_margin_lower(net, {}, x, x + 0.1, margin_matrix(np.array([0]), 4))
    net = _mlp_net(np.random.default_rng(0), O.LeakyRelu(-0.5))
    with pytest.raises(UnsupportedOpError, match="LeakyRelu"):
        ibp_margin_lower(net, {}, x, x + 0.1, margin_matrix(np.array([0]), 4))


# --------------------------------------------------------------------------------------------
# BatchNorm with batch statistics
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["natural", "ibp", "crown-ibp", "pgd"])
@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_batchnorm_training_loss_gradients_match_finite_differences(method, arch):
    from verifier.train import cnn, mlp
    from verifier.train.fit import FitOptions, training_loss
    if arch == "mlp":
        net = mlp([6, 5, 4, 3], batchnorm=True, seed=1)
        x = np.random.default_rng(2).uniform(-1, 1, size=(5, 6))
    else:
        net = cnn((2, 5, 5), [(3, 3, 1, 1)], [4], n_classes=3, batchnorm=True, seed=1)
        x = np.random.default_rng(2).uniform(-1, 1, size=(5, 2, 5, 5))
    labels = np.array([0, 1, 2, 1, 0])
    params = get_params(net)
    rng = np.random.default_rng(5)
    params = {k: v + rng.normal(scale=0.2, size=v.shape) for k, v in params.items()}
    opts = FitOptions()
    xa = x + 0.1 * np.sign(rng.normal(size=x.shape))  # a fixed "attack" point for pgd

    def f(arrays):
        pv = param_vars(arrays)
        if method == "pgd":  # the adversarial term at a fixed point, with batch statistics
            from verifier.train.batchnorm import BatchContext, bn_nodes
            bn = BatchContext(bn_nodes(net), opts.bn_eps)
            forward(net, pv, x, bn)
            return cross_entropy(forward(net, {**pv, **bn.params}, xa), labels), pv
        loss, _ = training_loss(net, pv, x, labels, method, 0.1, 0.3, 0.5, opts)
        return loss, pv
    check_gradient(f, params)


def test_batchnorm_normalises_the_clean_batch():
    from verifier.train import mlp
    from verifier.train.batchnorm import BatchContext
    net = mlp([4, 6, 2], batchnorm=True)
    x = np.random.default_rng(0).normal(size=(50, 4)) * 3 + 1
    bn = BatchContext(["bn1"], 1e-5)
    forward(net, {}, x, bn)
    a, c = bn.params[("bn1", "a")].value, bn.params[("bn1", "c")].value
    z = net.forward_all(x)["fc1"]
    y = z * a + c
    np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(y.var(0), 1.0, rtol=1e-4)
