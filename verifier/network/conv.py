"""Window gathering for the convolution family: ``im2col`` and its adjoint ``col2im``.

A 2-D window op (Conv, ConvTranspose, AvgPool, MaxPool) sees, for each output position
``(p, q)`` and kernel offset ``(i, j)``, the padded input element

    xp[c, p * sh + i * dh, q * sw + j * dw],   xp = x padded by (top, left, bottom, right).

``im2col`` gathers these into ``cols[b, c, i, j, p, q]`` (one strided slice per kernel offset,
so the cost is kh * kw array copies); ``col2im`` is its exact adjoint (scatter-add, then crop
the padding). Products with the weights are then one BLAS matrix product per group, over the
whole batch at once (the ``channels_first`` layout): numpy's stacked ``matmul`` with a broadcast
operand does not reach BLAS efficiently.
All arrays are float64 with the batch axis first.
"""
from __future__ import annotations

import numpy as np


def out_size(n: int, k: int, stride: int, pad_begin: int, pad_end: int, dilation: int) -> int:
    """Number of window positions along one axis: ``floor((n + pb + pe - ((k-1) d + 1)) / s) + 1``."""
    span = (k - 1) * dilation + 1
    m = (n + pad_begin + pad_end - span) // stride + 1
    if m < 1:
        raise ValueError(f"window of span {span} does not fit an axis of {n} with pads "
                         f"({pad_begin}, {pad_end})")
    return m


def window_shape(hw: tuple[int, int], kernel, stride, pads, dilation) -> tuple[int, int]:
    """Output spatial shape ``(H', W')`` of a window op on an input of spatial shape ``hw``."""
    return (out_size(hw[0], kernel[0], stride[0], pads[0], pads[2], dilation[0]),
            out_size(hw[1], kernel[1], stride[1], pads[1], pads[3], dilation[1]))


def pad_hw(x: np.ndarray, pads, value: float = 0.0) -> np.ndarray:
    """Pad the last two axes of ``x`` (B, C, H, W) by ``pads`` = (top, left, bottom, right)."""
    t, l, b, r = pads
    if t == l == b == r == 0:
        return x
    B, C, H, W = x.shape
    xp = np.full((B, C, H + t + b, W + l + r), value, dtype=np.float64)
    xp[:, :, t:t + H, l:l + W] = x
    return xp


def im2col(x: np.ndarray, kernel, stride, pads, dilation, value: float = 0.0,
           out_hw: tuple[int, int] | None = None, channels_first: bool = False) -> np.ndarray:
    """Windows of ``x`` (B, C, H, W): ``cols`` (B, C, kh, kw, H', W') with
    ``cols[b, c, i, j, p, q] = xp[b, c, p sh + i dh, q sw + j dw]`` (``xp`` padded with ``value``).
    ``channels_first`` lays them out as (C, kh, kw, B, H', W') instead, so that a convolution is
    one matrix product ``W (M, C kh kw) @ cols (C kh kw, B H' W')``. ``out_hw`` fixes (H', W')
    (ConvTranspose uses it); by default it is ``window_shape``."""
    kh, kw = kernel
    sh, sw = stride
    dh, dw = dilation
    if out_hw is None:
        out_hw = window_shape(x.shape[2:], kernel, stride, pads, dilation)
    Ho, Wo = out_hw
    xp = pad_hw(x, pads, value)
    B, C = x.shape[:2]
    if channels_first:
        xp = np.ascontiguousarray(xp.transpose(1, 0, 2, 3))
        cols = np.empty((C, kh, kw, B, Ho, Wo), dtype=np.float64)
    else:
        cols = np.empty((B, C, kh, kw, Ho, Wo), dtype=np.float64)
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dh, j * dw
            window = xp[:, :, r0:r0 + sh * (Ho - 1) + 1:sh, c0:c0 + sw * (Wo - 1) + 1:sw]
            if channels_first:
                cols[:, i, j] = window
            else:
                cols[:, :, i, j] = window
    return cols


def col2im(cols: np.ndarray, hw: tuple[int, int], stride, pads, dilation,
           channels_first: bool = False) -> np.ndarray:
    """Adjoint of ``im2col`` (zero padding): ``cols`` (B, C, kh, kw, H', W'), or (C, kh, kw, B,
    H', W') if ``channels_first``, -> ``x`` (B, C, H, W) with ``x[b, c, h, w] = sum over
    (i, j, p, q) hitting (h, w) of cols[b, c, i, j, p, q]``; contributions that land in the
    padding are dropped."""
    if channels_first:
        C, kh, kw, B, Ho, Wo = cols.shape
    else:
        B, C, kh, kw, Ho, Wo = cols.shape
    sh, sw = stride
    dh, dw = dilation
    t, l, b, r = pads
    H, W = hw
    shape = (C, B) if channels_first else (B, C)
    xp = np.zeros(shape + (H + t + b, W + l + r), dtype=np.float64)
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dh, j * dw
            xp[:, :, r0:r0 + sh * (Ho - 1) + 1:sh, c0:c0 + sw * (Wo - 1) + 1:sw] += (
                cols[:, i, j] if channels_first else cols[:, :, i, j])
    x = xp[:, :, t:t + H, l:l + W]
    return np.ascontiguousarray(x.transpose(1, 0, 2, 3) if channels_first else x)


def conv_transpose_shape(hw: tuple[int, int], kernel, stride, pads, output_padding,
                         dilation) -> tuple[int, int]:
    """ONNX ConvTranspose output size per axis:
    ``s (n - 1) + output_padding + (k - 1) d + 1 - pad_begin - pad_end``."""
    out = []
    for a in range(2):
        n = (stride[a] * (hw[a] - 1) + output_padding[a] + (kernel[a] - 1) * dilation[a] + 1
             - pads[a] - pads[a + 2])
        if n < 1:
            raise ValueError(f"ConvTranspose output axis {a} would have size {n}")
        out.append(n)
    return tuple(out)
