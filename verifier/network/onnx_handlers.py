"""How each ONNX op on a variable input becomes ``Network`` ops: one row of ``HANDLERS`` per op
type. A handler reads its inputs from the importer (``_Importer`` in ``onnx_import.py``: variable
values in their sample view, constants as arrays) and registers its outputs with ``put``.

Affine ops by constants become ``Linear``/``Scale``; pure data movement (Transpose, Slice, Gather,
Split, Pad, Expand, Tile, ...) becomes a ``Select`` whose index map is found by running the ONNX
op itself (reference evaluator) on ``1..N``; Clip, Abs and PRelu are compositions of ``Relu``
with affine ops (exact in real arithmetic).
"""
from __future__ import annotations

import math

import numpy as np
from onnx import helper

from ..errors import ModelError, UnsupportedOpError
from .onnx_import import Var, describe, run_node
from .onnx_nodes import ONE, ZERO, _in, _only_var, _out, attrs
from .onnx_window import h_batchnorm, h_conv, h_conv_transpose, h_global_pool, h_pool
from .ops import (Concat, LeakyRelu, Linear, Relu, Scale, Sigmoid, Softmax, Softplus, Sum,
                  Tanh)

#: casts kept as the identity: FLOAT, DOUBLE (a cast to float16/bfloat16 would round far more
#: than float32 arithmetic does, and is refused)
FLOAT_CASTS = {1, 11}


# -- elementwise ------------------------------------------------------------------------------
def unary(make):
    def handle(imp, node):
        v = _only_var(imp, node)
        imp.put(_out(node), imp.emit(make(attrs(node)), [v.net], _out(node), describe(node)),
                v.full)
    return handle


def h_identity(imp, node):
    """Identity, Dropout (inference), Cast to a float type: the value itself."""
    v = _only_var(imp, node)
    a = attrs(node)
    if node.op_type == "Cast" and a.get("to") not in FLOAT_CASTS:
        raise UnsupportedOpError(f"{describe(node)}: a cast of the model's values to a "
                                 f"non-float type is not supported")
    if node.op_type == "Dropout":
        if _in(node, 2) and bool(np.any(imp.const(_in(node, 2), node))):
            raise UnsupportedOpError(f"{describe(node)}: training mode")
        if _out(node, 1):
            imp.consts[_out(node, 1)] = np.ones(v.full, dtype=bool)
    imp.put(_out(node), v.net, v.full)


def _relu_of_affine(imp, net, a, c, hint, src):
    """Relu(a * x + c)."""
    s = imp.emit(Scale(a, c), [net], hint + "/affine", src)
    return imp.emit(Relu(), [s], hint + "/relu", src)


def h_clip(imp, node):
    """``clip(x, lo, hi) = lo + relu(x - lo) - relu(x - hi)``; one-sided: ``lo + relu(x - lo)``
    or ``hi - relu(hi - x)``."""
    v = imp.var(node.input[0])
    a = attrs(node)
    if imp.opset < 11:
        lo, hi = a.get("min", -math.inf), a.get("max", math.inf)
    else:
        lo = float(imp.const(_in(node, 1), node)) if _in(node, 1) else -math.inf
        hi = float(imp.const(_in(node, 2), node)) if _in(node, 2) else math.inf
    lo, hi, out, src = float(lo), float(hi), _out(node), describe(node)
    if lo > hi:
        raise UnsupportedOpError(f"{src}: min {lo} > max {hi}")
    if math.isinf(lo) and math.isinf(hi):
        y = v.net
    elif math.isinf(hi):
        r = _relu_of_affine(imp, v.net, ONE, np.array(-lo), out, src)
        y = imp.emit(Scale(ONE, np.array(lo)), [r], out, src)
    elif math.isinf(lo):
        r = _relu_of_affine(imp, v.net, -ONE, np.array(hi), out, src)
        y = imp.emit(Scale(-ONE, np.array(hi)), [r], out, src)
    else:
        r1 = _relu_of_affine(imp, v.net, ONE, np.array(-lo), out, src)
        r2 = _relu_of_affine(imp, v.net, ONE, np.array(-hi), out, src)
        s = imp.emit(Sum((1.0, -1.0)), [r1, r2], out + "/diff", src)
        y = imp.emit(Scale(ONE, np.array(lo)), [s], out, src)
    imp.put(out, y, v.full)


