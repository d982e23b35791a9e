"""The low-rank SDP: Burer-Monteiro factorisation with rank escalation, certified by its dual.

Chiu & Zhang (ICML 2023, "Tight certification of adversarially trained neural networks via
nonconvex low-rank semidefinite relaxations") solve the SDP of Raghunathan et al. through
``G = V V'`` with V of r columns. We do the same over the constraints of ``sdp_program``.

Primal. Since G only matters through V V', row 0 of V (the constant 1) is fixed to ``e_1``;
then ``x = V[1:, 0]`` and ``X = V[1:] V[1:]'``. Every constraint ``g_i(V) = <G_i, V V'>`` (the
coordinate box included) goes into an augmented Lagrangian (Rockafellar's form for
inequalities)

    L_rho(V; y) = <C_0, VV'> + sum_ineq (max(0, y_i - rho g_i)^2 - y_i^2) / (2 rho)
                             + sum_eq (-y_i g_i + rho g_i^2 / 2),

minimised over V's other rows by L-BFGS (its gradient is ``2 (C_0 - sum_i w_i G_i) V`` with
``w_i = max(0, y_i - rho g_i)`` or ``y_i - rho g_i``; ``sdp_operator`` evaluates ``g`` and this
product from the constraints' star structure, r columns at a time: r forward and backward
passes, never an n x n matrix), then ``y <- w`` and ``rho`` grows
(up to a cap) while the violation does not fall fourfold. The start is an attack point
(projected gradient on the network's own spec row), lifted to rank r with small noise.

Multipliers. At a solution, stationarity reads ``(M(y) - s e0 e0') V = 0`` with
``M(y) = C_0 - sum_i y_i G_i``. The augmented-Lagrangian ``y`` satisfies it only roughly, so the
multipliers of the constraints active at V (inactive inequalities keep y = 0) and the shift s
are recovered by least squares on that linear system (LSMR started from the AL values; signs
projected afterwards, then once more on the remaining support).

Bound. The reported value is ``sdp_certificate.certify(y)``:

    lb = max_s  s + min(0, lambda_min(D M(y) D - s e0 e0')) R,   R >= 1 + sum_i (x_i / d_i)^2,

the Lagrangian dual bound, valid for ANY y (derivation, scaling and floating-point margins in
``sdp_certificate``): the nonconvex objective is never reported. ``lambda_min`` comes from a
dense eigensolver and is confirmed by a Cholesky factorisation.

Rank escalation (the Riemannian staircase of Boumal et al. 2016). If ``lambda_min`` is clearly
negative once the violation is moderate (``escalate_viol``), V is not a global optimum of the
SDP; the eigenvectors q of the most negative eigenvalues are descent directions in more
dimensions: V <- [V, t q] and the augmented Lagrangian resumes. (Waiting for a small violation
first was the main weakness on MNIST: the penalty is capped, the violation stalls near 1e-4,
the rank stayed 2 and the certificate degraded as the primal converged.) The run stops at the
target, the time limit, or when the best certificate stalls (``stall_tol`` over
``stall_checks`` certificates). The best certificate over all rounds is returned (each one is
valid on its own).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
from scipy.sparse.linalg import LinearOperator, lsmr

from .lp import LPOptions, box_batch
from .lp_program import RelaxationResult
from .sdp_certificate import certify
from .sdp_operator import LowRankOperator
from .sdp_program import lift, reduce_program, reduced_row, sdp_data

log = logging.getLogger(__name__)


@dataclass
class LowRankOptions:
    """Settings of the low-rank SDP."""

    #: add the triangle cuts (then the SDP is never looser than the LP)
    triangle: bool = True
    #: also bound max (C y - d)
    upper: bool = True
    #: starting rank (columns of V), the most it may grow to, and the columns added per step
    #: (eigenvectors of the most negative eigenvalues of the certificate's matrix)
    rank: int = 2
    max_rank: int = 64
    rank_step: int = 4
    #: augmented-Lagrangian rounds per rank, and L-BFGS-B iterations per round
    al_rounds: int = 25
    lbfgs_iters: int = 400
    #: initial penalty and its growth when the violation does not fall fourfold
    rho: float = 10.0
    rho_growth: float = 5.0
    rho_max: float = 1e3
    #: augmented-Lagrangian rounds between two certificates
    rounds_per_check: int = 2
    #: stop a rank's rounds once the constraint violation is below this
    feas_tol: float = 1e-7
    #: escalate while lambda_min of the scaled certificate matrix is below -this, once the
    #: constraint violation is below escalate_viol
    eig_tol: float = 1e-7
    escalate_viol: float = 1e-2
    #: seconds allowed per bound (None: none); the best certificate so far is returned
    time_limit: float | None = 60.0
    #: attack restarts for the warm start
    attack_starts: int = 16
    #: tighten the pre-activation bounds by LP-All first
    lp_all: bool = False
    #: stop early when the certified bound exceeds this (e.g. 0 for verification)
    target: float | None = None
    #: stop when the best certified bound rose by at most stall_tol (1 + |bound|) over the
    #: last stall_checks certificates
    stall_tol: float = 1e-4
    stall_checks: int = 3
    seed: int = 0


# --------------------------------------------------------------------------------------------
# the augmented Lagrangian
# --------------------------------------------------------------------------------------------
def lbfgs(fg, z, iters: int, memory: int = 20, gtol: float = 1e-11, deadline=None):
    """Minimise a smooth function by L-BFGS (Nocedal & Wright, Alg. 7.4) with a backtracking
    Armijo line search; ``fg(z) -> (value, gradient)``. Returns the last iterate (at the
    ``deadline`` of ``time.perf_counter()`` at the latest)."""
    f, g = fg(z)
    S, Y = [], []
    for _ in range(iters):
        if np.linalg.norm(g) <= gtol * (1.0 + abs(f)):
            break
        if deadline is not None and time.perf_counter() > deadline:
            break
        q = g.copy()
        alphas = []
        for s_, y_ in zip(reversed(S), reversed(Y)):
            a_ = (s_ @ q) / (y_ @ s_)
            alphas.append(a_)
            q -= a_ * y_
        if S:
            q *= (S[-1] @ Y[-1]) / (Y[-1] @ Y[-1])
        else:
            q *= 1e-3 / max(np.linalg.norm(g), 1e-300)
        for (s_, y_), a_ in zip(zip(S, Y), reversed(alphas)):
            q += s_ * (a_ - (y_ @ q) / (y_ @ s_))
        d = -q
        slope = g @ d
        if slope >= 0:  # not a descent direction: restart from the gradient
            S, Y = [], []
            d = -g * 1e-3 / max(np.linalg.norm(g), 1e-300)
            slope = g @ d
        t = 1.0
        for _ in range(40):
            z_new = z + t * d
            f_new, g_new = fg(z_new)
            if f_new <= f + 1e-4 * t * slope:
                break
            t *= 0.5
        else:
            break
        s_, y_ = z_new - z, g_new - g
        if s_ @ y_ > 1e-12 * np.linalg.norm(s_) * np.linalg.norm(y_):
            S.append(s_)
            Y.append(y_)
            if len(S) > memory:
                S.pop(0)
                Y.pop(0)
        z, f, g = z_new, f_new, g_new
    return z


def _minimise(prob: LowRankOperator, V, y, rho, iters, gtol=1e-11, deadline=None):
    """Minimise the augmented Lagrangian over V's rows 1.. (row 0 stays e_1)."""
    n, r = V.shape
    head = V[:1].copy()

    def fg(z):
        W = np.vstack([head, z.reshape(n - 1, r)])
        val, grad = prob.lagrangian(W, y, rho)
        return val, grad[1:].reshape(-1)

    z = lbfgs(fg, V[1:].reshape(-1), iters, gtol=gtol, deadline=deadline)
    return np.vstack([head, z.reshape(n - 1, r)])


