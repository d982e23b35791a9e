"""Normalisation passes: rewrite a ``Network`` into fewer, plainer ops computing the same
function (in real arithmetic; in floating point up to the rounding of the fused parameters).

Constants are already folded at import (``onnx_import``), Identity/Dropout/Cast never reach the
graph, and Flatten/Reshape/Squeeze/Unsqueeze are explicit ``Reshape`` nodes. The passes here,
applied until nothing changes:

- ``drop_identities``: a Reshape to the same shape, a Select that keeps every element in order
  (it becomes a Reshape), a Scale with ``a = 1, c = 0``, a one-input Sum of weight 1.
- ``collapse_reshapes``: Reshape(Reshape(x)) -> Reshape(x).
- ``collapse_selects``: chains of Select and Reshape (which moves no data) -> one Select:
  ``Select_2(Select_1(x))`` picks ``x.flat[i1.flat[i2]]``.
- ``fuse_scales``: Scale(Scale(x)) -> one Scale: ``a2 (a1 x + c1) + c2 = (a2 a1) x + (a2 c1 + c2)``.
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
    """Apply every pass until the network stops changing."""
    nodes, output = list(net.nodes), net.output_name
    passes = (drop_identities, collapse_reshapes, collapse_selects, fuse_scales, move_scale_past_reshape,
              fuse_affine)
    for _ in range(10 * len(nodes) + 10):
        changed = False
        for p in passes:
            nodes, output, ch = p(nodes, output, net)
            changed |= ch
        nodes = drop_dead(nodes, output)
        if not changed:
            break
    out = Network(net.input_name, net.input_shape, nodes, output)
    log.debug("normalised %d nodes into %d", len(net.nodes), len(out.nodes))
    return out


# -- helpers ------------------------------------------------------------------------------------
def _shape_of(nodes, net, name):
    if name == net.input_name:
        return net.input_shape
    for n in nodes:
        if n.name == name:
            return n.shape
    raise KeyError(name)


def _consumers(nodes, output) -> dict[str, int]:
    count = {output: 1}
    for n in nodes:
        for i in n.inputs:
            count[i] = count.get(i, 0) + 1
    return count


def _rename_uses(nodes, old, new):
    return [Node(n.name, n.op, tuple(new if i == old else i for i in n.inputs), n.shape, n.source)
            if old in n.inputs else n for n in nodes]


def _bypass(nodes, output, k):
    """Remove node k, whose value equals its (single) input's."""
    node = nodes[k]
    rest = nodes[:k] + nodes[k + 1:]
    src = node.inputs[0]
    return _rename_uses(rest, node.name, src), (src if output == node.name else output)


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


def _merge(nodes, k_inner, k_outer, op, inputs):
    """Replace the outer node by ``op`` on ``inputs`` (keeping its name) and drop the inner."""
    outer = nodes[k_outer]
    new = list(nodes)
    new[k_outer] = Node(outer.name, op, tuple(inputs), outer.shape,
                        f"{nodes[k_inner].source} + {outer.source}".strip(" +"))
    del new[k_inner]
    return new


def _producer(nodes, name):
    for k, n in enumerate(nodes):
        if n.name == name:
            return k
    return None


# -- passes -------------------------------------------------------------------------------------
def drop_identities(nodes, output, net):
    """Reshape to its own shape, in-order Select, Scale(1, 0), Sum of one input with weight 1."""
    for k, n in enumerate(nodes):
        op = n.op
        in_shape = _shape_of(nodes, net, n.inputs[0])
        same = n.shape == in_shape
        if isinstance(op, Select) and int(np.prod(in_shape)) == op.index.size and np.array_equal(
                op.index.ravel(), np.arange(op.index.size)):
            if same:
                return (*_bypass(nodes, output, k), True)
            nodes = list(nodes)
            nodes[k] = Node(n.name, Reshape(n.shape), n.inputs, n.shape, n.source)
            return nodes, output, True
        identity = (
            (isinstance(op, Reshape) and same)
            or (isinstance(op, Scale) and same and np.all(op.a == 1) and np.all(op.c == 0)
                and np.broadcast_shapes(op.a.shape, op.c.shape, n.shape) == n.shape)
            or (isinstance(op, Sum) and len(n.inputs) == 1 and op.weights[0] == 1.0))
        if identity:
            return (*_bypass(nodes, output, k), True)
    return nodes, output, False


def collapse_reshapes(nodes, output, net):
    """Reshape(Reshape(x)) -> Reshape(x) when the inner one has no other consumer."""
    uses = _consumers(nodes, output)
    for k, n in enumerate(nodes):
        if not isinstance(n.op, Reshape):
            continue
        j = _producer(nodes, n.inputs[0])
        if j is not None and isinstance(nodes[j].op, Reshape) and uses[nodes[j].name] == 1:
            return _merge(nodes, j, k, n.op, nodes[j].inputs), output, True
    return nodes, output, False


