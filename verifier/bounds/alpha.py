"""alpha-CROWN (Xu et al. 2021): projected-gradient (Adam) ascent on the lower slopes of
unstable ReLUs, one slope per neuron, per row and per box, with intermediate bounds fixed.

The CROWN bound of a row equals the relaxed network -- every nonlinear op replaced by the line
the backward pass chose for that row, every concretised value by its minimising corner --
evaluated at the minimising input corner. So the gradient of a row's bound with respect to the
lower slope a_j of an unstable ReLU (used where the coefficient A_j reaching it is > 0) is
``A_j z_j``, with z_j the pre-activation of that evaluation: one backward pass (recording the
coefficients) and one forward pass of the relaxed network per iteration (``primal``). Every
iterate's bound is sound (the slopes stay in [0, 1]); the result keeps the best per row.
"""
from __future__ import annotations

import numpy as np

from verifier.kernels import act_forward, adam_ascent
from verifier.network import ops as O

from .crown import final_crown
from .interval import concat_index, scale_vectors, select_index
from .relax import relaxation
from .state import State
from .types import AlphaOptions


def _linear(st, pn, A, xs):
    x = xs[0]
    W, b = pn.op.W, pn.op.b
    m, n = W.shape
    Bx, K = x.shape[:2]
    act = st.plan.fused_into.get(pn.name)
    if act is not None:
        cols = relaxation(st, st.plan.node(act)).cols
        if cols.size < m:
            # only the neurons whose lines are not zero matter to the activation after it
            key = ("fwd", pn.name)
            sub = st.cache.get(key)
            if sub is None:
                sub = st.cache[key] = (np.ascontiguousarray(W[cols].T), b[cols])
            y = np.zeros((Bx, K, m))
            y[:, :, cols] = (x.reshape(-1, n) @ sub[0] + sub[1]).reshape(Bx, K, cols.size)
            return y
    # Linear acts on the last axis: (Bx, K, ..., n) -> (Bx, K, ..., m), flattened per row
    return (x.reshape(-1, n) @ W.T + b).reshape(Bx, K, pn.size)


def _scale(st, pn, A, xs):
    a, c = scale_vectors(pn)
    return xs[0] * a + c


def _sum(st, pn, A, xs):
    y = 0.0
    for wt, x in zip(pn.op.weights, xs):
        y = y + wt * x
    return y


def _linear_map(st, pn, A, xs):
    x = xs[0]
    Bx, K = x.shape[:2]
    y = pn.op.forward(x.reshape((Bx * K,) + pn.in_shapes[0]))
    return y.reshape(Bx, K, pn.size)


def _reshape(st, pn, A, xs):
    return xs[0]


def _select(st, pn, A, xs):
    idx, _ = select_index(pn)
    keep = idx >= 0
    return np.where(keep, xs[0][:, :, np.where(keep, idx, 0)], pn.op.fill)


def _concat(st, pn, A, xs):
    B = max(x.shape[0] for x in xs)
    K = xs[0].shape[1]
    y = np.empty((B, K, pn.size))
    for x, pos in zip(xs, concat_index(pn)):
        y[:, :, pos] = x
    return y


def _maxpool(st, pn, A, xs):
    r = relaxation(st, pn)
    x = xs[0]
    B = max(x.shape[0], A.shape[0], st.B)
    K = A.shape[1]
    x = np.broadcast_to(x, (B, K, x.shape[2]))
    idx = np.broadcast_to(r.jstar[:, None, :], (B, K, r.jstar.shape[1]))
    g = np.take_along_axis(x, idx, axis=2)
    return np.where((A < 0) & ~r.exact[:, None, :], r.U[:, None, :], g)


def _corner(st, name, A):
    return np.where(A < 0, st.hi[name][:, None, :], st.lo[name][:, None, :])


FORWARD_RULES = {
    O.Linear: _linear, O.Scale: _scale, O.Sum: _sum, O.Conv: _linear_map,
    O.ConvTranspose: _linear_map, O.AvgPool: _linear_map, O.Reshape: _reshape,
    O.Select: _select, O.Concat: _concat, O.MaxPool: _maxpool,
}


def primal(st: State) -> dict[str, np.ndarray]:
    """Gradients (B, K, n) of the rows' bounds with respect to the per-row slopes of the ReLU
    nodes in ``st.alpha``, from the coefficients of the last recorded backward pass."""
    plan, rec = st.plan, st.record
    vals = {}
    if plan.input_name in rec:
        vals[plan.input_name] = _corner(st, plan.input_name, rec[plan.input_name])
    grads = {}
    out = plan.output_name
    order = plan.forward_order(out) if out != plan.input_name else []
    for pn in order:
        A = rec.get(pn.name)
        if A is None:
            continue
        rule = FORWARD_RULES.get(type(pn.op))
        if rule is not None:
            vals[pn.name] = rule(st, pn, A, [vals[x] for x in pn.inputs])
            continue
        if type(pn.op) in _ACTS:
            r = relaxation(st, pn)
            z = vals[pn.inputs[0]]
            K = A.shape[1]
            B = max(z.shape[0], A.shape[0], st.B)
            z = np.ascontiguousarray(np.broadcast_to(z, (B, K, z.shape[2])))
            lo_k = st.alpha.get(pn.name, r.lo_k)
            y, g = act_forward(z, np.ascontiguousarray(A), lo_k, r.lo_t, r.up_k, r.up_t)
            vals[pn.name] = y
            if pn.name in st.alpha:
                grads[pn.name] = g
        else:
            vals[pn.name] = _corner(st, pn.name, A)
    return grads


_ACTS = (O.Relu, O.LeakyRelu, O.Sigmoid, O.Tanh, O.Softplus)


def optimise(st: State, A0, const, mag, options: AlphaOptions, stats: dict | None = None):
    """Best lower bounds (B, K) of the stacked rows over ``options.iterations`` Adam steps,
    starting from CROWN's slopes (the first evaluation is exactly CROWN's bound)."""
    plan = st.plan
    K = A0.shape[1]
    B = st.B
    masks, moments = {}, {}
    out = plan.output_name
    order = plan.forward_order(out) if out != plan.input_name else []
    for pn in order:
        if isinstance(pn.op, O.Relu):
            x = pn.inputs[0]
            mask = (st.lo[x] < 0.0) & (st.hi[x] > 0.0)
            if mask.any():
                r = relaxation(st, pn)
                st.alpha[pn.name] = np.ascontiguousarray(
                    np.broadcast_to(r.lo_k, (B, K, r.lo_k.shape[2])))
                masks[pn.name] = mask
                moments[pn.name] = (np.zeros((B, K, mask.shape[1])),
                                    np.zeros((B, K, mask.shape[1])))
    st.record = {}
    best = final_crown(st, A0, const, mag)
    crown_lower = best.copy()
    for name in [n for n in st.alpha if n not in st.record]:  # not reached (e.g. concretised)
        del st.alpha[name], masks[name], moments[name]
    lr = options.lr
    steps = options.iterations if masks and K else 0
    for t in range(1, steps + 1):
        grads = primal(st)
        for name, alpha in st.alpha.items():
            m, v = moments[name]
            adam_ascent(alpha, grads[name], m, v, masks[name], lr, options.beta1,
                        options.beta2, options.eps, t)
        lr *= options.lr_decay
        st.record = {}
        best = np.maximum(best, final_crown(st, A0, const, mag))
    st.record = None
    if stats is not None:
        stats["iterations"] = steps
        stats["alpha_nodes"] = len(masks)
        stats["alpha_gain"] = float(np.max(best - crown_lower)) if best.size else 0.0
    return best