def recover_multipliers(prob: LowRankOperator, V, y0, act_tol: float = 1e-5, maxiter: int = 300):
    """Least-squares multipliers (y, s) for ``(M(y) - s e0 e0') V = 0`` (module docstring):
    LSMR started from the augmented-Lagrangian values ``y0``, over the constraints that are
    active at V or carry a positive multiplier, signs projected afterwards."""
    data, n = prob.data, prob.n
    r = V.shape[1]
    g = prob.values(V)
    scale = 1.0 + np.abs(g).max(initial=0.0)
    y0 = data.project(y0)
    support = data.equality | (g <= act_tol * scale) | (y0 > 0)
    idx = np.flatnonzero(support)

    def mv(z):  # (y_idx, s) -> vec((G y) V + s e0 e1')
        w = np.zeros(data.m)
        w[idx] = z[:-1]
        out = prob.mat_times(w, V, const=False)
        out[0, 0] += z[-1]
        return out.reshape(-1)

    def rmv(R):  # adjoint: <G_i, sym(R V')>
        R = R.reshape(n, r)
        return np.r_[prob.sym_values(R, V)[idx], R[0, 0]]

    op = LinearOperator((n * r, idx.size + 1), matvec=mv, rmatvec=rmv, dtype=np.float64)
    rhs = prob.mat_times(np.zeros(data.m), V).reshape(-1)  # C0 V = (G y) V + s e0 e1'
    x0 = np.r_[y0[idx], 0.0]
    x0[-1] = rhs[0] - mv(x0)[0]  # the shift that zeroes the (0, 0) residual
    sol = lsmr(op, rhs, x0=x0, atol=1e-12, btol=1e-12, maxiter=maxiter)[0]
    y = np.zeros(data.m)
    y[idx] = sol[:-1]
    return data.project(y), float(sol[-1])