def h_abs(imp, node):
    """``|x| = relu(x) + relu(-x)``."""
    v = _only_var(imp, node)
    out, src = _out(node), describe(node)
    r1 = imp.emit(Relu(), [v.net], out + "/pos", src)
    r2 = _relu_of_affine(imp, v.net, -ONE, ZERO, out + "/neg", src)
    imp.put(out, imp.emit(Sum((1.0, 1.0)), [r1, r2], out, src), v.full)


def h_prelu(imp, node):
    """``prelu(x) = relu(x) - slope * relu(-x)`` (a scalar slope is a LeakyRelu)."""
    v = _only_var(imp, node)
    slope = np.asarray(imp.const(node.input[1], node), dtype=np.float64)
    out, src = _out(node), describe(node)
    if slope.size == 1:
        y = imp.emit(LeakyRelu(float(slope.ravel()[0])), [v.net], out, src)
    else:
        r1 = imp.emit(Relu(), [v.net], out + "/pos", src)
        r2 = _relu_of_affine(imp, v.net, -ONE, ZERO, out + "/neg", src)
        s = imp.emit(Scale(-imp.sample_const(slope, v.full), ZERO), [r2], out + "/slope", src)
        y = imp.emit(Sum((1.0, 1.0)), [r1, s], out, src)
    imp.put(out, y, v.full)


def expand_to(imp, v: Var, full: tuple, src: str) -> str:
    """``v`` broadcast (ONNX/numpy rules) to ``full``, in the sample view of ``full``."""
    full = tuple(full)
    if int(np.prod(v.full)) == int(np.prod(full)):
        return imp.view(v.net, imp.sample_of(full), src)
    index = np.broadcast_to(np.arange(int(np.prod(v.full))).reshape(v.full), full)
    return imp.select(v, index, v.net + "/expand", src)[0]


def h_binary(imp, node):
    """Add, Sub (two variables: ``Sum``), and Add, Sub, Mul, Div by a constant (``Scale``)."""
    op, (x, y), out, src = node.op_type, node.input[:2], _out(node), describe(node)
    if not imp.is_const(x) and not imp.is_const(y):
        if op in ("Mul", "Div"):
            raise UnsupportedOpError(f"{src}: {op} of two values that depend on the input is "
                                     f"not supported (bilinear); only {op} by a constant is")
        vx, vy = imp.var(x), imp.var(y)
        full = tuple(np.broadcast_shapes(vx.full, vy.full))
        nets = [expand_to(imp, vx, full, src), expand_to(imp, vy, full, src)]
        w = (1.0, 1.0) if op == "Add" else (1.0, -1.0)
        imp.put(out, imp.emit(Sum(w), nets, out, src), full)
        return
    var_first = not imp.is_const(x)
    v = imp.var(x if var_first else y)
    c = np.asarray(imp.consts[y if var_first else x], dtype=np.float64)
    full = tuple(np.broadcast_shapes(v.full, c.shape))
    net = expand_to(imp, v, full, src)
    c = imp.sample_const(c, full)
    if op == "Add":
        a, b = ONE, c
    elif op == "Sub":
        a, b = (ONE, -c) if var_first else (-ONE, c)
    elif op == "Mul":
        a, b = c, ZERO
    elif not var_first:
        raise UnsupportedOpError(f"{src}: division by a value that depends on the input is not "
                                 f"supported")
    else:
        if np.any(c == 0):
            raise ModelError(f"{src}: division by a constant that has zeros")
        a, b = 1.0 / c, ZERO
    imp.put(out, imp.emit(Scale(a, b), [net], out, src), full)


