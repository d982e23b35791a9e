"""A network as a chain of dense affine layers with optional ReLUs: the form branch and bound
bounds fast.

``ReluChain`` holds layers ``i = 1..L``: ``z_i = W_i v_{i-1} + b_i`` with ``v_0 = x`` (the
flattened input) and ``v_i = relu(z_i)`` where ``relu[i]`` is set, else ``v_i = z_i``; the output
is ``y = v_L``. A network whose graph is such a chain of Linear (on 1-D values), Scale, Reshape,
Select, Conv/ConvTranspose (densified when small) and Relu ops converts exactly: every matrix
entry is a parameter of the network or a 0/1, never a computed product, so the chain computes the
same function as the network in exact arithmetic. Consecutive affine ops stay separate layers
(multiplying them would round). Any other op (or a branching graph) gives ``None``; the generic
bound core then handles the network.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np

from ..network import ops

log = logging.getLogger(__name__)

#: densify a convolution only when its matrix has at most this many entries
MAX_DENSE = 1 << 23


@dataclass(frozen=True, eq=False)
class ReluChain:
    """``W[i]``: (n_i, n_{i-1}) float64 C-contiguous, ``b[i]``: (n_i,), ``relu[i]``: whether a
    ReLU follows layer i. ``n0`` is the flat input size; ``widths[i] = n_i``."""

    W: tuple[np.ndarray, ...]
    b: tuple[np.ndarray, ...]
    relu: tuple[bool, ...]
    n0: int

    @property
    def L(self) -> int:
        return len(self.W)

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(w.shape[0] for w in self.W)

    @property
    def n_relu(self) -> int:
        """Number of ReLU neurons."""
        return sum(w.shape[0] for w, r in zip(self.W, self.relu) if r)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Output (B, n_L) for inputs x (B, n0), float64."""
        v = np.asarray(x, dtype=np.float64).reshape(-1, self.n0)
        for W, b, r in zip(self.W, self.b, self.relu):
            v = v @ W.T + b
            if r:
                v = np.maximum(v, 0.0)
        return v

    def pre_activations(self, x: np.ndarray) -> list[np.ndarray]:
        """``[z_1, ..., z_L]`` for inputs x (B, n0)."""
        v = np.asarray(x, dtype=np.float64).reshape(-1, self.n0)
        out = []
        for W, b, r in zip(self.W, self.b, self.relu):
            z = v @ W.T + b
            out.append(z)
            v = np.maximum(z, 0.0) if r else z
        return out


def _dense_of(op, in_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray] | None:
    """(W, b) with ``op(x).ravel() == W x.ravel() + b`` exactly, or None if op is not affine (or
    too large to densify)."""
    n = int(np.prod(in_shape, dtype=np.int64))
    if isinstance(op, ops.Linear):
        if len(in_shape) != 1:
            return None
        return op.W, op.b
    if isinstance(op, ops.Scale):
        a = np.broadcast_to(op.a, in_shape).ravel()
        c = np.broadcast_to(op.c, in_shape).ravel()
        if n * n > MAX_DENSE:
            return None
        return np.diag(a), c.copy()
    if isinstance(op, ops.Select):
        idx = op.index.ravel()
        if idx.size * n > MAX_DENSE:
            return None
        W = np.zeros((idx.size, n))
        keep = idx >= 0
        W[np.flatnonzero(keep), idx[keep]] = 1.0
        b = np.where(keep, 0.0, float(op.fill))
        return W, b
    if isinstance(op, (ops.Conv, ops.ConvTranspose)):
        out_n = int(np.prod(op.output_shape(in_shape), dtype=np.int64)) \
            if hasattr(op, "output_shape") else None
        if out_n is None or out_n * n > MAX_DENSE:
            return None
        # each column is the op without bias applied to a unit vector: one product w * 1 and
        # exact zeros, so the entries are the weights themselves
        nobias = dataclasses.replace(op, b=np.zeros_like(op.b))
        eye = np.eye(n).reshape((n,) + tuple(in_shape))
        W = np.ascontiguousarray(nobias.forward(eye).reshape(n, -1).T)
        zero = np.zeros((1,) + tuple(in_shape))
        b = op.forward(zero).reshape(-1)  # 0 * w sums to 0, plus the bias: the bias exactly
        return W, b
    return None


def as_relu_chain(net) -> ReluChain | None:
    """The ``ReluChain`` of ``net``, or None when its graph is not a chain of supported ops."""
    W, b, relu = [], [], []
    prev = net.input_name
    shape = tuple(net.input_shape)
    for node in net.nodes:
        if node.inputs != (prev,):
            log.debug("not a chain at %s", node.name)
            return None
        op = node.op
        if isinstance(op, ops.Reshape):
            pass
        elif isinstance(op, ops.Relu):
            if not W or relu[-1]:
                # a ReLU on the input or after a ReLU: insert an exact identity layer
                k = int(np.prod(shape, dtype=np.int64))
                W.append(np.eye(k))
                b.append(np.zeros(k))
                relu.append(False)
            relu[-1] = True
        else:
            dense = _dense_of(op, shape)
            if dense is None:
                log.debug("op %s at %s has no dense form", type(op).__name__, node.name)
                return None
            W.append(np.ascontiguousarray(dense[0], dtype=np.float64))
            b.append(np.ascontiguousarray(dense[1], dtype=np.float64).reshape(-1))
            relu.append(False)
        prev = node.name
        shape = tuple(node.shape)
    if prev != net.output_name:
        return None
    if not W:
        return None
    if relu[-1]:  # the output is a ReLU: an exact identity layer makes it an inner one
        k = W[-1].shape[0]
        W.append(np.eye(k))
        b.append(np.zeros(k))
        relu.append(False)
    return ReluChain(tuple(W), tuple(b), tuple(relu), net.n_inputs)
