"""Model builders for certified training: MLPs, CNNs from a short description, and the standard
architectures of the certified-training literature.

- ``mlp([784, 256, 256, 10])``: Linear layers with an activation between them.
- ``cnn(input_shape, conv=[(channels, kernel, stride, padding), ...], dense=[100])``: Conv
  layers, a flatten, Linear layers, each followed by the activation except the last.
- ``cnn_small`` / ``cnn_medium`` / ``cnn_large`` (Gowal et al. 2018, "VALID" padding):
  small = conv16 4x4/2, conv32 4x4/1, FC100; medium = conv32 3x3/1, conv32 4x4/2, conv64 3x3/1,
  conv64 4x4/2, FC512, FC512; large = conv64 3x3/1, conv64 3x3/1, conv128 3x3/2,
  conv128 3x3/1, conv128 3x3/1, FC512.
- ``cnn7`` (the CNN7 of Shi et al. 2021): conv64, conv64, conv128 /2, conv128, conv128 (3x3,
  padding 1), FC512, each followed by BatchNorm and ReLU; ``width`` scales the channels.
- ``batchnorm=True`` (any builder) puts a BatchNorm node before every activation.

Initialisation (deterministic for a seed): ``"ibp"`` (Shi et al. 2021) draws every weight but
the last layer's from ``N(0, 2 pi / n_in^2)`` (``n_in`` the fan-in), which keeps the expected
interval width constant from layer to layer; ``"kaiming"`` draws from ``N(0, 2 / n_in)`` (He et
al. 2015). The last layer uses ``N(0, 1 / n_in)`` under both. Biases start at 0.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..network import Network, Node
from ..network import ops as O
from .batchnorm import BN_SOURCE

ACTIVATIONS = {"relu": O.Relu, "leaky_relu": O.LeakyRelu, "sigmoid": O.Sigmoid,
               "tanh": O.Tanh, "softplus": O.Softplus}


def _activation(name: str) -> O.Op:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; one of {sorted(ACTIVATIONS)}") from None


def _weight(rng, shape, fan_in: int, init: str, last: bool) -> np.ndarray:
    if last:
        std = 1.0 / math.sqrt(fan_in)
    elif init == "ibp":
        std = math.sqrt(2.0 * math.pi) / fan_in
    elif init == "kaiming":
        std = math.sqrt(2.0 / fan_in)
    else:
        raise ValueError(f"unknown init {init!r} (ibp, kaiming)")
    return rng.normal(0.0, std, size=shape)


class _Builder:
    """Appends nodes in order, tracking the current value's name and shape."""

    def __init__(self, input_shape, seed: int, init: str, activation: str,
                 batchnorm: bool = False):
        self.nodes: list[Node] = []
        self.input_shape = tuple(input_shape)
        self.name, self.shape = "input", tuple(input_shape)
        self.rng = np.random.default_rng(seed)
        self.init, self.activation, self.batchnorm = init, activation, batchnorm
        self.count: dict[str, int] = {}

    def add(self, kind: str, op: O.Op, shape, source: str = "") -> None:
        self.count[kind] = self.count.get(kind, 0) + 1
        name = f"{kind}{self.count[kind]}"
        self.nodes.append(Node(name, op, (self.name,), tuple(shape), source))
        self.name, self.shape = name, tuple(shape)

    def act(self) -> None:
        if self.batchnorm:
            ones = np.ones((self.shape[0],) + (1,) * (len(self.shape) - 1))
            self.add("bn", O.Scale(ones, np.zeros_like(ones)), self.shape, BN_SOURCE)
        self.add(self.activation, _activation(self.activation), self.shape)

    def conv(self, channels: int, kernel: int, stride: int, padding: int) -> None:
        c = self.shape[0]
        W = _weight(self.rng, (channels, c, kernel, kernel), c * kernel * kernel, self.init, False)
        op = O.Conv(W, np.zeros(channels), stride=(stride, stride), pads=(padding,) * 4)
        self.add("conv", op, op.output_shape(self.shape))
        self.act()

    def flatten(self) -> None:
        if len(self.shape) != 1:
            self.add("flatten", O.Reshape((int(np.prod(self.shape)),)), (int(np.prod(self.shape)),))

    def dense(self, width: int, last: bool = False) -> None:
        n = self.shape[0]
        W = _weight(self.rng, (width, n), n, self.init, last)
        self.add("fc", O.Linear(W, np.zeros(width)), (width,))
        if not last:
            self.act()

    def network(self) -> Network:
        return Network("input", self.input_shape, self.nodes, self.name)


