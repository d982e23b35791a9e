"""Normalisation passes: rewrite a ``Network`` into fewer, plainer ops computing the same
function (in real arithmetic; in floating point up to the rounding of the fused parameters).

Constants are already folded at import (``onnx_import``), Identity/Dropout/Cast never reach the
graph, and Flatten/Reshape/Squeeze/Unsqueeze are explicit ``Reshape`` nodes. The rules here
are applied at every node, in topological order, in sweeps until a sweep changes nothing:

- ``drop_identity``: a Reshape to the same shape, a Select that keeps every element in order
  (it becomes a Reshape), a Scale with ``a = 1, c = 0``, a one-input Sum of weight 1.
- ``collapse_reshape``: Reshape(Reshape(x)) -> Reshape(x).
- ``collapse_select``: chains of Select and Reshape (which moves no data) -> one Select:
  ``Select_2(Select_1(x))`` picks ``x.flat[i1.flat[i2]]``.
- ``fuse_scale``: Scale(Scale(x)) -> one Scale: ``a2 (a1 x + c1) + c2 = (a2 a1) x + (a2 c1 + c2)``.
- ``move_scale_past_reshape``: Reshape(Scale(x)) -> Scale'(Reshape(x)), ``a``, ``c`` reshaped
  with the value, so that input normalisation meets the following affine op.
- ``fuse_affine``: a Scale after a Linear (MatMul+Add, Gemm then Mul, ...) or after a Conv
  (BatchNorm) folds into it: ``a (W x + b) + c = (a W) x + (a b + c)``; a Scale before a Linear
  or Conv (Sub/Div input normalisation, BatchNorm before a Conv) folds into it:
  ``W (a x + c) + b = (W a) x + (W c + b)``, for a Conv only where ``c = 0`` or there is no
  padding (padding adds zeros *after* the Scale, which the fused Conv could not reproduce).
  A fusion needs the Scale to be constant along the axes the affine op mixes and the inner
  value to have no other consumer.
- ``drop_dead``: nodes that do not reach the output.
"""
from __future__ import annotations

import logging

import numpy as np

from .graph import Network, Node
from .ops import Conv, Linear, Reshape, Scale, Select, Sum

log = logging.getLogger(__name__)


def normalize_network(net: Network) -> Network:
    """Apply every rule until the network stops changing; drop dead nodes."""
    g = _Graph(net)
    rules = (drop_identity, collapse_reshape, collapse_select, fuse_scale,
             move_scale_past_reshape, fuse_affine)
    for _ in range(len(net.nodes) + 2):
        changed = False
        for name in list(g.nodes):
            for rule in rules:
                if name in g.nodes and rule(g, name):
                    changed = True
        if not changed:
            break
    nodes = drop_dead(list(g.nodes.values()), g.output)
    out = Network(net.input_name, net.input_shape, nodes, g.output)
    log.debug("normalised %d nodes into %d", len(net.nodes), len(out.nodes))
    return out


class _Graph:
    """The network being rewritten: nodes by name in topological order, consumer counts."""

    def __init__(self, net: Network):
        self.input_name, self.input_shape = net.input_name, net.input_shape
        self.nodes = {n.name: n for n in net.nodes}
        self.output = net.output_name
        self.uses = {net.output_name: 1}
        for n in net.nodes:
            for i in n.inputs:
                self.uses[i] = self.uses.get(i, 0) + 1

    def shape(self, name) -> tuple:
        return self.input_shape if name == self.input_name else self.nodes[name].shape

    def inner(self, name):
        """The node computing the first input of ``name`` if only ``name`` uses it, else None."""
        src = self.nodes[name].inputs[0] if self.nodes[name].inputs else None
        if src is None or src not in self.nodes or self.uses.get(src, 0) != 1:
            return None
        return self.nodes[src]

    def merge(self, name, op, inputs) -> bool:
        """Replace node ``name`` by ``op`` on ``inputs``, its (single-use) inner node dropped."""
        outer = self.nodes[name]
        inner = self.nodes.pop(outer.inputs[0])
        del self.uses[inner.name]
        self.nodes[name] = Node(name, op, tuple(inputs), outer.shape,
                                f"{inner.source} + {outer.source}".strip(" +"))
        return True

    def bypass(self, name) -> bool:
        """Remove node ``name``, whose value equals its single input's."""
        node = self.nodes.pop(name)
        src = node.inputs[0]
        n_uses = self.uses.pop(name, 0)
        self.uses[src] = self.uses.get(src, 0) - 1 + n_uses
        for k, n in self.nodes.items():
            if name in n.inputs:
                self.nodes[k] = Node(n.name, n.op, tuple(src if i == name else i
                                                          for i in n.inputs), n.shape, n.source)
        if self.output == name:
            self.output = src
        return True

    def replace(self, name, op) -> bool:
        n = self.nodes[name]
        self.nodes[name] = Node(n.name, op, n.inputs, n.shape, n.source)
        return True


