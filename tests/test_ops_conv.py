"""The convolution-family ops: forward agrees with onnxruntime (float32) and with ONNX's float64
reference evaluator; every vjp and param_vjp agrees with central finite differences."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from verifier.network.ops import AvgPool, Conv, ConvTranspose, MaxPool

RNG = np.random.default_rng(0)

# (op, ONNX node type, attributes, initializers) for a range of configurations
CONV_CASES = [
    dict(C=3, M=4, k=(3, 3), stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1),
    dict(C=2, M=3, k=(3, 2), stride=(2, 1), pads=(1, 0, 2, 1), dilation=(1, 1), groups=1),
    dict(C=4, M=6, k=(2, 3), stride=(1, 2), pads=(1, 1, 1, 1), dilation=(2, 1), groups=2),
    dict(C=4, M=4, k=(3, 3), stride=(2, 2), pads=(1, 1, 1, 1), dilation=(1, 1), groups=4),
    dict(C=1, M=2, k=(1, 1), stride=(3, 2), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1),
]
CONVT_CASES = [
    dict(C=3, M=2, k=(3, 3), stride=(1, 1), pads=(0, 0, 0, 0), out_pad=(0, 0), dilation=(1, 1),
         groups=1),
    dict(C=2, M=3, k=(3, 2), stride=(2, 2), pads=(1, 0, 1, 1), out_pad=(1, 0), dilation=(1, 1),
         groups=1),
    dict(C=4, M=6, k=(2, 3), stride=(2, 3), pads=(0, 1, 1, 0), out_pad=(1, 2), dilation=(2, 1),
         groups=2),
]
POOL_CASES = [
    dict(k=(2, 2), stride=(2, 2), pads=(0, 0, 0, 0), dilation=(1, 1), cip=False),
    dict(k=(3, 3), stride=(1, 1), pads=(1, 1, 1, 1), dilation=(1, 1), cip=False),
    dict(k=(3, 2), stride=(2, 1), pads=(1, 0, 2, 1), dilation=(1, 1), cip=True),
    dict(k=(2, 3), stride=(1, 2), pads=(0, 1, 1, 1), dilation=(2, 1), cip=False),
]


def run_onnx(node, x, inits, opset=13, reference=True):
    """Run one ONNX node on x in float32 with onnxruntime and in float64 with the reference
    evaluator (``reference=False``: its result is None; onnx's reference ConvTranspose mishandles
    groups)."""
    out = []
    for dtype, np_dtype in ((TensorProto.FLOAT, np.float32), (TensorProto.DOUBLE, np.float64)):
        graph = helper.make_graph(
            [node], "g", [helper.make_tensor_value_info("x", dtype, list(x.shape))],
            [helper.make_tensor_value_info("y", dtype, None)],
            initializer=[onnx.numpy_helper.from_array(v.astype(np_dtype), k)
                         for k, v in inits.items()])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        if np_dtype == np.float32:
            sess = ort.InferenceSession(model.SerializeToString(),
                                        providers=["CPUExecutionProvider"])
            out.append(sess.run(None, {"x": x.astype(np.float32)})[0].astype(np.float64))
        elif reference:
            out.append(ReferenceEvaluator(model).run(None, {"x": x})[0])
        else:
            out.append(None)
    return out


def f32(a):
    """Round to float32 so that both sides see the same numbers."""
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def conv_op(c):
    W = f32(RNG.normal(size=(c["M"], c["C"] // c["groups"]) + c["k"]))
    b = f32(RNG.normal(size=c["M"]))
    return Conv(W, b, c["stride"], c["pads"], c["dilation"], c["groups"])


def convt_op(c):
    W = f32(RNG.normal(size=(c["C"], c["M"] // c["groups"]) + c["k"]))
    b = f32(RNG.normal(size=c["M"]))
    return ConvTranspose(W, b, c["stride"], c["pads"], c["out_pad"], c["dilation"], c["groups"])


def assert_agrees(y, refs):
    y32, y64 = refs
    assert y.shape == y32.shape
    if y64 is not None:
        np.testing.assert_allclose(y, y64, rtol=1e-12, atol=1e-12)
    assert np.max(np.abs(y - y32) / np.maximum(1.0, np.abs(y32))) < 1e-5


@pytest.mark.parametrize("c", CONV_CASES)
def test_conv_forward_matches_onnx(c):
    op = conv_op(c)
    x = f32(RNG.normal(size=(2, c["C"], 7, 8)))
    node = helper.make_node("Conv", ["x", "W", "b"], ["y"], kernel_shape=list(c["k"]),
                            strides=list(c["stride"]), pads=list(c["pads"]),
                            dilations=list(c["dilation"]), group=c["groups"])
    y = op.forward(x)
    assert y.shape[1:] == op.output_shape(x.shape[1:])
    assert_agrees(y, run_onnx(node, x, {"W": op.W, "b": op.b}))


@pytest.mark.parametrize("c", CONVT_CASES)
def test_conv_transpose_forward_matches_onnx(c):
    op = convt_op(c)
    x = f32(RNG.normal(size=(2, c["C"], 4, 5)))
    node = helper.make_node("ConvTranspose", ["x", "W", "b"], ["y"], kernel_shape=list(c["k"]),
                            strides=list(c["stride"]), pads=list(c["pads"]),
                            output_padding=list(c["out_pad"]), dilations=list(c["dilation"]),
                            group=c["groups"])
    y = op.forward(x)
    assert y.shape[1:] == op.output_shape(x.shape[1:])
    assert_agrees(y, run_onnx(node, x, {"W": op.W, "b": op.b}, reference=c["groups"] == 1))


@pytest.mark.parametrize("c", [c for c in POOL_CASES if c["dilation"] == (1, 1)])
def test_avgpool_forward_matches_onnx(c):
    op = AvgPool(c["k"], c["stride"], c["pads"], c["cip"])
    x = f32(RNG.normal(size=(2, 3, 7, 6)))
    node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=list(c["k"]),
                            strides=list(c["stride"]), pads=list(c["pads"]),
                            count_include_pad=int(c["cip"]))
    assert_agrees(op.forward(x), run_onnx(node, x, {}))


@pytest.mark.parametrize("c", POOL_CASES)
def test_maxpool_forward_matches_onnx(c):
    op = MaxPool(c["k"], c["stride"], c["pads"], c["dilation"])
    x = f32(RNG.normal(size=(2, 3, 7, 6)))
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=list(c["k"]),
                            strides=list(c["stride"]), pads=list(c["pads"]),
                            dilations=list(c["dilation"]))
    assert_agrees(op.forward(x), run_onnx(node, x, {}))


# -- finite differences ------------------------------------------------------------------------
def fd_check_input(op, x, h=1e-6, rtol=1e-6):
    """<vjp(g), v> equals d/dt sum(g * f(x + t v)) at t = 0 (central differences)."""
    y = op.forward(x)
    g = RNG.normal(size=y.shape)
    v = RNG.normal(size=x.shape)
    (gx,) = op.vjp([x], y, g)
    assert gx.shape == x.shape
    fd = (np.sum(g * op.forward(x + h * v)) - np.sum(g * op.forward(x - h * v))) / (2 * h)
    assert abs(np.sum(gx * v) - fd) <= rtol * max(1.0, abs(fd))


def fd_check_params(op, x, h=1e-6, rtol=1e-6):
    """<param_vjp(g)[p], v> equals the directional derivative in each parameter p."""
    y = op.forward(x)
    g = RNG.normal(size=y.shape)
    grads = op.param_vjp([x], y, g)
    assert set(grads) == set(op.params)
    for name in op.params:
        p = getattr(op, name)
        v = RNG.normal(size=p.shape)
        plus = type(op)(**{**vars(op), name: p + h * v})
        minus = type(op)(**{**vars(op), name: p - h * v})
        fd = (np.sum(g * plus.forward(x)) - np.sum(g * minus.forward(x))) / (2 * h)
        assert grads[name].shape == p.shape
        assert abs(np.sum(grads[name] * v) - fd) <= rtol * max(1.0, abs(fd)), name


@pytest.mark.parametrize("c", CONV_CASES)
def test_conv_gradients_match_finite_differences(c):
    op = conv_op(c)
    x = RNG.normal(size=(3, c["C"], 7, 8))
    fd_check_input(op, x)
    fd_check_params(op, x)


@pytest.mark.parametrize("c", CONVT_CASES)
def test_conv_transpose_gradients_match_finite_differences(c):
    op = convt_op(c)
    x = RNG.normal(size=(3, c["C"], 4, 5))
    fd_check_input(op, x)
    fd_check_params(op, x)


@pytest.mark.parametrize("c", [c for c in POOL_CASES if c["dilation"] == (1, 1)])
def test_avgpool_gradients_match_finite_differences(c):
    op = AvgPool(c["k"], c["stride"], c["pads"], c["cip"])
    x = RNG.normal(size=(3, 2, 7, 6))
    fd_check_input(op, x)
    assert op.param_vjp([x], op.forward(x), op.forward(x)) == {}


@pytest.mark.parametrize("c", POOL_CASES)
def test_maxpool_gradient_matches_finite_differences(c):
    op = MaxPool(c["k"], c["stride"], c["pads"], c["dilation"])
    x = RNG.normal(size=(3, 2, 7, 6))  # distinct values: the max is locally smooth
    fd_check_input(op, x, h=1e-7)


def test_maxpool_gradient_goes_to_the_first_maximum_of_a_tied_window():
    op = MaxPool((2, 2), (2, 2))
    x = np.ones((1, 1, 2, 2))
    (gx,) = op.vjp([x], op.forward(x), np.array([[[[5.0]]]]))
    assert gx.sum() == 5.0 and gx[0, 0, 0, 0] == 5.0


def test_conv_transpose_is_the_adjoint_of_conv():
    """<conv(x), y> == <x, convT(y)> for the same weights (zero biases)."""
    W = RNG.normal(size=(4, 3, 3, 2))
    conv = Conv(W, np.zeros(4), (2, 1), (1, 0, 1, 1), (1, 2), 1)
    x = RNG.normal(size=(1, 3, 8, 7))
    y = conv.forward(x)
    convt = ConvTranspose(W, np.zeros(3), (2, 1), (1, 0, 1, 1), (0, 0), (1, 2), 1)
    # output_padding makes the transposed output as large as x
    extra = tuple(x.shape[2 + a] - convt.output_shape(y.shape[1:])[1 + a] for a in range(2))
    convt = ConvTranspose(W, np.zeros(3), (2, 1), (1, 0, 1, 1), extra, (1, 2), 1)
    z = RNG.normal(size=y.shape)
    assert np.isclose(np.sum(conv.forward(x) * z), np.sum(x * convt.forward(z)), rtol=1e-12)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError):
        Conv(np.zeros((3, 2, 2, 2)), np.zeros(3), groups=2)
    with pytest.raises(ValueError):
        AvgPool((2, 2), (1, 1), (2, 0, 0, 0))
    with pytest.raises(ValueError):
        Conv(np.zeros((2, 1, 3, 3)), np.zeros(2)).output_shape((2, 5, 5))
