"""Input-split branch and bound for low-dimensional inputs (ACAS Xu's 5).

The case's box is kept as a stack of sub-boxes, each with the set of unsafe conjunctions still
open in it. A batch of sub-boxes is bounded at once (IBP intersected with the parent box's inner
bounds, which hold in its children; CROWN intermediate bounds; CROWN final bound of every open
row; for boxes CROWN leaves open deep in the tree, alpha steps on the few best rows of each
conjunction); a conjunction is refuted in a box when one of its rows has a proven lower bound
> 0, and a box with every conjunction refuted is dropped. Each remaining box gets its centre and
its bound's minimiser x* checked (a float64 forward pass; points whose margin is <= 0 are
replayed), then is bisected along the candidate dimension (all of them for small inputs, else
the best by ``branching.input_scores``) whose two children get the best cheap bounds (IBP).
Alpha stops on a box as soon as it is refuted.

The boxes partition the case's box (children share their cut plane, so the union is exact), so
"every box refuted" proves the pair; the answer is ``sat`` only with a replayed point.
"""
from __future__ import annotations

import heapq
import logging
import time

import numpy as np

from .bab_attack import pgd
from .bab_case import CaseSearch
from .bab_crown import ChainBounder, optimise
from .branching import input_scores

log = logging.getLogger(__name__)


def mixture_rows(C: np.ndarray, d: np.ndarray, pairs: bool = True, max_rows: int = 6):
    """A conjunction's rows ``C y - d <= 0`` (k, m), (k,) with, when 2 <= k <= ``max_rows``, the
    average of all rows appended (and with ``pairs`` the average of every pair of rows).

    The conjunction is refuted at x when some row is > 0 there; a convex combination
    ``sum_j l_j (C_j y - d_j)`` (``l >= 0``, ``sum l = 1``) is at most the largest row, so a box
    on which its lower bound is > 0 refutes the conjunction too. Near the point where several
    rows are equal (where ``max_j`` of the rows is smallest: ACAS Xu's property 2 margins), no
    single row is positive over a box around it, but their average can be."""
    k = C.shape[0]
    if k < 2 or k > max_rows:
        return C, d
    ij = [(i, j) for i in range(k) for j in range(i + 1, k)] if pairs and k > 2 else []
    Cm = [0.5 * (C[i] + C[j]) for i, j in ij] + [C.mean(axis=0)]
    dm = [0.5 * (d[i] + d[j]) for i, j in ij] + [d.mean()]
    return np.concatenate([C, np.array(Cm)]), np.concatenate([d, np.array(dm)])


