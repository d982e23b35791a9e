"""The full SDP relaxation (Raghunathan et al. 2018) through cvxpy, bounded by its dual.

The relaxation is the one of ``sdp_program``: the lifted ``G = [[1, x'], [x, X]] >= 0`` over the
input and the unstable neurons, ReLU as ``a >= 0``, ``a >= z``, ``X_aa = W X_(.,a) + b a``,
every coordinate's box as ``X_ii <= (lo+hi) x_i - lo hi``, and optionally the triangle cuts
``a <= s (z - l)``. cvxpy solves its dual directly,

    maximise s   over y, s   subject to   M(y) - s e0 e0' >= 0 (PSD),   y_ineq >= 0,

with ``M(y) = C_0 - sum_i y_i G_i``, so the solver's ``y`` is exactly the multiplier vector of the
certificate. The bound reported is ``sdp_certificate.certify(y)``: valid for whatever the solver
returned (an inaccurate or early-stopped solve only loosens it), never the solver's objective.

For networks up to a few hundred unstable neurons plus inputs (the PSD block is (1+N)^2).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import cvxpy as cp
import numpy as np

from .lp import LPOptions, box_batch
from .lp_program import RelaxationResult
from .sdp_certificate import certify
from .sdp_program import reduce_program, reduced_row, sdp_data

log = logging.getLogger(__name__)


@dataclass
class SDPOptions:
    """Settings of the full SDP."""

    #: add the triangle cuts a <= s (z - l) (then the SDP is never looser than the LP)
    triangle: bool = True
    #: also bound max (C y - d) (one more SDP per row)
    upper: bool = True
    #: cvxpy solver: "CLARABEL" or "SCS"
    solver: str = "CLARABEL"
    #: tighten the pre-activation bounds by LP-All first
    lp_all: bool = False
    #: refuse problems whose PSD block is larger than this (memory and time)
    max_size: int = 600
    #: seconds allowed to one solve (None: none); a stopped solve still gives a valid bound
    time_limit: float | None = None


def solve_dual(data, solver: str = "CLARABEL",
               time_limit: float | None = None) -> tuple[np.ndarray, float, str]:
    """Solve the dual SDP of ``data`` (module docstring) within ``time_limit`` seconds (None: no
    limit): returns (y, s, solver status). The values may be inaccurate or missing (zeros);
    ``certify`` makes them a valid bound."""
    n, m = data.n, data.m
    y = cp.Variable(m)
    s = cp.Variable()
    E00 = np.zeros((n, n))
    E00[0, 0] = 1.0
    M = cp.reshape(data.C0 - data.G_op @ y, (n, n), order="C") - s * E00
    ineq = np.flatnonzero(~data.equality)
    cons = [M >> 0]
    if ineq.size:
        cons.append(y[ineq] >= 0)
    prob = cp.Problem(cp.Maximize(s), cons)
    opts = {}
    if time_limit is not None:
        opts = {"time_limit": float(time_limit)} if solver == "CLARABEL" else {
            "time_limit_secs": float(time_limit)}
    try:
        prob.solve(solver=solver, **opts)
    except cp.error.SolverError as exc:
        log.warning("SDP solver %s failed: %s", solver, exc)
        return np.zeros(m), 0.0, "solver_error"
    yv = np.zeros(m) if y.value is None else np.asarray(y.value, dtype=np.float64)
    sv = 0.0 if s.value is None else float(s.value)
    return yv, sv, str(prob.status)


def sdp_bounds(net, lower, upper, C=None, d=None, intermediate=None,
               options: SDPOptions | None = None) -> RelaxationResult:
    """Bounds of ``C y - d`` over the input box(es) by the full SDP, each certified from the
    solver's dual. Shapes and ``intermediate`` as ``lp_bounds``."""
    options = options or SDPOptions()
    t0 = time.perf_counter()
    bb = box_batch(net, "sdp", lower, upper, C, d, intermediate)
    prog, obj, lo, hi = bb.prog, bb.obj, bb.lo, bb.hi
    B, k, out_lo, out_hi = lo.shape[0], bb.C.shape[0], bb.out_lo, bb.out_hi
    statuses = []
    for b in range(B):
        pre, _ = bb.layer_bounds(b, LPOptions(tighten=options.lp_all, upper=False))
        red = reduce_program(prog, pre, obj)
        size = 1 + sum(red.sizes)
        if size > options.max_size:
            raise ValueError(f"the SDP's PSD block would be {size} x {size} (max_size "
                             f"{options.max_size}); use method='sdp-lowrank'")
        for i in range(k):
            for sign, out in ((1.0, out_lo), (-1.0, out_hi)):
                if sign < 0 and not options.upper:
                    continue
                data = sdp_data(red, lo[b], hi[b], reduced_row(red, i, sign),
                                options.triangle)
                y, s, status = solve_dual(data, options.solver, options.time_limit)
                statuses.append(status)
                cert = certify(data, y, s)
                out[b, i] = sign * cert.bound
    stats = {"statuses": statuses, "seconds": time.perf_counter() - t0}
    return RelaxationResult(out_lo, out_hi, bb.inter, stats)
