"""IBP: interval bound propagation, one rule per op class (``IBP_RULES``).

Affine ops use the centre/radius form (Gowal et al. 2018; jax_verify's ``ibp``):
``mu' = M mu + b``, ``r' = |M| r``, plus the rounding margin ``4 gamma_N s`` with
``s = |M| (|mu| + r) + |b|`` (rounding.py); monotone ops map the two ends; MaxPool takes window
maxima of both ends; Softmax uses ``y_i in [1 / (1 + sum_{j != i} e^{u_j - l_i}),
1 / (1 + sum_{j != i} e^{l_j - u_i})]``. Each rule returns ``(lo, hi, w)`` flat (B, n), where
``w`` (or None) is the magnitude vector CROWN's margin needs for that op.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from verifier.errors import UnsupportedOpError
from verifier.kernels import affine_ibp, sshape_ibp, window_max
from verifier.network import ops as O

from .plan import LINEAR_MAPS, PlanNode, concat_positions, pool_windows
from .rounding import MARGIN_FACTOR, U, centre_radius, down, up
from .state import State


def _outward(st: State, c, rho, s):
    R = rho + (MARGIN_FACTOR * st.plan.gamma) * s
    return down(c - R), up(c + R)


def abs_weights(pn: PlanNode) -> np.ndarray:
    """|W| of a Linear node (cached)."""
    aw = pn.cache.get("absW")
    if aw is None:
        aw = pn.cache["absW"] = np.abs(pn.op.W)
    return aw


#: a 1-d Linear layer's IBP runs in one kernel pass over its weights per box for up to this
#: many boxes, or for any number when its weights are this small (cache resident); BLAS
#: products over the batch are faster beyond
KERNEL_BOXES = 4
KERNEL_WEIGHTS = 1 << 14


def _linear(st, pn):
    x = pn.inputs[0]
    W, b = pn.op.W, pn.op.b
    m, n = W.shape
    lo, hi = st.lo[x], st.hi[x]
    B = lo.shape[0]
    P = pn.size // m
    if P == 1 and (B <= KERNEL_BOXES or W.size <= KERNEL_WEIGHTS):
        WT = pn.cache.get("WT")
        if WT is None:
            WT = pn.cache["WT"] = np.ascontiguousarray(W.T)
        return affine_ibp(WT, b, lo, hi, MARGIN_FACTOR * st.plan.gamma)
    mu, r = centre_radius(lo, hi)
    mu = mu.reshape(B * P, n)
    r = r.reshape(B * P, n)
    c = mu @ W.T + b
    both = np.concatenate([r, np.abs(mu) + r]) @ abs_weights(pn).T
    rho, s = both[:B * P], both[B * P:] + np.abs(b)
    lo2, hi2 = _outward(st, c, rho, s)
    return lo2.reshape(B, -1), hi2.reshape(B, -1), s.reshape(B, -1)


def scale_vectors(pn: PlanNode):
    """``a`` and ``c`` of a Scale node broadcast to its flat size (cached)."""
    v = pn.cache.get("scale")
    if v is None:
        a = np.ascontiguousarray(np.broadcast_to(pn.op.a, pn.shape).ravel())
        c = np.ascontiguousarray(np.broadcast_to(pn.op.c, pn.shape).ravel())
        v = pn.cache["scale"] = (a, c)
    return v


def _scale(st, pn):
    a, cc = scale_vectors(pn)
    mu, r = centre_radius(st.lo[pn.inputs[0]], st.hi[pn.inputs[0]])
    aa = np.abs(a)
    s = aa * (np.abs(mu) + r) + np.abs(cc)
    lo, hi = _outward(st, a * mu + cc, aa * r, s)
    return lo, hi, s


def _sum(st, pn):
    c = rho = s = 0.0
    for wt, x in zip(pn.op.weights, pn.inputs):
        mu, r = centre_radius(st.lo[x], st.hi[x])
        c = c + wt * mu
        rho = rho + abs(wt) * r
        s = s + abs(wt) * (np.abs(mu) + r)
    lo, hi = _outward(st, c, rho, s)
    return lo, hi, s


def map_parts(pn: PlanNode):
    """(op with |weights| and no bias, flat bias vector) of a Conv/ConvTranspose/AvgPool node."""
    v = pn.cache.get("map")
    if v is None:
        op = pn.op
        if isinstance(op, O.AvgPool):
            absop = op
        else:
            absop = dataclasses.replace(op, W=np.abs(op.W), b=np.zeros_like(op.b))
        zero = np.zeros((1,) + pn.in_shapes[0])
        bias = np.ascontiguousarray(op.forward(zero).reshape(-1))
        v = pn.cache["map"] = (absop, bias)
    return v


def _linear_map(st, pn):
    op = pn.op
    absop, bias = map_parts(pn)
    x = pn.inputs[0]
    B = st.lo[x].shape[0]
    shp = (B,) + pn.in_shapes[0]
    mu, r = centre_radius(st.lo[x], st.hi[x])
    c = op.forward(mu.reshape(shp)).reshape(B, -1)
    both = absop.forward(np.concatenate([r, np.abs(mu) + r]).reshape((2 * B,) + shp[1:]))
    both = both.reshape(2 * B, -1)
    rho, s = both[:B], both[B:] + np.abs(bias)
    lo, hi = _outward(st, c, rho, s)
    return lo, hi, s


def _reshape(st, pn):
    x = pn.inputs[0]
    return st.lo[x], st.hi[x], None


def select_index(pn: PlanNode):
    """(flat index, whether it has -1 fills or repeated indices) of a Select node (cached)."""
    v = pn.cache.get("select")
    if v is None:
        idx = np.ascontiguousarray(pn.op.index.ravel(), dtype=np.int64)
        kept = idx[idx >= 0]
        v = pn.cache["select"] = (idx, bool(kept.size < idx.size
                                            or np.unique(kept).size < kept.size))
    return v


def _select(st, pn):
    x = pn.inputs[0]
    idx, _ = select_index(pn)
    keep = idx >= 0
    safe = np.where(keep, idx, 0)
    lo = np.where(keep, st.lo[x][:, safe], pn.op.fill)
    hi = np.where(keep, st.hi[x][:, safe], pn.op.fill)
    w = np.where(keep, st.vmax(x)[:, safe], abs(pn.op.fill))
    return lo, hi, w


def concat_index(pn: PlanNode):
    v = pn.cache.get("concat")
    if v is None:
        v = pn.cache["concat"] = concat_positions(pn.shape, pn.in_shapes, pn.op.axis)
    return v


def _concat(st, pn):
    B = max(st.lo[x].shape[0] for x in pn.inputs)
    lo = np.empty((B, pn.size))
    hi = np.empty((B, pn.size))
    for x, pos in zip(pn.inputs, concat_index(pn)):
        lo[:, pos] = st.lo[x]
        hi[:, pos] = st.hi[x]
    return lo, hi, None


def _relu(st, pn):
    x = pn.inputs[0]
    return np.maximum(st.lo[x], 0.0), np.maximum(st.hi[x], 0.0), None


def _leaky(st, pn):
    a = float(pn.op.alpha)
    if a < 0:
        raise UnsupportedOpError(f"LeakyRelu with negative slope {a} (node {pn.name}) is not "
                                 "monotone; no bound rule")
    lo, hi = st.lo[pn.inputs[0]], st.hi[pn.inputs[0]]
    return (np.where(lo >= 0, lo, down(a * lo)), np.where(hi >= 0, hi, up(a * hi)), None)


def _sshape(kind):
    def rule(st, pn):
        x = pn.inputs[0]
        lo, hi = sshape_ibp(st.lo[x], st.hi[x], kind)
        return lo, hi, None
    return rule


def pool_table(pn: PlanNode) -> np.ndarray:
    win = pn.cache.get("win")
    if win is None:
        op = pn.op
        win = pn.cache["win"] = pool_windows(pn.in_shapes[0], pn.shape, op.kernel, op.stride,
                                              op.pads, op.dilation)
    return win


def _maxpool(st, pn):
    x = pn.inputs[0]
    win = pool_table(pn)
    return window_max(st.lo[x], win), window_max(st.hi[x], win), None


def _softmax(st, pn):
    x = pn.inputs[0]
    shape = pn.shape
    ax = pn.op.axis if pn.op.axis >= 0 else len(shape) + pn.op.axis
    B = st.lo[x].shape[0]
    l = np.moveaxis(st.lo[x].reshape((B,) + shape), ax + 1, -1)
    u = np.moveaxis(st.hi[x].reshape((B,) + shape), ax + 1, -1)
    n = l.shape[-1]
    off = ~np.eye(n, dtype=bool)
    with np.errstate(over="ignore", invalid="ignore"):
        d_lo = u[..., None, :] - l[..., :, None]      # [i, j] = u_j - l_i
        d_hi = l[..., None, :] - u[..., :, None]      # [i, j] = l_j - u_i
        s_lo = np.where(off, np.exp(d_lo), 0.0).sum(-1)
        s_hi = np.where(off, np.exp(d_hi), 0.0).sum(-1)
        big = np.maximum(np.where(off, np.abs(d_lo), 0).max(-1),
                         np.where(off, np.abs(d_hi), 0).max(-1))
        # exp of an argument with relative error u has relative error |x| u; the sum adds
        # gamma_n, the division 2 u: delta bounds the relative error of 1 / (1 + S).
        delta = 2.0 * U * (big + 4.0) + 2.0 * st.plan.gamma
        lo = down(1.0 / (1.0 + s_lo) * (1.0 - delta))
        hi = up(1.0 / (1.0 + s_hi) * (1.0 + delta))
    bad = ~np.isfinite(delta) | np.isnan(lo) | np.isnan(hi)
    lo = np.where(bad, 0.0, np.maximum(lo, 0.0))
    hi = np.where(bad, 1.0, np.minimum(hi, 1.0))
    lo = np.moveaxis(lo, -1, ax + 1).reshape(B, -1)
    hi = np.moveaxis(hi, -1, ax + 1).reshape(B, -1)
    return lo, hi, None


IBP_RULES = {
    O.Linear: _linear,
    O.Scale: _scale,
    O.Sum: _sum,
    O.Conv: _linear_map,
    O.ConvTranspose: _linear_map,
    O.AvgPool: _linear_map,
    O.Reshape: _reshape,
    O.Select: _select,
    O.Concat: _concat,
    O.Relu: _relu,
    O.LeakyRelu: _leaky,
    O.Sigmoid: _sshape(0),
    O.Tanh: _sshape(1),
    O.Softplus: _sshape(2),
    O.MaxPool: _maxpool,
    O.Softmax: _softmax,
}
assert set(LINEAR_MAPS) <= set(IBP_RULES)


def ibp_node(st: State, pn: PlanNode):
    """IBP bounds ``(lo, hi, w)`` of one node from the current bounds of its inputs."""
    rule = IBP_RULES.get(type(pn.op))
    if rule is None:
        raise UnsupportedOpError(f"no interval rule for {type(pn.op).__name__} "
                                 f"(node {pn.name})")
    return rule(st, pn)