def attack_start(obj_fn, x_lo, x_hi, starts: int, rng, steps: int = 60):
    """An input with a low objective: projected gradient descent from the centre and random
    points of the box (step 1/10 of the box width, halved every 20 steps)."""
    width = x_hi - x_lo
    xs = np.vstack([0.5 * (x_lo + x_hi), rng.uniform(x_lo, x_hi, (max(starts - 1, 0),
                                                                   x_lo.size))])
    step = 0.1 * width
    best_x, best_v = None, np.inf
    for t in range(steps):
        val, grad = obj_fn(xs)
        i = int(np.argmin(val))
        if val[i] < best_v:
            best_v, best_x = float(val[i]), xs[i].copy()
        xs = np.clip(xs - step * np.sign(grad), x_lo, x_hi)
        if t % 20 == 19:
            step = step / 2
    val, _ = obj_fn(xs)
    i = int(np.argmin(val))
    if val[i] < best_v:
        best_v, best_x = float(val[i]), xs[i].copy()
    return best_x, best_v


# --------------------------------------------------------------------------------------------
# one bound
# --------------------------------------------------------------------------------------------
def lowrank_bound(data, v_start: np.ndarray, options: LowRankOptions | None = None):
    """The best certified lower bound of one SDP row (``SDPData``) found by the low-rank
    method from the lifted start point ``v_start`` (n,) (module docstring). Returns
    (Certificate, stats)."""
    options = options or LowRankOptions()
    t0 = time.perf_counter()
    deadline = None if options.time_limit is None else t0 + options.time_limit
    rng = np.random.default_rng(options.seed)
    prob = LowRankOperator(data)
    n = data.n
    r = max(1, options.rank)
    noise = 1e-2 * np.maximum(data.amax, 1e-3)[:, None]
    V = np.hstack([v_start[:, None], noise * rng.standard_normal((n, r - 1))])
    V[0] = 0.0
    V[0, 0] = 1.0
    y = np.zeros(data.m)
    rho = options.rho
    best = certify(data, y)
    stats = {"rounds": 0, "certificates": 1, "rank": r}
    prev_viol = np.inf
    gtol = 1e-4
    history = []  # the best bound after each certificate
    while True:
        for _ in range(options.rounds_per_check):
            V = _minimise(prob, V, y, rho, options.lbfgs_iters, gtol, deadline)
            g = prob.values(V)
            y = prob.weights(g, y, rho)
            stats["rounds"] += 1
            viol = prob.violation(V)
            gtol = max(gtol * 0.1, 1e-11)
            if viol < options.feas_tol:
                break
            if viol > 0.25 * prev_viol:
                rho = min(rho * options.rho_growth, options.rho_max)
            prev_viol = viol
            if deadline is not None and time.perf_counter() > deadline:
                break
        t1 = time.perf_counter()
        y_ls, s = recover_multipliers(prob, V, y)
        t2 = time.perf_counter()
        cert = certify(data, y_ls, s, want_eigvec=True)
        log.debug("low-rank: least squares %.2f s, certificate %.2f s", t2 - t1,
                  time.perf_counter() - t2)
        stats["certificates"] += 1
        cands = [cert]
        if n <= 400:  # small: certifying the augmented-Lagrangian multipliers too is cheap
            cands.append(certify(data, y))
        for c in cands:
            if c.bound > best.bound:
                best = c
        history.append(best.bound)
        primal = prob.objective(V)
        log.debug("low-rank: rank %d rounds %d viol %.2e primal %.6f bound %.6f lam %.2e",
                  V.shape[1], stats["rounds"], viol, primal, cert.bound, cert.lambda_min)
        if options.target is not None and best.bound > options.target:
            break
        if deadline is not None and time.perf_counter() > deadline:
            break
        if stats["rounds"] >= options.al_rounds * options.max_rank:
            break
        gap = primal - best.bound
        if viol < options.feas_tol and gap <= 1e-6 * (1.0 + abs(primal)):
            break
        k = options.stall_checks
        if len(history) > k and np.isfinite(history[-k - 1]) and (
                history[-1] - history[-k - 1] <= options.stall_tol * (1.0 + abs(history[-1]))):
            stats["stalled"] = True
            break
        if (cert.lambda_min < -options.eig_tol and viol < options.escalate_viol
                and V.shape[1] < options.max_rank and cert.eigvecs is not None):
            Q = cert.eigvecs[:, :min(options.rank_step, options.max_rank - V.shape[1])].copy()
            Q[0] = 0.0
            Q /= np.maximum(np.linalg.norm(Q, axis=0), 1e-300)
            V = np.hstack([V, 1e-2 * np.linalg.norm(V[1:]) / np.sqrt(n) * Q])
            stats["rank"] = V.shape[1]
            prev_viol = np.inf
            gtol = 1e-4
    stats["seconds"] = time.perf_counter() - t0
    stats["primal"] = prob.objective(V)
    return best, stats


