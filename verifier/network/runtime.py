"""onnxruntime on the original model file: the judge of every counterexample.

``OnnxRunner(path)`` holds one onnxruntime session (CPU provider, one intra-op thread) and maps a
batch of flat float64 inputs (B, n) to flat float64 outputs (B, m), evaluated in the model's own
precision: each row is cast to the model's input dtype (float32 for most models) and reshaped to
its input shape. The batch axis follows the import convention (``onnx_import.has_batch_axis``).

By default every row runs on its own, at batch size 1: that is how VNN-COMP evaluates a
counterexample, and it is the semantics the importer gives the model (an op that mixes samples,
such as a Softmax over the batch axis, would otherwise make a batch evaluate differently, and a
batched matrix kernel may round differently in the last bit). ``OnnxRunner(path,
allow_batch=True)`` runs whole batches at once where the model's input and output batch
dimensions are symbolic (faster, for agreement checks on many samples).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import ModelError
from .onnx_import import has_batch_axis

log = logging.getLogger(__name__)

_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64,
           "tensor(float16)": np.float16}


class OnnxRunner:
    """``runner(x)``: x (B, n) float64 -> (B, m) float64 computed by onnxruntime on ``path``.

    Attributes: ``input_name``, ``dtype`` (the model's input dtype), ``input_shape`` (per sample,
    without the batch axis), ``n_inputs``, ``batchable`` (whether the model's batch dimension is
    symbolic in its input and output), ``batched`` (whether whole batches are run at once:
    ``allow_batch`` and ``batchable``), ``calls`` (number of session runs)."""

    def __init__(self, path, allow_batch: bool = False):
        import onnxruntime as ort  # noqa: PLC0415 (import cost only when used)

        self.path = Path(path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types; all are model errors
            raise ModelError(f"{self.path}: onnxruntime cannot open the model "
                             f"({type(e).__name__}: {e})") from e
        overridable = {i.name for i in self.session.get_overridable_initializers()}
        inputs = [i for i in self.session.get_inputs() if i.name not in overridable]
        if len(inputs) != 1:
            raise ModelError(f"{self.path}: the model has {len(inputs)} inputs; exactly one is "
                             f"supported")
        inp = inputs[0]
        if inp.type not in _DTYPES:
            raise ModelError(f"{self.path}: the input {inp.name!r} has type {inp.type}")
        self.input_name = inp.name
        self.dtype = _DTYPES[inp.type]
        dims = list(inp.shape)
        has_batch = has_batch_axis(dims)
        self.input_shape = tuple(int(d) for d in (dims[1:] if has_batch else dims))
        if any(not isinstance(d, int) for d in self.input_shape):
            raise ModelError(f"{self.path}: the input has symbolic dimensions {dims}")
        out_dims = list(self.session.get_outputs()[0].shape)
        self.batchable = bool(has_batch and not isinstance(dims[0], int)
                              and out_dims and not isinstance(out_dims[0], int))
        self.batched = bool(allow_batch and self.batchable)
        self._feed_shape = ((1,) if has_batch else ()) + self.input_shape
        self.n_inputs = int(np.prod(self.input_shape, dtype=np.int64))
        self.calls = 0

    def _run(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        try:
            return self.session.run(None, {self.input_name: x})[0]
        except Exception as e:  # onnxruntime's own exception types: a model error, never unsat
            raise ModelError(f"{self.path}: onnxruntime failed ({type(e).__name__}: {e})") from e

    def __call__(self, x) -> np.ndarray:
        """Outputs (B, m) float64 for the inputs ``x`` (B, n), each row cast to the model's input
        dtype."""
        x = np.asarray(x, dtype=np.float64)
        x = x.reshape(-1, self.n_inputs) if x.ndim != 2 or x.shape[1] != self.n_inputs else x
        B = x.shape[0]
        xc = x.astype(self.dtype)
        if self.batched and B > 0:
            y = self._run(xc.reshape((B,) + self.input_shape))
            return np.asarray(y, dtype=np.float64).reshape(B, -1)
        rows = [np.asarray(self._run(xc[b].reshape(self._feed_shape)), dtype=np.float64).ravel()
                for b in range(B)]
        if not rows:
            m = int(np.prod([d if isinstance(d, int) else 1
                             for d in self.session.get_outputs()[0].shape]))
            return np.zeros((0, m))
        return np.stack(rows)
