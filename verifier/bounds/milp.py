"""Exact bounds of small ReLU networks by mixed-integer LP (HiGHS): the tests' ground truth.

Over a ``ReluProgram`` with valid pre-activation bounds ``l <= z <= u``, each unstable neuron
(``l < 0 < u``) gets a binary ``delta`` and the big-M encoding (Tjeng et al. 2019)

    a >= z,   a >= 0,   a <= z - l (1 - delta),   a <= u delta,

which is exact: ``delta = 1`` forces ``a = z >= 0`` and ``delta = 0`` forces ``a = 0 >= z``.
Stable neurons are ``a = z`` or ``a = 0``. The minimum of ``c'x + c0`` is then the exact
minimum of the spec row over the input box.

This is not a floating-point certificate: the value is HiGHS's, within its tolerances
(``mip_rel_gap`` 0 and feasibility tolerances 1e-9 here). For that reason ``milp_bounds`` also
returns, for each row, the input the solver found (``stats["argmin"]``) and the network's own
value there (``stats["argmin_value"]``): a true point, so every sound lower bound must lie at or
below it, and ``lower`` agrees with it up to the solver's tolerance.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import highspy
import numpy as np
import scipy.sparse as sp

from .lp import LPOptions, box_batch, new_highs
from .lp_program import RelaxationResult

INF = highspy.kHighsInf


@dataclass
class MILPOptions:
    """Settings of the exact MILP."""

    #: also compute the exact maximum
    upper: bool = True
    #: seconds per MILP (None: none); a timed-out row gets -inf (lower) or +inf (upper), never
    #: a guess
    time_limit: float | None = 120.0


def _build(prog, x_lo, x_hi, pre):
    """(A csr, row_lo, row_hi, col_lo, col_hi, integrality, offsets) of the big-M MILP."""
    offsets, col_lo, col_hi = [0], [x_lo], [x_hi]
    n = x_lo.size
    for (l, u) in pre:
        offsets.append(n)
        col_lo.append(np.maximum(l, 0.0))
        col_hi.append(np.maximum(u, 0.0))
        n += l.size
    n_act = n
    unst = [np.flatnonzero((l < 0) & (u > 0)) for (l, u) in pre]
    delta_off = []
    for idx in unst:
        delta_off.append(n)
        n += idx.size
    rows, rlo, rhi = [], [], []
    for k, (l, u) in enumerate(pre):
        amap = prog.layers[k]
        n_k = l.size
        Wz = np.zeros((n_k, n))
        for j, Wj in amap.blocks.items():
            Wz[:, offsets[j]:offsets[j] + Wj.shape[1]] = Wj
        b = amap.bias
        eye = np.zeros((n_k, n))
        eye[np.arange(n_k), offsets[k + 1] + np.arange(n_k)] = 1.0
        idx = unst[k]
        act = np.flatnonzero(l >= 0)
        D = np.zeros((n_k, n))
        D[idx, delta_off[k] + np.arange(idx.size)] = 1.0
        # a - z >= b (unstable);  a - z = b (active)
        rows += [eye[idx] - Wz[idx], eye[act] - Wz[act]]
        rlo += [b[idx], b[act]]
        rhi += [np.full(idx.size, INF), b[act]]
        # a - z - l delta <= b - l;   a - u delta <= 0
        rows += [eye[idx] - Wz[idx] - l[idx, None] * D[idx], eye[idx] - u[idx, None] * D[idx]]
        rlo += [np.full(idx.size, -INF)] * 2
        rhi += [b[idx] - l[idx], np.zeros(idx.size)]
    A = sp.csr_matrix(np.vstack(rows)) if rows else sp.csr_matrix((0, n))
    m_int = n - n_act
    col_lo = np.concatenate(col_lo + [np.zeros(m_int)])
    col_hi = np.concatenate(col_hi + [np.ones(m_int)])
    integrality = np.concatenate([np.zeros(n_act, dtype=np.int32), np.ones(m_int, np.int32)])
    return A, np.concatenate(rlo) if rlo else np.zeros(0), \
        np.concatenate(rhi) if rhi else np.zeros(0), col_lo, col_hi, integrality, offsets


def _solve(A, rlo, rhi, col_lo, col_hi, integ, cost, time_limit):
    h = new_highs()
    h.setOptionValue("mip_rel_gap", 1e-9)
    h.setOptionValue("mip_abs_gap", 1e-9)
    h.setOptionValue("mip_feasibility_tolerance", 1e-9)
    h.setOptionValue("primal_feasibility_tolerance", 1e-9)
    h.setOptionValue("dual_feasibility_tolerance", 1e-9)
    if time_limit is not None:
        h.setOptionValue("time_limit", float(time_limit))
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = A.shape[1], A.shape[0]
    lp.col_cost_, lp.col_lower_, lp.col_upper_ = cost, col_lo, col_hi
    lp.row_lower_, lp.row_upper_ = rlo, rhi
    lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    lp.a_matrix_.start_ = A.indptr.astype(np.int32)
    lp.a_matrix_.index_ = A.indices.astype(np.int32)
    lp.a_matrix_.value_ = A.data
    lp.integrality_ = [highspy.HighsVarType(int(t)) for t in integ]
    h.passModel(lp)
    h.run()
    status = h.getModelStatus()
    if status == highspy.HighsModelStatus.kTimeLimit:
        # no exact value: nothing is claimed (-inf); the incumbent, if any, is still a point
        sol = h.getSolution()
        x = np.asarray(sol.col_value) if sol.value_valid else None
        return -np.inf, x
    if status != highspy.HighsModelStatus.kOptimal:
        raise RuntimeError(f"MILP not solved to optimality: {h.modelStatusToString(status)}")
    return h.getInfo().objective_function_value, np.asarray(h.getSolution().col_value)


def milp_bounds(net, lower, upper, C=None, d=None, intermediate=None,
                options: MILPOptions | None = None) -> RelaxationResult:
    """Exact min (and max) of ``C y - d`` over each input box by MILP (module docstring).
    Shapes as ``lp_bounds``. ``stats["argmin"]`` (B, k, n_0) holds the minimising inputs and
    ``stats["argmin_value"]`` (B, k) the network's value of each row there."""
    options = options or MILPOptions()
    t0 = time.perf_counter()
    bb = box_batch(net, "milp", lower, upper, C, d, intermediate)
    prog, C, d, obj, lo, hi = bb.prog, bb.C, bb.d, bb.obj, bb.lo, bb.hi
    B, k, out_lo, out_hi = lo.shape[0], C.shape[0], bb.out_lo, bb.out_hi
    argmin = np.zeros((B, k, prog.n_inputs))
    for b in range(B):
        pre, _ = bb.layer_bounds(b, LPOptions())
        A, rlo, rhi, clo, chi, integ, offsets = _build(prog, lo[b], hi[b], pre)
        for i in range(k):
            cost = np.zeros(A.shape[1])
            row = obj.row(i)
            for j, Wj in row.blocks.items():
                cost[offsets[j]:offsets[j] + Wj.shape[1]] = Wj.reshape(-1)
            val, x = _solve(A, rlo, rhi, clo, chi, integ, cost, options.time_limit)
            out_lo[b, i] = val + row.bias[0]
            argmin[b, i] = (0.5 * (lo[b] + hi[b]) if x is None
                            else np.clip(x[:prog.n_inputs], lo[b], hi[b]))
            if options.upper:
                val, _ = _solve(A, rlo, rhi, clo, chi, integ, -cost, options.time_limit)
                out_hi[b, i] = -val + row.bias[0]
    y = net(argmin.reshape((-1,) + net.input_shape)).reshape(B, k, -1)
    value = np.einsum("bkm,km->bk", y, C) - d
    stats = {"argmin": argmin, "argmin_value": value, "seconds": time.perf_counter() - t0}
    return RelaxationResult(out_lo, out_hi, bb.inter, stats)