def h_sum(imp, node):
    """ONNX Sum: variables by ``Sum``, the constants added by a ``Scale``."""
    names = [n for n in node.input if n]
    vs = [imp.var(n) for n in names if not imp.is_const(n)]
    cs = [np.asarray(imp.consts[n], dtype=np.float64) for n in names if imp.is_const(n)]
    full = tuple(np.broadcast_shapes(*[v.full for v in vs], *[c.shape for c in cs]))
    out, src = _out(node), describe(node)
    nets = [expand_to(imp, v, full, src) for v in vs]
    y = nets[0] if len(nets) == 1 else imp.emit(Sum((1.0,) * len(nets)), nets, out, src)
    if cs:
        y = imp.emit(Scale(ONE, imp.sample_const(sum(cs), full)), [y], out, src)
    imp.put(out, y, full)


# -- affine -------------------------------------------------------------------------------------
def last_axis(imp, v: Var, src) -> str:
    """A view of ``v`` whose last axis is the ONNX last axis (Linear acts on it)."""
    shape = imp.shapes[v.net]
    if len(shape) == 0 or shape[-1] != v.full[-1] or len(v.full) == 0:
        return imp.full_view(v, src)
    return v.net


def transpose_last2(imp, v: Var, src) -> tuple[str, tuple]:
    """``v`` with its last two ONNX axes swapped."""
    index = np.swapaxes(np.arange(int(np.prod(v.full))).reshape(v.full), -1, -2)
    return imp.select(v, index, v.net + "/T", src)


def linear(imp, v: Var, W: np.ndarray, b, hint: str, src: str) -> str:
    """``Linear(W, b)`` over the last ONNX axis of ``v``."""
    W = np.asarray(W, dtype=np.float64)
    b = np.zeros(W.shape[0]) if b is None else np.asarray(b, dtype=np.float64)
    return imp.emit(Linear(W, b), [last_axis(imp, v, src)], hint, src)


def h_gemm(imp, node):
    """``Y = alpha A' B' + beta C`` with one of A, B constant (A' = A^T if transA, ...)."""
    a = attrs(node)
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    tA, tB = int(a.get("transA", 0)), int(a.get("transB", 0))
    A, B, C = node.input[0], node.input[1], _in(node, 2)
    out, src = _out(node), describe(node)
    if C and not imp.is_const(C):
        raise UnsupportedOpError(f"{src}: a variable C input is not supported")
    if not imp.is_const(A) and imp.is_const(B):
        v = imp.var(A)
        if len(v.full) != 2:
            raise ModelError(f"{src}: Gemm input A has shape {list(v.full)}, not a matrix")
        if tA:
            net, full = transpose_last2(imp, v, src)
            v = Var(net, full)
        Bm = np.asarray(imp.consts[B], dtype=np.float64)
        W = alpha * (Bm if tB else Bm.T)                       # (m, k)
        full = (v.full[0], W.shape[0])
        b, extra = None, None
        if C:
            Cc = beta * np.asarray(imp.consts[C], dtype=np.float64)
            if Cc.ndim < 2 or Cc.shape[0] == 1:
                b = np.broadcast_to(Cc.reshape(-1), (W.shape[0],)).copy()
            else:
                extra = np.broadcast_to(Cc, full)
        y = linear(imp, v, W, b, out, src)
    elif imp.is_const(A) and not imp.is_const(B):
        v = imp.var(B)
        Am = np.asarray(imp.consts[A], dtype=np.float64)
        Am = Am.T if tA else Am                               # (n, k)
        if not tB:                                            # need B'^T = B^T: (m, k)
            net, vfull = transpose_last2(imp, v, src)
            v = Var(net, vfull)
        y = linear(imp, v, alpha * Am, None, out + "/T", src)   # (m, n)
        yT, full = transpose_last2(imp, Var(y, v.full[:-1] + (Am.shape[0],)), src)
        y = yT
        extra = None if not C else np.broadcast_to(beta * imp.consts[C], full)
    else:
        raise UnsupportedOpError(f"{src}: Gemm needs exactly one of A and B to be a constant")
    y = imp.view(y, imp.sample_of(full), src)
    if extra is not None:
        y = imp.emit(Scale(ONE, imp.sample_const(extra, full)), [y], out, src)
    imp.put(out, y, full)


