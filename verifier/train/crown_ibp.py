"""Differentiable CROWN-IBP lower bounds of specification rows (Zhang et al., ICLR 2020).

CROWN-IBP bounds every intermediate pre-activation with IBP (``interval_grad``) and the final
specification ``C y`` with one backward linear pass (CROWN, Zhang et al. 2018). Starting from
``Lambda = C`` at the output (or ``C W``, with ``C b`` added to the bias, when the spec is folded
into a last Linear), each node maps the coefficients of its output to those of its inputs:

- affine ``y = L x + b`` (Linear, Conv, ConvTranspose): ``bias += <Lambda, b>``,
  ``Lambda_x = L^T Lambda`` (the op's vjp applied to every row, no dense matrix);
- Scale ``a x + c``: ``bias += <Lambda, c>``, ``Lambda_x = a Lambda``; Sum: ``w_i Lambda``;
- AvgPool, Reshape, Select (``bias += fill * Lambda`` at filled positions), Concat: transpose;
- ReLU on ``[l, u]`` (IBP bounds of its input): for a lower bound, positive coefficients meet
  the lower relaxation ``y >= alpha x`` and negative ones the upper relaxation
  ``y <= d (x - l)``, with ``d = u / (u - l)`` on unstable neurons (1 active, 0 inactive) and the
  adaptive ``alpha = 1[u > -l]`` (1 active, 0 inactive):
  ``Lambda_x = alpha [Lambda]_+ + d [Lambda]_-``, ``bias += [Lambda]_- (-d l)``;
- LeakyReLU with slope ``a`` in [0, 1]: upper chord ``d = (u - a l) / (u - l)`` through
  ``(l, a l)`` and ``(u, u)``, lower ``alpha = 1[u > -l] + a 1[u <= -l]``.

At the input box ``[x_l, x_u]`` with centre ``m`` and radius ``r``:
``lb = Lambda m - |Lambda| r + bias``. Every step is a tape primitive, so the bound is
differentiable almost everywhere (``alpha`` is piecewise constant and carries no gradient).
Sigmoid, Tanh, Softplus and MaxPool have no rule here: training with them uses IBP.
"""
from __future__ import annotations

import numpy as np

from ..errors import UnsupportedOpError
from ..network import Network
from ..network import ops as O
from . import autodiff as ad
from .autodiff import Var
from .interval_grad import check_supported, fold_spec, foldable_output, interval_forward
from .params import node_params


def _lead(lam: Var, k: int) -> Var:
    """Sum of ``lam`` (B, K, ...) over every axis after the first two, keeping (B, K) and the
    last ``k`` axes."""
    axes = tuple(range(2, lam.value.ndim - k))
    return ad.total(lam, axis=axes) if axes else lam


def _bias_term(lam: Var, b: Var, channel_axes_after: int) -> Var:
    """``<Lambda, b broadcast>`` per (B, K): ``b`` is indexed by the axis that has
    ``channel_axes_after`` axes after it (0 for Linear's last axis, 2 for Conv's channel)."""
    lead = lam
    if channel_axes_after:
        lead = ad.total(lam, axis=tuple(range(lam.value.ndim - channel_axes_after,
                                              lam.value.ndim)))
    lead = _lead(lead, 1)  # (B, K, M)
    return ad.reshape(ad.matmul(lead, ad.reshape(b, (-1, 1))), lead.shape[:2])


def _through(op, weight, lam: Var, in_shape) -> Var:
    B, K = lam.shape[:2]
    flat = ad.reshape(lam, (B * K,) + lam.shape[2:])
    z = ad.apply_op_transpose(op, weight, flat, in_shape)
    return ad.reshape(z, (B, K) + tuple(in_shape))


def _b_affine(node, op, params, lam, ctx):
    bias = _bias_term(lam, params["b"], 0 if isinstance(op, O.Linear) else 2)
    return [_through(op, params["W"], lam, ctx.in_shapes[0])], bias


def _b_scale(node, op, params, lam, ctx):
    axes = tuple(range(2, lam.value.ndim))
    bias = ad.total(ad.mul(lam, params["c"]), axis=axes)
    return [ad.mul(lam, params["a"])], bias


def _b_sum(node, op, params, lam, ctx):
    return [lam * w for w in op.weights], None


def _b_transpose(node, op, params, lam, ctx):
    return [_through(op, None, lam, ctx.in_shapes[0])], None


def _b_reshape(node, op, params, lam, ctx):
    return [ad.reshape(lam, lam.shape[:2] + tuple(ctx.in_shapes[0]))], None


def _b_select(node, op, params, lam, ctx):
    bias = None
    filled = op.index < 0
    if op.fill != 0.0 and filled.any():
        bias = ad.total(ad.mul(lam, np.where(filled, op.fill, 0.0)[None, None]),
                        axis=tuple(range(2, lam.value.ndim)))
    return [_through(op, None, lam, ctx.in_shapes[0])], bias


def _b_concat(node, op, params, lam, ctx):
    ax = (op.axis if op.axis >= 0 else len(node.shape) + op.axis) + 2
    out, start = [], 0
    for shape in ctx.in_shapes:
        out.append(ad.take(lam, ax, start, start + shape[ax - 2]))
        start += shape[ax - 2]
    return out, None


