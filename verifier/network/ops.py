"""The ops a ``Network`` is made of, after import and normalisation.

Each op knows its ``forward`` (batched, float64, batch axis first) and its ``vjp`` (the
vector-Jacobian product with respect to each variable input). Parameters are float64 numpy
arrays listed in ``params``; ``param_vjp`` gives their gradients (training). Every other method
(interval rule, linear relaxation, LP/SDP encoding) lives with that method in ``bounds/``, in a
table keyed by op class.

Shapes in docstrings are per sample; arrays carry a leading batch axis B.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np


class Op:
    """Base class. Subclasses are frozen dataclasses whose fields are the op's attributes."""

    #: number of variable inputs (None: any number >= 1)
    arity: int | None = 1
    #: names of the fields that are trainable parameters
    params: tuple[str, ...] = ()

    def forward(self, *xs: np.ndarray) -> np.ndarray:
        raise NotImplementedError(type(self).__name__)

    def vjp(self, xs: list[np.ndarray], y: np.ndarray, g: np.ndarray) -> list[np.ndarray | None]:
        """Gradients of ``sum(g * forward(*xs))`` with respect to each input (None: no gradient)."""
        raise NotImplementedError(type(self).__name__)

    def param_vjp(self, xs: list[np.ndarray], y: np.ndarray, g: np.ndarray) -> dict[str, np.ndarray]:
        """Gradients of ``sum(g * forward(*xs))`` with respect to each parameter, summed over B."""
        return {}

    def describe(self) -> str:
        parts = []
        for f in fields(self):
            v = getattr(self, f.name)
            parts.append(f"{f.name}={v.shape}" if isinstance(v, np.ndarray) else f"{f.name}={v}")
        return f"{type(self).__name__}({', '.join(parts)})"


def _arr(x) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x, dtype=np.float64))


