"""The small architectures of the soundness benchmark, built from a ``ModelSpec``.

Two families, after SoundnessBench (Zhou et al., "Testing Neural Network Verifiers: A Soundness
Benchmark with Hidden Counterexamples"), all with two output logits:

- ``mlp``: a flat input (e.g. 10 values), ``depth`` hidden Linear layers of ``width`` units, each
  followed by the activation; with ``residual``, the hidden layers after the first come in
  blocks ``h <- act(h + fc2(act(fc1(h))))`` (a ``Sum`` of two branches, as ONNX ``Add``).
- ``cnn``: an image input (C, H, W) (e.g. 1x5x5 or 3x5x5), ``depth`` 3x3 convolutions of
  ``width`` channels with padding 1 (the size is kept), each followed by the activation; with
  ``residual``, the convolutions after the first come in blocks ``h <- act(h + conv(act(conv(h))))``;
  with ``pool``, a 2x2 average pooling of stride 1 follows; then a flatten, a Linear layer of
  ``dense`` units with the activation, and the last Linear layer to the two logits.

Weights are drawn from ``N(0, gain / fan_in)`` (``gain`` 2 for ReLU, 1 for tanh and sigmoid:
He / LeCun scaling) with small random biases, deterministic for ``seed``; the first layer's are
further divided by the input range ``r`` (inputs lie in ``[-r, r]``, r = 0.1), as if the inputs
had been normalised to ``[-1, 1]``: the planting training needs functions that change within a
fraction of ``eps``, and starting from weights 100 times too small would cost most of it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..network import Network, Node
from ..network import ops as O

ACTIVATIONS = {"relu": O.Relu, "tanh": O.Tanh, "sigmoid": O.Sigmoid}


@dataclass(frozen=True)
class ModelSpec:
    """One architecture of the benchmark and the radius its properties use.

    name: file stem of the model (``onnx/<name>.onnx``).
    kind: "mlp" or "cnn".
    input_shape: (n,) for an MLP, (C, H, W) for a CNN.
    depth: hidden Linear layers (MLP) or convolutions (CNN).
    width: units per hidden layer (MLP) or channels per convolution (CNN).
    activation: "relu", "tanh" or "sigmoid".
    eps: L-infinity radius of the properties (absolute, in input units).
    residual: residual blocks (needs an odd ``depth`` >= 3: one layer, then blocks of two).
    pool: a 2x2 average pooling (stride 1) after the convolutions (CNN only).
    dense: units of the CNN's hidden Linear layer.
    planted / clean / rounds / lr: this model's number of planted and clean points, of training
    rounds, and its learning rate, when they differ from the configuration's (None: the
    configuration's; smooth activations need a larger step to make sharp features).
    """

    name: str
    kind: str
    input_shape: tuple[int, ...]
    depth: int
    width: int
    activation: str
    eps: float
    residual: bool = False
    pool: bool = False
    dense: int = 16
    planted: int | None = None
    clean: int | None = None
    rounds: int | None = None
    lr: float | None = None

    def __post_init__(self):
        if self.kind not in ("mlp", "cnn"):
            raise ValueError(f"{self.name}: kind must be mlp or cnn, got {self.kind!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"{self.name}: activation must be one of {sorted(ACTIVATIONS)}")
        if self.kind == "mlp" and len(self.input_shape) != 1:
            raise ValueError(f"{self.name}: an MLP takes a flat input, got {self.input_shape}")
        if self.kind == "cnn" and len(self.input_shape) != 3:
            raise ValueError(f"{self.name}: a CNN takes a (C, H, W) input, got {self.input_shape}")
        if self.residual and (self.depth < 3 or self.depth % 2 == 0):
            raise ValueError(f"{self.name}: residual blocks need an odd depth >= 3")
        if self.pool and self.kind != "cnn":
            raise ValueError(f"{self.name}: pooling is for CNNs")
        if not self.eps > 0:
            raise ValueError(f"{self.name}: eps must be positive")

    def describe(self) -> str:
        """A short text such as ``cnn 3x5x5, 3 conv x 4 ch, relu, residual, avgpool``."""
        shape = "x".join(str(s) for s in self.input_shape)
        unit = "fc" if self.kind == "mlp" else "conv"
        what = "units" if self.kind == "mlp" else "ch"
        parts = [f"{self.kind} {shape}", f"{self.depth} {unit} x {self.width} {what}",
                 self.activation]
        if self.residual:
            parts.append("residual")
        if self.pool:
            parts.append("avgpool")
        return ", ".join(parts)


class _Builder:
    def __init__(self, spec: ModelSpec, seed: int, input_range: float):
        self.spec = spec
        self.first_gain = 1.0 / input_range ** 2
        self.rng = np.random.default_rng(seed)
        self.gain = 2.0 if spec.activation == "relu" else 1.0
        self.nodes: list[Node] = []
        self.name, self.shape = "input", tuple(spec.input_shape)
        self.count: dict[str, int] = {}

    def add(self, kind: str, op: O.Op, shape, inputs=None) -> str:
        self.count[kind] = self.count.get(kind, 0) + 1
        name = f"{kind}{self.count[kind]}"
        self.nodes.append(Node(name, op, tuple(inputs or (self.name,)), tuple(shape)))
        self.name, self.shape = name, tuple(shape)
        return name

    def act(self) -> str:
        return self.add(self.spec.activation, ACTIVATIONS[self.spec.activation](), self.shape)

    def _draw(self, shape, fan_in: int, gain: float):
        if not self.nodes:
            gain *= self.first_gain
        W = self.rng.normal(0.0, math.sqrt(gain / fan_in), size=shape)
        b = self.rng.normal(0.0, 0.01, size=shape[0])
        return W, b

    def dense(self, units: int, last: bool = False) -> str:
        n = self.shape[0]
        W, b = self._draw((units, n), n, 1.0 if last else self.gain)
        return self.add("fc", O.Linear(W, b), (units,))

    def conv(self) -> str:
        c = self.shape[0]
        W, b = self._draw((self.spec.width, c, 3, 3), 9 * c, self.gain)
        op = O.Conv(W, b, stride=(1, 1), pads=(1, 1, 1, 1))
        return self.add("conv", op, op.output_shape(self.shape))

    def block(self, layer) -> None:
        """``h <- act(h + layer(act(layer(h))))``."""
        skip = self.name
        layer()
        self.act()
        branch = layer()
        self.add("add", O.Sum((1.0, 1.0)), self.shape, inputs=(skip, branch))
        self.act()

    def body(self, layer) -> None:
        layer()
        self.act()
        if self.spec.residual:
            for _ in range((self.spec.depth - 1) // 2):
                self.block(layer)
        else:
            for _ in range(self.spec.depth - 1):
                layer()
                self.act()


def build_model(spec: ModelSpec, seed: int = 0, input_range: float = 0.1) -> Network:
    """The untrained network of ``spec`` (see module) for inputs in ``[-input_range,
    input_range]``, deterministic for ``seed``."""
    b = _Builder(spec, seed, input_range)
    if spec.kind == "mlp":
        b.body(lambda: b.dense(spec.width))
    else:
        b.body(b.conv)
        if spec.pool:
            op = O.AvgPool(kernel=(2, 2), stride=(1, 1))
            b.add("pool", op, op.output_shape(b.shape))
        n = int(np.prod(b.shape))
        b.add("flatten", O.Reshape((n,)), (n,))
        b.dense(spec.dense)
        b.act()
    b.dense(2, last=True)
    return Network("input", spec.input_shape, b.nodes, b.name)


#: linear ops that ``dense_equivalent`` turns into one dense matrix each
_LINEAR_MAPS = (O.Conv, O.ConvTranspose, O.AvgPool)


def dense_equivalent(net: Network) -> Network:
    """The same function on flat vectors, with every convolution and average pooling replaced by
    its dense matrix (``W[:, j] = op(e_j) - op(0)``, bias ``op(0)``) and reshapes dropped.

    The attacks evaluate these small networks thousands of times per step: for 5x5 images the
    dense products are far cheaper than im2col. Inputs and outputs are flat; the function is
    the same up to rounding (the attacks only search, every counterexample is replayed on
    onnxruntime). A network without such ops is returned as it is."""
    if not any(isinstance(n.op, (*_LINEAR_MAPS, O.Reshape)) for n in net.nodes):
        return net
    nodes, alias = [], {}
    for node in net.nodes:
        inputs = tuple(alias.get(i, i) for i in node.inputs)
        size = int(np.prod(node.shape))
        op = node.op
        if isinstance(op, O.Reshape):
            alias[node.name] = inputs[0]
            continue
        if isinstance(op, _LINEAR_MAPS):
            in_shape = net.shape_of(node.inputs[0])
            n_in = int(np.prod(in_shape))
            zero = op.forward(np.zeros((1,) + in_shape)).reshape(-1)
            cols = op.forward(np.eye(n_in).reshape((n_in,) + in_shape)).reshape(n_in, size)
            op = O.Linear((cols - zero).T, zero)
        elif not isinstance(op, (O.Linear, O.Sum, *ACTIVATIONS.values())):
            raise ValueError(f"dense_equivalent: no rule for {type(op).__name__}")
        elif isinstance(op, O.Linear) and len(net.shape_of(node.inputs[0])) != 1:
            raise ValueError("dense_equivalent: a Linear op on a non-flat value")
        nodes.append(Node(node.name, op, inputs, (size,), node.source))
    out = alias.get(net.output_name, net.output_name)
    return Network(net.input_name, (net.n_inputs,), nodes, out)
