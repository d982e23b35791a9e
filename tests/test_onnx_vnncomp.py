"""Every model under ../shared/data/vnncomp imports and agrees with onnxruntime (relative error
|a-b|/max(1,|b|) below 1e-5, float64 against onnxruntime's float32) on random inputs drawn from
the input box of each of its properties."""
import csv
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from verifier.network.check import check_model
from verifier.network.runtime import OnnxRunner
from verifier.network.onnx_import import load_onnx

BENCHMARKS = ("acasxu", "mnist_fc", "test")
SAMPLES_PER_PROPERTY = 12


def property_boxes(path: Path, n: int) -> list:
    """The input boxes (lower, upper) of a property: every case's box, by ``specs`` when it can
    read the file, else a crude scan of ``(<= X_i v)`` / ``(>= X_i v)`` (the hull of all)."""
    try:
        import specs
        spec = specs.read_vnnlib(path)
        return [(c.input.lower, c.input.upper) for c in spec.cases]
    except ImportError:
        lo, hi = np.full(n, -np.inf), np.full(n, np.inf)
        text = path.read_text()
        for op, i, v in re.findall(r"\((<=|>=)\s+X_(\d+)\s+([-+0-9.eE]+)\)", text):
            i, v = int(i), float(v)
            if op == "<=":
                hi[i] = v if np.isinf(hi[i]) else max(hi[i], v)
            else:
                lo[i] = v if np.isinf(lo[i]) else min(lo[i], v)
        return [(lo, hi)]


def instances(root: Path) -> dict:
    """{model path: [property paths]} from a benchmark's instances.csv."""
    out = defaultdict(list)
    with open(root / "instances.csv") as f:
        for row in csv.reader(f):
            if row:
                out[root / row[0]].append(root / row[1])
    return out


@pytest.mark.parametrize("bench", BENCHMARKS)
def test_every_model_agrees_with_onnxruntime_on_its_property_boxes(vnncomp, bench):
    root = vnncomp / bench
    models = instances(root)
    assert models, f"no instances in {root}"
    for model, props in sorted(models.items()):
        net = load_onnx(model)
        boxes = [b for p in sorted(set(props)) for b in property_boxes(p, net.n_inputs)]
        report = check_model(model, n_samples=SAMPLES_PER_PROPERTY * len(boxes), boxes=boxes,
                             seed=1)
        assert report.network.n_inputs == net.n_inputs
        assert report.max_rel_error < 1e-5, (model.name, report.max_rel_error)


def test_every_onnx_file_in_the_data_imports(vnncomp):
    """Also the files that no instance lists."""
    files = sorted(vnncomp.glob("*/onnx/*.onnx")) + sorted(vnncomp.glob("test/*.onnx"))
    assert len(files) >= 45 + 3 + 5
    for f in files:
        report = check_model(f, n_samples=8)
        assert report.agrees, (f.name, report.max_rel_error)


def test_batch_convention_on_the_data(vnncomp):
    """[1,1,1,5] -> (1,1,5); [1,784,1] -> (784,1); a rank-1 [1] keeps its shape."""
    acas = load_onnx(vnncomp / "acasxu/onnx/ACASXU_run2a_1_1_batch_2000.onnx")
    assert acas.input_shape == (1, 1, 5) and acas.output_shape == (5,)
    mnist = load_onnx(vnncomp / "mnist_fc/onnx/mnist-net_256x2.onnx")
    assert mnist.input_shape == (784, 1) and mnist.output_shape == (10,)
    nano = load_onnx(vnncomp / "test/test_nano.onnx")
    assert nano.input_shape == (1,) and nano.output_shape == (1,)


def test_normalisation_leaves_the_plain_layer_structure(vnncomp):
    """ACAS Xu: the input Sub and every MatMul+Add fold into 7 Linear layers with 6 Relus."""
    net = load_onnx(vnncomp / "acasxu/onnx/ACASXU_run2a_1_1_batch_2000.onnx")
    kinds = [type(n.op).__name__ for n in net.nodes]
    assert kinds.count("Linear") == 7 and kinds.count("Relu") == 6
    assert set(kinds) <= {"Linear", "Relu", "Reshape"}


def test_runner_runs_rows_one_at_a_time_for_a_fixed_batch(vnncomp):
    runner = OnnxRunner(vnncomp / "mnist_fc/onnx/mnist-net_256x2.onnx")
    assert not runner.batched and runner.dtype == np.float32 and runner.n_inputs == 784
    x = np.random.default_rng(0).random((3, 784))
    y = runner(x)
    assert y.shape == (3, 10) and y.dtype == np.float64 and runner.calls == 3
    np.testing.assert_array_equal(y[1], runner(x[1:2])[0])