def _sum_to(g: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum ``g`` (B, ...) over the batch axis and over the axes broadcast to reach it from ``shape``."""
    g = g.sum(axis=0)
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for ax, s in enumerate(shape):
        if s == 1 and g.shape[ax] != 1:
            g = g.sum(axis=ax, keepdims=True)
    return g


# --------------------------------------------------------------------------------------------
# affine ops
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Linear(Op):
    """``y[..., i] = sum_j W[i, j] x[..., j] + b[i]`` over the last axis. W: (m, n), b: (m,)."""

    W: np.ndarray
    b: np.ndarray
    params = ("W", "b")

    def __post_init__(self):
        object.__setattr__(self, "W", _arr(self.W))
        object.__setattr__(self, "b", _arr(self.b))

    def forward(self, x):
        return x @ self.W.T + self.b

    def vjp(self, xs, y, g):
        return [g @ self.W]

    def param_vjp(self, xs, y, g):
        x = xs[0].reshape(-1, self.W.shape[1])
        g2 = g.reshape(-1, self.W.shape[0])
        return {"W": g2.T @ x, "b": g2.sum(axis=0)}


@dataclass(frozen=True, eq=False)
class Scale(Op):
    """Elementwise ``y = a * x + c``; ``a``, ``c`` broadcast to the sample shape (Mul, Div, Add,
    Sub by constants, Neg, a BatchNorm that could not be folded)."""

    a: np.ndarray
    c: np.ndarray
    params = ("a", "c")

    def __post_init__(self):
        object.__setattr__(self, "a", _arr(self.a))
        object.__setattr__(self, "c", _arr(self.c))

    def forward(self, x):
        return x * self.a + self.c

    def vjp(self, xs, y, g):
        gx = g * self.a
        return [gx if gx.shape == g.shape else np.broadcast_to(gx, g.shape).copy()]

    def param_vjp(self, xs, y, g):
        return {"a": _sum_to(g * xs[0], self.a.shape), "c": _sum_to(g, self.c.shape)}


@dataclass(frozen=True, eq=False)
class Sum(Op):
    """``y = sum_i weights[i] * x_i`` of variable inputs of one shape (residual Add, Sub)."""

    weights: tuple[float, ...]
    arity = None

    def forward(self, *xs):
        y = self.weights[0] * xs[0]
        for w, x in zip(self.weights[1:], xs[1:]):
            y = y + w * x
        return y

    def vjp(self, xs, y, g):
        return [w * g for w in self.weights]


@dataclass(frozen=True, eq=False)
class Conv(Op):
    """2-D convolution (ONNX Conv semantics). x: (C, H, W) -> (M, H', W').
    W: (M, C/groups, kh, kw); b: (M,); stride (sh, sw); pads (top, left, bottom, right);
    dilation (dh, dw); groups."""

    W: np.ndarray
    b: np.ndarray
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    params = ("W", "b")


@dataclass(frozen=True, eq=False)
class ConvTranspose(Op):
    """2-D transposed convolution (ONNX ConvTranspose semantics). W: (C, M/groups, kh, kw);
    b: (M,); stride; pads (top, left, bottom, right); output_padding (oh, ow); dilation; groups."""

    W: np.ndarray
    b: np.ndarray
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    output_padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    params = ("W", "b")


@dataclass(frozen=True, eq=False)
class AvgPool(Op):
    """2-D average pooling. x: (C, H, W). kernel (kh, kw), stride, pads (t, l, b, r);
    ``count_include_pad`` as in ONNX. GlobalAveragePool is the full-size kernel."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    count_include_pad: bool = False


@dataclass(frozen=True, eq=False)
class MaxPool(Op):
    """2-D max pooling. x: (C, H, W). kernel, stride, pads (t, l, b, r; padding is -inf),
    dilation."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)


# --------------------------------------------------------------------------------------------
# activations
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Relu(Op):
    """``y = max(x, 0)``."""

    def forward(self, x):
        return np.maximum(x, 0.0)

    def vjp(self, xs, y, g):
        return [g * (xs[0] > 0)]


@dataclass(frozen=True, eq=False)
class LeakyRelu(Op):
    """``y = x`` for x >= 0, ``alpha * x`` otherwise."""

    alpha: float = 0.01

    def forward(self, x):
        return np.where(x >= 0, x, self.alpha * x)

    def vjp(self, xs, y, g):
        return [g * np.where(xs[0] >= 0, 1.0, self.alpha)]


@dataclass(frozen=True, eq=False)
class Sigmoid(Op):
    """``y = 1 / (1 + exp(-x))``."""

    def forward(self, x):
        return 0.5 * (1.0 + np.tanh(0.5 * x))

    def vjp(self, xs, y, g):
        return [g * y * (1.0 - y)]


@dataclass(frozen=True, eq=False)
class Tanh(Op):
    """``y = tanh(x)``."""

    def forward(self, x):
        return np.tanh(x)

    def vjp(self, xs, y, g):
        return [g * (1.0 - y * y)]


@dataclass(frozen=True, eq=False)
class Softplus(Op):
    """``y = log(1 + exp(x))``."""

    def forward(self, x):
        return np.logaddexp(0.0, x)

    def vjp(self, xs, y, g):
        return [g * 0.5 * (1.0 + np.tanh(0.5 * xs[0]))]


@dataclass(frozen=True, eq=False)
class Softmax(Op):
    """``y = exp(x) / sum(exp(x))`` along sample axis ``axis`` (evaluation; IBP only)."""

    axis: int = -1

    def _ax(self, x):
        return self.axis if self.axis < 0 else self.axis + 1

    def forward(self, x):
        ax = self._ax(x)
        e = np.exp(x - x.max(axis=ax, keepdims=True))
        return e / e.sum(axis=ax, keepdims=True)

    def vjp(self, xs, y, g):
        ax = self._ax(y)
        return [y * (g - (g * y).sum(axis=ax, keepdims=True))]


# --------------------------------------------------------------------------------------------
# shape ops
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Reshape(Op):
    """Row-major reshape to ``shape`` (per sample; Flatten, Reshape, Squeeze, Unsqueeze)."""

    shape: tuple[int, ...]

    def forward(self, x):
        return x.reshape((x.shape[0],) + tuple(self.shape))

    def vjp(self, xs, y, g):
        return [g.reshape(xs[0].shape)]


@dataclass(frozen=True, eq=False)
class Select(Op):
    """Pick elements by flat index: ``y.flat[k] = x.flat[index.flat[k]]``, or ``fill`` where the
    index is -1. ``index`` has the output shape (Transpose, Slice, Gather with constant indices,
    Split, constant Pad, Squeeze of selected axes)."""

    index: np.ndarray
    fill: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "index", np.ascontiguousarray(self.index, dtype=np.int64))

    def forward(self, x):
        B = x.shape[0]
        flat = x.reshape(B, -1)
        idx = self.index.ravel()
        if (idx >= 0).all():
            y = flat[:, idx]
        else:
            y = np.full((B, idx.size), self.fill)
            keep = idx >= 0
            y[:, keep] = flat[:, idx[keep]]
        return y.reshape((B,) + self.index.shape)

    def vjp(self, xs, y, g):
        B = g.shape[0]
        idx = self.index.ravel()
        keep = idx >= 0
        gx = np.zeros((B, xs[0][0].size))
        np.add.at(gx, (slice(None), idx[keep]), g.reshape(B, -1)[:, keep])
        return [gx.reshape(xs[0].shape)]


@dataclass(frozen=True, eq=False)
class Concat(Op):
    """Concatenate variable inputs along sample axis ``axis``."""

    axis: int
    arity = None

    def forward(self, *xs):
        return np.concatenate(xs, axis=self.axis + 1 if self.axis >= 0 else self.axis)

    def vjp(self, xs, y, g):
        ax = self.axis + 1 if self.axis >= 0 else self.axis
        cuts = np.cumsum([x.shape[ax] for x in xs])[:-1]
        return list(np.split(g, cuts, axis=ax))
