"""CROWN's backward substitution over the DAG, one rule per op class (``BACKWARD_RULES``).

A pass bounds K rows ``a_r . v_start`` from below for every box. It keeps, for each value v not
yet processed, the coefficient tensor ``A_v`` (Ba, K, n_v) (Ba = 1 while it is the same for all
boxes), a constant (B, K) and the rounding magnitude ``mag`` (B, K). Values are processed in
reverse topological order, so a value's coefficient is complete (the sum over its consumers)
before its own rule replaces it by coefficients of the op's inputs:

* affine ops (``Linear``, ``Scale``, ``Sum``, Conv/ConvTranspose/AvgPool): ``A_in = A M``
  (for Linear ``A @ W``; for the maps, the op's ``vjp``: the transposed convolution of the
  coefficient tensor, never a dense matrix), ``const += A . bias``;
* shape ops (``Reshape``, ``Select``, ``Concat``): the transposed index map;
* relaxed ops: ``A_in = A k`` with the lower line where A > 0 and the upper line where A < 0
  (``kernels.act_backward``, ``kernels.maxpool_backward``);
* any other op (Softmax): concretised at its interval bounds -- sound, it cuts the pass there.

At the input, ``min over the box of A x`` is added (``kernels.box_lower``). Every rule also
returns its magnitude, and so does every accumulation of two contributions to one value (a
DAG merge: residual branches, a value concatenated twice); the bound is
``const - MARGIN_FACTOR gamma_N mag`` rounded down (rounding.py). Upper bounds are lower bounds
of negated rows.
"""
from __future__ import annotations

import numpy as np

from verifier.kernels import abs_dot, act_backward, box_lower, maxpool_backward, select_backward
from verifier.network import ops as O

from .interval import concat_index, map_parts, scale_vectors, select_index
from .plan import PlanNode
from .relax import relaxation
from .rounding import MARGIN_FACTOR, down
from .state import State


def _c(a):
    return np.ascontiguousarray(a, dtype=np.float64)


def _linear(st, pn, A):
    W, b = pn.op.W, pn.op.b
    m, n = W.shape
    Ba, K, _ = A.shape
    P = pn.size // m
    A2 = A.reshape(Ba * K * P, m)
    live = np.flatnonzero(A2.any(axis=0))
    if live.size < 0.8 * m:
        # columns that are zero in every row and box (neurons whose relaxation is 0, e.g.
        # stably inactive ReLUs) drop out of the product
        key = (pn.name, live.tobytes())
        Wl = st.cache.get(key)
        if Wl is None:
            Wl = st.cache[key] = np.ascontiguousarray(W[live])
        Ain = (A2[:, live] @ Wl).reshape(Ba, K, P * n)
    else:
        Ain = (A2 @ W).reshape(Ba, K, P * n)
    if P == 1:
        c = A.reshape(Ba, K, m) @ b
    else:
        c = A.reshape(Ba, K, P, m).sum(axis=2) @ b
    return [(pn.inputs[0], Ain)], c, abs_dot(A, st.w[pn.name])


def _scale(st, pn, A):
    a, cc = scale_vectors(pn)
    return [(pn.inputs[0], A * a)], A @ cc, abs_dot(A, st.w[pn.name])


def _sum(st, pn, A):
    parts = [(x, A if wt == 1.0 else A * wt) for wt, x in zip(pn.op.weights, pn.inputs)]
    return parts, 0.0, abs_dot(A, st.w[pn.name])


def _linear_map(st, pn, A):
    absop, bias = map_parts(pn)
    Ba, K, _ = A.shape
    in_shape = pn.in_shapes[0]
    g = A.reshape((Ba * K,) + pn.shape)
    x = np.broadcast_to(np.zeros(()), (Ba * K,) + in_shape)
    Ain = pn.op.vjp([x], None, g)[0]
    return ([(pn.inputs[0], _c(Ain).reshape(Ba, K, -1))], A @ bias,
            abs_dot(A, st.w[pn.name]))


def _reshape(st, pn, A):
    return [(pn.inputs[0], A)], 0.0, 0.0


def _select(st, pn, A):
    idx, irregular = select_index(pn)
    Ain, c = select_backward(_c(A), idx, pn.in_sizes[0], float(pn.op.fill))
    mag = abs_dot(A, st.w[pn.name]) if irregular else 0.0
    return [(pn.inputs[0], Ain)], c, mag


def _concat(st, pn, A):
    return [(x, _c(A[:, :, pos])) for x, pos in zip(pn.inputs, concat_index(pn))], 0.0, 0.0


def _activation(st, pn, A):
    r = relaxation(st, pn)
    lo_k = st.alpha.get(pn.name, r.lo_k)
    x = pn.inputs[0]
    n = pn.size
    full = st.cache.get("arange" + str(n))
    if full is None:
        full = st.cache["arange" + str(n)] = np.arange(n, dtype=np.int64)
    Az, c, mag = act_backward(_c(A), lo_k, r.lo_t, r.up_k, r.up_t, st.vmax(x), full,
                              _zeros(st, n))
    return [(x, Az)], c, mag


def _zeros(st, n):
    z = st.cache.get("zeros" + str(n))
    if z is None:
        z = st.cache["zeros" + str(n)] = np.zeros(n)
    return z