def h_matmul(imp, node):
    """MatMul (numpy semantics) with one constant operand: ``x @ W`` is a Linear on the last
    axis, ``W @ x`` a Linear on the second-last (between transposes); other broadcasts are
    folded into one Linear on the flattened value."""
    x, y, out, src = node.input[0], node.input[1], _out(node), describe(node)
    if imp.is_const(x) == imp.is_const(y):
        raise UnsupportedOpError(f"{src}: MatMul of two values that depend on the input is not "
                                 f"supported (bilinear); one operand must be a constant")
    if not imp.is_const(x):
        v, M = imp.var(x), np.asarray(imp.consts[y], dtype=np.float64)
        full = np.matmul(np.zeros(v.full), np.zeros(M.shape)).shape
        if M.ndim <= 2 or all(d == 1 for d in M.shape[:-2]):
            W = M.reshape(-1, 1).T if M.ndim == 1 else M.reshape(M.shape[-2:]).T
            imp.put(out, linear(imp, v, W, None, out, src), full)
            return
        return _fold_linear(imp, v, lambda e: np.matmul(e, M), M.ndim, out, src)
    v, M = imp.var(y), np.asarray(imp.consts[x], dtype=np.float64)
    full = np.matmul(np.zeros(M.shape), np.zeros(v.full)).shape
    if M.ndim > 2 and any(d != 1 for d in M.shape[:-2]):
        return _fold_linear(imp, v, lambda e: np.matmul(M, e), M.ndim, out, src)
    W = M.reshape(1, -1) if M.ndim == 1 else M.reshape(M.shape[-2:])
    if len(v.full) == 1:                                      # W @ x, x a vector
        imp.put(out, linear(imp, v, W, None, out, src), full)
        return
    net, tfull = transpose_last2(imp, v, src)                 # (..., m, k)
    z = linear(imp, Var(net, tfull), W, None, out + "/T", src)      # (..., m, n)
    zT, zfull = transpose_last2(imp, Var(z, tfull[:-1] + (W.shape[0],)), src)
    imp.put(out, zT, full)


def _fold_linear(imp, v: Var, fn, other_ndim, out, src, limit=1 << 24):
    """A map linear in ``v`` (``fn`` acts on a stack of inputs along a new leading axis; the
    constant operand has ``other_ndim`` axes) as one dense ``Linear`` on the flattened value:
    column j is ``fn(e_j)``."""
    n = int(np.prod(v.full))
    rank = max(len(v.full), other_ndim)
    basis = np.eye(n).reshape((n,) + (1,) * (rank - len(v.full)) + v.full)
    cols = fn(basis)
    full = cols.shape[1:]
    if n * int(np.prod(full)) > limit:
        raise UnsupportedOpError(f"{src}: this broadcast MatMul would fold to a "
                                 f"{int(np.prod(full))} x {n} matrix, too large")
    flat = imp.view(v.net, (n,), src)
    y = imp.emit(Linear(cols.reshape(n, -1).T, np.zeros(int(np.prod(full)))), [flat], out, src)
    imp.put(out, y, full)


# -- shapes -------------------------------------------------------------------------------------
def h_reshape(imp, node):
    """Reshape, Flatten, Squeeze, Unsqueeze: the ONNX op run on zeros gives the new shape."""
    v = _only_var(imp, node)
    feeds = [np.zeros(v.full) if n == node.input[0] else (imp.consts[n] if n else None)
             for n in node.input]
    full = run_node(node, feeds, imp.opset)[0].shape
    imp.put(_out(node), v.net, full, describe(node))


