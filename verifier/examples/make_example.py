"""Make the bundled example: a 2-8-8-2 ReLU classifier and two properties about it.

    python -m verifier.examples.make_example [OUT_DIR]     (default: this folder)

Everything is deterministic (weights from a closed formula, no random generator), so running
the script again rewrites byte-identical files. The network computes two scores ``y0, y1`` of a
point ``x`` in the plane; class 0 wins near ``x = (0.8, 0.8)``, class 1 near ``(-0.2, 0.2)``.

* ``example.onnx``: Gemm -> Relu -> Gemm -> Relu -> Gemm, float32, opset 13, input [1, 2].
* ``robust.vnnlib``: for every ``x`` in the box ``[0.75, 0.85]^2``, class 0 wins; the unsafe set
  is ``y1 >= y0``. It holds (``unsat``): interval bounds already prove it (margin about 0.05).
* ``boundary.vnnlib``: the same claim on the box ``[-1, 1]^2``, which the decision boundary
  crosses; it is violated (``sat``): the attack finds a counterexample.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
SIZES = (2, 8, 8, 2)


def weights(layer: int, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """``W[i, j] = round(sin(8 + 3 i + 7 j + 11 layer) * 1.5 / sqrt(cols), 3)`` and
    ``b[i] = round(cos(9 + 5 i + 13 layer) / 4, 3)``, stored as float32."""
    scale = 1.5 / math.sqrt(cols)
    W = np.array([[round(math.sin(8 + 3 * i + 7 * j + 11 * layer) * scale, 3)
                   for j in range(cols)] for i in range(rows)], dtype=np.float32)
    b = np.array([round(math.cos(9 + 5 * i + 13 * layer) / 4, 3) for i in range(rows)],
                 dtype=np.float32)
    return W, b


def make_model() -> onnx.ModelProto:
    """The 2-8-8-2 ReLU network as an ONNX model (Gemm with transB=1: y = x W^T + b)."""
    nodes, inits, prev = [], [], "input"
    for k in range(len(SIZES) - 1):
        W, b = weights(k, SIZES[k + 1], SIZES[k])
        inits += [numpy_helper.from_array(W, f"W{k}"), numpy_helper.from_array(b, f"b{k}")]
        out = "output" if k == len(SIZES) - 2 else f"fc{k}"
        nodes.append(helper.make_node("Gemm", [prev, f"W{k}", f"b{k}"], [out], name=f"gemm{k}",
                                      transB=1))
        if k < len(SIZES) - 2:
            nodes.append(helper.make_node("Relu", [out], [f"relu{k}"], name=f"relu{k}"))
            prev = f"relu{k}"
    graph = helper.make_graph(
        nodes, "example_2_8_8_2",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, SIZES[0]])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, SIZES[-1]])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="verifier.examples.make_example")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def forward(x: np.ndarray) -> np.ndarray:
    """The same network in float64 numpy (x: (B, 2) -> (B, 2)), used to choose the boxes."""
    h = np.asarray(x, dtype=np.float64)
    for k in range(len(SIZES) - 1):
        W, b = weights(k, SIZES[k + 1], SIZES[k])
        h = h @ W.astype(np.float64).T + b
        if k < len(SIZES) - 2:
            h = np.maximum(h, 0.0)
    return h


def property_text(lo: float, hi: float, comment: str) -> str:
    """VNN-LIB: x in [lo, hi]^2, unsafe output set y1 >= y0."""
    lines = [f"; {comment}", "; made by verifier/examples/make_example.py", ""]
    lines += [f"(declare-const X_{i} Real)" for i in range(SIZES[0])]
    lines += [f"(declare-const Y_{i} Real)" for i in range(SIZES[-1])]
    lines.append("")
    for i in range(SIZES[0]):
        lines += [f"(assert (>= X_{i} {lo}))", f"(assert (<= X_{i} {hi}))"]
    lines += ["", "; unsafe: class 1 scores at least as high as class 0", "(assert (>= Y_1 Y_0))",
              ""]
    return "\n".join(lines)


def main(out_dir=HERE) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(make_model(), str(out / "example.onnx"))
    (out / "robust.vnnlib").write_text(property_text(
        0.75, 0.85, "class 0 wins on [0.75, 0.85]^2 (holds: unsat)"))
    (out / "boundary.vnnlib").write_text(property_text(
        -1.0, 1.0, "class 0 wins on [-1, 1]^2 (violated: sat)"))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else HERE)
