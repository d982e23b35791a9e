"""ONNX handlers of the convolution family: Conv, ConvTranspose (1-D and 2-D, with ``auto_pad``
and ``output_shape``), AveragePool, MaxPool (``ceil_mode``), GlobalAveragePool, GlobalMaxPool,
and inference BatchNormalization. 1-D windows run as 2-D ones on a (C, 1, L) view."""
from __future__ import annotations

import numpy as np

from ..errors import UnsupportedOpError
from .onnx_import import Var, describe
from .onnx_nodes import _in, _only_var, _out, _unused, attrs
from .ops import AvgPool, Conv, ConvTranspose, MaxPool, Scale


def resolve_pads(a: dict, spatial, kernel, strides, dilations) -> list:
    """ONNX pads ``[b1, b2, ..., e1, e2, ...]`` from ``pads`` or ``auto_pad``: SAME_* pads
    ``total = max(0, (ceil(n / s) - 1) s + (k - 1) d + 1 - n)``, the odd one at the end (UPPER)
    or at the beginning (LOWER)."""
    r = len(spatial)
    mode = a.get("auto_pad", "NOTSET") or "NOTSET"
    if mode == "NOTSET":
        return list(a.get("pads", [0] * (2 * r)))
    if mode == "VALID":
        return [0] * (2 * r)
    begin, end = [], []
    for n, k, s, d in zip(spatial, kernel, strides, dilations):
        total = max(0, (-(-n // s) - 1) * s + (k - 1) * d + 1 - n)
        small = total // 2
        begin.append(small if mode == "SAME_UPPER" else total - small)
        end.append(total - begin[-1])
    return begin + end


def _window_input(imp, v: Var, node) -> tuple[str, int]:
    """``v`` (1, C, H, W) or (1, C, L) viewed as (C, H, W) or (C, 1, L); returns the spatial
    rank."""
    if len(v.full) not in (3, 4) or v.full[0] != 1:
        raise UnsupportedOpError(f"{describe(node)}: only 1-D and 2-D windows on one image per "
                                 f"sample are supported (input shape {list(v.full)})")
    if len(v.full) == 3:
        return imp.view(v.net, (v.full[1], 1, v.full[2])), 1
    return imp.view(v.net, v.full[1:]), 2


def _window_attrs(imp, node, v: Var, kernel, rank):
    """(kernel, strides, dilations, pads (t, l, b, r)) as 2-D tuples."""
    a = attrs(node)
    strides = list(a.get("strides", [1] * rank))
    dil = list(a.get("dilations", [1] * rank))
    pads = resolve_pads(a, v.full[2:], kernel, strides, dil)
    if rank == 1:
        return (1, kernel[0]), (1, strides[0]), (1, dil[0]), (0, pads[0], 0, pads[1])
    return tuple(kernel), tuple(strides), tuple(dil), tuple(pads)


def _window_output(imp, node, y: str, rank: int):
    shape = imp.shapes[y]
    full = (1, shape[0], shape[2]) if rank == 1 else (1,) + shape
    imp.put(_out(node), y, full)


def h_conv(imp, node):
    v = _only_var(imp, node)
    x, rank = _window_input(imp, v, node)
    W = np.asarray(imp.const(node.input[1], node), dtype=np.float64)
    b = imp.consts[node.input[2]] if _in(node, 2) else np.zeros(W.shape[0])
    kernel = list(attrs(node).get("kernel_shape", W.shape[2:]))
    k, s, d, p = _window_attrs(imp, node, v, kernel, rank)
    W = W.reshape(W.shape[:2] + k)
    op = Conv(W, b, s, p, d, int(attrs(node).get("group", 1)))
    _window_output(imp, node, imp.emit(op, [x], _out(node), describe(node)), rank)


def h_conv_transpose(imp, node):
    v = _only_var(imp, node)
    x, rank = _window_input(imp, v, node)
    a = attrs(node)
    W = np.asarray(imp.const(node.input[1], node), dtype=np.float64)
    group = int(a.get("group", 1))
    b = imp.consts[node.input[2]] if _in(node, 2) else np.zeros(W.shape[1] * group)
    kernel = list(a.get("kernel_shape", W.shape[2:]))
    spatial = v.full[2:]
    strides = list(a.get("strides", [1] * rank))
    dil = list(a.get("dilations", [1] * rank))
    out_pad = list(a.get("output_padding", [0] * rank))
    mode = a.get("auto_pad", "NOTSET") or "NOTSET"
    if "output_shape" in a or mode in ("SAME_UPPER", "SAME_LOWER"):
        target = (list(a["output_shape"])[-rank:] if "output_shape" in a
                  else [n * s for n, s in zip(spatial, strides)])
        begin, end = [], []
        for n, kk, s, dd, op_, t in zip(spatial, kernel, strides, dil, out_pad, target):
            total = s * (n - 1) + op_ + (kk - 1) * dd + 1 - t
            if total < 0:
                raise UnsupportedOpError(f"{describe(node)}: output_shape {t} needs negative "
                                         f"padding")
            head = total // 2 if mode == "SAME_UPPER" else total - total // 2
            begin.append(head)
            end.append(total - head)
        pads = begin + end
    elif mode == "VALID":
        pads = [0] * (2 * rank)
    else:
        pads = list(a.get("pads", [0] * (2 * rank)))
    if rank == 1:
        k, s, d, p, o = ((1, kernel[0]), (1, strides[0]), (1, dil[0]), (0, pads[0], 0, pads[1]),
                         (0, out_pad[0]))
    else:
        k, s, d, p, o = tuple(kernel), tuple(strides), tuple(dil), tuple(pads), tuple(out_pad)
    op = ConvTranspose(W.reshape(W.shape[:2] + k), b, s, p, o, d, group)
    _window_output(imp, node, imp.emit(op, [x], _out(node), describe(node)), rank)


def _ceil_pads(node, spatial, k, s, d, p):
    """Extra end padding that makes floor-mode window counts equal ONNX's ceil_mode counts
    (a last window must start inside the input or its begin padding)."""
    p = list(p)
    for ax in range(2):
        n, span = spatial[ax], (k[ax] - 1) * d[ax] + 1
        total = n + p[ax] + p[ax + 2] - span
        count = -(-total // s[ax]) + 1
        if (count - 1) * s[ax] >= n + p[ax]:
            count -= 1
        p[ax + 2] += max(0, (count - 1) * s[ax] + span - (n + p[ax] + p[ax + 2]))
    return tuple(p)


def h_pool(imp, node):
    """AveragePool, MaxPool (ceil_mode by extra end padding that no window counts)."""
    v = _only_var(imp, node)
    _unused(imp, node, 1)
    x, rank = _window_input(imp, v, node)
    a = attrs(node)
    k, s, d, p = _window_attrs(imp, node, v, list(a["kernel_shape"]), rank)
    spatial = imp.shapes[x][1:]
    if a.get("ceil_mode", 0):
        q = _ceil_pads(node, spatial, k, s, d, p)
        if q != p and node.op_type == "AveragePool" and a.get("count_include_pad", 0):
            raise UnsupportedOpError(f"{describe(node)}: ceil_mode with count_include_pad")
        p = q
    if node.op_type == "AveragePool":
        if d != (1, 1):
            raise UnsupportedOpError(f"{describe(node)}: dilated average pooling")
        op = AvgPool(k, s, p, bool(a.get("count_include_pad", 0)))
    else:
        op = MaxPool(k, s, p, d)
    _window_output(imp, node, imp.emit(op, [x], _out(node), describe(node)), rank)


def h_global_pool(imp, node):
    v = _only_var(imp, node)
    x, rank = _window_input(imp, v, node)
    hw = imp.shapes[x][1:]
    op = AvgPool(hw, (1, 1)) if node.op_type == "GlobalAveragePool" else MaxPool(hw, (1, 1))
    _window_output(imp, node, imp.emit(op, [x], _out(node), describe(node)), rank)


def h_batchnorm(imp, node):
    """Inference BatchNorm: ``y = a x + c`` per channel, ``a = scale / sqrt(var + eps)``,
    ``c = B - mean a``."""
    v = _only_var(imp, node)
    a = attrs(node)
    _unused(imp, node, 1)
    if a.get("training_mode", 0):
        raise UnsupportedOpError(f"{describe(node)}: training mode")
    scale, bias, mean, var = (np.asarray(imp.const(n, node), dtype=np.float64)
                              for n in node.input[1:5])
    eps = float(a.get("epsilon", 1e-5))
    sa = scale / np.sqrt(var + eps)
    sc = bias - mean * sa

    def shaped(p):
        return p.reshape((1,) + p.shape + (1,) * (len(v.full) - 1 - p.ndim))
    op = Scale(imp.sample_const(shaped(sa), v.full), imp.sample_const(shaped(sc), v.full))
    imp.put(_out(node), imp.emit(op, [v.net], _out(node), describe(node)), v.full)