def h_index(imp, node):
    """Pure data movement (Transpose, Slice, Gather, Split, Pad, Expand, Tile, Resize nearest,
    ...): the op run on the values 1..N of the input gives each output element's source; padding
    shows as 0 (constant Pad) and becomes ``Select``'s fill."""
    v = _only_var(imp, node)
    n = int(np.prod(v.full))
    feeds = [np.arange(1, n + 1, dtype=np.float64).reshape(v.full) if k == 0
             else (imp.consts[name] if name else None) for k, name in enumerate(node.input)]
    fill, run, padding = 0.0, node, False
    if node.op_type == "Pad":
        mode = attrs(node).get("mode", "constant")
        if mode == "constant":
            padding = True
            if imp.opset < 11:
                fill = float(attrs(node).get("value", 0.0))
                run = helper.make_node("Pad", node.input, node.output, mode="constant",
                                       pads=attrs(node)["pads"], value=0.0)
            elif _in(node, 2):
                fill = float(np.asarray(feeds[2]).ravel()[0])
                feeds[2] = np.zeros((), dtype=np.float64)
    elif node.op_type in ("Resize", "Upsample") and attrs(node).get("mode", "nearest") != "nearest":
        raise UnsupportedOpError(f"{describe(node)}: only nearest-neighbour resizing is "
                                 f"supported")
    outs = run_node(run, feeds, imp.opset)
    for name, o in zip(node.output, outs):
        if not name:
            continue
        o = np.asarray(o, dtype=np.float64)
        if np.any(o != np.round(o)) or np.any(o < 0) or np.any(o > n) or (
                not padding and np.any(o == 0)):
            raise UnsupportedOpError(f"{describe(node)}: this configuration does not just move "
                                     f"data")
        net, full = imp.select(v, o.astype(np.int64) - 1, name, describe(node), fill)
        imp.put(name, net, full)


def h_concat(imp, node):
    axis = int(attrs(node)["axis"])
    names = [n for n in node.input if n]
    out, src = _out(node), describe(node)
    if not any(imp.is_const(n) for n in names):
        pairs = [imp.sample_axis(imp.var(n), axis, node) for n in names]
        full = np.concatenate([np.zeros(imp.var(n).full) for n in names], axis=axis).shape
        y = imp.emit(Concat(pairs[0][1]), [p[0] for p in pairs], out, src)
        imp.put(out, y, full)
        return
    # constants among the inputs: concatenate the variables flat, then place every element
    markers, consts, flats, offset = [], [], [], 0
    for n in names:
        if imp.is_const(n):
            c = np.asarray(imp.consts[n], dtype=np.float64)
            markers.append(-np.ones(c.shape, dtype=np.int64))
            consts.append(c)
        else:
            v = imp.var(n)
            size = int(np.prod(v.full))
            markers.append(np.arange(offset, offset + size).reshape(v.full))
            consts.append(np.zeros(v.full))
            flats.append(imp.view(v.net, (size,), src))
            offset += size
    flat = flats[0] if len(flats) == 1 else imp.emit(Concat(0), flats, out + "/flat", src)
    index = np.concatenate(markers, axis=axis)
    y, full = imp.select(Var(flat, (offset,)), index, out, src)
    c = np.concatenate(consts, axis=axis)
    if np.any(c != 0):
        y = imp.emit(Scale(ONE, imp.sample_const(c, full)), [y], out, src)
    imp.put(out, y, full)


def h_shape(imp, node):
    """Shape of a variable is a constant: shapes are static (batch size 1)."""
    v = imp.var(node.input[0])
    a = attrs(node)
    dims = np.array(v.full, dtype=np.int64)
    if node.op_type == "Size":
        imp.consts[_out(node)] = np.array(int(np.prod(v.full)), dtype=np.int64)
        return
    start, end = int(a.get("start", 0)), a.get("end", None)
    imp.consts[_out(node)] = dims[start:None if end is None else int(end)]