def _relaxation(box, leak: float):
    """Slopes of the ReLU/LeakyReLU relaxation on the box of its input: ``(alpha, d, beta)``
    with the lower line ``alpha x`` (constant array), the upper line ``d x + beta`` (Vars)."""
    l, u = box.lower, box.upper
    lv, uv = l.value, u.value
    active = lv >= 0
    unstable = (lv < 0) & (uv > 0)
    den = ad.where(unstable, u - l, 1.0)
    lo = ad.where(unstable, l, 0.0)
    ratio = ad.div(ad.where(unstable, u - l * leak, 0.0), den)       # chord slope if unstable
    d = ad.where(active, 1.0, ad.where(unstable, ratio, leak))
    beta = ad.mul(lo, ad.sub(leak, ratio)) if leak else ad.neg(ad.mul(ratio, lo))
    beta = ad.where(unstable, beta, 0.0)
    alpha = np.where(active | (unstable & (uv > -lv)), 1.0, leak)
    return alpha, d, beta


def _select_slope(lam: Var, alpha: np.ndarray, d: Var) -> Var:
    """``alpha * [Lambda]_+ + d * [Lambda]_-`` (one tape node): Lambda (B, K, *s), alpha and
    ``d`` (B, 1, *s). Gradients: ``d/dLambda = where(Lambda > 0, alpha, d)``,
    ``d/dd = sum over K of [Lambda]_-``-weighted incoming gradient."""
    L = lam.value
    pos = L > 0
    slope = np.where(pos, alpha, d.value)

    def vjp(g):
        gl = g * slope if lam.requires_grad else None
        gd = (g * np.where(pos, 0.0, L)).sum(axis=1, keepdims=True) if d.requires_grad else None
        return gl, gd
    return ad._node(slope * L, (lam, d), vjp)


def _neg_dot(lam: Var, beta: Var) -> Var:
    """``sum over the sample axes of [Lambda]_- * beta`` per (B, K) (one tape node)."""
    L = lam.value
    B, K = L.shape[:2]
    neg = np.minimum(L, 0.0)
    val = (neg * beta.value).reshape(B, K, -1).sum(axis=2)

    def vjp(g):
        ge = g.reshape((B, K) + (1,) * (L.ndim - 2))
        gl = ge * beta.value * (L < 0) if lam.requires_grad else None
        gb = (ge * neg).sum(axis=1, keepdims=True) if beta.requires_grad else None
        return gl, gb
    return ad._node(val, (lam, beta), vjp)


def _b_relu(node, op, params, lam, ctx):
    leak = float(op.alpha) if isinstance(op, O.LeakyRelu) else 0.0
    if not 0.0 <= leak <= 1.0:
        raise UnsupportedOpError(f"CROWN-IBP training supports LeakyRelu slopes in [0, 1], got "
                                 f"{leak} (node {node.name!r})")
    alpha, d, beta = _relaxation(ctx.in_boxes[0], leak)
    B = lam.shape[0]
    d = ad.reshape(d, (B, 1) + d.shape[1:])
    beta = ad.reshape(beta, (B, 1) + beta.shape[1:])
    return [_select_slope(lam, alpha[:, None], d)], _neg_dot(lam, beta)


#: The backward rule of each op class:
#: ``rule(node, op, params, Lambda (B, K, *out)) -> ([Lambda_in per input], bias (B, K) or None)``.
BACKWARD_RULES = {
    O.Linear: _b_affine, O.Conv: _b_affine, O.ConvTranspose: _b_affine,
    O.Scale: _b_scale, O.Sum: _b_sum, O.AvgPool: _b_transpose,
    O.Reshape: _b_reshape, O.Select: _b_select, O.Concat: _b_concat,
    O.Relu: _b_relu, O.LeakyRelu: _b_relu,
}


class _Ctx:
    __slots__ = ("in_shapes", "in_boxes")

    def __init__(self, in_shapes, in_boxes):
        self.in_shapes, self.in_boxes = in_shapes, in_boxes


def crown_margin_lower(net: Network, pvars: dict, lower, upper, C: np.ndarray,
                       boxes: dict | None = None) -> Var:
    """Differentiable CROWN-IBP lower bound of ``C y`` (B, K) for every ``y = net(x)``,
    ``x`` in ``[lower, upper]``; ``C``: (B, K, m) over the flattened output. ``boxes`` may pass
    the IBP boxes of an ``interval_forward`` on the same box and parameters (shared work)."""
    check_supported(net, BACKWARD_RULES, "CROWN-IBP training")
    C = np.asarray(C, dtype=np.float64)
    B, K = C.shape[:2]
    folded = foldable_output(net)
    if boxes is None:
        boxes = interval_forward(net, pvars, lower, upper,
                                 stop=folded.name if folded is not None else None)
    lams: dict[str, Var] = {}
    bias = None
    if folded is not None:
        CW, Cb = fold_spec(folded, node_params(folded, pvars), C)
        lams[folded.inputs[0]] = CW
        bias = Cb
    else:
        lams[net.output_name] = ad.const(C.reshape((B, K) + net.output_shape))
    for node in reversed(net.nodes):
        lam = lams.pop(node.name, None)
        if lam is None or node is folded:
            continue
        ctx = _Ctx([net.shape_of(i) for i in node.inputs], [boxes.get(i) for i in node.inputs])
        rule = BACKWARD_RULES[type(node.op)]
        lam_ins, b = rule(node, node.op, node_params(node, pvars), lam, ctx)
        if b is not None:
            bias = b if bias is None else bias + b
        for name, li in zip(node.inputs, lam_ins):
            lams[name] = lams[name] + li if name in lams else li
    lam = lams.get(net.input_name)
    lb = ad.const(np.zeros((B, K))) if bias is None else bias
    if lam is None:  # the output does not depend on the input
        return lb
    box = boxes[net.input_name]
    mu = ad.reshape(box.centre, (B, -1, 1))
    r = ad.reshape(box.radius, (B, -1, 1))
    lam = ad.reshape(lam, (B, K, -1))
    return lb + ad.reshape(ad.matmul(lam, mu) - ad.matmul(ad.absolute(lam), r), (B, K))


__all__ = ["crown_margin_lower", "BACKWARD_RULES"]
