"""Counterexample search: cheap sampling, then projected gradient descent on the spec margin.

For one conjunction ``C y <= d`` of a case, the *margin* of a point is

    m_j(x) = max_k (C f(x) - d)_k,

and ``x`` violates the conjunction iff ``m_j(x) <= 0``. The margin of a case is
``m(x) = min_j m_j(x)`` over its unsafe conjunctions. The attack minimises ``m_j`` (targeted
starts, one conjunction each, round robin) or ``m`` (untargeted starts) over the case's input
set by sign-gradient PGD (Madry et al., 2018) in the geometry of the box:

    x <- P(x - s_t * (u - l) * sign(grad m(x))),

with the subgradient of the max/min taken at the active row (``grad m = C_k* J_f(x)``, computed
by ``Network.vjp``), a cosine step schedule ``s_t`` from ``step_max`` down to ``step_min``, and
``P`` the projection onto the box followed by a few cyclic projections onto violated input
constraints ``a x <= b`` (cheap, not exact: candidates are checked, never assumed feasible).
Random restarts run in batches; every iterate whose float64 margin is ``<= 0`` is replayed on
the original model (``verifier.search.replay.Replay``) and only a confirmed point is returned.

Before PGD, ``probe`` evaluates the box centre, its corners (all of them when few) and uniform
samples, which finds easy counterexamples in one batched forward pass; the samples of least
margin become the starting points of half the first PGD batch. After each PGD batch a local
search (Gaussian hill climbing with a shrinking radius, derivative free) continues from the
best points seen so far, which crosses the kinks of the max/min where sign steps oscillate.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from .replay import Counterexample, Replay

log = logging.getLogger(__name__)


@dataclass
class AttackOptions:
    """Tuning knobs of the counterexample search (defaults in one place)."""

    #: uniform random samples per case in the cheap probe (the best of them seed PGD)
    samples: int = 1024
    #: box corners tried per case in the probe (all 2**n corners when that is no more)
    corners: int = 64
    #: PGD starts per batch (per case)
    restarts: int = 32
    #: PGD steps per start
    steps: int = 60
    #: first and last step, as fractions of the box width (sign steps, cosine schedule)
    step_max: float = 0.2
    step_min: float = 0.001
    #: batches of fresh random starts (each `restarts` wide); the deadline may stop earlier
    rounds: int = 3
    #: cyclic projections onto violated input constraints per step
    projection_sweeps: int = 8
    #: local search after each PGD round: the best points found so far are perturbed by
    #: Gaussian steps of radius ``r * (u - l)``, ``r`` shrinking geometrically from
    #: ``local_max`` to ``local_min`` over ``local_levels`` levels of ``local_tries`` tries;
    #: a perturbation is kept when it lowers the margin (0 levels: no local search)
    local_levels: int = 40
    local_tries: int = 2
    local_max: float = 0.2
    local_min: float = 1e-5
    #: seed of the random generator (the search is deterministic for a given seed)
    seed: int = 0


@dataclass
class AttackResult:
    """``counterexample`` when one was confirmed; ``best_margin`` the lowest float64 margin
    ``min_j m_j(x)`` seen at points of the input set (an upper bound on the true minimum, or
    None if no feasible point was evaluated); counts of the work done."""

    counterexample: Counterexample | None
    best_margin: float | None
    evaluations: int
    pgd_steps: int
    seconds: float


class _CaseMargins:
    """The rows of all unsafe conjunctions of one case, stacked: ``Z = y C^T - d`` (B, K) and the
    per-conjunction margins ``max`` over each block of rows (B, J)."""

    def __init__(self, case):
        self.C = np.concatenate([c.C for c in case.unsafe], axis=0)
        self.d = np.concatenate([c.d for c in case.unsafe], axis=0)
        sizes = [c.C.shape[0] for c in case.unsafe]
        self.starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.J = len(sizes)
        self.empty = self.sizes == 0  # an empty conjunction is violated by every point

    def rows(self, y: np.ndarray) -> np.ndarray:
        return y.reshape(y.shape[0], -1) @ self.C.T - self.d

    def margins(self, Z: np.ndarray) -> np.ndarray:
        """(B, J) per-conjunction margins; -inf for a conjunction without rows."""
        out = np.full((Z.shape[0], self.J), -np.inf)
        nz = ~self.empty
        if nz.any():
            out[:, nz] = np.maximum.reduceat(Z, self.starts[nz], axis=1)
        return out

    def active_rows(self, Z: np.ndarray, M: np.ndarray, target: np.ndarray) -> np.ndarray:
        """For each start, the row index k* of the max in its conjunction (target >= 0) or in the
        conjunction of least margin (target -1); -1 where that conjunction has no rows."""
        j = np.where(target >= 0, target, np.argmin(M, axis=1))
        k = np.full(Z.shape[0], -1, dtype=np.int64)
        for jj in np.unique(j):
            if self.empty[jj]:
                continue
            sel = j == jj
            s, n = self.starts[jj], self.sizes[jj]
            k[sel] = s + np.argmax(Z[sel, s:s + n], axis=1)
        return k


def _project(x: np.ndarray, inp, sweeps: int) -> np.ndarray:
    """Clip to the box, then a few cyclic projections onto violated halfspaces ``a x <= b``
    (each followed by clipping). Cheap and approximate: feasibility is checked by the caller."""
    x = np.clip(x, inp.lower, inp.upper)
    if inp.A is None:
        return x
    A, b = inp.A, inp.b
    norms = np.einsum("ij,ij->i", A, A)
    for _ in range(sweeps):
        viol = x @ A.T - b
        if not (viol > 0).any():
            break
        for i in range(A.shape[0]):
            if norms[i] == 0.0:
                continue
            v = x @ A[i] - b[i]
            over = v > 0
            if over.any():
                x[over] -= np.outer(v[over] / norms[i], A[i])
        x = np.clip(x, inp.lower, inp.upper)
    return x


def _corners(lower, upper, count, rng) -> np.ndarray:
    n = lower.shape[0]
    if n <= 16 and 2 ** n <= count:
        bits = (np.arange(2 ** n)[:, None] >> np.arange(n)[None, :]) & 1
    else:
        bits = rng.integers(0, 2, size=(count, n))
    return np.where(bits == 1, upper, lower).astype(np.float64)


class _Search:
    """State shared by the probe and PGD on one spec: the network, the replay and the counts."""

    def __init__(self, net, spec, replay: Replay, options: AttackOptions, deadline: float | None):
        self.net = net
        self.spec = spec
        self.replay = replay
        self.opt = options
        self.deadline = deadline
        self.rng = np.random.default_rng(options.seed)
        self.cases = [_CaseMargins(c) for c in spec.cases]
        self.best = np.inf
        self.seeds = [None] * len(spec.cases)  # best probe points per case, to start PGD from
        self.elite = [None] * len(spec.cases)  # (X, margins) of the best points seen per case
        self.evaluations = 0
        self.steps = 0

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def _note(self, ci: int, X: np.ndarray, M: np.ndarray) -> np.ndarray:
        """Record the best margin over feasible rows; return the case margins (B,)."""
        m = M.min(axis=1) if M.shape[1] else np.full(X.shape[0], np.inf)
        feasible = self.spec.cases[ci].input.contains(X)
        if feasible.any():
            self.best = min(self.best, float(m[feasible].min()))
        return m

    def _keep(self, ci: int, X: np.ndarray, m: np.ndarray) -> None:
        """Merge points and their case margins into the case's elite (best ``restarts``
        distinct feasible points)."""
        ok = self.spec.cases[ci].input.contains(X) & np.isfinite(m)
        X, m = X[ok], m[ok]
        if self.elite[ci] is not None:
            X = np.concatenate([self.elite[ci][0], X])
            m = np.concatenate([self.elite[ci][1], m])
        if X.shape[0] == 0:
            return
        X, idx = np.unique(X, axis=0, return_index=True)
        m = m[idx]
        order = np.argsort(m, kind="stable")[:max(1, self.opt.restarts)]
        self.elite[ci] = (X[order], m[order])

    def _margins(self, ci: int, X: np.ndarray) -> np.ndarray:
        cm = self.cases[ci]
        y = self.net(X).reshape(X.shape[0], -1)
        self.evaluations += X.shape[0]
        return self._note(ci, X, cm.margins(cm.rows(y)))

    def local_search(self, ci: int) -> Counterexample | None:
        """Shrinking Gaussian hill climbing from the elite points of case ``ci``: derivative
        free, so it also crosses the kinks where the max/min subgradient of PGD oscillates."""
        if self.elite[ci] is None or self.opt.local_levels <= 0:
            return None
        case, opt = self.spec.cases[ci], self.opt
        width = case.input.upper - case.input.lower
        P, pm = self.elite[ci][0].copy(), self.elite[ci][1].copy()
        for r in np.geomspace(opt.local_max, opt.local_min, opt.local_levels):
            for _ in range(opt.local_tries):
                if self.expired():
                    self._keep(ci, P, pm)
                    return None
                Q = P + r * width * self.rng.standard_normal(P.shape)
                Q = _project(Q, case.input, opt.projection_sweeps)
                qm = self._margins(ci, Q)
                better = qm < pm
                P[better], pm[better] = Q[better], qm[better]
                hit = better & (qm <= 0)
                if hit.any():
                    ce = self.replay(Q[hit], case=ci)
                    if ce is not None:
                        return ce
        self._keep(ci, P, pm)
        return None

    def probe(self) -> Counterexample | None:
        """Centre, corners and uniform samples of every case's box, checked in one pass each."""
        for ci, case in enumerate(self.spec.cases):
            lo, hi = case.input.lower, case.input.upper
            pts = [0.5 * (lo + hi)[None, :], _corners(lo, hi, self.opt.corners, self.rng),
                   lo + (hi - lo) * self.rng.random((self.opt.samples, lo.shape[0]))]
            X = _project(np.concatenate(pts, axis=0), case.input, self.opt.projection_sweeps)
            y = self.net(X).reshape(X.shape[0], -1)
            self.evaluations += X.shape[0]
            cm = self.cases[ci]
            m = self._note(ci, X, cm.margins(cm.rows(y)))
            self._keep(ci, X, m)
            order = np.argsort(m, kind="stable")
            self.seeds[ci] = X[order[:max(1, self.opt.restarts // 2)]]
            cand = X[m <= 0]
            if cand.shape[0]:
                ce = self.replay(cand[np.argsort(m[m <= 0])], case=ci)
                if ce is not None:
                    return ce
        return None

    def pgd_round(self, ci: int) -> Counterexample | None:
        """One batch of random starts on case ``ci``; stops at the first confirmed point."""
        case, cm, opt = self.spec.cases[ci], self.cases[ci], self.opt
        lo, hi = case.input.lower, case.input.upper
        width = hi - lo
        R = opt.restarts
        X = lo + width * self.rng.random((R, lo.shape[0]))
        X[0] = 0.5 * (lo + hi)
        if self.seeds[ci] is not None:  # the first round starts half its runs at the probe's best
            k = min(len(self.seeds[ci]), R - 1)
            X[1:1 + k] = self.seeds[ci][:k]
            self.seeds[ci] = None
        X = _project(X, case.input, opt.projection_sweeps)
        # half the starts untargeted (-1), the rest one conjunction each, round robin
        target = np.where(np.arange(R) % 2 == 0, -1, (np.arange(R) // 2) % cm.J)
        best_x, best_m = X.copy(), np.full(R, np.inf)
        try:
            return self._descend(ci, X, target, best_x, best_m)
        finally:  # the best iterate of every start joins the elite, for the local search
            self._keep(ci, best_x, best_m)

    def _descend(self, ci: int, X: np.ndarray, target: np.ndarray, best_x: np.ndarray,
                 best_m: np.ndarray) -> Counterexample | None:
        """The PGD steps from the starts ``X`` (R, n); ``best_x``/``best_m`` are updated in
        place with each start's best iterate."""
        case, cm, opt = self.spec.cases[ci], self.cases[ci], self.opt
        width = case.input.upper - case.input.lower
        R = X.shape[0]
        replayed = np.full(R, np.inf)  # margin at which each start was last replayed
        out_shape = (R,) + tuple(self.net.output_shape)
        for t in range(opt.steps + 1):
            if self.expired():
                return None
            values = self.net.forward_all(X)
            y = values[self.net.output_name].reshape(R, -1)
            self.evaluations += R
            Z = cm.rows(y)
            M = cm.margins(Z)
            m = self._note(ci, X, M)
            improved = m < best_m
            best_x[improved], best_m[improved] = X[improved], m[improved]
            new = (m <= 0) & (m < replayed)
            if new.any():
                replayed[new] = m[new]
                ce = self.replay(X[new], case=ci)
                if ce is not None:
                    return ce
            if t == opt.steps:
                break
            k = cm.active_rows(Z, M, target)
            live = k >= 0
            if not live.any():
                break
            gy = np.zeros((R, cm.C.shape[1]))
            gy[live] = cm.C[k[live]]
            gx = self.net.vjp(X, gy.reshape(out_shape), values).reshape(R, -1)
            frac = opt.step_min + 0.5 * (opt.step_max - opt.step_min) * (
                1.0 + np.cos(np.pi * t / max(opt.steps, 1)))
            X = _project(X - frac * width * np.sign(gx), case.input, opt.projection_sweeps)
            self.steps += 1
        return None


def attack(net, spec, replay: Replay, options: AttackOptions | None = None,
           deadline: float | None = None, probe: bool = True) -> AttackResult:
    """Search for a counterexample to ``spec`` on ``net``; ``replay`` confirms candidates.

    Runs the probe (unless ``probe=False``), then ``options.rounds`` batches of PGD starts on
    every case, each followed by a local search from the best points so far, until a
    counterexample is confirmed or ``deadline`` (a ``time.monotonic()`` value) passes. The
    answer ``counterexample`` is None unless ``replay`` confirmed it; the search never proves
    anything."""
    t0 = time.monotonic()
    opt = options or AttackOptions()
    s = _Search(net, spec, replay, opt, deadline)
    ce = s.probe() if probe and not s.expired() else None
    for r in range(opt.rounds):
        if ce is not None or s.expired():
            break
        for ci in range(len(spec.cases)):
            ce = s.pgd_round(ci)
            if ce is None and not s.expired():
                ce = s.local_search(ci)
            if ce is not None or s.expired():
                break
    best = float(s.best) if np.isfinite(s.best) else None
    seconds = time.monotonic() - t0
    log.info("attack: %s after %d evaluations, %d PGD steps, %.3f s (best margin %s)",
             "counterexample" if ce is not None else "nothing", s.evaluations, s.steps, seconds,
             best)
    return AttackResult(ce, best, s.evaluations, s.steps, seconds)
