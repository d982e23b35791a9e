"""A small reverse-mode automatic differentiation tape over float64 numpy arrays.

Training needs gradients of losses built from interval and linear bound computations, which
are compositions of a few array primitives and of the ``Network``'s ops. A ``Var`` holds a
value and, when it depends on a trainable leaf, the rule that maps the gradient of its value
to the gradients of its parents (a vector-Jacobian product). ``backward(loss)`` walks the
graph in reverse topological order and accumulates ``d loss / d leaf`` into ``leaf.grad``.

Ops of the network enter through ``apply_op`` (``y = op(x)``, gradients from ``op.vjp`` and
``op.param_vjp``) and ``apply_op_transpose`` (``z = op_lin^T g`` for the linear part of an
affine op, used by the backward CROWN pass). Both use only the op interface of
``verifier.network.ops``, so any op with ``forward``/``vjp``/``param_vjp`` is differentiable.

No gradient is computed for a parent that does not depend on a leaf (``requires_grad`` false):
data and constants cost nothing in the backward pass. All arithmetic is float64.
"""
from __future__ import annotations

import dataclasses

import numpy as np


class Var:
    """A value on the tape. ``value``: float64 array; ``grad``: accumulated gradient of the
    last ``backward`` (leaves only); ``requires_grad``: whether it depends on a leaf."""

    __slots__ = ("value", "parents", "vjp", "requires_grad", "grad")

    def __init__(self, value, parents=(), vjp=None, requires_grad=False):
        self.value = value if isinstance(value, np.ndarray) else np.asarray(value, np.float64)
        self.parents = parents
        self.vjp = vjp
        self.requires_grad = requires_grad
        self.grad = None

    @property
    def shape(self):
        return self.value.shape

    # operator sugar -------------------------------------------------------------------------
    def __add__(self, o):
        return add(self, o)

    __radd__ = __add__

    def __sub__(self, o):
        return sub(self, o)

    def __rsub__(self, o):
        return sub(o, self)

    def __mul__(self, o):
        return mul(self, o)

    __rmul__ = __mul__

    def __neg__(self):
        return neg(self)

    def __truediv__(self, o):
        return div(self, o)

    def __repr__(self):
        return f"Var(shape={self.value.shape}, requires_grad={self.requires_grad})"


def leaf(value) -> Var:
    """A trainable leaf (its ``grad`` is filled by ``backward``)."""
    return Var(np.asarray(value, dtype=np.float64), requires_grad=True)


def const(value) -> Var:
    """A constant (no gradient flows to it)."""
    return value if isinstance(value, Var) else Var(np.asarray(value, dtype=np.float64))


def _node(value, parents, vjp) -> Var:
    """A result of ``parents``; records ``vjp`` only if some parent needs a gradient."""
    if any(p.requires_grad for p in parents):
        return Var(value, parents, vjp, True)
    return Var(value)


def backward(out: Var, grad=None) -> None:
    """Accumulate ``d <grad, out> / d leaf`` into every leaf's ``.grad`` (``grad`` defaults to
    1 for a scalar ``out``). Leaves' previous ``.grad`` values are overwritten."""
    if grad is None:
        if out.value.size != 1:
            raise ValueError("backward() of a non-scalar needs an explicit grad")
        grad = np.ones_like(out.value)
    order, seen, stack = [], set(), [(out, False)]
    while stack:  # iterative post-order DFS over the nodes that need gradients
        v, done = stack.pop()
        if done:
            order.append(v)
            continue
        if id(v) in seen or not v.requires_grad:
            continue
        seen.add(id(v))
        stack.append((v, True))
        for p in v.parents:
            if p.requires_grad and id(p) not in seen:
                stack.append((p, False))
    grads = {id(out): np.asarray(grad, dtype=np.float64)}
    for v in reversed(order):
        g = grads.pop(id(v), None)
        if v.vjp is None:  # a leaf
            v.grad = g if g is not None else np.zeros_like(v.value)
            continue
        if g is None:
            continue
        for p, gp in zip(v.parents, v.vjp(g)):
            if gp is None or not p.requires_grad:
                continue
            k = id(p)
            grads[k] = grads[k] + gp if k in grads else gp


