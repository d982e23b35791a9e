"""``check_model``: does the imported network compute what onnxruntime computes?

The agreement measure is the largest *relative error* over the sampled inputs and all outputs,

    err = max_{x, i} |a_i(x) - b_i(x)| / max(1, |b_i(x)|),

where ``a`` is the float64 ``Network`` (after normalisation) and ``b`` is onnxruntime on the
original file in the model's own precision (float32 for most models). Each sample is first
rounded to the model's input dtype, so that both sides see the same point. Float32 arithmetic
alone accounts for errors near 1e-7 per layer; 1e-5 is the agreement threshold the tests use.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field

import numpy as np

from ..errors import ModelError
from .graph import Network
from .normalize import normalize_network
from .onnx_import import import_model, model_opset, read_model
from .runtime import OnnxRunner

#: the sampling box when no property gives one
DEFAULT_BOX = (-1.0, 1.0)


@dataclass
class CheckReport:
    """What ``check_model`` found. ``onnx_ops``: ONNX op type -> count; ``network``: the
    normalised ``Network``; ``max_rel_error`` as in the module docstring (``max_abs_error`` the
    plain maximum of ``|a - b|``); ``worst_input``: the flat input where the relative error is
    largest."""

    path: str
    opset: int
    onnx_ops: dict
    network: Network
    n_samples: int
    max_rel_error: float
    max_abs_error: float
    worst_input: np.ndarray = field(repr=False)
    tolerance: float = 1e-5

    @property
    def agrees(self) -> bool:
        """Whether the relative error is below ``tolerance``."""
        return bool(self.max_rel_error < self.tolerance)

    def format(self) -> str:
        """A plain-text report: ONNX ops, the normalised network, the agreement."""
        ops = ", ".join(f"{k} x{v}" for k, v in sorted(self.onnx_ops.items()))
        net = self.network
        lines = [f"model {self.path} (opset {self.opset})",
                 f"ONNX ops: {ops}",
                 f"network: input {net.input_shape} -> output {net.output_shape}, "
                 f"{len(net.nodes)} nodes after normalisation",
                 *("  " + line for line in net.summary().splitlines()),
                 f"agreement with onnxruntime on {self.n_samples} random inputs: max relative "
                 f"error {self.max_rel_error:.3e} (|a-b|/max(1,|b|)), max absolute error "
                 f"{self.max_abs_error:.3e}: "
                 f"{'OK' if self.agrees else 'DISAGREES'} (threshold {self.tolerance:g})"]
        return "\n".join(lines)

    __str__ = format


def relative_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``|a - b| / max(1, |b|)`` elementwise (``b`` the reference)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.abs(a - b) / np.maximum(1.0, np.abs(b))


def _boxes(boxes, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper), each (K, n), from None, a pair of arrays (n,) or (K, n), or a list of
    pairs."""
    if boxes is None:
        return np.full((1, n), DEFAULT_BOX[0]), np.full((1, n), DEFAULT_BOX[1])
    if isinstance(boxes, tuple) and len(boxes) == 2 and np.ndim(boxes[0]) in (1, 2):
        lo, hi = boxes
    else:
        lo, hi = [b[0] for b in boxes], [b[1] for b in boxes]
    lo = np.asarray(lo, dtype=np.float64).reshape(-1, n)
    hi = np.asarray(hi, dtype=np.float64).reshape(-1, n)
    if lo.shape != hi.shape or np.any(lo > hi) or not (np.all(np.isfinite(lo))
                                                       and np.all(np.isfinite(hi))):
        raise ValueError("boxes must be finite with lower <= upper and of the model's input size")
    return lo, hi


def sample_boxes(boxes, n: int, n_samples: int, rng) -> np.ndarray:
    """``n_samples`` points (n_samples, n): the corners lower and upper of each box, then uniform
    points, spread round-robin over the boxes."""
    lo, hi = _boxes(boxes, n)
    K = lo.shape[0]
    which = np.arange(n_samples) % K
    x = lo[which] + rng.random((n_samples, n)) * (hi[which] - lo[which])
    corners = np.concatenate([lo, hi])[:n_samples]
    x[:corners.shape[0]] = corners
    return x


def check_model(path, n_samples: int = 100, boxes=None, seed: int = 0,
                tolerance: float = 1e-5) -> CheckReport:
    """Import ``path``, list its ops, and compare the normalised ``Network`` with onnxruntime on
    ``n_samples`` inputs drawn from ``boxes`` (see ``sample_boxes``; default ``DEFAULT_BOX`` on
    every input). Raises ``ModelError``/``UnsupportedOpError`` when the model cannot be imported
    or run."""
    model = read_model(path)
    counts = collections.Counter(n.op_type for n in model.graph.node)
    try:
        net = normalize_network(import_model(model))
    except ModelError as e:
        raise type(e)(f"{path}: {e}") from e
    runner = OnnxRunner(path)
    if runner.n_inputs != net.n_inputs:
        raise ModelError(f"{path}: onnxruntime sees {runner.n_inputs} inputs, the import "
                         f"{net.n_inputs}")
    rng = np.random.default_rng(seed)
    x = sample_boxes(boxes, net.n_inputs, n_samples, rng)
    x = x.astype(runner.dtype).astype(np.float64)
    ref = runner(x)
    y = np.asarray(net(x), dtype=np.float64).reshape(x.shape[0], -1)
    if y.shape != ref.shape:
        raise ModelError(f"{path}: the network gives {y.shape[1]} outputs, onnxruntime "
                         f"{ref.shape[1]}")
    rel = relative_error(y, ref)
    worst = int(np.unravel_index(np.argmax(rel), rel.shape)[0]) if rel.size else 0
    return CheckReport(str(path), model_opset(model), dict(counts), net, x.shape[0],
                       float(rel.max()) if rel.size else 0.0,
                       float(np.abs(y - ref).max()) if rel.size else 0.0,
                       x[worst].copy() if x.size else np.zeros(0), tolerance)