def mlp(sizes, activation: str = "relu", input_shape=None, init: str = "ibp",
        seed: int = 0, batchnorm: bool = False) -> Network:
    """A fully connected network with layer widths ``sizes`` (input first, classes last) and
    ``activation`` after every hidden layer (``batchnorm``: a BatchNorm node before each
    activation). ``input_shape`` (default ``(sizes[0],)``) may be an image shape, flattened
    first."""
    input_shape = (sizes[0],) if input_shape is None else tuple(input_shape)
    if int(np.prod(input_shape)) != sizes[0]:
        raise ValueError(f"input shape {input_shape} does not have {sizes[0]} elements")
    b = _Builder(input_shape, seed, init, activation, batchnorm)
    b.flatten()
    for i, w in enumerate(sizes[1:]):
        b.dense(w, last=i == len(sizes) - 2)
    return b.network()


def cnn(input_shape, conv, dense=(), n_classes: int = 10, activation: str = "relu",
        init: str = "ibp", seed: int = 0, batchnorm: bool = False) -> Network:
    """Conv layers ``conv`` = [(channels, kernel, stride, padding), ...], then a flatten, then
    Linear layers of widths ``dense`` and a last Linear to ``n_classes``; ``activation`` after
    every layer but the last, preceded by a BatchNorm node when ``batchnorm`` (a ``Scale`` that
    trains with batch statistics, see ``batchnorm``). ``input_shape`` is (C, H, W)."""
    b = _Builder(input_shape, seed, init, activation, batchnorm)
    for spec in conv:
        b.conv(*spec)
    b.flatten()
    for w in dense:
        b.dense(w)
    b.dense(n_classes, last=True)
    return b.network()


def cnn_small(input_shape=(1, 28, 28), n_classes: int = 10, **kw) -> Network:
    """Gowal et al.'s small CNN: conv16 4x4/2, conv32 4x4/1, FC100 (no padding)."""
    return cnn(input_shape, [(16, 4, 2, 0), (32, 4, 1, 0)], [100], n_classes, **kw)


def cnn_medium(input_shape=(1, 28, 28), n_classes: int = 10, **kw) -> Network:
    """Gowal et al.'s medium CNN: conv32 3x3/1, conv32 4x4/2, conv64 3x3/1, conv64 4x4/2,
    FC512, FC512 (no padding)."""
    return cnn(input_shape, [(32, 3, 1, 0), (32, 4, 2, 0), (64, 3, 1, 0), (64, 4, 2, 0)],
               [512, 512], n_classes, **kw)


def cnn_large(input_shape=(1, 28, 28), n_classes: int = 10, **kw) -> Network:
    """Gowal et al.'s large CNN: conv64 3x3/1, conv64 3x3/1, conv128 3x3/2, conv128 3x3/1,
    conv128 3x3/1, FC512 (padding 1)."""
    return cnn7(input_shape, n_classes, width=64, linear=512, batchnorm=False, **kw)


def cnn7(input_shape=(1, 28, 28), n_classes: int = 10, width: int = 64, linear: int = 512,
         batchnorm: bool = True, **kw) -> Network:
    """CNN7 (Shi et al. 2021): conv w, conv w, conv 2w /2, conv 2w, conv 2w (3x3, padding 1),
    FC ``linear``, each followed by BatchNorm (``batchnorm``) and ReLU; ``width`` w = 64."""
    w = width
    return cnn(input_shape, [(w, 3, 1, 1), (w, 3, 1, 1), (2 * w, 3, 2, 1), (2 * w, 3, 1, 1),
                             (2 * w, 3, 1, 1)], [linear], n_classes, batchnorm=batchnorm, **kw)


def ibp_init(net: Network, seed: int = 0) -> Network:
    """``net`` with every Linear/Conv weight but the last redrawn from ``N(0, 2 pi / n_in^2)``
    (Shi et al. 2021) and biases set to 0, deterministic for ``seed``."""
    rng = np.random.default_rng(seed)
    affine = [n for n in net.nodes if isinstance(n.op, (O.Linear, O.Conv))]
    ops = {}
    for node in affine[:-1]:
        W = node.op.W
        fan_in = int(np.prod(W.shape[1:]))
        W = rng.normal(0.0, math.sqrt(2.0 * math.pi) / fan_in, size=W.shape)
        ops[node.name] = dataclasses.replace(node.op, W=W, b=np.zeros_like(node.op.b))
    return net.replace_ops(ops)
