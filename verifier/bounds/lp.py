"""The LP (triangle) relaxation, solved by HiGHS, with a bound recomputed from the duals.

Over a ``ReluProgram`` (see ``lp_program``) with pre-activation bounds ``l <= z_k <= u`` (from
CROWN and the interval pass), the variables are the activations ``x = (a_0, ..., a_K)`` in their
box (``a_0`` in the input box, ``a_k`` in ``[relu(l), relu(u)]``) and each ReLU neuron adds

    unstable (l < 0 < u):   a >= z,   a <= s (z - l)  with  s >= u / (u - l)   (Ehlers 2017)
    active   (l >= 0):      a  = z
    inactive (u <= 0):      a  = 0        (plus z <= 0 when a split says so)

and each sigmoid or tanh neuron (f monotone; ``a`` in ``[f(l), f(u)]`` rounded outward) adds the
tangent/secant lines CROWN uses (``kernels.sshape_relax``: slopes chosen, intercepts rigorous
for the exact f on ``[l, u]``)

    k_lo z + t_lo <= a <= k_up z + t_up,

where ``z = sum_j W_kj a_j + b_k`` is substituted, so the rows are ``lo <= A x <= hi``.
``method="lp-all"`` first tightens ``l, u`` of layers 2..K by solving, layer by layer, one LP per
bound of each unstable neuron over the layers before it (the model grows; every solve is warm
started from the previous basis). Layer 1's interval bounds are already exact.

With ``LPOptions.cut_rounds`` > 0 each bound is solved again after adding the rows of the
ReLU's convex hull over the box of its inputs that its optimum violates (``lp_cuts``: Anderson
et al. 2020, projected to these variables, each right-hand side certified on its own); the
triangle sees the inputs only through ``[l, u]``.

The bound reported is never the solver's objective. For any row multipliers ``y``, projected
to the right signs (``y >= 0`` on ``>=`` rows, ``y <= 0`` on ``<=`` rows, free on equalities),
every feasible ``x`` satisfies (Neumaier & Shcherbina 2004)

    c'x + c0 >= c0 + sum_i y_i rhs_i + sum_j min(r_j lo_j, r_j hi_j),   r = c - A'y,

so this is computed in float64 with outward margins: ``gamma_n`` bounds for the products and
sums, ``|r~ - r| <= gamma (|c| + |A|'|y|)`` times ``max(|lo|, |hi|)``, and ``|y_i| eps_i`` for
each row's model error ``eps_i`` (the rounding of the row's coefficients, see
``lp_program``). It is valid whatever HiGHS returned: an early stop or perturbed duals only
loosen it. An infeasible LP (contradictory splits) gives ``+inf`` only when its dual ray is
confirmed the same way (a Farkas certificate); otherwise the bound with ``y = 0`` is used.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass

import highspy
import numpy as np
import scipy.sparse as sp

from ..kernels import sshape_relax
from .lp_cuts import VIOLATION, certified_rhs, separate
from .lp_program import (SMOOTH_KINDS, AffineMap, LayerBounds, RelaxationResult, ReluProgram, U,
                         activation_box, affine_interval, as_batch_box, core_intermediate,
                         gamma, inflate, interval_pass, merge_intermediate, relu_program,
                         spec_rows)

log = logging.getLogger(__name__)
INF = highspy.kHighsInf


@dataclass
class LPOptions:
    """Settings of the LP methods."""

    #: also bound ``max (C y - d)`` (one more LP per row)
    upper: bool = True
    #: LP-All: tighten the pre-activation bounds of layers 2..K neuron by neuron first
    tighten: bool = False
    #: seconds allowed to one LP solve (None: no limit); an early stop still gives a valid bound
    time_limit: float | None = None
    #: simplex iterations allowed to one LP solve (None: no limit); for tests of early stops
    iteration_limit: int | None = None
    #: seconds allowed to the whole LP-All tightening of one input box (None: no limit)
    tighten_time_limit: float | None = None
    #: rounds of cutting planes (``lp_cuts``: the hull of each unstable ReLU over the box of its
    #: inputs) added at the LP optimum of every bound and re-solved; 0: the triangle LP alone
    cut_rounds: int = 0


_BANNER_SHOWN = False


def new_highs() -> highspy.Highs:
    """A silent HiGHS instance. The first one a process creates writes HiGHS's banner to file
    descriptor 1 (C stdout, whatever ``sys.stdout`` is); that construction runs with fd 1 sent
    to /dev/null, so that library use never prints (the command line's JSON stays clean)."""
    global _BANNER_SHOWN
    if not _BANNER_SHOWN:
        sys.stdout.flush()
        saved = os.dup(1)
        try:
            with open(os.devnull, "wb") as null:
                os.dup2(null.fileno(), 1)
                try:
                    h = highspy.Highs()
                finally:
                    os.dup2(saved, 1)
        finally:
            os.close(saved)
        _BANNER_SHOWN = True
    else:
        h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    return h


# --------------------------------------------------------------------------------------------
# the certificate
# --------------------------------------------------------------------------------------------
def project_duals(y: np.ndarray, row_lo: np.ndarray, row_hi: np.ndarray) -> np.ndarray:
    """Duals with the signs that make ``y_i (A x)_i >= y_i rhs_i`` hold: ``>=`` rows keep
    ``y >= 0``, ``<=`` rows ``y <= 0``, equalities any sign; a row bounded neither way gets 0."""
    y = np.nan_to_num(np.asarray(y, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    has_lo, has_hi = np.isfinite(row_lo), np.isfinite(row_hi)
    y = np.where(has_lo, y, np.minimum(y, 0.0))
    y = np.where(has_hi, y, np.maximum(y, 0.0))
    return y


def dual_bound(A: sp.csr_matrix, row_lo, row_hi, row_err, x_lo, x_hi, c, c0: float,
               obj_err: float, y, transposes=None) -> float:
    """A lower bound of ``min c'x + c0`` over ``{lo <= A x <= hi (each row up to its model
    error), x_lo <= x <= x_hi}``, valid in floating point for ANY ``y`` (see the module
    docstring for the formula and its margins). ``transposes``: ``transposes_of(A)`` when the
    caller keeps it."""
    y = project_duals(y, row_lo, row_hi)
    rhs = np.where(y > 0, row_lo, np.where(y < 0, row_hi, 0.0))
    rhs = np.where(y == 0, 0.0, rhs)
    row_terms = y * rhs
    At, absAt, nnz_col = transposes if transposes is not None else transposes_of(A)
    r = c - At @ y
    r_err = gamma(int(nnz_col) + 2) * (np.abs(c) + absAt @ np.abs(y))
    lo_t = np.where(r == 0, 0.0, r * x_lo)
    hi_t = np.where(r == 0, 0.0, r * x_hi)
    col_terms = np.minimum(lo_t, hi_t)
    if not np.all(np.isfinite(col_terms)) or not np.all(np.isfinite(row_terms)):
        return -np.inf
    xmax = np.maximum(np.abs(x_lo), np.abs(x_hi))
    terms = np.concatenate([row_terms, col_terms, [c0]])
    total = float(np.sum(terms))
    margin = (gamma(terms.size + 1) * float(np.sum(np.abs(terms)))
              + float(np.sum(r_err * xmax)) + float(np.abs(y) @ row_err) + float(obj_err))
    return total - float(inflate(margin))


def transposes_of(A: sp.csr_matrix):
    """(A' csr, |A'|, the most nonzeros of a column of A): what ``dual_bound`` multiplies by."""
    At = A.T.tocsr()
    return At, abs(At), int(np.diff(At.indptr).max(initial=0))


def farkas_infeasible(A, row_lo, row_hi, row_err, x_lo, x_hi, y, transposes=None) -> bool:
    """True when the ray ``y`` proves ``{lo <= A x <= hi, x in box}`` empty in floating point:
    the dual bound of the zero objective along ``y`` is positive (so it grows without limit)."""
    zero = np.zeros(A.shape[1])
    return dual_bound(A, row_lo, row_hi, row_err, x_lo, x_hi, zero, 0.0, 0.0, y,
                      transposes) > 0.0


# --------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------
class TriangleLP:
    """The triangle LP of the first layers of a ``ReluProgram`` over one input box, held in a
    HiGHS instance that grows layer by layer (``add_layer``) and is re-solved for one objective
    after another (``minimum``), warm started from the last basis."""

    def __init__(self, prog, x_lo, x_hi, options: LPOptions | None = None):
        self.prog = prog
        self.options = options or LPOptions()
        self.h = new_highs()
        if self.options.iteration_limit is not None:
            self.h.setOptionValue("simplex_iteration_limit", int(self.options.iteration_limit))
        self.offsets = [0]
        self.x_lo = np.asarray(x_lo, dtype=np.float64).reshape(-1).copy()
        self.x_hi = np.asarray(x_hi, dtype=np.float64).reshape(-1).copy()
        self.n_vars = self.x_lo.size
        self.h.addCols(self.n_vars, np.zeros(self.n_vars), self.x_lo, self.x_hi, 0,
                       np.zeros(self.n_vars, dtype=np.int32), np.zeros(0, dtype=np.int32),
                       np.zeros(0))
        self.rows: list[sp.csr_matrix] = []
        self.row_lo, self.row_hi, self.row_err = [], [], []
        self._A = None
        self._At = None
        self.empty = False  # a split contradicted the bounds: no point is feasible
        self.solves = 0
        #: per ReLU layer with unstable neurons, what ``add_cuts`` separates over: (their
        #: columns, their rows of z = W v + b over the columns before the layer, b, l, u, model
        #: error); kept only when cuts are asked for
        self.hull_layers: list = []
        self.cuts = 0

    @property
    def depth(self) -> int:
        return len(self.offsets) - 1

    def block(self, j: int) -> slice:
        end = self.offsets[j + 1] if j + 1 < len(self.offsets) else self.n_vars
        return slice(self.offsets[j], end)

    def box(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        s = self.block(j)
        return self.x_lo[s], self.x_hi[s]

    def add_layer(self, l: np.ndarray, u: np.ndarray, split: np.ndarray | None = None):
        """Add layer k = depth + 1 with pre-activation bounds ``l, u`` (n_k,) and, for a ReLU
        layer, an optional split (n_k,) in {-1: z <= 0, 0: free, +1: z >= 0}."""
        k = self.depth + 1
        amap = self.prog.layers[k - 1]
        kind = self.prog.kind(k)
        l = np.asarray(l, dtype=np.float64).copy()
        u = np.asarray(u, dtype=np.float64).copy()
        split = np.zeros(l.size, dtype=np.int8) if split is None else np.asarray(split)
        if kind != "relu" and np.any(split):
            raise ValueError(f"layer {k} is a {kind} layer: only ReLU neurons can be split")
        l = np.where(split > 0, np.maximum(l, 0.0), l)
        u = np.where(split < 0, np.minimum(u, 0.0), u)
        if np.any(l > u):
            self.empty = True
        n_k = l.size
        amax = [np.maximum(np.abs(self.box(j)[0]), np.abs(self.box(j)[1]))
                for j in range(k)]
        me = amap.model_error(amax)
        lo_a, hi_a = activation_box(kind, l, u)
        start = self.n_vars
        self.offsets.append(start)
        self.n_vars += n_k
        self.x_lo = np.concatenate([self.x_lo, lo_a])
        self.x_hi = np.concatenate([self.x_hi, np.maximum(hi_a, lo_a)])
        self.h.addCols(n_k, np.zeros(n_k), lo_a, np.maximum(hi_a, lo_a), 0,
                       np.zeros(n_k, dtype=np.int32), np.zeros(0, dtype=np.int32), np.zeros(0))

        Wz = np.zeros((n_k, self.n_vars))  # z = Wz x + b
        absWz_amax = np.zeros(n_k)
        for j, Wj in amap.blocks.items():
            Wz[:, self.block(j)] = Wj
            absWz_amax += np.abs(Wj) @ amax[j]
        b = amap.bias
        eye = np.zeros((n_k, self.n_vars))
        eye[np.arange(n_k), start + np.arange(n_k)] = 1.0
        if kind != "relu":
            self._add_rows(*self._smooth_rows(kind, l, u, Wz, b, eye, me, absWz_amax))
            return
        unstable = (l < 0) & (u > 0)
        if self.options.cut_rounds > 0 and unstable.any():
            idx = np.flatnonzero(unstable)
            self.hull_layers.append((start + idx, Wz[idx, :start].copy(), b[idx], l[idx],
                                     u[idx], np.broadcast_to(me, (n_k,))[idx]))
        active = (l >= 0) & ~(u < l)
        neg_split = (split < 0) & ~(l > u)
        blocks, los, his, errs = [], [], [], []
        # a >= z  and  a = z:  a - Wz x  (>=, =)  b
        for mask, hi in ((unstable, INF), (active, None)):
            idx = np.flatnonzero(mask)
            if idx.size:
                blocks.append(eye[idx] - Wz[idx])
                los.append(b[idx])
                his.append(np.full(idx.size, INF) if hi is not None else b[idx])
                errs.append(me[idx])
        # a <= s (z - l):  a - s Wz x <= s (b - l), s rounded up
        idx = np.flatnonzero(unstable)
        if idx.size:
            s = u[idx] / (u[idx] - l[idx]) * (1 + 4 * U)
            sW = s[:, None] * Wz[idx]
            rhs = s * (b[idx] - l[idx])
            blocks.append(eye[idx] - sW)
            los.append(np.full(idx.size, -INF))
            his.append(rhs)
            errs.append(inflate(U * s * absWz_amax[idx] + gamma(3) * s * (np.abs(b[idx])
                                + np.abs(l[idx])) + U * np.abs(rhs) + s * me[idx]))
        # split z <= 0:  Wz x <= -b
        idx = np.flatnonzero(neg_split)
        if idx.size:
            blocks.append(Wz[idx])
            los.append(np.full(idx.size, -INF))
            his.append(-b[idx])
            errs.append(me[idx])
        self._add_rows(blocks, los, his, errs)

    @staticmethod
    def _smooth_rows(kind, l, u, Wz, b, eye, me, absWz_amax):
        """The rows of a sigmoid / tanh layer: with the lines ``k z + t`` of
        ``kernels.sshape_relax`` on ``[l, u]`` (valid for the exact f), ``a - k_lo Wz x >= k_lo b
        + t_lo`` and ``a - k_up Wz x <= k_up b + t_up``. The error of each row (stored against
        exact coefficients, for ``|x| <= amax``) is ``u |k| |Wz| amax`` (the products k W)
        ``+ gamma_3 (|k b| + |t|) + u |rhs|`` (the right-hand side) ``+ |k| me`` (the model
        error of z); empty neurons (l > u) get no rows (the layer is marked empty already)."""
        idx = np.flatnonzero(l <= u)
        blocks, los, his, errs = [], [], [], []
        if idx.size == 0:
            return blocks, los, his, errs
        lines = sshape_relax(l[idx][None], u[idx][None], SMOOTH_KINDS[kind])
        for (k, t), lower in (((lines[0][0], lines[1][0]), True),
                              ((lines[2][0], lines[3][0]), False)):
            rhs = k * b[idx] + t
            blocks.append(eye[idx] - k[:, None] * Wz[idx])
            los.append(rhs if lower else np.full(idx.size, -INF))
            his.append(np.full(idx.size, INF) if lower else rhs)
            errs.append(inflate(U * np.abs(k) * absWz_amax[idx]
                                + gamma(3) * (np.abs(k * b[idx]) + np.abs(t))
                                + U * np.abs(rhs) + np.abs(k) * me[idx]))
        return blocks, los, his, errs

    def _add_rows(self, blocks, los, his, errs):
        """Append the row blocks ``los <= blocks x <= his`` (model errors ``errs``)."""
        if blocks:
            R = sp.csr_matrix(np.vstack(blocks))
            self.h.addRows(R.shape[0], np.concatenate(los), np.concatenate(his), R.nnz,
                           R.indptr[:-1].astype(np.int32), R.indices.astype(np.int32), R.data)
            self.rows.append(R)
            self.row_lo.append(np.concatenate(los))
            self.row_hi.append(np.concatenate(his))
            self.row_err.append(np.concatenate(errs))
        self._A = None
        self._At = None

    def constraint_data(self):
        """(A (csr, rows x n_vars), row_lo, row_hi, row_err) of the model as built so far."""
        if self._A is None:
            mats = [sp.hstack([R, sp.csr_matrix((R.shape[0], self.n_vars - R.shape[1]))])
                    .tocsr() if R.shape[1] < self.n_vars else R for R in self.rows]
            A = sp.vstack(mats).tocsr() if mats else sp.csr_matrix((0, self.n_vars))
            cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0))  # noqa: E731
            self._A = (A, cat(self.row_lo), cat(self.row_hi), cat(self.row_err))
        return self._A

    def objective(self, amap_row) -> tuple[np.ndarray, float, float]:
        """(c, c0, model error) of one row of an ``AffineMap`` whose blocks are (1, n_j)."""
        c = np.zeros(self.n_vars)
        for j, Wj in amap_row.blocks.items():
            c[self.block(j)] = Wj.reshape(-1)
        amax = [np.maximum(np.abs(self.box(j)[0]), np.abs(self.box(j)[1]))
                for j in range(self.depth + 1)]
        return c, float(amap_row.bias[0]), float(amap_row.model_error(amax)[0])

    def minimum(self, c: np.ndarray, c0: float, obj_err: float) -> float:
        """A certified lower bound of ``min c'x + c0`` over the model (+inf when it is proven
        empty)."""
        A, rlo, rhi, rerr = self.constraint_data()
        if self.empty:
            return np.inf
        if self._At is None:
            self._At = transposes_of(A)
        T = self._At
        trivial = dual_bound(A, rlo, rhi, rerr, self.x_lo, self.x_hi, c, c0, obj_err,
                             np.zeros(A.shape[0]), T)
        if A.shape[0] == 0:
            return trivial
        self.h.changeColsCost(self.n_vars, np.arange(self.n_vars, dtype=np.int32), c)
        if self.options.time_limit is not None:
            # HiGHS's limit counts the instance's run time over all solves: this solve's share
            self.h.setOptionValue("time_limit",
                                  self.h.getRunTime() + float(self.options.time_limit))
        self.h.run()
        self.solves += 1
        status = self.h.getModelStatus()
        if status == highspy.HighsModelStatus.kInfeasible:
            got = self.h.getDualRay()  # (status, has_ray, values)
            has_ray, ray = bool(got[-2]), np.asarray(got[-1], dtype=np.float64)
            for sign in (1.0, -1.0):
                if has_ray and farkas_infeasible(A, rlo, rhi, rerr, self.x_lo, self.x_hi,
                                                 sign * ray, T):
                    return np.inf
            log.warning("LP reported infeasible without a confirmed Farkas ray")
            return trivial
        y = np.asarray(self.h.getSolution().row_dual, dtype=np.float64)
        if y.size != A.shape[0]:
            return trivial
        return max(trivial, dual_bound(A, rlo, rhi, rerr, self.x_lo, self.x_hi, c, c0,
                                       obj_err, y, T))

    def add_cuts(self) -> int:
        """Add the hull rows (``lp_cuts``) that the last optimal LP point violates, each with
        its certified right-hand side; returns how many were added."""
        if self.solves == 0 or self.h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
            return 0
        sol = np.asarray(self.h.getSolution().col_value, dtype=np.float64)
        if sol.size != self.n_vars:
            return 0
        blocks, los, his, errs = [], [], [], []
        for cols, W, b, l, u, me in self.hull_layers:
            n = W.shape[1]
            xl, xu = self.x_lo[:n], self.x_hi[:n]
            v, a = sol[:n], sol[cols]
            _, k, p, Q, _ = separate(W, b, l, u, xl, xu, v[None], a[None])
            h = certified_rhs(p, Q, W[k], b[k], me[k], l[k], u[k], xl, xu)
            for r in np.flatnonzero(p * a[k] + Q @ v > h + VIOLATION * (1.0 + np.abs(h))):
                row = np.zeros(self.n_vars)
                row[:n] = Q[r]
                row[cols[k[r]]] = p[r]
                blocks.append(row[None])
                los.append(np.array([-INF]))
                his.append(h[r:r + 1])
                errs.append(np.zeros(1))  # h holds for the stored row itself
        self._add_rows(blocks, los, his, errs)
        self.cuts += len(blocks)
        return len(blocks)

    def bound(self, c: np.ndarray, c0: float, obj_err: float) -> float:
        """``minimum``, then ``options.cut_rounds`` times: cut the optimum off (``add_cuts``)
        and solve again; the best of the certified bounds (every one is valid)."""
        best = self.minimum(c, c0, obj_err)
        for _ in range(self.options.cut_rounds):
            if best == np.inf or self.add_cuts() == 0:
                break
            best = max(best, self.minimum(c, c0, obj_err))
        return best

    def tighten_layer(self, l: np.ndarray, u: np.ndarray, deadline: float | None = None):
        """LP bounds of the pre-activations of layer depth + 1 over the current model: for each
        unstable neuron of a ReLU layer, the upper bound first (if it drops to <= 0 the neuron
        is inactive and its lower bound no longer matters), then the lower; every neuron of a
        sigmoid / tanh layer (narrowest first), both bounds. Returns the tightened (l, u)."""
        amap = self.prog.layers[self.depth]
        relu = self.prog.kind(self.depth + 1) == "relu"
        l, u = l.copy(), u.copy()
        if relu:
            order = np.flatnonzero((l < 0) & (u > 0))
            order = order[np.argsort(np.minimum(-l[order], u[order]))]  # nearest to stable first
        else:
            order = np.flatnonzero(l < u)
            order = order[np.argsort(u[order] - l[order])]
        for i in order:
            if deadline is not None and time.perf_counter() > deadline:
                log.info("LP-All: time limit reached in layer %d", self.depth + 1)
                break
            c, c0, err = self.objective(amap.row(i))
            u[i] = min(u[i], -self.minimum(-c, -c0, err))
            if u[i] > 0 or not relu:
                l[i] = max(l[i], self.minimum(c, c0, err))
        return l, u


# --------------------------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------------------------
def _split_for(splits, prog, k: int, b: int):
    """The split array (n_k,) of ReLU layer k (1-based) for batch element b, or None."""
    if not splits:
        return None
    s = splits.get(k, splits.get(prog.relu_nodes[k - 1]))
    if s is None:
        return None
    s = np.asarray(s)
    return s[b] if s.ndim == 2 else s


def layer_bounds(prog, x_lo, x_hi, given=None, splits=None, b: int = 0,
                 options: LPOptions | None = None) -> tuple[list, "TriangleLP"]:
    """Pre-activation bounds [(l_k, u_k)] of every ReLU layer for one input box (the interval
    pass intersected with ``given``; LP-tightened when ``options.tighten``), and the triangle LP
    of the whole program built on them."""
    options = options or LPOptions()
    pre = interval_pass(prog, x_lo, x_hi, given)
    model = TriangleLP(prog, x_lo, x_hi, options)
    deadline = (None if options.tighten_time_limit is None
                else time.perf_counter() + options.tighten_time_limit)
    for k in range(prog.depth):
        l, u = pre[k]
        if k > 0:  # re-derive from the (possibly tightened) earlier layers, keep the tighter
            lows = [model.box(j)[0] for j in range(k + 1)]
            ups = [model.box(j)[1] for j in range(k + 1)]
            li, ui = affine_interval(prog.layers[k], lows, ups)
            l, u = np.maximum(l, li), np.minimum(u, ui)
            if options.tighten:
                l, u = model.tighten_layer(l, u, deadline)
        pre[k] = (l, u)
        model.add_layer(l, u, _split_for(splits, prog, k + 1, b))
    return pre, model


@dataclass
class BoxBatch:
    """What every relaxation's entry point starts from: the network's program ``prog``, the spec
    rows ``C`` (k, m), ``d`` (k,) and the objective ``obj = C y_L - d`` on the program, the input
    boxes ``lo``, ``hi`` (B, n_0), the bound core's ``intermediate`` bounds, and what the entry
    point fills: ``out_lo``/``out_hi`` (B, k), -inf/+inf until solved, and ``inter``, the
    pre-activation bounds used per ReLU input node."""

    prog: ReluProgram
    C: np.ndarray
    d: np.ndarray
    obj: AffineMap
    lo: np.ndarray
    hi: np.ndarray
    intermediate: object
    out_lo: np.ndarray
    out_hi: np.ndarray
    inter: dict

    def layer_bounds(self, b: int, options: LPOptions, splits: dict | None = None):
        """``layer_bounds`` for box ``b`` (the core's bounds intersected in), recorded in
        ``inter``; returns (pre, model)."""
        pre, model = layer_bounds(self.prog, self.lo[b], self.hi[b],
                                  merge_intermediate(self.prog, self.intermediate, b), splits,
                                  b, options)
        for name, (l, u) in zip(self.prog.pre_nodes, pre):
            self.inter[name].lower[b], self.inter[name].upper[b] = l, u
        return pre, model


def box_batch(net, method: str, lower, upper, C=None, d=None, intermediate=None) -> BoxBatch:
    """The ``BoxBatch`` of a relaxation call (shapes and defaults as ``lp_bounds``): the program
    ``relu_program(net, method)`` and, when ``intermediate`` is None, CROWN's pre-activation
    bounds from the bound core."""
    prog = relu_program(net, method)
    C, d = spec_rows(net, C, d)
    lo, hi = as_batch_box(net, lower, upper)
    if intermediate is None:
        intermediate = core_intermediate(net, lo, hi)
    B, k = lo.shape[0], C.shape[0]
    inter = {name: LayerBounds(np.zeros((B, n)), np.zeros((B, n)))
             for name, n in zip(prog.pre_nodes, prog.sizes[1:])}
    return BoxBatch(prog, C, d, prog.output.rows(C, d), lo, hi, intermediate,
                    np.full((B, k), -np.inf), np.full((B, k), np.inf), inter)


def lp_bounds(net, lower, upper, C=None, d=None, intermediate=None,
              options: LPOptions | None = None, splits: dict | None = None) -> RelaxationResult:
    """Bounds of ``C y - d`` over the input box(es) by the triangle LP (module docstring).

    net: a Network of Relu, Sigmoid, Tanh and affine ops; lower, upper: (B, *input_shape) or
    one box; C: (k, m), d: (k,) (default: identity, 0); intermediate: the bound core's
    {node name: Bounds} pre-activation bounds (default None: CROWN from
    ``verifier.bounds.compute``; ``{}``: none), always intersected with a rigorous interval
    pass; splits: {ReLU layer
    index k >= 1 or Relu node name: (n_k,) or (B, n_k) array in {-1, 0, +1}} fixing neurons
    inactive (z <= 0) or active (z >= 0) for branch and bound. Returns ``RelaxationResult``
    with lower/upper (B, k); a box made empty by its splits gets lower=+inf, upper=-inf."""
    options = options or LPOptions()
    t0 = time.perf_counter()
    bb = box_batch(net, "lp-all" if options.tighten else "lp", lower, upper, C, d, intermediate)
    C, obj, lo = bb.C, bb.obj, bb.lo
    B, k, out_lo, out_hi = lo.shape[0], C.shape[0], bb.out_lo, bb.out_hi
    solves = cuts = 0
    for b in range(B):
        _, model = bb.layer_bounds(b, options, splits)
        for i in range(k):
            c, c0, err = model.objective(obj.row(i))
            out_lo[b, i] = model.bound(c, c0, err)
            if options.upper:
                out_hi[b, i] = -model.bound(-c, -c0, err)
        solves += model.solves
        cuts += model.cuts
    stats = {"lp_solves": solves, "seconds": time.perf_counter() - t0}
    if options.cut_rounds > 0:
        stats["cuts"] = cuts
    return RelaxationResult(out_lo, out_hi, bb.inter, stats)


def lp_all_bounds(net, lower, upper, C=None, d=None, intermediate=None,
                  options: LPOptions | None = None, splits: dict | None = None):
    """``lp_bounds`` after tightening every pre-activation bound by LP (``method="lp-all"``)."""
    options = LPOptions(**{**(options or LPOptions()).__dict__, "tighten": True})
    return lp_bounds(net, lower, upper, C, d, intermediate, options, splits)