def along(a: np.ndarray, shape: tuple, axis: int) -> np.ndarray | None:
    """The vector ``v`` (length ``shape[axis]``) with ``broadcast(a, shape)`` equal to ``v``
    along ``axis`` and constant along every other axis; None if there is none."""
    if len(shape) == 0:
        return None
    f = np.moveaxis(np.broadcast_to(a, shape), axis, 0).reshape(shape[axis], -1)
    if f.shape[1] == 0:
        return None
    v = f[:, 0].copy()
    return v if np.array_equal(f, np.broadcast_to(v[:, None], f.shape)) else None


def _compact(a: np.ndarray) -> np.ndarray:
    """``a`` with every axis along which it is constant reduced to size 1."""
    a = np.asarray(a, dtype=np.float64)
    for ax in range(a.ndim):
        first = np.take(a, [0], axis=ax)
        if a.shape[ax] > 1 and np.array_equal(a, np.broadcast_to(first, a.shape)):
            a = first
    return a


def _elementwise(g: _Graph, node) -> bool:
    """A Scale whose output has its input's shape and whose ``a``, ``c`` broadcast to it."""
    return (node.shape == g.shape(node.inputs[0]) and np.broadcast_shapes(
        node.op.a.shape, node.op.c.shape, node.shape) == tuple(node.shape))


# -- rules (each returns whether it rewrote the node) ------------------------------------------
def drop_identity(g: _Graph, name) -> bool:
    """Reshape to its own shape, in-order Select, Scale(1, 0), Sum of one input with weight 1."""
    n = g.nodes[name]
    op = n.op
    if not n.inputs:
        return False
    in_shape = g.shape(n.inputs[0])
    same = n.shape == in_shape
    if isinstance(op, Select) and int(np.prod(in_shape)) == op.index.size and np.array_equal(
            op.index.ravel(), np.arange(op.index.size)):
        return g.bypass(name) if same else g.replace(name, Reshape(n.shape))
    if ((isinstance(op, Reshape) and same)
            or (isinstance(op, Scale) and _elementwise(g, n) and np.all(op.a == 1)
                and np.all(op.c == 0))
            or (isinstance(op, Sum) and len(n.inputs) == 1 and op.weights[0] == 1.0)):
        return g.bypass(name)
    return False


def collapse_reshape(g: _Graph, name) -> bool:
    """Reshape(Reshape(x)) -> Reshape(x)."""
    n, inner = g.nodes[name], g.inner(name)
    if isinstance(n.op, Reshape) and inner is not None and isinstance(inner.op, Reshape):
        return g.merge(name, n.op, inner.inputs)
    return False


def collapse_select(g: _Graph, name) -> bool:
    """Select(Select(x)), Select(Reshape(x)), Reshape(Select(x)) -> one Select (when the fills
    agree where both are used)."""
    n, inner = g.nodes[name], g.inner(name)
    if not isinstance(n.op, (Select, Reshape)) or inner is None:
        return False
    if isinstance(n.op, Select) and isinstance(inner.op, Reshape):
        return g.merge(name, n.op, inner.inputs)
    if isinstance(n.op, Reshape) and isinstance(inner.op, Select):
        return g.merge(name, Select(inner.op.index.reshape(n.shape), inner.op.fill),
                       inner.inputs)
    if isinstance(n.op, Select) and isinstance(inner.op, Select):
        i1, i2 = inner.op.index.ravel(), n.op.index
        picked = np.where(i2 < 0, -1, i1[np.maximum(i2, 0)])
        outer_fill, inner_fill = np.any(i2 < 0), np.any((i2 >= 0) & (picked < 0))
        if outer_fill and inner_fill and inner.op.fill != n.op.fill:
            return False
        return g.merge(name, Select(picked, inner.op.fill if inner_fill else n.op.fill),
                       inner.inputs)
    return False