class InputSplitSearch(CaseSearch):
    """Input-split search over one case. ``run()`` returns "unsat", "sat" (``self.ce`` set),
    "timeout" or "unknown" (a box could not be split further)."""

    def __init__(self, cb: ChainBounder, net, case, case_index: int, conj: list[int], replay,
                 options, deadline: float, stats: dict, method: str = "auto"):
        self.cb, self.net, self.case, self.ci = cb, net, case, case_index
        self.replay, self.opt, self.deadline, self.stats = replay, options, deadline, stats
        self.method = method
        Cs = [case.unsafe[j].C for j in conj]
        ds = [case.unsafe[j].d for j in conj]
        base = [np.ones(c.shape[0], dtype=bool) for c in Cs]
        if options.input_mixtures != "none":
            Cs, ds = zip(*(mixture_rows(C, d, pairs=options.input_mixtures == "pairs")
                           for C, d in zip(Cs, ds)))
        self._set_rows(list(Cs), list(ds))
        # the spec's own rows (the mixtures are left out of the cheap lookahead bounds)
        self.base = np.concatenate([np.pad(b, (0, c.shape[0] - b.size)) for b, c in zip(base, Cs)])
        self.ce = None
        self.full = None

    # -- helpers ------------------------------------------------------------------------------
    def _check_candidates(self, xl, xu, open_, lb, lam0) -> bool:
        """Box centres and each box's minimiser x* of its weakest open row."""
        X, O = 0.5 * (xl + xu), open_
        if lam0 is not None:
            k = np.argmin(np.where(open_[:, self.row_conj], lb, np.inf), axis=1)
            lk = lam0[np.arange(lam0.shape[0]), k]
            X = np.concatenate([X, np.where(lk > 0.0, xl, xu)], axis=0)
            O = np.concatenate([open_, open_], axis=0)
        if self._check_points(X, O):
            return True
        reps = X.shape[0] // len(lb)
        return self._descend_from(X, O, np.tile(self._conj_lb(lb), (reps, 1)),
                                  np.tile(xl, (reps, 1)), np.tile(xu, (reps, 1)))

    def _descend_from(self, X, O, clb, bl, bu) -> bool:
        """PGD on the chain from the candidates of the weakest boxes (lowest conjunction bounds
        first), each inside its own box [bl, bu] (steps scale with it), one conjunction at a
        time."""
        n = self.opt.tree_attack_starts
        if n <= 0 or self.opt.tree_attack_steps <= 0:
            return False
        for j in range(self.J):
            rows = self.row_conj == j
            cand = np.flatnonzero(O[:, j])
            if cand.size == 0 or not rows.any():
                continue
            sel = cand[np.argsort(clb[cand, j])[:n]]
            P, m = pgd(self.cb.chain, X[sel], bl[sel], bu[sel], self.C[rows], self.d[rows],
                       steps=self.opt.tree_attack_steps)
            self.stats["tree_attack_starts"] = self.stats.get("tree_attack_starts", 0) + sel.size
            hit = m <= 0.0
            if hit.any() and self._check_points(P[hit], O[sel][hit]):
                return True
        return False

    def _candidate_dims(self, xl, xu, open_, lam0) -> np.ndarray:
        """(B, D) dimensions whose bisection is tried: all when the input has at most
        ``input_lookahead`` values, else the top ones by ``branching.input_scores``."""
        n0 = xl.shape[1]
        D = min(n0, max(1, self.opt.input_lookahead))
        if D == n0:
            return np.broadcast_to(np.arange(n0), (xl.shape[0], n0))
        scores = input_scores(lam0, open_[:, self.row_conj], (xu - xl) / self.full)
        return np.argsort(-scores, axis=1, kind="stable")[:, :D]

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> str:
        lo0, hi0 = self.case.input.lower, self.case.input.upper
        if self.empty_conj.any():
            # a conjunction without rows is violated everywhere: any point of the set is one
            X = 0.5 * (lo0 + hi0)[None, :]
            return "sat" if self._check_points(X, np.ones((1, self.J), bool)) else "unknown"
        opt = self.opt
        min_width = np.maximum(np.abs(lo0), np.abs(hi0)) * 2.0 ** -40 + 1e-300
        self.full = np.where(hi0 > lo0, hi0 - lo0, 1.0)
        xl, xu = lo0[None, :].copy(), hi0[None, :].copy()
        open_ = np.ones((1, self.J), dtype=bool)
        lb, lam0, zb = self._bound(xl, xu, open_)
        self._count(1)
        open_ &= self._conj_lb(lb) <= 0.0
        if not open_.any():
            return "unsat"
        first = (xl, xu, open_, lb, lam0, zb)
        if opt.input_order == "best":
            queue = _BestFirst(first, self._conj_lb)
        else:
            queue = _Stack(first)
        batches = 0
        while len(queue):
            if time.monotonic() >= self.deadline:
                return "timeout"
            xl, xu, open_, lb, lam0, zb = queue.pop(opt.input_batch)
            if self._check_candidates(xl, xu, open_, lb, lam0):
                return "sat"
            B, n0 = xl.shape
            dims = self._candidate_dims(xl, xu, open_, lam0)
            D = dims.shape[1]
            r = np.arange(B)[:, None]
            if ((xu - xl)[r, dims] <= min_width[dims]).all(axis=1).any():
                # cannot split meaningfully any further: the search cannot decide this box
                log.info("input split: a box reached the resolution limit")
                return "unknown"
            mid = 0.5 * (xl[r, dims] + xu[r, dims])                    # (B, D)
            KL = np.repeat(xl[:, None, None, :], 2, axis=2).repeat(D, axis=1)  # (B, D, 2, n0)
            KU = np.repeat(xu[:, None, None, :], 2, axis=2).repeat(D, axis=1)
            bi, di = np.meshgrid(np.arange(B), np.arange(D), indexing="ij")
            KU[bi, di, 0, dims] = mid
            KL[bi, di, 1, dims] = mid
            kopen = np.repeat(open_, 2 * D, axis=0)
            KL, KU = KL.reshape(-1, n0), KU.reshape(-1, n0)
            # every candidate bisection is bounded cheaply (IBP, and interval bounds of the
            # spec's own rows); the dimension whose children are best is kept, and its
            # children are bounded fully, within their parent's inner bounds (a child lies in
            # its parent; the cheap bounds are left without them). On ACAS Xu, IBP ranks the
            # dimensions about as well as CROWN on the rows (with forward linear bounds for
            # the inner neurons), at a fraction of the cost: CPU time on 3_3 / 4_2 property 2
            # 19.4 / 7.2 s -> 14.4 / 4.2 s (302k -> 321k, 85k -> 85k boxes)
            kzb = np.repeat(zb, 2 * D, axis=0)
            klb, klam0, _ = self._bound(KL, KU, kopen, cheap=self.method != "ibp")
            self._count(klb.shape[0])
            clb = self._conj_lb(klb)
            bad = np.where(kopen & (clb <= 0.0), np.minimum(clb, 0.0), 0.0).sum(axis=1)
            bad = bad.reshape(B, D, 2)
            # a child lies in its parent: the parent's bound holds for it too
            klb = np.maximum(klb, np.repeat(lb, 2 * D, axis=0))
            kopen &= self._conj_lb(klb) <= 0.0
            # ties (no child improved) go to the relatively widest dimension; a dimension at
            # the resolution limit is never chosen
            rel = (xu - xl)[r, dims] / self.full[dims]
            score = bad.sum(axis=2) + 1e-9 * rel
            # nor a dimension already far narrower than the widest one (bounds that do not
            # improve with either would otherwise bisect one dimension forever)
            score[((xu - xl)[r, dims] <= min_width[dims])
                  | (rel < rel.max(axis=1, keepdims=True) * opt.input_max_aspect ** -1)] = -np.inf
            best = np.argmax(score, axis=1)
            pick = (np.arange(B)[:, None] * D + best[:, None]) * 2 + np.arange(2)[None, :]
            pick = pick.reshape(-1)
            pick = pick[kopen[pick].any(axis=1)]
            if pick.size and self.method != "ibp":
                flb, flam0, fzb = self._bound(KL[pick], KU[pick], kopen[pick], ref=kzb[pick])
                self._count(pick.size)
                klb[pick] = np.maximum(klb[pick], flb)
                klam0 = np.zeros((klb.shape[0],) + flam0.shape[1:])
                klam0[pick] = flam0
                kzb[pick] = fzb
                kopen[pick] &= self._conj_lb(klb[pick]) <= 0.0
            alive = pick[kopen[pick].any(axis=1)]
            batches += 1
            if log.isEnabledFor(logging.DEBUG) and batches % 20 == 0:
                log.debug("input split: %d boxes bounded, %d queued", self.stats["boxes"],
                          len(queue))
            if alive.size == 0:
                continue
            queue.push((KL[alive], KU[alive], kopen[alive],
                        klb[alive], None if klam0 is None else klam0[alive], kzb[alive]))
            self.stats["max_queue"] = max(self.stats.get("max_queue", 0), len(queue))
            if len(queue) > opt.max_domains:
                log.info("input split: more than %d boxes queued", opt.max_domains)
                return "unknown"
        return "unsat"

    def _count(self, n: int) -> None:
        self.stats["boxes"] = self.stats.get("boxes", 0) + n
        self.stats["bound_calls"] = self.stats.get("bound_calls", 0) + 1

    def _bound(self, xl, xu, open_, cheap=False, ref=None):
        """Lower bounds (B, K) of every row, the coefficients of x (B, K, n0) (None with IBP
        alone: method "ibp") and the bounds of every layer's pre-activations, packed by
        ``_pack``. ``cheap``: the lookahead's bounds instead, interval bounds of the spec's own
        rows over IBP (the mixture rows -inf), with None for the other two. ``ref``: packed
        bounds that hold on each box (its parent's: a child lies in its parent), intersected
        in first."""
        cb = self.cb
        lo_ref, hi_ref = (None, None) if ref is None else _unpack(ref, cb.chain.widths)
        lo, hi = cb.ibp(xl, xu, lo_ref=lo_ref, hi_ref=hi_ref)
        if self.method == "ibp":
            return cb.interval_rows(self.C, self.d, lo[-1], hi[-1]), None, _pack(lo, hi)
        if cheap:
            # the lookahead: the rows' interval bounds over IBP's (see ``run``)
            lb = cb.interval_rows(self.C, self.d, lo[-1], hi[-1])
            lb[:, ~self.base] = -np.inf
            return lb, None, None
        cb.intermediate(xl, xu, lo, hi, forward=xl.shape[1] <= self.opt.forward_max_dim)
        zb = _pack(lo, hi)
        res = optimise(cb, self.C, self.d, xl, xu, lo, hi, iterations=0)
        lb, lam0 = res.lb, res.pas.lam0
        iters = self.opt.input_alpha_iterations if self.method in ("auto", "alpha-crown") else 0
        if iters <= 0:
            return lb, lam0, zb
        # alpha only pays on small boxes (deep in the tree) that CROWN leaves open
        depth = self._depth(xl, xu)
        need = open_ & ~(self._conj_lb(lb) > 0.0)
        todo = need.any(axis=1) & (depth >= self.opt.input_alpha_depth)
        if todo.any():
            sub = np.flatnonzero(todo)
            rows = self._alpha_rows(lb[sub])                                    # (S, k)
            res2 = optimise(cb, self.C[rows], self.d[rows], xl[sub], xu[sub],
                            [x[sub] for x in lo], [x[sub] for x in hi], iterations=iters,
                            lr_alpha=self.opt.lr_alpha, deadline=self.deadline,
                            clock=time.monotonic,
                            settled=self._refuted_by(self.row_conj[rows], need[sub]))
            lb = lb.copy()
            lam0 = lam0.copy()
            lb[sub[:, None], rows] = np.maximum(lb[sub[:, None], rows], res2.lb)
            lam0[sub[:, None], rows] = res2.pas.lam0
        return lb, lam0, zb

    def _depth(self, xl, xu) -> np.ndarray:
        """(B,) bisections that made each box from the case's: ``-sum log2(width / full)``."""
        return -np.log2(np.maximum((xu - xl) / self.full, 1e-300)).sum(axis=1)

    def _refuted_by(self, conj: np.ndarray, need: np.ndarray):
        """The ``settled`` test of ``optimise`` for boxes whose rows belong to the conjunctions
        ``conj`` (S, k) and whose conjunctions ``need`` (S, J) are still to be refuted: a box is
        settled once each of them has a row with a lower bound > 0 (the box is then dropped,
        and more alpha steps could not change that)."""
        def settled(best: np.ndarray, idx: np.ndarray) -> np.ndarray:
            pos = best > 0.0
            c = conj[idx]
            ok = np.ones(idx.size, dtype=bool)
            for j in range(self.J):
                ok &= ~need[idx, j] | (pos & (c == j)).any(axis=1)
            return ok
        return settled

    def _alpha_rows(self, lb: np.ndarray) -> np.ndarray:
        """(S, k) indices of the rows alpha optimises in each box: of every conjunction, the
        ``input_alpha_rows`` rows of highest CROWN lower bound ``lb`` (S, K) (a conjunction is
        refuted by its best row, so the rows far below it would cost time for nothing); all
        rows when ``input_alpha_rows`` is 0."""
        k = self.opt.input_alpha_rows
        parts = []
        for j in range(self.J):
            idx = np.flatnonzero(self.row_conj == j)
            if idx.size == 0:
                continue
            if k <= 0 or k >= idx.size:
                parts.append(np.broadcast_to(idx, (lb.shape[0], idx.size)))
            else:
                top = np.argsort(-lb[:, idx], axis=1, kind="stable")[:, :k]
                parts.append(idx[top])
        return np.concatenate(parts, axis=1)


