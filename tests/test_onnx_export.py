"""ONNX export: import(export(net)) computes the same function as net, for random networks of
every op; the float32 export also agrees with onnxruntime."""
import numpy as np
import onnx
import pytest

import verifier
from verifier.network.graph import Network, Node
from verifier.network.onnx_export import save_onnx, to_onnx
from verifier.network.ops import (AvgPool, Concat, Conv, ConvTranspose, LeakyRelu, Linear,
                                  MaxPool, Relu, Reshape, Scale, Select, Sigmoid, Softmax,
                                  Softplus, Sum, Tanh)
from verifier.network.runtime import OnnxRunner


def build(input_shape, layers, input_name="x"):
    """A Network from (name, op, inputs) rows; shapes by evaluation."""
    shapes = {input_name: tuple(input_shape)}
    nodes = []
    for name, op, inputs in layers:
        y = op.forward(*(np.zeros((1,) + shapes[i]) for i in inputs))
        shapes[name] = y.shape[1:]
        nodes.append(Node(name, op, tuple(inputs), y.shape[1:]))
    return Network(input_name, tuple(input_shape), nodes, layers[-1][0])


def mlp(rng):
    n = lambda *s: rng.normal(size=s)  # noqa: E731
    return build((6,), [
        ("l1", Linear(n(8, 6), n(8)), ["x"]), ("a1", Relu(), ["l1"]),
        ("l2", Linear(n(8, 8), n(8)), ["a1"]), ("a2", Sigmoid(), ["l2"]),
        ("s", Scale(n(8), n(8)), ["a2"]), ("a3", Tanh(), ["s"]),
        ("a4", Softplus(), ["a3"]), ("a5", LeakyRelu(0.1), ["a4"]),
        ("l3", Linear(n(4, 8), n(4)), ["a5"]), ("sm", Softmax(0), ["l3"])])


def cnn(rng):
    n = lambda *s: rng.normal(size=s) * 0.5  # noqa: E731
    return build((2, 7, 6), [
        ("c1", Conv(n(4, 2, 3, 3), n(4), (1, 1), (1, 1, 1, 1)), ["x"]), ("r1", Relu(), ["c1"]),
        ("c2", Conv(n(4, 2, 2, 3), n(4), (2, 1), (0, 1, 1, 0), (1, 2), 2), ["r1"]),
        ("mp", MaxPool((2, 2), (1, 1), (1, 0, 0, 1), (1, 1)), ["c2"]),
        ("ap", AvgPool((2, 2), (2, 2), (1, 1, 1, 1), False), ["mp"]),
        ("ap2", AvgPool((2, 1), (1, 1), (1, 0, 0, 0), True), ["ap"]),
        ("ct", ConvTranspose(n(4, 3, 3, 2), n(3), (2, 2), (1, 0, 0, 1), (1, 0)), ["ap2"]),
        ("f", Reshape((-1,)), ["ct"])])


def graph_ops(rng):
    """Residual Sum, Select with fill, Concat, a per-sample matrix Linear."""
    n = lambda *s: rng.normal(size=s)  # noqa: E731
    sel = rng.integers(-1, 12, size=(3, 5))
    return build((3, 4), [
        ("l", Linear(n(4, 4), n(4)), ["x"]), ("r", Relu(), ["l"]),
        ("res", Sum((1.0, -0.5)), ["r", "x"]),
        ("res2", Sum((1.0, -1.0, 2.0)), ["res", "x", "r"]),
        ("sel", Select(sel, 0.25), ["res2"]), ("t", Select(np.arange(12).reshape(3, 4).T), ["x"]),
        ("f1", Reshape((12,)), ["t"]), ("f2", Reshape((15,)), ["sel"]),
        ("cat", Concat(0), ["f1", "f2"]), ("sm", Softmax(-1), ["cat"])])


NETS = {"mlp": mlp, "cnn": cnn, "graph": graph_ops}


@pytest.mark.parametrize("kind", sorted(NETS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_float64_export_round_trips_exactly(tmp_path, kind, seed):
    rng = np.random.default_rng(seed)
    net = NETS[kind](rng)
    path = tmp_path / "net.onnx"
    save_onnx(net, path, dtype=np.float64)
    for normalize in (False, True):
        back = verifier.network.onnx_import.load_onnx(path, normalize=normalize)
        assert back.input_shape == net.input_shape and back.output_shape == net.output_shape
        x = rng.uniform(-2, 2, size=(5,) + net.input_shape)
        np.testing.assert_allclose(back(x), net(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", sorted(NETS))
def test_float32_export_agrees_with_onnxruntime_and_reimports(tmp_path, kind):
    rng = np.random.default_rng(7)
    net = NETS[kind](rng)
    path = tmp_path / "net.onnx"
    verifier.save_onnx(net, path)
    assert onnx.load(str(path)).opset_import[0].version >= 13
    runner = OnnxRunner(path, allow_batch=True)
    assert runner.batched and runner.dtype == np.float32
    assert not OnnxRunner(path).batched and OnnxRunner(path).batchable
    x = rng.uniform(-2, 2, size=(9, net.n_inputs)).astype(np.float32).astype(np.float64)
    y = net(x).reshape(9, -1)
    np.testing.assert_allclose(OnnxRunner(path)(x), runner(x), rtol=1e-6, atol=1e-6)
    for other in (runner(x), verifier.load_onnx(path)(x).reshape(9, -1)):
        assert np.max(np.abs(other - y) / np.maximum(1.0, np.abs(y))) < 1e-5


def test_export_of_the_imported_data_models(vnncomp, tmp_path):
    """A competition model survives import -> export -> import."""
    for f in ("acasxu/onnx/ACASXU_run2a_1_1_batch_2000.onnx", "test/test_small.onnx"):
        net = verifier.load_onnx(vnncomp / f)
        save_onnx(net, tmp_path / "copy.onnx", dtype=np.float64)
        back = verifier.load_onnx(tmp_path / "copy.onnx")
        x = np.random.default_rng(0).uniform(-1, 1, size=(4, net.n_inputs))
        np.testing.assert_allclose(back(x), net(x), rtol=1e-13, atol=1e-13)


def test_export_rejects_a_low_opset():
    with pytest.raises(ValueError):
        to_onnx(mlp(np.random.default_rng(0)), opset=11)