def h_softmax(imp, node):
    """Softmax; before opset 13 over all axes from ``axis`` (default 1) on, from 13 on one axis
    (default -1)."""
    v = _only_var(imp, node)
    out, src = _out(node), describe(node)
    a = attrs(node)
    if imp.opset < 13:
        axis = int(a.get("axis", 1))
        axis = axis + len(v.full) if axis < 0 else axis
        flat_full = v.full[:axis] + (int(np.prod(v.full[axis:])),)
        v2 = Var(imp.view(v.net, imp.sample_of(flat_full), src), flat_full)
        net, ax = imp.sample_axis(v2, -1, node)
    else:
        net, ax = imp.sample_axis(v, int(a.get("axis", -1)), node)
    if len(imp.shapes[net]) == 0:
        net = imp.view(net, (1,), src)
        ax = 0
    imp.put(out, imp.emit(Softmax(ax), [net], out, src), v.full)


def _activation(cls):
    return unary(lambda a: cls())


HANDLERS = {
    "Relu": _activation(Relu), "Sigmoid": _activation(Sigmoid), "Tanh": _activation(Tanh),
    "Softplus": _activation(Softplus),
    "LeakyRelu": unary(lambda a: LeakyRelu(float(a.get("alpha", 0.01)))),
    "Neg": unary(lambda a: Scale(-ONE, ZERO)),
    "PRelu": h_prelu, "Clip": h_clip, "Abs": h_abs,
    "Identity": h_identity, "Dropout": h_identity, "Cast": h_identity,
    "Add": h_binary, "Sub": h_binary, "Mul": h_binary, "Div": h_binary, "Sum": h_sum,
    "Gemm": h_gemm, "MatMul": h_matmul,
    "Conv": h_conv, "ConvTranspose": h_conv_transpose,
    "AveragePool": h_pool, "MaxPool": h_pool,
    "GlobalAveragePool": h_global_pool, "GlobalMaxPool": h_global_pool,
    "BatchNormalization": h_batchnorm,
    "Reshape": h_reshape, "Flatten": h_reshape, "Squeeze": h_reshape, "Unsqueeze": h_reshape,
    "Transpose": h_index, "Slice": h_index, "Gather": h_index, "GatherElements": h_index,
    "GatherND": h_index, "Split": h_index, "Pad": h_index, "Expand": h_index, "Tile": h_index,
    "DepthToSpace": h_index, "SpaceToDepth": h_index, "Resize": h_index, "Upsample": h_index,
    "Concat": h_concat, "Shape": h_shape, "Size": h_shape, "Softmax": h_softmax,
}

_HINTS = {
    "nonlinear": ("Exp", "Log", "Sqrt", "Pow", "Reciprocal", "LogSoftmax", "Elu", "Selu",
                  "HardSigmoid", "HardSwish", "Sin", "Cos", "Erf", "Gelu", "Mish", "Sign", "Floor",
                  "Ceil", "Round", "Max", "Min"),
    "reduce": ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceL2", "ArgMax"),
    "control": ("If", "Loop", "Scan", "LSTM", "GRU", "RNN"),
    "norm": ("LayerNormalization", "InstanceNormalization", "LRN", "GroupNormalization"),
}


def hint_for(op_type: str) -> str:
    """A hint for an unsupported op type, for the error message."""
    if op_type in _HINTS["nonlinear"]:
        return "this nonlinearity has no relaxation here; supported: Relu, LeakyRelu, PRelu, " \
               "Sigmoid, Tanh, Softplus, Clip, Abs, Softmax (evaluation)"
    if op_type in _HINTS["reduce"]:
        return "re-export the reduction as a MatMul/Gemm or a pooling op"
    if op_type in _HINTS["control"]:
        return "control flow and recurrent ops are not supported: unroll them before export"
    if op_type in _HINTS["norm"]:
        return "only inference-mode BatchNormalization is supported among normalisations"
    return ("ops on variables must be among: " + ", ".join(sorted(HANDLERS))
            + " (ops whose inputs are all constants are folded)")
