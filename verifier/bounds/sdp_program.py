"""The SDP relaxation's data: the program reduced to its unstable neurons, and its constraints
as symmetric matrices on the lifted matrix ``G = [[1, x'], [x, X]]``.

Reduction. With valid pre-activation bounds, an inactive neuron (``u <= 0``) is 0 and an
active one (``l >= 0``) equals its pre-activation, an affine function of earlier values. Both
are substituted away, so the relaxation's coordinates are ``x = (a_0, a_1^U, ..., a_K^U)``: the
input and the unstable neurons (``l < 0 < u``) of each layer. Each reduced map carries its
composition's rounding bound, as in ``lp_program``. Active neurons keep their box as the
linear constraints ``l <= z <= u``.

Constraints (Raghunathan, Steinhardt & Liang 2018, "Semidefinite relaxations for certifying
robustness to adversarial examples"), with ``v = (1, x)``, ``G = v v'`` at a true point, a
coordinate box ``lo <= x <= hi`` (input box; ``[0, u]`` for neurons), ``z = P v`` the
pre-activation of an unstable neuron (``P = [b, W]``):

    lo    x_i - lo_i >= 0                       hi    hi_i - x_i >= 0
    relu  a - z >= 0                            tri   s (z - l) - a >= 0  (optional cuts)
    actlo z_A - l_A >= 0                        acthi u_A - z_A >= 0      (active neurons)
    box   -X_ii + (lo_i + hi_i) x_i - lo_i hi_i >= 0
    comp  X_aa - sum_j W_aj X_ja - b_a x_a = 0  (a (a - z) = 0)

each written ``g_i = <G_i, G>`` with a symmetric ``G_i`` (the constant in entry (0, 0), as
``G_00 = 1``); the objective is ``<C_0, G>``. ``SDPData.G_op`` stacks ``vec(G_i)`` as columns,
so for multipliers ``y`` (>= 0 on inequalities, free on equalities) the Lagrangian matrix is
``M(y) = C_0 - sum_i y_i G_i``, and at every true point ``obj(x) - v'M(y)v = sum_i y_i g_i(x)
>= 0`` (see ``sdp_certificate`` for the bound built on it). ``eps[i]`` bounds how far the stored
``g_i`` can be from the exact constraint at a true point (rounding of the reduction and of the
coefficients); the certificate subtracts ``sum |y_i| eps_i``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .lp_program import AffineMap, U, gamma, inflate

FAMILIES = ("lo", "hi", "relu", "tri", "actlo", "acthi", "box", "comp")
EQUALITY = ("comp",)


# --------------------------------------------------------------------------------------------
# reduction to unstable neurons
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ReducedProgram:
    """``layers[k-1]``: the pre-activation map of layer k's unstable neurons over the reduced
    blocks (0: input, j: unstable neurons of layer j); ``active[k-1]``: the same for its active
    neurons; ``bounds[k-1]`` = (l, u) of the unstable ones, ``active_bounds`` likewise;
    ``unstable[k-1]`` / ``active_idx[k-1]``: their indices in the full layer; ``output``: the
    network output over the reduced blocks."""

    n_inputs: int
    layers: tuple
    active: tuple
    bounds: tuple
    active_bounds: tuple
    unstable: tuple
    active_idx: tuple
    output: AffineMap

    @property
    def sizes(self) -> tuple:
        return (self.n_inputs,) + tuple(idx.size for idx in self.unstable)


def _compose(amap: AffineMap, rows: np.ndarray, subs: list, unstable: list, active: list):
    """Rows ``rows`` of ``amap`` with every full activation block j >= 1 replaced by its
    unstable part (a column selection, exact) plus its active part ``subs[j]`` (a product,
    rounded: error ``gamma |F_A| |S|`` plus the carried errors)."""
    terms, absterms, errs = {}, {}, {}
    count = {}

    def add(j, T, absT, E):
        terms[j] = terms.get(j, 0.0) + T
        absterms[j] = absterms.get(j, 0.0) + absT
        count[j] = count.get(j, 0) + 1
        if E is not None:
            errs[j] = errs.get(j, 0.0) + E

    bias = amap.bias[rows].copy()
    bias_abs = np.abs(bias)
    bias_err = None if amap.bias_err is None else amap.bias_err[rows].copy()
    products = amap.bias_err is not None
    for j, F in amap.blocks.items():
        F = F[rows]
        Fe = amap.err[j][rows] if j in amap.err else None
        if j == 0:
            add(0, F, np.zeros_like(F), Fe)
            continue
        U_j, A_j = unstable[j - 1], active[j - 1]
        add(j, F[:, U_j], np.zeros((F.shape[0], U_j.size)),
            None if Fe is None else Fe[:, U_j])
        if A_j.size == 0:
            continue
        FA, S = F[:, A_j], subs[j - 1]
        absFA = np.abs(FA)
        g = gamma(A_j.size + 1)
        for jj, Sb in S.blocks.items():
            E = g * (absFA @ np.abs(Sb))
            if jj in S.err:
                E = E + absFA @ S.err[jj]
            if Fe is not None:
                E = E + Fe[:, A_j] @ np.abs(Sb)
            add(jj, FA @ Sb, absFA @ np.abs(Sb), E)
        be = g * (absFA @ np.abs(S.bias)) + (0 if S.bias_err is None else absFA @ S.bias_err)
        if Fe is not None:
            be = be + Fe[:, A_j] @ np.abs(S.bias)
        bias = bias + FA @ S.bias
        bias_abs = bias_abs + absFA @ np.abs(S.bias)
        bias_err = be if bias_err is None else bias_err + be
        products = True
    blocks, err = {}, {}
    for j, T in terms.items():
        blocks[j] = np.asarray(T, dtype=np.float64)
        E = errs.get(j)
        if count[j] > 1:  # the sum of the terms rounds
            extra = gamma(count[j] + 1) * (absterms[j] + np.abs(blocks[j]))
            E = extra if E is None else E + extra
        if E is not None:
            err[j] = inflate(E)
    if products:
        bias_err = inflate((0 if bias_err is None else bias_err)
                           + gamma(len(amap.blocks) + 2) * (bias_abs + np.abs(bias)))
    return AffineMap(blocks, bias, err, bias_err)


def reduce_program(prog, pre: list, output: AffineMap | None = None) -> ReducedProgram:
    """Substitute the stable neurons of ``prog`` given its pre-activation bounds ``pre``
    [(l_k, u_k)] (module docstring). ``output`` replaces the network output map (e.g. by the
    spec rows ``prog.output.rows(C, d)``)."""
    unstable, active, layers, act_maps, bnds, act_bnds = [], [], [], [], [], []
    for k, (l, u) in enumerate(pre):
        U_k = np.flatnonzero((l < 0) & (u > 0))
        A_k = np.flatnonzero((l >= 0) & (u >= l))
        full_rows = np.concatenate([U_k, A_k])
        comp = _compose(prog.layers[k], full_rows, act_maps, unstable, active)
        nU = U_k.size
        sel = lambda r: AffineMap({j: B[r] for j, B in comp.blocks.items()}, comp.bias[r],  # noqa
                                  {j: E[r] for j, E in comp.err.items()},
                                  None if comp.bias_err is None else comp.bias_err[r])
        layers.append(sel(slice(0, nU)))
        act_maps.append(sel(slice(nU, None)))
        unstable.append(U_k)
        active.append(A_k)
        bnds.append((l[U_k], u[U_k]))
        act_bnds.append((l[A_k], u[A_k]))
    out = prog.output if output is None else output
    output = _compose(out, np.arange(out.size), act_maps, unstable, active)
    return ReducedProgram(prog.n_inputs, tuple(layers), tuple(act_maps), tuple(bnds),
                          tuple(act_bnds), tuple(unstable), tuple(active), output)


# --------------------------------------------------------------------------------------------
# constraint matrices
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SDPData:
    """The constraints of one spec row over one box (module docstring). ``n`` = 1 + N;
    ``offsets[j]``: index of block j's first coordinate; ``lo, hi, amax`` (n,) the coordinate
    box (entry 0 is the constant 1); ``G_op`` (n*n, m) csc; ``C0`` (n*n,); ``families`` {name:
    slice of y}; ``equality`` (m,) bool; ``eps`` (m,); ``obj_err``; ``red`` the reduced
    program."""

    n: int
    offsets: tuple
    lo: np.ndarray
    hi: np.ndarray
    amax: np.ndarray
    G_op: sp.csc_matrix
    C0: np.ndarray
    families: dict
    equality: np.ndarray
    eps: np.ndarray
    obj_err: float
    red: ReducedProgram

    @property
    def m(self) -> int:
        return self.G_op.shape[1]

    def matrix(self, y: np.ndarray) -> np.ndarray:
        """``M(y) = C_0 - sum_i y_i G_i`` as a dense (n, n) array."""
        return (self.C0 - self.G_op @ y).reshape(self.n, self.n)

    def constraint_values(self, G: np.ndarray) -> np.ndarray:
        """``g_i = <G_i, G>`` for a symmetric (n, n) ``G``."""
        return self.G_op.T @ G.reshape(-1)

    def project(self, y: np.ndarray) -> np.ndarray:
        """Multipliers with inequality entries clipped to >= 0 (NaN -> 0)."""
        y = np.nan_to_num(np.asarray(y, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        return np.where(self.equality, y, np.maximum(y, 0.0))


class _Triplets:
    """COO builder of the symmetric constraint matrices, one column per multiplier."""

    def __init__(self, n):
        self.n, self.r, self.c, self.v, self.m = n, [], [], [], 0

    def sym(self, col, p, q, val):
        """Add ``val`` at (p, q) and (q, p) of column ``col`` (``val`` twice on the diagonal
        when p == q is NOT wanted: use ``diag``)."""
        col, p, q, val = np.broadcast_arrays(col, p, q, val)
        n = self.n
        self.r += [(p * n + q).ravel(), (q * n + p).ravel()]
        self.c += [col.ravel(), col.ravel()]
        self.v += [val.ravel(), val.ravel()]

    def diag(self, col, p, val):
        col, p, val = np.broadcast_arrays(col, p, val)
        self.r.append((p * self.n + p).ravel())
        self.c.append(col.ravel())
        self.v.append(val.ravel())

    def linear(self, cols, Q: np.ndarray):
        """Columns ``cols`` get ``sym(e0 q')`` for each row q of the dense (len(cols), n) Q."""
        rows, js = np.nonzero(Q[:, 1:])
        js = js + 1
        self.sym(np.asarray(cols)[rows], 0, js, 0.5 * Q[rows, js])
        self.diag(np.asarray(cols), 0, Q[:, 0])

    def new(self, count):
        cols = np.arange(self.m, self.m + count)
        self.m += count
        return cols

    def matrix(self) -> sp.csc_matrix:
        cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0))  # noqa: E731
        return sp.csc_matrix((cat(self.v), (cat(self.r).astype(np.int64),
                                            cat(self.c).astype(np.int64))),
                             shape=(self.n * self.n, self.m))