def _act_linear(st, pn, A, lin):
    """An activation and the 1-d Linear that feeds it, in one step: the relaxation, the
    Linear's bias and both magnitudes in one kernel pass over the live columns, then one
    product with the live rows of W."""
    r = relaxation(st, pn)
    lo_k = st.alpha.get(pn.name, r.lo_k)
    key = ("fused", pn.name)
    pre = st.cache.get(key)
    if pre is None:
        W = lin.op.W
        Wc = W if r.cols.size == W.shape[0] else np.ascontiguousarray(W[r.cols])
        pre = st.cache[key] = (Wc, st.vmax(lin.name) + st.w[lin.name])
    Wc, vmw = pre
    Az, c, mag = act_backward(_c(A), lo_k, r.lo_t, r.up_k, r.up_t, vmw, r.cols, lin.op.b)
    if st.record is not None:
        st.record[lin.name] = Az
    B, K, nc = Az.shape
    Ain = (Az.reshape(B * K, nc) @ Wc).reshape(B, K, Wc.shape[1])
    return [(lin.inputs[0], Ain)], c, mag


def _maxpool(st, pn, A):
    r = relaxation(st, pn)
    Ain, c = maxpool_backward(_c(A), r.jstar, r.U, r.exact, pn.in_sizes[0])
    return [(pn.inputs[0], Ain)], c, abs_dot(A, st.vmax(pn.name))


def concretize(st: State, name: str, A: np.ndarray):
    """``min A . v`` over the interval bounds of value ``name``, and its magnitude."""
    return box_lower(_c(A), st.lo[name], st.hi[name])


def _concretize_rule(st, pn, A):
    val, mag = concretize(st, pn.name, A)
    return [], val, mag


BACKWARD_RULES = {
    O.Linear: _linear,
    O.Scale: _scale,
    O.Sum: _sum,
    O.Conv: _linear_map,
    O.ConvTranspose: _linear_map,
    O.AvgPool: _linear_map,
    O.Reshape: _reshape,
    O.Select: _select,
    O.Concat: _concat,
    O.Relu: _activation,
    O.LeakyRelu: _activation,
    O.Sigmoid: _activation,
    O.Tanh: _activation,
    O.Softplus: _activation,
    O.MaxPool: _maxpool,
}
#: rules that are exact maps (no relaxation): IBP folds the spec rows through one of them
AFFINE_RULES = {O.Linear, O.Scale, O.Sum, O.Conv, O.ConvTranspose, O.AvgPool, O.Reshape,
                O.Select, O.Concat}


_DONE = object()


def _add(st, pending, name, A):
    """Accumulate a contribution to a value's coefficient; returns the magnitude of the
    rounding of that sum (``|prev| vmax + |A| vmax``; 0 for a value's first contribution)."""
    prev = pending.get(name)
    if prev is None:
        pending[name] = A
        return 0.0
    pending[name] = prev + A
    vm = st.vmax(name)
    return abs_dot(_c(prev), vm) + abs_dot(_c(A), vm)


def finish(st: State, const, mag) -> np.ndarray:
    """The rounded-down bound ``const - MARGIN_FACTOR gamma_N mag``, broadcast to (B, K)."""
    lower = down(const - (MARGIN_FACTOR * st.plan.gamma) * mag)
    return np.broadcast_to(lower, (st.B, lower.shape[-1])).copy()


def backward(st: State, order: list[PlanNode], pending: dict, const, mag) -> np.ndarray:
    """Lower bounds (B, K) of the rows whose coefficients are in ``pending`` (value name ->
    (Ba, K, n)), plus ``const``, over the boxes; ``order`` lists the nodes to process, in
    reverse topological order. Stores coefficients in ``st.record`` when it is a dict."""
    fuse = st.plan.fuse
    for pn in order:
        A = pending.pop(pn.name, None)
        if A is None or A is _DONE:
            continue
        if st.record is not None:
            st.record[pn.name] = A
        lin = fuse.get(pn.name)
        if lin is not None and lin in pending:
            raise RuntimeError(f"fused node {lin} has another consumer")
        if lin is not None:
            parts, c, m = _act_linear(st, pn, A, st.plan.node(lin))
            pending[lin] = _DONE
        else:
            rule = BACKWARD_RULES.get(type(pn.op), _concretize_rule)
            parts, c, m = rule(st, pn, A)
        const = const + c
        mag = mag + m
        for name, Ain in parts:
            mag = mag + _add(st, pending, name, Ain)
    inp = st.plan.input_name
    A = pending.pop(inp, None)
    if A is not None:
        if st.record is not None:
            st.record[inp] = A
        val, m = concretize(st, inp, A)
        const = const + val
        mag = mag + m
    if pending:
        raise RuntimeError(f"backward pass left values unprocessed: {sorted(pending)}")
    return finish(st, const, mag)


def one_step(st: State, name: str, A: np.ndarray, const, mag) -> np.ndarray:
    """IBP with the rows folded into the last affine op: apply the rule of node ``name`` when
    it is an exact map, then concretise every input at its interval bounds."""
    plan = st.plan
    pending = {name: A}
    if name != plan.input_name and type(plan.node(name).op) in AFFINE_RULES:
        pn = plan.node(name)
        parts, c, m = BACKWARD_RULES[type(pn.op)](st, pn, A)
        const = const + c
        mag = mag + m
        pending = {}
        for x, Ain in parts:
            mag = mag + _add(st, pending, x, Ain)
    for x, Ax in pending.items():
        val, m = concretize(st, x, Ax)
        const = const + val
        mag = mag + m
    return finish(st, const, mag)
