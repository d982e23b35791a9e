"""The network graph: an immutable DAG of nodes in topological order.

A ``Network`` has one input tensor and one output tensor (the VNN-COMP convention). Shapes are
per sample, without the batch axis; every evaluation works on a batch, axis 0 first, in float64.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .ops import Op


@dataclass(frozen=True)
class Node:
    """One op application. ``name`` names its output value; ``inputs`` name earlier nodes or the
    network input; ``shape`` is the output shape without the batch axis; ``source`` names the
    ONNX node(s) it came from, for messages."""

    name: str
    op: Op
    inputs: tuple[str, ...]
    shape: tuple[int, ...]
    source: str = ""


@dataclass(frozen=True, eq=False)
class Network:
    """A DAG of ``nodes`` (topological order) from ``input_name`` (shape ``input_shape``) to
    ``output_name``. ``net(x)`` evaluates a batch: ``x`` of shape (B, *input_shape) or (B, n)."""

    input_name: str
    input_shape: tuple[int, ...]
    nodes: tuple[Node, ...]
    output_name: str
    _index: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
        object.__setattr__(self, "nodes", tuple(self.nodes))
        index = {}
        known = {self.input_name}
        for i, node in enumerate(self.nodes):
            for name in node.inputs:
                if name not in known:
                    raise ValueError(f"node {node.name!r} reads {name!r} before it is computed")
            if node.name in known:
                raise ValueError(f"two values are named {node.name!r}")
            known.add(node.name)
            index[node.name] = i
        if self.output_name not in known:
            raise ValueError(f"the output {self.output_name!r} is not computed")
        object.__setattr__(self, "_index", index)

    # -- shapes -------------------------------------------------------------------------------
    @property
    def n_inputs(self) -> int:
        """Number of scalar inputs (flattened)."""
        return int(np.prod(self.input_shape, dtype=np.int64))

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.shape_of(self.output_name)

    @property
    def n_outputs(self) -> int:
        """Number of scalar outputs (flattened)."""
        return int(np.prod(self.output_shape, dtype=np.int64))

    def shape_of(self, name: str) -> tuple[int, ...]:
        """Per-sample shape of the value ``name`` (a node or the input)."""
        if name == self.input_name:
            return self.input_shape
        return self.nodes[self._index[name]].shape

    def node(self, name: str) -> Node:
        return self.nodes[self._index[name]]

    # -- evaluation ---------------------------------------------------------------------------
    def _as_batch(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.shape[1:] == self.input_shape:
            return x
        if x.ndim == 2 and x.shape[1] == self.n_inputs:
            return x.reshape((x.shape[0],) + self.input_shape)
        if x.shape == self.input_shape or (x.ndim == 1 and x.size == self.n_inputs):
            return x.reshape((1,) + self.input_shape)
        raise ValueError(f"input of shape {x.shape} does not fit the network's input shape "
                         f"{self.input_shape}")

    def forward_all(self, x) -> dict[str, np.ndarray]:
        """Every value of the graph for the batch ``x``: {name: (B, *shape)}."""
        values = {self.input_name: self._as_batch(x)}
        for node in self.nodes:
            values[node.name] = node.op.forward(*(values[i] for i in node.inputs))
        return values

    def __call__(self, x) -> np.ndarray:
        """The output batch (B, *output_shape) for the input batch ``x``."""
        return self.forward_all(x)[self.output_name]

    def vjp(self, x, grad_out, values: dict | None = None) -> np.ndarray:
        """Gradient of ``sum(grad_out * net(x))`` with respect to ``x``: shape (B, *input_shape).

        Reverse-mode accumulation through each op's ``vjp``; ``values`` may pass a
        ``forward_all`` result to avoid recomputing it."""
        grads = self.vjp_all(x, grad_out, values)
        return grads.get(self.input_name, np.zeros_like(self._as_batch(x)))

    def vjp_all(self, x, grad_out, values: dict | None = None) -> dict[str, np.ndarray]:
        """Gradients of ``sum(grad_out * net(x))`` with respect to every value of the graph."""
        if values is None:
            values = self.forward_all(x)
        out = values[self.output_name]
        grads = {self.output_name: np.asarray(grad_out, dtype=np.float64).reshape(out.shape)}
        for node in reversed(self.nodes):
            g = grads.get(node.name)
            if g is None:
                continue
            xs = [values[i] for i in node.inputs]
            for name, gi in zip(node.inputs, node.op.vjp(xs, values[node.name], g)):
                if gi is None:
                    continue
                grads[name] = grads[name] + gi if name in grads else gi
        return grads

    # -- rebuilding ---------------------------------------------------------------------------
    def replace_ops(self, ops: dict[str, Op]) -> "Network":
        """A copy with the ops of the named nodes replaced (used by training to set weights)."""
        nodes = tuple(Node(n.name, ops.get(n.name, n.op), n.inputs, n.shape, n.source)
                      for n in self.nodes)
        return Network(self.input_name, self.input_shape, nodes, self.output_name)

    def summary(self) -> str:
        """One line per node: name, op, inputs and output shape."""
        lines = [f"input  {self.input_name}: {self.input_shape}"]
        for n in self.nodes:
            lines.append(f"{n.name}: {n.op.describe()} <- {', '.join(n.inputs)} -> {n.shape}")
        lines.append(f"output {self.output_name}: {self.output_shape}")
        return "\n".join(lines)