def fuse_scale(g: _Graph, name) -> bool:
    """Scale(Scale(x)) -> Scale((a2 a1), (a2 c1 + c2))."""
    n, inner = g.nodes[name], g.inner(name)
    if not (isinstance(n.op, Scale) and inner is not None and isinstance(inner.op, Scale)
            and _elementwise(g, n) and _elementwise(g, inner)):
        return False
    s1, s2 = inner.op, n.op
    return g.merge(name, Scale(_compact(s2.a * s1.a), _compact(s2.a * s1.c + s2.c)),
                   inner.inputs)


def move_scale_past_reshape(g: _Graph, name) -> bool:
    """Reshape(Scale(x)) -> Scale'(Reshape(x)) with ``a``, ``c`` broadcast and reshaped."""
    n, inner = g.nodes[name], g.inner(name)
    if not (isinstance(n.op, Reshape) and inner is not None and isinstance(inner.op, Scale)
            and _elementwise(g, inner)):
        return False
    a = _compact(np.broadcast_to(inner.op.a, inner.shape).reshape(n.shape))
    c = _compact(np.broadcast_to(inner.op.c, inner.shape).reshape(n.shape))
    g.nodes[inner.name] = Node(inner.name, n.op, inner.inputs, n.shape, n.source)
    g.nodes[name] = Node(name, Scale(a, c), (inner.name,), n.shape, inner.source)
    return True


def fuse_affine(g: _Graph, name) -> bool:
    """Scale after Linear/Conv and Scale before Linear/Conv fold into the affine op."""
    n, inner = g.nodes[name], g.inner(name)
    if inner is None:
        return False
    op = None
    if isinstance(n.op, Scale) and isinstance(inner.op, (Linear, Conv)) and _elementwise(g, n):
        op = _scale_after(inner.op, n.op, n.shape)
    elif isinstance(n.op, (Linear, Conv)) and isinstance(inner.op, Scale) and _elementwise(
            g, inner):
        op = _scale_before(n.op, inner.op, inner.shape)
    return op is not None and g.merge(name, op, inner.inputs)


def _scale_after(aff, s: Scale, shape):
    """``a (A x + b) + c`` as one affine op, if ``a``, ``c`` vary only along its output axis."""
    axis = -1 if isinstance(aff, Linear) else 0
    if np.broadcast_shapes(s.a.shape, s.c.shape, shape) != tuple(shape):
        return None
    a, c = along(s.a, shape, axis), along(s.c, shape, axis)
    if a is None or c is None:
        return None
    if isinstance(aff, Linear):
        return Linear(a[:, None] * aff.W, a * aff.b + c)
    return Conv(aff.W * a[:, None, None, None], a * aff.b + c, aff.stride, aff.pads,
                aff.dilation, aff.groups)


def _scale_before(aff, s: Scale, shape):
    """``A (a x + c) + b`` as one affine op, if ``a``, ``c`` vary only along its input axis (and,
    for a padded Conv, ``c = 0``)."""
    axis = -1 if isinstance(aff, Linear) else 0
    if np.broadcast_shapes(s.a.shape, s.c.shape, shape) != tuple(shape):
        return None
    a, c = along(s.a, shape, axis), along(s.c, shape, axis)
    if a is None or c is None:
        return None
    if isinstance(aff, Linear):
        return Linear(aff.W * a[None, :], aff.W @ c + aff.b)
    if any(aff.pads) and np.any(c != 0):
        return None
    M, Cg = aff.W.shape[:2]
    G = aff.groups
    # input channel of W[m, j] is (m // (M / G)) * Cg + j
    ch = (np.arange(M)[:, None] // (M // G)) * Cg + np.arange(Cg)[None, :]
    W = aff.W * a[ch][:, :, None, None]
    b = aff.b + np.einsum("mjkl,mj->m", aff.W, c[ch])
    return Conv(W, b, aff.stride, aff.pads, aff.dilation, aff.groups)


def drop_dead(nodes, output):
    """Only the nodes the output depends on."""
    used = {output}
    for n in reversed(nodes):
        if n.name in used:
            used.update(n.inputs)
    return [n for n in nodes if n.name in used]