def _objective_fn(net, c_row: np.ndarray, d_i: float, sign: float):
    """x (B, n_0) -> (sign (c'net(x) - d), its gradient)."""
    def fn(x):
        xb = x.reshape((-1,) + net.input_shape)
        y = net(xb).reshape(x.shape[0], -1)
        val = sign * (y @ c_row - d_i)
        grad = net.vjp(xb, sign * np.broadcast_to(c_row, y.shape).reshape(
            (x.shape[0],) + net.output_shape)).reshape(x.shape[0], -1)
        return val, grad
    return fn


def sdp_lowrank_bounds(net, lower, upper, C=None, d=None, intermediate=None,
                       options: LowRankOptions | None = None) -> RelaxationResult:
    """Bounds of ``C y - d`` over the input box(es) by the low-rank SDP (module docstring),
    each from a dual certificate. Shapes and ``intermediate`` as ``lp_bounds``."""
    options = options or LowRankOptions()
    t0 = time.perf_counter()
    bb = box_batch(net, "sdp-lowrank", lower, upper, C, d, intermediate)
    prog, C, d, obj, lo, hi = bb.prog, bb.C, bb.d, bb.obj, bb.lo, bb.hi
    B, k, out_lo, out_hi = lo.shape[0], C.shape[0], bb.out_lo, bb.out_hi
    rng = np.random.default_rng(options.seed)
    runs = []
    for b in range(B):
        pre, _ = bb.layer_bounds(b, LPOptions(tighten=options.lp_all, upper=False))
        red = reduce_program(prog, pre, obj)
        for i in range(k):
            for sign, out in ((1.0, out_lo), (-1.0, out_hi)):
                if sign < 0 and not options.upper:
                    continue
                data = sdp_data(red, lo[b], hi[b], reduced_row(red, i, sign), options.triangle)
                x0, _ = attack_start(_objective_fn(net, C[i], d[i], sign), lo[b], hi[b],
                                     options.attack_starts, rng)
                acts, _ = prog.forward(x0[None])
                cert, st = lowrank_bound(data, lift(red, acts)[0], options)
                out[b, i] = sign * cert.bound
                runs.append(st)
    stats = {"runs": runs, "seconds": time.perf_counter() - t0}
    return RelaxationResult(out_lo, out_hi, bb.inter, stats)