def collapse_selects(nodes, output, net):
    """Select(Select(x)), Select(Reshape(x)), Reshape(Select(x)) -> one Select, when the inner
    one has no other consumer (and the fills agree where both are used)."""
    uses = _consumers(nodes, output)
    for k, n in enumerate(nodes):
        if not isinstance(n.op, (Select, Reshape)):
            continue
        j = _producer(nodes, n.inputs[0])
        if j is None or uses[nodes[j].name] != 1:
            continue
        inner = nodes[j].op
        if isinstance(n.op, Select) and isinstance(inner, Reshape):
            op = n.op
        elif isinstance(n.op, Reshape) and isinstance(inner, Select):
            op = Select(inner.index.reshape(n.shape), inner.fill)
        elif isinstance(n.op, Select) and isinstance(inner, Select):
            i1, i2 = inner.index.ravel(), n.op.index
            picked = np.where(i2 < 0, -1, i1[np.maximum(i2, 0)])
            outer_fill, inner_fill = np.any(i2 < 0), np.any((i2 >= 0) & (picked < 0))
            if outer_fill and inner_fill and inner.fill != n.op.fill:
                continue
            op = Select(picked, inner.fill if inner_fill else n.op.fill)
        else:
            continue
        return _merge(nodes, j, k, op, nodes[j].inputs), output, True
    return nodes, output, False


def fuse_scales(nodes, output, net):
    """Scale(Scale(x)) -> Scale((a2 a1), (a2 c1 + c2))."""
    uses = _consumers(nodes, output)
    for k, n in enumerate(nodes):
        if not isinstance(n.op, Scale):
            continue
        j = _producer(nodes, n.inputs[0])
        if j is None or not isinstance(nodes[j].op, Scale) or uses[nodes[j].name] != 1:
            continue
        s1, s2 = nodes[j].op, n.op
        if nodes[j].shape != _shape_of(nodes, net, nodes[j].inputs[0]):
            continue
        if np.broadcast_shapes(s1.a.shape, s1.c.shape, s2.a.shape, s2.c.shape,
                               n.shape) != n.shape:
            continue
        op = Scale(_compact(s2.a * s1.a), _compact(s2.a * s1.c + s2.c))
        return _merge(nodes, j, k, op, nodes[j].inputs), output, True
    return nodes, output, False


def _compact(a: np.ndarray) -> np.ndarray:
    """``a`` with every axis along which it is constant reduced to size 1."""
    a = np.asarray(a, dtype=np.float64)
    for ax in range(a.ndim):
        first = np.take(a, [0], axis=ax)
        if a.shape[ax] > 1 and np.array_equal(a, np.broadcast_to(first, a.shape)):
            a = first
    return a


def move_scale_past_reshape(nodes, output, net):
    """Reshape(Scale(x)) -> Scale'(Reshape(x)) with ``a``, ``c`` broadcast and reshaped."""
    uses = _consumers(nodes, output)
    for k, n in enumerate(nodes):
        if not isinstance(n.op, Reshape):
            continue
        j = _producer(nodes, n.inputs[0])
        if j is None or not isinstance(nodes[j].op, Scale) or uses[nodes[j].name] != 1:
            continue
        inner = nodes[j]
        if inner.shape != _shape_of(nodes, net, inner.inputs[0]) or np.broadcast_shapes(
                inner.op.a.shape, inner.op.c.shape, inner.shape) != inner.shape:
            continue
        a = _compact(np.broadcast_to(inner.op.a, inner.shape).reshape(n.shape))
        c = _compact(np.broadcast_to(inner.op.c, inner.shape).reshape(n.shape))
        new = list(nodes)
        new[j] = Node(inner.name, n.op, inner.inputs, n.shape, n.source)
        new[k] = Node(n.name, Scale(a, c), (inner.name,), n.shape, inner.source)
        return new, output, True
    return nodes, output, False


def fuse_affine(nodes, output, net):
    """Scale after Linear/Conv and Scale before Linear/Conv fold into the affine op."""
    uses = _consumers(nodes, output)
    for k, n in enumerate(nodes):
        j = _producer(nodes, n.inputs[0]) if n.inputs else None
        if j is None or uses[nodes[j].name] != 1:
            continue
        inner = nodes[j]
        if isinstance(n.op, Scale) and isinstance(inner.op, (Linear, Conv)):
            if inner.shape != n.shape:
                continue
            op = _scale_after(inner.op, n.op, n.shape)
        elif isinstance(n.op, (Linear, Conv)) and isinstance(inner.op, Scale):
            if inner.shape != _shape_of(nodes, net, inner.inputs[0]):
                continue
            op = _scale_before(n.op, inner.op, inner.shape)
        else:
            continue
        if op is not None:
            return _merge(nodes, j, k, op, inner.inputs), output, True
    return nodes, output, False


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