# --------------------------------------------------------------------------------------------
# elementwise arithmetic with numpy broadcasting
# --------------------------------------------------------------------------------------------
def unbroadcast(g: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum ``g`` over the axes that broadcasting added or stretched to reach it from ``shape``."""
    if g.shape == tuple(shape):
        return g
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for ax, s in enumerate(shape):
        if s == 1 and g.shape[ax] != 1:
            g = g.sum(axis=ax, keepdims=True)
    return g


def add(a, b) -> Var:
    """``a + b``."""
    a, b = const(a), const(b)
    return _node(a.value + b.value, (a, b),
                 lambda g: (unbroadcast(g, a.shape) if a.requires_grad else None,
                            unbroadcast(g, b.shape) if b.requires_grad else None))


def sub(a, b) -> Var:
    """``a - b``."""
    a, b = const(a), const(b)
    return _node(a.value - b.value, (a, b),
                 lambda g: (unbroadcast(g, a.shape) if a.requires_grad else None,
                            unbroadcast(-g, b.shape) if b.requires_grad else None))


def mul(a, b) -> Var:
    """``a * b`` (elementwise)."""
    a, b = const(a), const(b)
    return _node(a.value * b.value, (a, b),
                 lambda g: (unbroadcast(g * b.value, a.shape) if a.requires_grad else None,
                            unbroadcast(g * a.value, b.shape) if b.requires_grad else None))


def div(a, b) -> Var:
    """``a / b`` (elementwise); d/da = 1/b, d/db = -a/b^2."""
    a, b = const(a), const(b)
    y = a.value / b.value
    return _node(y, (a, b),
                 lambda g: (unbroadcast(g / b.value, a.shape) if a.requires_grad else None,
                            unbroadcast(-g * y / b.value, b.shape) if b.requires_grad else None))


def neg(a) -> Var:
    """``-a``."""
    a = const(a)
    return _node(-a.value, (a,), lambda g: (-g,))


def absolute(a) -> Var:
    """``|a|``; derivative ``sign(a)`` (0 at 0)."""
    a = const(a)
    return _node(np.abs(a.value), (a,), lambda g: (g * np.sign(a.value),))


def relu(a) -> Var:
    """``max(a, 0)``; derivative 1 where a > 0, else 0."""
    a = const(a)
    return _node(np.maximum(a.value, 0.0), (a,), lambda g: (g * (a.value > 0),))


def neg_part(a) -> Var:
    """``min(a, 0)``; derivative 1 where a < 0, else 0."""
    a = const(a)
    return _node(np.minimum(a.value, 0.0), (a,), lambda g: (g * (a.value < 0),))


def where(mask: np.ndarray, a, b) -> Var:
    """``a`` where the constant boolean ``mask`` holds, else ``b`` (broadcast)."""
    a, b = const(a), const(b)
    y = np.where(mask, a.value, b.value)
    return _node(y, (a, b),
                 lambda g: (unbroadcast(np.where(mask, g, 0.0), a.shape) if a.requires_grad
                            else None,
                            unbroadcast(np.where(mask, 0.0, g), b.shape) if b.requires_grad
                            else None))


def elementwise(fn, dfn, a) -> Var:
    """``fn(a)`` for a numpy function with derivative ``dfn(a, fn(a))``."""
    a = const(a)
    y = fn(a.value)
    return _node(y, (a,), lambda g: (g * dfn(a.value, y),))


# --------------------------------------------------------------------------------------------
# reductions and shapes
# --------------------------------------------------------------------------------------------
def total(a, axis=None, keepdims=False) -> Var:
    """``sum(a, axis)``."""
    a = const(a)
    y = np.sum(a.value, axis=axis, keepdims=keepdims)

    def vjp(g):
        if axis is not None and not keepdims:
            g = np.expand_dims(g, axis)
        return (np.broadcast_to(g, a.shape).copy(),)
    return _node(np.asarray(y, dtype=np.float64), (a,), vjp)


def mean(a) -> Var:
    """Mean of all elements."""
    a = const(a)
    n = a.value.size
    return _node(np.asarray(a.value.mean()), (a,), lambda g: (np.full(a.shape, g / n),))


def reshape(a, shape) -> Var:
    """``a.reshape(shape)``."""
    a = const(a)
    return _node(a.value.reshape(shape), (a,), lambda g: (g.reshape(a.shape),))


def matmul(a, b) -> Var:
    """``a @ b`` with numpy's batched (stacked) semantics; both operands at least 2-d."""
    a, b = const(a), const(b)

    def vjp(g):
        ga = unbroadcast(g @ np.swapaxes(b.value, -1, -2), a.shape) if a.requires_grad else None
        gb = unbroadcast(np.swapaxes(a.value, -1, -2) @ g, b.shape) if b.requires_grad else None
        return ga, gb
    return _node(a.value @ b.value, (a, b), vjp)


def logsumexp(a, axis=-1) -> Var:
    """``log sum_j exp(a_j)`` along ``axis`` (shifted by the max for stability); gradient is
    the softmax."""
    a = const(a)
    m = a.value.max(axis=axis, keepdims=True)
    e = np.exp(a.value - m)
    s = e.sum(axis=axis, keepdims=True)
    y = (np.log(s) + m).squeeze(axis)
    p = e / s
    return _node(y, (a,), lambda g: (np.expand_dims(g, axis) * p,))


def pick(a, index: np.ndarray) -> Var:
    """``a[b, index[b]]`` for a (B, K) array: one entry per row."""
    a = const(a)
    rows = np.arange(a.shape[0])

    def vjp(g):
        ga = np.zeros_like(a.value)
        ga[rows, index] = g
        return (ga,)
    return _node(a.value[rows, index], (a,), vjp)


def take(a, axis: int, start: int, stop: int) -> Var:
    """The slice ``start:stop`` of ``a`` along ``axis``."""
    a = const(a)
    sl = [slice(None)] * a.value.ndim
    sl[axis] = slice(start, stop)
    sl = tuple(sl)

    def vjp(g):
        ga = np.zeros_like(a.value)
        ga[sl] = g
        return (ga,)
    return _node(a.value[sl], (a,), vjp)


def concat(vs, axis=0) -> Var:
    """``concatenate(vs, axis)``."""
    vs = [const(v) for v in vs]
    cuts = np.cumsum([v.shape[axis] for v in vs])[:-1]
    return _node(np.concatenate([v.value for v in vs], axis=axis), tuple(vs),
                 lambda g: tuple(np.split(g, cuts, axis=axis)))


# --------------------------------------------------------------------------------------------
# network ops
# --------------------------------------------------------------------------------------------
def with_params(op, values: dict):
    """A copy of ``op`` with the named parameter fields set to ``values`` (arrays)."""
    return dataclasses.replace(op, **values) if values else op


def apply_op(op, params: dict, inputs: list) -> Var:
    """``y = op(*inputs)`` where the op's parameter fields named in ``params`` take the values
    of those ``Var``s. Gradients: inputs by ``op.vjp``, parameters by ``op.param_vjp``."""
    inputs = [const(x) for x in inputs]
    names = tuple(params)
    pv = tuple(params[k] for k in names)
    op = with_params(op, {k: p.value for k, p in zip(names, pv)})
    xs = [x.value for x in inputs]
    y = op.forward(*xs)

    def vjp(g):
        gin = [None] * len(inputs)
        if any(x.requires_grad for x in inputs):
            gin = op.vjp(xs, y, g)
        gp = [None] * len(pv)
        if any(p.requires_grad for p in pv):
            pg = op.param_vjp(xs, y, g)
            gp = [pg[k] if p.requires_grad else None for k, p in zip(names, pv)]
        return tuple(gin) + tuple(gp)
    return _node(y, tuple(inputs) + pv, vjp)


def _zero_view(shape) -> np.ndarray:
    """A read-only zero array of ``shape`` that takes no memory (a stand-in input for the vjp
    of a linear op, which does not depend on the input's value)."""
    return np.broadcast_to(np.zeros((), dtype=np.float64), shape)


def apply_op_transpose(op, weight: Var | None, g, in_shape: tuple, weight_field: str = "W") -> Var:
    """``z = L^T g`` where ``L`` is the linear part of the affine op ``op`` (its bias dropped)
    with weight field ``weight_field`` taken from ``weight`` (None: the op has no weight, e.g.
    AvgPool, Reshape). ``g``: (N, *out_shape) -> ``z``: (N, *in_shape).

    Gradients: ``d<zbar, L^T g>/dg = L zbar`` (the bias-free forward), and
    ``d<zbar, L^T g>/dW = d<g, L zbar>/dW`` = ``param_vjp`` at input ``zbar`` with output
    gradient ``g``."""
    g = const(g)
    fields = {}
    if weight is not None:
        fields[weight_field] = weight.value
    if hasattr(op, "b"):
        fields["b"] = np.zeros_like(op.b)
    if hasattr(op, "fill"):
        fields["fill"] = 0.0
    lin = with_params(op, fields)
    N = g.shape[0]
    dummy = _zero_view((N,) + tuple(in_shape))
    z = lin.vjp([dummy], None, g.value)[0]
    parents = (g,) if weight is None else (g, weight)

    def vjp(zbar):
        gg = lin.forward(zbar) if g.requires_grad else None
        if weight is None:
            return (gg,)
        gw = lin.param_vjp([zbar], None, g.value)[weight_field] if weight.requires_grad else None
        return gg, gw
    return _node(np.asarray(z, dtype=np.float64), parents, vjp)
