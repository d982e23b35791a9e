"""Per-op import tests: tiny ONNX models built with onnx.helper, for every op of the list, at
opset 8 and 13+; the imported network (before and after normalisation) agrees with onnxruntime
on random inputs."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from verifier.network.normalize import normalize_network
from verifier.network.onnx_import import import_model, load_onnx
from verifier.network.runtime import OnnxRunner

RNG = np.random.default_rng(1)
F = TensorProto.FLOAT


def w(*shape, scale=0.5):
    return (RNG.normal(size=shape) * scale).astype(np.float32)


def i64(*v):
    return np.array(v, dtype=np.int64)


def make(nodes, x_shape, inits=None, opset=13, out="y", weights_as_inputs=False, ir=None):
    """A model with input ``x`` (float32, shape ``x_shape``; str dims are symbolic), output
    ``out`` and initializers ``inits`` (also listed as graph inputs if ``weights_as_inputs``)."""
    inits = inits or {}
    tensors = [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()]
    inputs = [helper.make_tensor_value_info("x", F, list(x_shape))]
    if weights_as_inputs:
        inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                   for t in tensors]
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info(out, F, None)],
                              initializer=tensors)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir or (3 if opset < 9 else 7)
    return model


def agree(model, tmp_path, lo=-2.0, hi=2.0, n=16, tol=1e-5):
    """Import, compare with onnxruntime (before and after normalisation); return the network."""
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    runner = OnnxRunner(path)
    raw = import_model(model)
    net = load_onnx(path)
    assert raw.n_inputs == net.n_inputs == runner.n_inputs
    x = RNG.uniform(lo, hi, size=(n, net.n_inputs)).astype(np.float32).astype(np.float64)
    ref = runner(x)
    for candidate in (raw, net):
        y = candidate(x).reshape(n, -1)
        assert y.shape == ref.shape
        err = np.max(np.abs(y - ref) / np.maximum(1.0, np.abs(ref)))
        assert err < tol, err
    return net


def kinds(net):
    return [type(n.op).__name__ for n in net.nodes]


# -- affine ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("opset", [8, 13])
@pytest.mark.parametrize("tA,tB,alpha,beta,cshape", [
    (0, 0, 1.0, 1.0, (4,)), (0, 1, 0.5, 2.0, (1, 4)), (1, 0, 1.0, 1.0, ()), (1, 1, 2.0, -1.0, (4,))])
def test_gemm_with_a_variable_a(tmp_path, opset, tA, tB, alpha, beta, cshape):
    B = w(4, 3) if tB else w(3, 4)
    x_shape = [3, 1] if tA else [1, 3]
    node = helper.make_node("Gemm", ["x", "B", "C"], ["y"], transA=tA, transB=tB, alpha=alpha,
                            beta=beta)
    agree(make([node], x_shape, {"B": B, "C": w(*cshape)}, opset), tmp_path)


@pytest.mark.parametrize("tA,tB", [(0, 0), (1, 1)])
def test_gemm_with_a_variable_b_and_matrix_c(tmp_path, tA, tB):
    A = w(3, 2) if tA else w(2, 3)
    x_shape = [4, 3] if tB else [3, 4]
    node = helper.make_node("Gemm", ["A", "x", "C"], ["y"], transA=tA, transB=tB)
    agree(make([node], x_shape, {"A": A, "C": w(2, 4)}), tmp_path)


@pytest.mark.parametrize("opset", [8, 13])
def test_matmul_x_at_w_then_add_is_one_linear(tmp_path, opset):
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]),
             helper.make_node("Add", ["h", "b"], ["y"])]
    net = agree(make(nodes, ["N", 5], {"W": w(5, 3), "b": w(3)}, opset), tmp_path)
    assert net.input_shape == (5,) and kinds(net) == ["Linear"]


def test_matmul_w_at_x_on_a_vector_input(tmp_path):
    """test_small.onnx style: W @ x with a rank-1 input that has no batch axis."""
    nodes = [helper.make_node("MatMul", ["W", "x"], ["h"]),
             helper.make_node("Add", ["h", "b"], ["y"])]
    net = agree(make(nodes, [5], {"W": w(3, 5), "b": w(3)}), tmp_path)
    assert net.input_shape == (5,) and kinds(net) == ["Linear"]


@pytest.mark.parametrize("x_shape,W_shape,order", [
    ([1, 2, 3, 5], (5, 4), "xW"),        # N-d, acts on the last axis
    ([1, 3, 5], (5,), "xW"),             # vector weight drops the last axis
    ([1, 2, 5, 3], (4, 5), "Wx"),        # W @ x on the second-last axis
    ([1, 5, 3], (1, 4, 5), "Wx"),        # leading 1 on the weight
    ([1, 2, 3, 5], (2, 5, 4), "xW"),     # per-slice weights: folded into one Linear
    ([5, 3], (5,), "Wx"),
])
def test_matmul_nd(tmp_path, x_shape, W_shape, order):
    ins = ["x", "W"] if order == "xW" else ["W", "x"]
    agree(make([helper.make_node("MatMul", ins, ["y"])], x_shape, {"W": w(*W_shape)}), tmp_path)


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize("const_first", [False, True])
def test_elementwise_by_constants(tmp_path, op, const_first):
    c = w(3, 1, 1) + np.float32(3.0)   # per channel, away from 0
    ins = ["c", "x"] if const_first else ["x", "c"]
    model = make([helper.make_node(op, ins, ["y"])], [1, 3, 2, 2], {"c": c})
    if op == "Div" and const_first:
        with pytest.raises(Exception, match="division"):
            import_model(model)
        return
    agree(model, tmp_path)


def test_add_of_a_constant_that_broadcasts_the_variable(tmp_path):
    agree(make([helper.make_node("Add", ["x", "c"], ["y"])], [1, 1, 4], {"c": w(3, 1)}), tmp_path)


@pytest.mark.parametrize("op", ["Add", "Sub"])
def test_residual_add_of_two_branches_is_a_sum(tmp_path, op):
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node(op, ["r", "x"], ["y"])]
    net = agree(make(nodes, [1, 4], {"W": w(4, 4)}), tmp_path)
    assert "Sum" in kinds(net)


def test_sum_and_broadcasting_variables(tmp_path):
    nodes = [helper.make_node("Reshape", ["x", "s"], ["a"]),
             helper.make_node("Transpose", ["a"], ["b"], perm=[0, 2, 1]),
             helper.make_node("Add", ["a", "b"], ["y0"]),
             helper.make_node("Sum", ["y0", "a", "c"], ["y"])]
    agree(make(nodes, [1, 4], {"s": i64(1, 1, 4), "c": w(4)}), tmp_path)


@pytest.mark.parametrize("op,attrs", [("Neg", {}), ("Relu", {}), ("Sigmoid", {}), ("Tanh", {}),
                                      ("Softplus", {}), ("LeakyRelu", {"alpha": 0.2}),
                                      ("Abs", {}), ("Identity", {})])
@pytest.mark.parametrize("opset", [8, 13])
def test_activations(tmp_path, op, attrs, opset):
    agree(make([helper.make_node(op, ["x"], ["y"], **attrs)], [1, 6], opset=opset), tmp_path,
          lo=-6, hi=6)


def test_prelu_per_channel_and_scalar(tmp_path):
    nodes = [helper.make_node("PRelu", ["x", "s"], ["h"]),
             helper.make_node("PRelu", ["h", "t"], ["y"])]
    agree(make(nodes, [1, 3, 2, 2], {"s": w(3, 1, 1), "t": np.float32([0.1])}, 9), tmp_path)


@pytest.mark.parametrize("opset,lo,hi", [(8, -1.0, 1.0), (13, 0.0, 6.0), (13, None, 0.5),
                                         (13, -0.5, None)])
def test_clip_and_relu6(tmp_path, opset, lo, hi):
    if opset < 11:
        node = helper.make_node("Clip", ["x"], ["y"], min=lo, max=hi)
        inits = {}
    else:
        inits = {k: np.float32(v) for k, v in (("lo", lo), ("hi", hi)) if v is not None}
        node = helper.make_node("Clip", ["x", "lo" if lo is not None else "",
                                         "hi" if hi is not None else ""], ["y"])
    agree(make([node], [1, 8], inits, opset), tmp_path, lo=-8, hi=8)


@pytest.mark.parametrize("opset", [8, 13])
def test_softmax_axis_semantics(tmp_path, opset):
    """Before opset 13 Softmax flattens the axes from ``axis`` on; from 13 it is one axis."""
    agree(make([helper.make_node("Softmax", ["x"], ["y"], axis=1)], [1, 3, 4], opset=opset),
          tmp_path)
    agree(make([helper.make_node("Softmax", ["x"], ["y"])], [1, 3, 4], opset=opset), tmp_path)


def test_dropout_cast_constant_and_a_shape_chain(tmp_path):
    """Shape -> Gather -> Unsqueeze -> Concat builds a Reshape target: folded to a constant."""
    nodes = [helper.make_node("Dropout", ["x"], ["d"]),
             helper.make_node("Cast", ["d"], ["c"], to=TensorProto.FLOAT),
             helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(w(1, 3, 4, 2))),
             helper.make_node("Mul", ["c", "k"], ["m"]),
             helper.make_node("Shape", ["m"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "ax"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
             helper.make_node("Reshape", ["m", "target"], ["y"])]
    inits = {"zero": np.array(0, dtype=np.int64), "ax": i64(0), "minus1": i64(-1)}
    net = agree(make(nodes, ["N", 3, 4, 2], inits, 13), tmp_path)
    assert net.output_shape == (24,)


# -- convolution family ----------------------------------------------------------------------------
@pytest.mark.parametrize("attrs", [
    {}, {"strides": [2, 1], "pads": [1, 0, 2, 1]}, {"dilations": [2, 2], "pads": [1, 1, 1, 1]},
    {"auto_pad": "SAME_UPPER", "strides": [2, 1]}, {"auto_pad": "SAME_LOWER"},
    {"auto_pad": "SAME_LOWER", "strides": [2, 3]},
    {"auto_pad": "VALID"}, {"group": 2}])
@pytest.mark.parametrize("opset", [8, 13])
def test_conv_2d(tmp_path, attrs, opset):
    g = attrs.get("group", 1)
    node = helper.make_node("Conv", ["x", "W", "b"], ["y"], kernel_shape=[3, 2], **attrs)
    agree(make([node], [1, 4, 7, 6], {"W": w(6, 4 // g, 3, 2), "b": w(6)}, opset), tmp_path)


@pytest.mark.parametrize("attrs", [{}, {"strides": [2], "pads": [1, 2], "dilations": [2]},
                                   {"auto_pad": "SAME_UPPER", "strides": [2]}])
def test_conv_1d(tmp_path, attrs):
    node = helper.make_node("Conv", ["x", "W"], ["y"], **attrs)
    net = agree(make([node], [1, 2, 9], {"W": w(3, 2, 3)}), tmp_path)
    assert len(net.output_shape) == 2


@pytest.mark.parametrize("attrs", [
    {}, {"strides": [2, 2], "pads": [1, 0, 1, 1], "output_padding": [1, 0]},
    {"strides": [2, 2], "output_shape": [9, 8]},
    {"strides": [2, 1], "auto_pad": "SAME_UPPER"}, {"group": 2, "dilations": [2, 1]}])
def test_conv_transpose(tmp_path, attrs):
    g = attrs.get("group", 1)
    node = helper.make_node("ConvTranspose", ["x", "W", "b"], ["y"], kernel_shape=[3, 2],
                            **attrs)
    agree(make([node], [1, 4, 4, 4], {"W": w(4, 6 // g, 3, 2), "b": w(6)}), tmp_path)


def test_conv_transpose_1d(tmp_path):
    node = helper.make_node("ConvTranspose", ["x", "W"], ["y"], strides=[2], pads=[1, 0])
    agree(make([node], [1, 2, 5], {"W": w(2, 3, 3)}), tmp_path)


@pytest.mark.parametrize("opset", [8, 13])
def test_conv_batchnorm_relu_fuses_into_one_conv(tmp_path, opset):
    nodes = [helper.make_node("Conv", ["x", "W", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "s", "o", "m", "v"], ["n"],
                              epsilon=1e-3),
             helper.make_node("Relu", ["n"], ["y"])]
    inits = {"W": w(3, 2, 3, 3), "b": w(3), "s": w(3) + 1, "o": w(3), "m": w(3),
             "v": np.abs(w(3)) + 0.5}
    net = agree(make(nodes, [1, 2, 5, 5], inits, opset), tmp_path)
    assert kinds(net) == ["Conv", "Relu"]


def test_batchnorm_alone_on_a_vector(tmp_path):
    node = helper.make_node("BatchNormalization", ["x", "s", "o", "m", "v"], ["y"])
    inits = {"s": w(4), "o": w(4), "m": w(4), "v": np.abs(w(4)) + 0.1}
    assert kinds(agree(make([node], [1, 4], inits), tmp_path)) == ["Scale"]


@pytest.mark.parametrize("op", ["AveragePool", "MaxPool"])
@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [2, 2], "strides": [2, 2]},
    {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]},
    {"kernel_shape": [3, 2], "strides": [2, 2], "ceil_mode": 1},
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1},
    {"kernel_shape": [2, 2], "strides": [3, 3], "ceil_mode": 1},
    {"kernel_shape": [3, 2], "auto_pad": "SAME_LOWER"},
    {"kernel_shape": [2, 2], "auto_pad": "SAME_UPPER"},
    {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1}])
def test_pooling(tmp_path, op, attrs):
    attrs = dict(attrs)
    if op == "MaxPool":
        attrs.pop("count_include_pad", None)
    agree(make([helper.make_node(op, ["x"], ["y"], **attrs)], [1, 2, 7, 6], opset=13), tmp_path)


def test_pooling_opset8_and_1d_and_dilated_maxpool(tmp_path):
    agree(make([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2])],
               [1, 2, 5, 5], opset=8), tmp_path)
    agree(make([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3], strides=[2])],
               [1, 2, 9]), tmp_path)
    agree(make([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2],
                                 dilations=[2, 2])], [1, 2, 6, 6]), tmp_path)


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
def test_global_pooling(tmp_path, op):
    nodes = [helper.make_node(op, ["x"], ["g"]), helper.make_node("Flatten", ["g"], ["y"])]
    assert agree(make(nodes, [1, 3, 4, 5]), tmp_path).output_shape == (3,)


# -- data movement ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
@pytest.mark.parametrize("opset", [8, 13])
def test_pad(tmp_path, mode, opset):
    pads = [0, 0, 1, 2, 0, 0, 2, 1]
    if opset < 11:
        node = helper.make_node("Pad", ["x"], ["y"], mode=mode, pads=pads, value=0.5)
        inits = {}
    else:
        node = helper.make_node("Pad", ["x", "p", "v"], ["y"], mode=mode)
        inits = {"p": i64(*pads), "v": np.float32(0.5)}
    agree(make([node], [1, 2, 4, 4], inits, opset), tmp_path)


@pytest.mark.parametrize("opset", [8, 13])
def test_reshape_flatten_squeeze_unsqueeze_transpose(tmp_path, opset):
    if opset < 13:
        sq = helper.make_node("Squeeze", ["t"], ["s"], axes=[2])
        un = helper.make_node("Unsqueeze", ["s"], ["u"], axes=[1])
        inits = {"shape": i64(1, 6, 1, 2)}
    else:
        sq = helper.make_node("Squeeze", ["t", "a2"], ["s"])
        un = helper.make_node("Unsqueeze", ["s", "a1"], ["u"])
        inits = {"shape": i64(1, 6, 1, 2), "a2": i64(2), "a1": i64(1)}
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=[0, 3, 2, 1]),
             sq, un, helper.make_node("Flatten", ["u"], ["y"], axis=2)]
    agree(make(nodes, [1, 3, 4], inits, opset), tmp_path)


@pytest.mark.parametrize("opset", [8, 13])
def test_slice_split_gather_concat(tmp_path, opset):
    if opset < 10:
        sl = helper.make_node("Slice", ["x"], ["s"], axes=[1], starts=[1], ends=[8])
        sp = helper.make_node("Split", ["s"], ["a", "b"], axis=1, split=[3, 4])
        inits = {}
    else:
        sl = helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["s"])
        sp = helper.make_node("Split", ["s", "sizes"], ["a", "b"], axis=1)
        inits = {"st": i64(7), "en": i64(0), "ax": i64(1), "sp": i64(-1), "sizes": i64(3, 4)}
    inits["idx"] = i64(3, 0, 3)
    nodes = [sl, sp, helper.make_node("Gather", ["b", "idx"], ["g"], axis=1),
             helper.make_node("Concat", ["g", "a", "b"], ["y"], axis=1)]
    agree(make(nodes, [1, 9], inits, opset), tmp_path)


def test_concat_with_constants_and_on_the_batch_axis(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Concat", ["c", "x", "r"], ["k"], axis=1),
             helper.make_node("Concat", ["k", "k"], ["y"], axis=0)]
    agree(make(nodes, [1, 3], {"c": w(1, 2)}), tmp_path)


def test_expand_tile_and_depth_to_space(tmp_path):
    nodes = [helper.make_node("Expand", ["x", "shape"], ["e"]),
             helper.make_node("Tile", ["e", "reps"], ["t"]),
             helper.make_node("DepthToSpace", ["t"], ["y"], blocksize=2)]
    agree(make(nodes, [1, 1, 2, 3], {"shape": i64(1, 4, 2, 3), "reps": i64(1, 1, 1, 2)}),
          tmp_path)


# -- graph conventions -------------------------------------------------------------------------------
def test_weights_as_graph_inputs_with_initializers(tmp_path):
    """The ACAS Xu convention: the input is the graph input without an initializer."""
    nodes = [helper.make_node("Sub", ["x", "mean"], ["s"]),
             helper.make_node("Div", ["s", "std"], ["d"]),
             helper.make_node("Flatten", ["d"], ["f"]),
             helper.make_node("MatMul", ["f", "W"], ["m"]),
             helper.make_node("Add", ["m", "b"], ["y"])]
    inits = {"mean": w(1, 1, 1, 5), "std": np.abs(w(1, 1, 1, 5)) + 1, "W": w(5, 3), "b": w(3)}
    net = agree(make(nodes, [1, 1, 1, 5], inits, 8, weights_as_inputs=True), tmp_path)
    assert net.input_shape == (1, 1, 5) and kinds(net) == ["Reshape", "Linear"]


@pytest.mark.parametrize("dims,shape", [(["N", 3, 2], (3, 2)), ([1, 6], (6,)), ([6], (6,)),
                                        ([2, 3], (2, 3)), ([1], (1,))])
def test_batch_axis_convention(tmp_path, dims, shape):
    net = agree(make([helper.make_node("Relu", ["x"], ["y"])], dims), tmp_path)
    assert net.input_shape == shape


def test_input_normalisation_fuses_into_conv_only_without_padding(tmp_path):
    """(x - m) / s before a Conv: fused when unpadded; kept when padded (zeros pad after it)."""
    for pads, n_nodes in (([0, 0, 0, 0], 1), ([1, 1, 1, 1], 2)):
        nodes = [helper.make_node("Sub", ["x", "m"], ["a"]),
                 helper.make_node("Div", ["a", "s"], ["b"]),
                 helper.make_node("Conv", ["b", "W"], ["y"], pads=pads)]
        inits = {"m": w(1, 2, 1, 1), "s": np.abs(w(1, 2, 1, 1)) + 0.5, "W": w(3, 2, 2, 2)}
        net = agree(make(nodes, [1, 2, 5, 5], inits), tmp_path)
        assert len(net.nodes) == n_nodes


def test_normalisation_is_idempotent(tmp_path):
    nodes = [helper.make_node("Flatten", ["x"], ["f"]),
             helper.make_node("Gemm", ["f", "W", "b"], ["g"], transB=1),
             helper.make_node("Mul", ["g", "k"], ["y"])]
    net = agree(make(nodes, [1, 2, 3], {"W": w(4, 6), "b": w(4), "k": w(4)}), tmp_path)
    assert kinds(net) == ["Reshape", "Linear"]
    again = normalize_network(net)
    assert kinds(again) == kinds(net)


def test_nearest_resize_and_space_to_depth(tmp_path):
    nodes = [helper.make_node("Resize", ["x", "", "scales"], ["r"], mode="nearest"),
             helper.make_node("SpaceToDepth", ["r"], ["y"], blocksize=2)]
    agree(make(nodes, [1, 2, 3, 2], {"scales": np.float32([1, 1, 2, 2])}), tmp_path)
