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

from .conv import col2im, conv_transpose_shape, im2col, window_shape


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

    def __post_init__(self):
        _init_window(self, ("stride", "pads", "dilation"))
        M, Cg = self.W.shape[:2]
        if self.W.ndim != 4 or M % self.groups or self.b.shape != (M,):
            raise ValueError(f"Conv weights {self.W.shape}, bias {self.b.shape} and groups "
                             f"{self.groups} do not fit")

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """(M, H', W') for an input (C, H, W), with ``H' = floor((H + pt + pb - (kh-1) dh - 1)
        / sh) + 1`` (and likewise W')."""
        if shape[0] != self.W.shape[1] * self.groups:
            raise ValueError(f"Conv expects {self.W.shape[1] * self.groups} channels, got {shape}")
        return (self.W.shape[0],) + window_shape(shape[1:], self.W.shape[2:], self.stride,
                                                 self.pads, self.dilation)

    def _cols(self, x):
        """im2col of x, channels first and grouped: (G, C/G * kh * kw, B H' W'), and (H', W')."""
        cols = im2col(x, self.W.shape[2:], self.stride, self.pads, self.dilation,
                      channels_first=True)
        Ho, Wo = cols.shape[-2:]
        return cols.reshape(self.groups, -1, x.shape[0] * Ho * Wo), (Ho, Wo)

    def _Wg(self):
        """Weights grouped: (G, M/G, C/G * kh * kw)."""
        return self.W.reshape(self.groups, self.W.shape[0] // self.groups, -1)

    def _g(self, g):
        """The output gradient grouped: (G, M/G, B H' W')."""
        B, M, Ho, Wo = g.shape
        return np.ascontiguousarray(g.transpose(1, 0, 2, 3)).reshape(self.groups, M // self.groups,
                                                                      B * Ho * Wo)

    def forward(self, x):
        """``y[m, p, q] = b[m] + sum_{c in group(m), i, j} W[m, c, i, j] xp[c, p sh + i dh,
        q sw + j dw]`` via im2col and one matrix product per group over the whole batch."""
        cols, (Ho, Wo) = self._cols(x)
        y = np.matmul(self._Wg(), cols)                        # (G, M/G, B H' W')
        y = y.reshape(self.W.shape[0], x.shape[0], Ho, Wo).transpose(1, 0, 2, 3)
        return y + self.b[:, None, None]

    def vjp(self, xs, y, g):
        """``dx = col2im(W_g^T g)``."""
        x = xs[0]
        B, M, Ho, Wo = g.shape
        gcols = np.matmul(self._Wg().transpose(0, 2, 1), self._g(g))
        kh, kw = self.W.shape[2:]
        gcols = gcols.reshape(x.shape[1], kh, kw, B, Ho, Wo)
        return [col2im(gcols, x.shape[2:], self.stride, self.pads, self.dilation,
                       channels_first=True)]

    def param_vjp(self, xs, y, g):
        """``dW_g = g_g cols_g^T`` (summed over the batch by the product), ``db = sum over b, p, q
        of g``."""
        cols, _ = self._cols(xs[0])
        dW = np.matmul(self._g(g), cols.transpose(0, 2, 1))
        return {"W": dW.reshape(self.W.shape), "b": g.sum(axis=(0, 2, 3))}


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

    def __post_init__(self):
        _init_window(self, ("stride", "pads", "output_padding", "dilation"))
        C, Mg = self.W.shape[:2]
        if self.W.ndim != 4 or C % self.groups or self.b.shape != (Mg * self.groups,):
            raise ValueError(f"ConvTranspose weights {self.W.shape}, bias {self.b.shape} and "
                             f"groups {self.groups} do not fit")

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """(M, H', W') with ``H' = sh (H - 1) + oph + (kh - 1) dh + 1 - pt - pb``."""
        if shape[0] != self.W.shape[0]:
            raise ValueError(f"ConvTranspose expects {self.W.shape[0]} channels, got {shape}")
        return (self.W.shape[1] * self.groups,) + conv_transpose_shape(
            shape[1:], self.W.shape[2:], self.stride, self.pads, self.output_padding,
            self.dilation)

    def _Wg(self):
        """Weights grouped: (G, C/G, M/G * kh * kw)."""
        return self.W.reshape(self.groups, self.W.shape[0] // self.groups, -1)

    def _x(self, x):
        """The input channels first and grouped: (G, C/G, B H W)."""
        B, C, H, W = x.shape
        return np.ascontiguousarray(x.transpose(1, 0, 2, 3)).reshape(self.groups, C // self.groups,
                                                                      B * H * W)

    def forward(self, x):
        """The adjoint of a convolution: ``y[m, p sh + i dh - pt, q sw + j dw - pl] +=
        W[c, m, i, j] x[c, p, q]`` (c in the group of m), plus ``b[m]``: ``col2im(W_g^T x)``."""
        B, C, H, W = x.shape
        cols = np.matmul(self._Wg().transpose(0, 2, 1), self._x(x))    # (G, M/G kh kw, B H W)
        kh, kw = self.W.shape[2:]
        cols = cols.reshape(self.W.shape[1] * self.groups, kh, kw, B, H, W)
        out_hw = self.output_shape(x.shape[1:])[1:]
        y = col2im(cols, out_hw, self.stride, self.pads, self.dilation, channels_first=True)
        return y + self.b[:, None, None]

    def _gcols(self, x, g):
        """im2col of g over x's positions, channels first and grouped: (G, M/G kh kw, B H W)."""
        gcols = im2col(g, self.W.shape[2:], self.stride, self.pads, self.dilation,
                       out_hw=x.shape[2:], channels_first=True)
        return gcols.reshape(self.groups, -1, x.shape[0] * x.shape[2] * x.shape[3])

    def vjp(self, xs, y, g):
        """``dx = W_g im2col(g)`` (a convolution of g)."""
        x = xs[0]
        B, C, H, W = x.shape
        dx = np.matmul(self._Wg(), self._gcols(x, g))                 # (G, C/G, B H W)
        return [np.ascontiguousarray(dx.reshape(C, B, H, W).transpose(1, 0, 2, 3))]

    def param_vjp(self, xs, y, g):
        """``dW_g = x_g im2col(g)_g^T`` (summed over the batch by the product), ``db = sum over
        b, p, q of g``."""
        x = xs[0]
        dW = np.matmul(self._x(x), self._gcols(x, g).transpose(0, 2, 1))
        return {"W": dW.reshape(self.W.shape), "b": g.sum(axis=(0, 2, 3))}


@dataclass(frozen=True, eq=False)
class AvgPool(Op):
    """2-D average pooling. x: (C, H, W). kernel (kh, kw), stride, pads (t, l, b, r);
    ``count_include_pad`` as in ONNX. GlobalAveragePool is the full-size kernel."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    count_include_pad: bool = False

    def __post_init__(self):
        _init_window(self, ("kernel", "stride", "pads"))
        object.__setattr__(self, "count_include_pad", bool(self.count_include_pad))
        if any(p >= k for p, k in zip(self.pads, self.kernel + self.kernel)):
            raise ValueError(f"AvgPool pads {self.pads} must be smaller than the kernel "
                             f"{self.kernel}")

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """(C, H', W'), the window count per axis as for Conv with dilation 1."""
        return (shape[0],) + window_shape(shape[1:], self.kernel, self.stride, self.pads, (1, 1))

    def divisor(self, hw: tuple[int, int]) -> np.ndarray:
        """(H', W') number each window's sum is divided by: kh kw if ``count_include_pad``, else
        the number of window elements inside the unpadded input."""
        ones = np.ones((1, 1) + tuple(hw))
        if self.count_include_pad:
            Ho, Wo = self.output_shape((1,) + tuple(hw))[1:]
            return np.full((Ho, Wo), float(self.kernel[0] * self.kernel[1]))
        return im2col(ones, self.kernel, self.stride, self.pads, (1, 1))[0, 0].sum(axis=(0, 1))

    def forward(self, x):
        """``y[c, p, q] = sum_{i, j} xp[c, p sh + i, q sw + j] / divisor[p, q]`` (zero padding)."""
        cols = im2col(x, self.kernel, self.stride, self.pads, (1, 1))
        return cols.sum(axis=(2, 3)) / self.divisor(x.shape[2:])

    def vjp(self, xs, y, g):
        """``dx = col2im(g / divisor, spread over each window)``."""
        x = xs[0]
        gd = g / self.divisor(x.shape[2:])
        gcols = np.broadcast_to(gd[:, :, None, None], g.shape[:2] + self.kernel + g.shape[2:])
        return [col2im(gcols, x.shape[2:], self.stride, self.pads, (1, 1))]


@dataclass(frozen=True, eq=False)
class MaxPool(Op):
    """2-D max pooling. x: (C, H, W). kernel, stride, pads (t, l, b, r; padding is -inf),
    dilation."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)

    def __post_init__(self):
        _init_window(self, ("kernel", "stride", "pads", "dilation"))
        span = [(k - 1) * d + 1 for k, d in zip(self.kernel, self.dilation)]
        if any(p >= s for p, s in zip(self.pads, span + span)):
            raise ValueError(f"MaxPool pads {self.pads} must be smaller than the window")

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """(C, H', W'), the window count per axis as for Conv."""
        return (shape[0],) + window_shape(shape[1:], self.kernel, self.stride, self.pads,
                                          self.dilation)

    def _cols(self, x):
        cols = im2col(x, self.kernel, self.stride, self.pads, self.dilation, value=-np.inf)
        B, C, kh, kw, Ho, Wo = cols.shape
        return cols.reshape(B, C, kh * kw, Ho, Wo)

    def forward(self, x):
        """``y[c, p, q] = max_{i, j} xp[c, p sh + i dh, q sw + j dw]`` (padding is -inf)."""
        return self._cols(x).max(axis=2)

    def vjp(self, xs, y, g):
        """The whole of ``g[c, p, q]`` goes to the first maximal element of its window."""
        x = xs[0]
        cols = self._cols(x)
        arg = cols.argmax(axis=2)
        gcols = np.zeros_like(cols)
        np.put_along_axis(gcols, arg[:, :, None], g[:, :, None], axis=2)
        B, C, _, Ho, Wo = cols.shape
        gcols = gcols.reshape((B, C) + self.kernel + (Ho, Wo))
        return [col2im(gcols, x.shape[2:], self.stride, self.pads, self.dilation)]


def _init_window(op, names):
    """Normalise a window op's fields: float64 W and b (if any), int tuples, int groups."""
    for name in ("W", "b"):
        if hasattr(op, name):
            object.__setattr__(op, name, _arr(getattr(op, name)))
    for name in names:
        object.__setattr__(op, name, tuple(int(v) for v in getattr(op, name)))
    if hasattr(op, "groups"):
        object.__setattr__(op, "groups", int(op.groups))


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