def _pack(lo: list, hi: list) -> np.ndarray:
    """Every layer's bounds ``lo[i], hi[i]`` (B, n_i) as one array (B, 2, sum n_i)."""
    return np.stack([np.concatenate(lo, axis=1), np.concatenate(hi, axis=1)], axis=1)


def _unpack(z: np.ndarray, widths) -> tuple[list, list]:
    """The inverse of ``_pack`` (views into z)."""
    cut = np.cumsum((0,) + tuple(widths))
    return ([z[:, 0, a:b] for a, b in zip(cut[:-1], cut[1:])],
            [z[:, 1, a:b] for a, b in zip(cut[:-1], cut[1:])])


class _Stack:
    """The open boxes as a stack ("depth" order): ``pop(n)`` takes up to n boxes from the top
    (the most recently pushed first). An entry is a tuple of arrays (or None) sharing their
    first axis, one row per box."""

    def __init__(self, entry: tuple):
        self._entries = [entry]
        self._n = entry[0].shape[0]

    def __len__(self) -> int:
        return self._n

    def push(self, entry: tuple) -> None:
        self._entries.append(entry)
        self._n += entry[0].shape[0]

    def pop(self, n: int) -> tuple:
        parts = []
        got = 0
        while self._entries and got < n:
            entry = self._entries.pop()
            size = entry[0].shape[0]
            take = min(n - got, size)
            if take < size:
                self._entries.append(tuple(None if a is None else a[:-take] for a in entry))
                entry = tuple(None if a is None else a[-take:] for a in entry)
            parts.append(entry)
            got += take
        self._n -= got
        return tuple(None if parts[0][i] is None else np.concatenate([p[i] for p in parts])
                     for i in range(len(parts[0])))