def sdp_data(red: ReducedProgram, x_lo, x_hi, obj: AffineMap, triangle: bool = True) -> SDPData:
    """The constraint matrices of the SDP for one objective row ``obj`` (an AffineMap with one
    row over the reduced blocks) and the input box [x_lo, x_hi]."""
    sizes = red.sizes
    offsets = tuple(int(1 + sum(sizes[:j])) for j in range(len(sizes)))
    n = 1 + int(sum(sizes))
    lo = np.concatenate([[1.0], np.asarray(x_lo, float).reshape(-1)]
                        + [np.zeros(s) for s in sizes[1:]])
    hi = np.concatenate([[1.0], np.asarray(x_hi, float).reshape(-1)]
                        + [bu for (_, bu) in red.bounds])
    amax = np.maximum(np.abs(lo), np.abs(hi))
    amax_blocks = [amax[offsets[j]:offsets[j] + sizes[j]] for j in range(len(sizes))]

    def dense_rows(amap: AffineMap) -> np.ndarray:
        P = np.zeros((amap.size, n))
        P[:, 0] = amap.bias
        for j, Wj in amap.blocks.items():
            P[:, offsets[j]:offsets[j] + sizes[j]] = Wj
        return P

    T = _Triplets(n)
    fam, eps = {}, []
    coords = np.arange(1, n)
    # lo, hi: x_i - lo_i >= 0, hi_i - x_i >= 0
    Q = np.zeros((n - 1, n))
    Q[np.arange(n - 1), coords] = 1.0
    Q[:, 0] = -lo[1:]
    cols = T.new(n - 1)
    T.linear(cols, Q)
    fam["lo"], eps = slice(cols[0], cols[-1] + 1), eps + [np.zeros(n - 1)]
    Q[:, 1:] *= -1.0
    Q[:, 0] = hi[1:]
    cols = T.new(n - 1)
    T.linear(cols, Q)
    fam["hi"], eps = slice(cols[0], cols[-1] + 1), eps + [np.zeros(n - 1)]
    # per layer: relu, tri, comp (unstable); actlo, acthi (active)
    parts = {f: ([], []) for f in ("relu", "tri", "actlo", "acthi", "comp")}
    for k in range(1, len(sizes)):
        amap, (l, u) = red.layers[k - 1], red.bounds[k - 1]
        n_k = sizes[k]
        if n_k:
            P = dense_rows(amap)
            me = amap.model_error(amax_blocks)
            a_idx = offsets[k] + np.arange(n_k)
            E = np.zeros((n_k, n))
            E[np.arange(n_k), a_idx] = 1.0
            parts["relu"][0].append(E - P)
            parts["relu"][1].append(me)
            if triangle:
                s = u / (u - l) * (1 + 4 * U)
                Qt = s[:, None] * P
                Qt[:, 0] -= s * l
                Qt -= E
                absP = np.abs(P) @ np.concatenate([[1.0], amax[1:]])
                parts["tri"][0].append(Qt)
                parts["tri"][1].append(inflate(gamma(3) * s * (absP + np.abs(l)) + s * me))
            parts["comp"][0].append((a_idx, P))
            parts["comp"][1].append(inflate(amax[a_idx] * me))
        A_map, (la, ua) = red.active[k - 1], red.active_bounds[k - 1]
        if A_map.size:
            P = dense_rows(A_map)
            me = A_map.model_error(amax_blocks)
            Ql = P.copy()
            Ql[:, 0] -= la
            Qh = -P
            Qh[:, 0] += ua
            parts["actlo"][0].append(Ql)
            parts["acthi"][0].append(Qh)
            # the subtraction of the bound rounds: u |b - l|
            parts["actlo"][1].append(inflate(me + U * np.abs(Ql[:, 0])))
            parts["acthi"][1].append(inflate(me + U * np.abs(Qh[:, 0])))
    for f in ("relu", "tri", "actlo", "acthi"):
        if parts[f][0]:
            Q = np.vstack(parts[f][0])
            cols = T.new(Q.shape[0])
            T.linear(cols, Q)
            fam[f] = slice(cols[0], cols[-1] + 1)
            eps.append(np.concatenate(parts[f][1]))
        else:
            fam[f] = slice(T.m, T.m)
    # box: -X_ii + (lo+hi) x_i - lo hi >= 0
    cols = T.new(n - 1)
    T.diag(cols, coords, -1.0)
    T.sym(cols, 0, coords, 0.5 * (lo[1:] + hi[1:]))
    T.diag(cols, 0, -(lo[1:] * hi[1:]))
    fam["box"] = slice(cols[0], cols[-1] + 1)
    eps.append(inflate(U * (np.abs(lo[1:] + hi[1:]) * amax[1:] + np.abs(lo[1:] * hi[1:]))))
    # comp: X_aa - sum_j W X_ja - b x_a = 0
    start = T.m
    for (a_idx, P), _ in zip(parts["comp"][0], parts["comp"][1]):
        cols = T.new(a_idx.size)
        T.diag(cols, a_idx, 1.0)
        rows, js = np.nonzero(P[:, 1:])
        T.sym(cols[rows], a_idx[rows], js + 1, -0.5 * P[rows, js + 1])
        T.sym(cols, 0, a_idx, -0.5 * P[:, 0])
    fam["comp"] = slice(start, T.m)
    eps += parts["comp"][1]
    G_op = T.matrix()
    equality = np.zeros(T.m, dtype=bool)
    equality[fam["comp"]] = True
    # objective <C0, G> = c0 + c'x
    c = dense_rows(obj)[0]
    C0 = np.zeros((n, n))
    C0[0, 0] = c[0]
    C0[0, 1:] = C0[1:, 0] = 0.5 * c[1:]
    obj_err = float(obj.model_error(amax_blocks)[0])
    return SDPData(n, offsets, lo, hi, amax, G_op, C0.reshape(-1), fam, equality,
                   np.concatenate(eps), obj_err, red)


def lift(red: ReducedProgram, acts: list) -> np.ndarray:
    """The reduced coordinates ``v = (1, x)`` (B, n) of true points given their full
    activations [a_0..a_K] (B, n_j) (for tests and warm starts)."""
    parts = [np.ones((acts[0].shape[0], 1)), acts[0]]
    for k, U_k in enumerate(red.unstable):
        parts.append(acts[k + 1][:, U_k])
    return np.concatenate(parts, axis=1)


def reduced_row(red: ReducedProgram, i: int, sign: float = 1.0) -> AffineMap:
    """Row i of the reduced objective ``red.output``, negated when ``sign`` < 0 (to bound the
    maximum as ``-min(-row)``; negation is exact)."""
    r = red.output.row(i)
    if sign > 0:
        return r
    return AffineMap({j: -W for j, W in r.blocks.items()}, -r.bias, r.err, r.bias_err)
