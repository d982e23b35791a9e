"""CROWN (Zhang et al. 2018; DeepPoly's ReLU relaxation): the forward sweep that fixes the bounds
of every value, and the final backward pass for the spec rows.

Sweep: in topological order, each node gets IBP bounds from its inputs' final bounds, is
intersected with bounds the caller knows (e.g. a parent subproblem's) and with split
constraints (B&B: a ReLU fixed active has input >= 0, fixed inactive <= 0). A value that feeds a
relaxation (a *pre-activation*) then gets CROWN bounds -- a backward pass from that value -- for
the neurons that matter only (for ReLU/LeakyReLU the unstable ones, l < 0 < u in some box; all
of them once more than ``dense_fraction`` are unstable, or when the value has at most
``dense_below`` neurons), and keeps the elementwise tighter of IBP and CROWN. Values whose IBP
bounds are already exact (one affine map of the input) skip it, and so do values whose bounds
the caller passed with ``reuse_known``. A backward pass that starts at a 1-d ``Linear`` node
begins from the rows of W themselves. With several boxes, the rows are the union over boxes.
"""
from __future__ import annotations

import numpy as np

from verifier.network import ops as O

from .backward import backward, one_step
from .interval import ibp_node
from .plan import KINKED, Plan
from .state import State
from .types import CrownOptions

RELU_MODES = {"adaptive": 0, "zero": 1, "one": 2, "same": 3}


def constrain(st: State, name: str, lo, hi, known: dict | None, split_at: dict | None):
    """Intersect a value's bounds with known bounds and split constraints (copies on change)."""
    changed = False
    if known is not None and name in known:
        kl, ku = known[name]
        lo = np.maximum(lo, kl)
        hi = np.minimum(hi, ku)
        changed = True
    if split_at is not None and name in split_at:
        s = split_at[name]
        lo = np.where(s > 0, np.maximum(lo, 0.0), lo)
        hi = np.where(s < 0, np.minimum(hi, 0.0), hi)
        changed = True
    if changed:
        st.mark_empty(lo, hi)
    return lo, hi


def _rows_to_bound(plan: Plan, name: str, lo, hi, options: CrownOptions) -> np.ndarray:
    kinds = plan.preact[name]
    if all(issubclass(k, KINKED) for k in kinds):
        mask = np.any((lo < 0.0) & (hi > 0.0), axis=0)
    else:
        mask = np.any(hi > lo, axis=0)
    rows = np.flatnonzero(mask)
    n = lo.shape[1]
    if rows.size and (rows.size > options.dense_fraction * n or n <= options.dense_below):
        rows = np.arange(n)
    return rows


def crown_rows(st: State, name: str, rows: np.ndarray, max_elements: int):
    """CROWN lower and upper bounds (B, R) of the neurons ``rows`` of value ``name``."""
    plan = st.plan
    pn = plan.node(name)
    order = plan.backward_order(name)
    widest = max([plan.n0] + [p.size for p in order])
    chunk = max(1, int(max_elements // max(1, 2 * st.B * widest)))
    los, his = [], []
    for s in range(0, rows.size, chunk):
        r = rows[s:s + chunk]
        R = r.size
        if isinstance(pn.op, O.Linear) and pn.size == pn.op.W.shape[0]:
            Wr = pn.op.W[r]
            A = np.concatenate([Wr, -Wr])[None]
            br = pn.op.b[r]
            const = np.concatenate([br, -br])[None]
            pending = {pn.inputs[0]: A}
            steps = order[1:]
        else:
            A = np.zeros((1, 2 * R, pn.size))
            A[0, np.arange(R), r] = 1.0
            A[0, R + np.arange(R), r] = -1.0
            const = np.zeros((1, 2 * R))
            pending = {name: A}
            steps = order
        lower = backward(st, steps, pending, const, np.zeros((1, 2 * R)))
        los.append(lower[:, :R])
        his.append(-lower[:, R:])
    return np.concatenate(los, axis=1), np.concatenate(his, axis=1)


def sweep(plan: Plan, l0, u0, options: CrownOptions, known=None, split_at=None,
          crown: bool = True, stats: dict | None = None) -> State:
    """Bounds of every value over the boxes (B, n0): IBP, and CROWN at pre-activations when
    ``crown`` (and ``options.intermediate == "crown"``)."""
    st = State(plan, l0, u0, RELU_MODES[options.relu_slope])
    use_crown = crown and options.intermediate == "crown"
    n_rows = 0
    for pn in plan.nodes:
        lo, hi, w = ibp_node(st, pn)
        if w is not None:
            st.w[pn.name] = w
        lo, hi = constrain(st, pn.name, lo, hi, known, split_at)
        reuse = options.reuse_known and known is not None and pn.name in known
        if use_crown and pn.name in plan.preact and pn.name not in plan.ibp_exact and not reuse:
            st.set(pn.name, lo, hi)  # provisional: a pass starting here may need magnitudes
            rows = _rows_to_bound(plan, pn.name, lo, hi, options)
            if rows.size:
                clo, chi = crown_rows(st, pn.name, rows, options.max_elements)
                lo = lo.copy()
                hi = hi.copy()
                lo[:, rows] = np.maximum(lo[:, rows], clo)
                hi[:, rows] = np.minimum(hi[:, rows], chi)
                n_rows += 2 * rows.size
        st.set(pn.name, lo, hi)
    if stats is not None:
        stats["crown_rows"] = n_rows
        stats["unstable"] = {pn.name: int(np.sum((st.lo[pn.inputs[0]] < 0)
                                                 & (st.hi[pn.inputs[0]] > 0)))
                             for pn in plan.nodes if isinstance(pn.op, KINKED)}
    return st


def spec_rows(C3: np.ndarray, d2: np.ndarray):
    """The stacked rows ``[C; -C]`` and constants ``[-d; d]``: lower bounds of both give the
    lower and (negated) upper bounds of ``C y - d``."""
    A0 = np.concatenate([C3, -C3], axis=1)
    const = np.concatenate([-d2, d2], axis=1)
    return A0, const, np.abs(const)


def final_crown(st: State, A0, const, mag) -> np.ndarray:
    """Lower bounds (B, 2k) of the stacked rows by a backward pass from the output."""
    plan = st.plan
    out = plan.output_name
    order = plan.backward_order(out) if out != plan.input_name else []
    return backward(st, order, {out: A0}, const, mag)


def final_ibp(st: State, A0, const, mag) -> np.ndarray:
    """Lower bounds (B, 2k) of the stacked rows by IBP with the rows folded into the output op."""
    return one_step(st, st.plan.output_name, A0, const, mag)