class _BestFirst:
    """The open boxes, lowest bound first ("best" order), in O(log N) per box pushed or
    popped.

    A box's key is ``w = min_j lb_j`` over its open conjunctions j, with ``lb_j`` the best
    lower bound of conjunction j's rows (``conj_lb``; NaN counts as -inf, so a box whose bound
    is not a number is taken early, never left behind). ``pop(n)`` takes the n boxes of lowest
    ``(w, -t)``, t the order in which boxes were pushed (ties: the newest first), and returns
    them in decreasing ``(w, -t)`` (the lowest last); this is the order of a stable sort of all
    the queued boxes by decreasing w followed by taking the n at its end, done with a binary
    heap of ``(w, -t, row)`` instead of a sort per batch. The boxes are rows of arrays that
    grow by doubling; the rows of popped boxes are reused."""

    def __init__(self, entry: tuple, conj_lb):
        self._conj_lb = conj_lb
        self._heap: list = []
        self._t = 0
        self._cols = [None if a is None else np.empty((0,) + a.shape[1:], a.dtype)
                      for a in entry]
        self._free: list = []
        self.push(entry)

    def __len__(self) -> int:
        return len(self._heap)

    def _rows(self, k: int) -> np.ndarray:
        """k free row indices, the arrays grown (doubled) when too few are free."""
        if len(self._free) < k:
            cap = self._cols[0].shape[0]
            new = max(2 * cap, cap + k - len(self._free))
            self._cols = [None if c is None else
                          np.concatenate([c, np.empty((new - cap,) + c.shape[1:], c.dtype)])
                          for c in self._cols]
            self._free.extend(range(cap, new))
        rows = np.array(self._free[len(self._free) - k:], dtype=np.int64)
        del self._free[len(self._free) - k:]
        return rows

    def push(self, entry: tuple) -> None:
        if any((c is None) != (a is None) for c, a in zip(self._cols, entry)):
            raise ValueError("queued boxes must all carry the same fields")
        _, _, open_, lb = entry[:4]
        k = open_.shape[0]
        w = np.where(open_, self._conj_lb(lb), np.inf).min(axis=1)
        w = np.where(np.isnan(w), -np.inf, w)
        rows = self._rows(k)
        for c, a in zip(self._cols, entry):
            if c is not None:
                c[rows] = a
        for i, (wi, r) in enumerate(zip(w.tolist(), rows.tolist())):
            heapq.heappush(self._heap, (wi, -(self._t + i), r))
        self._t += k

    def pop(self, n: int) -> tuple:
        got = [heapq.heappop(self._heap)[2] for _ in range(min(n, len(self._heap)))]
        rows = np.array(got[::-1], dtype=np.int64)
        out = tuple(None if c is None else c[rows] for c in self._cols)
        self._free.extend(got)
        return out
