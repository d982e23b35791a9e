"""ReLU-split branch and bound (beta-CROWN style) for inputs too large to split.

A *domain* is the case's box with split constraints on some ReLUs (``z >= 0`` or ``z <= 0``),
its pre-activation bounds, and the slopes (alpha) and split multipliers (beta) of its last
bound. The search keeps a stack of open domains. Each round pops a batch, splits every domain on
one unstable neuron chosen by ``branching`` into two children (the neuron's bounds clipped at
0), re-bounds the layers' neurons as ``relu_intermediate`` says (by default, once a domain is a
few splits deep: IBP, then CROWN for the still unstable ones with the slopes alpha-CROWN found
for each neuron at the root, with every split applied and the first layer's splits also as
half-spaces of the input, intersected with the parent's bounds: a child lies inside its parent),
then ascends alpha and beta of the final bound from the parent's values
(``bab_crown.optimise``). A child is dropped when some row of each of its open conjunctions has
a proven lower bound > 0, or when its bounds are empty (``lo > hi``: no input reaches it). The
children's bound minimisers x* are evaluated, and points whose margin is <= 0 are replayed.

With ``cut_slots`` > 0 hull cuts (``bab_cuts``) enter twice: at the root they tighten the
intermediate bounds every domain starts from, and open domains deep in the tree get rows that
cut off their bound's point and are bounded again with them.

Domains partition the case's input set (every point satisfies exactly one side of a split), so
the pair is refuted when no domain is left. A domain with no unstable neuron left whose bound is
still not positive cannot be split: the search then answers ``unknown`` (never unsat).

Progress: a domain with k split constraints is ``2^-k`` of the split tree, so the refuted
domains' shares add up to the part of the tree done (``refuted``; 1 when the pair is refuted).
An undecided search reports it: on a timeout it tells how far the proof got.
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass

import numpy as np

from ..bounds.lp import LPOptions, lp_bounds
from ..bounds.lp_program import LayerBounds, relu_program
from ..errors import UnsupportedOpError
from .bab_attack import pgd, region_minimiser
from .bab_case import CaseSearch
from .bab_crown import ChainBounder, empty_domains, optimise
from .bab_cuts import CutPool, CutSlots, refine_intermediate
from .branching import cap_layer_splits, fsb_choice, relu_scores

log = logging.getLogger(__name__)

#: domains per call of the costly per-batch steps (FSB, re-bounding): the deadline is checked
#: between calls (on mnist_fc 256x6 eps 0.05 one batch's re-bounding took up to 6.7 s)
CHUNK = 16


@dataclass
class Domains:
    """A batch of N domains: ``lo[i], hi[i]`` (N, n_i) for every layer; ``split``, ``alpha``,
    ``beta``: {relu layer: (N, n_i) / (N, K, n_i)}; ``lb`` (N, K) the best bound of every row;
    ``open`` (N, J) the conjunctions not yet refuted; ``choice`` (N, 2) the (layer, neuron) to
    split next; ``cuts`` the hull rows each uses (``bab_cuts.CutSlots``) or None."""

    lo: list
    hi: list
    split: dict
    alpha: dict
    beta: dict
    lb: np.ndarray
    open: np.ndarray
    choice: np.ndarray
    cuts: CutSlots | None = None

    def __len__(self) -> int:
        return self.lb.shape[0]

    def depth(self) -> np.ndarray:
        """(N,) the number of split constraints of every domain."""
        d = np.zeros(len(self), dtype=np.int64)
        for s in self.split.values():
            d += np.count_nonzero(s, axis=1)
        return d

    def take(self, idx) -> "Domains":
        return Domains([a[idx] for a in self.lo], [a[idx] for a in self.hi],
                       {k: v[idx] for k, v in self.split.items()},
                       {k: v[idx] for k, v in self.alpha.items()},
                       {k: v[idx] for k, v in self.beta.items()},
                       self.lb[idx], self.open[idx], self.choice[idx],
                       None if self.cuts is None else self.cuts.take(idx))

    @staticmethod
    def concat(parts: list["Domains"]) -> "Domains":
        if len(parts) == 1:
            return parts[0]
        p0 = parts[0]
        cat = np.concatenate
        return Domains([cat([p.lo[i] for p in parts]) for i in range(len(p0.lo))],
                       [cat([p.hi[i] for p in parts]) for i in range(len(p0.hi))],
                       {k: cat([p.split[k] for p in parts]) for k in p0.split},
                       {k: cat([p.alpha[k] for p in parts]) for k in p0.alpha},
                       {k: cat([p.beta[k] for p in parts]) for k in p0.beta},
                       cat([p.lb for p in parts]), cat([p.open for p in parts]),
                       cat([p.choice for p in parts]),
                       None if p0.cuts is None else CutSlots.concat([p.cuts for p in parts]))


@dataclass
class Portion:
    """Open domains one search gives another process (``ReluSplitSearch.give``), with the
    hull rows they use (``CutPool.export``; None without cuts)."""

    domains: Domains
    rows: dict | None


class ReluSplitSearch(CaseSearch):
    """ReLU-split search over one case and its open conjunctions. ``run()`` returns "unsat",
    "sat" (``self.ce`` set), "timeout" or "unknown"; ``run(pause_at)`` also "paused", and a
    later ``run()`` goes on from there."""

    def __init__(self, cb: ChainBounder, net, case, case_index: int, conj: list[int], replay,
                 options, deadline: float, stats: dict, method: str = "auto"):
        self.cb, self.net, self.case, self.ci = cb, net, case, case_index
        self.replay, self.opt, self.deadline, self.stats = replay, options, deadline, stats
        self.method = method
        self.optimised = method in ("auto", "alpha-crown")
        self._set_rows([case.unsafe[j].C for j in conj], [case.unsafe[j].d for j in conj])
        self.xl0 = case.input.lower[None, :]
        self.xu0 = case.input.upper[None, :]
        self.ce = None
        self.stuck = False
        #: the root's intermediate slopes for re-bounding (``root_bounds``), when used
        self.slopes = None
        #: the share of the split tree refuted so far (a domain k splits deep is 2^-k of it)
        self.refuted = 0.0
        #: the open domains (None until the root is bounded) and how many they are
        self.stack: list | None = None
        #: hull cuts of the final bound (``bab_cuts``), made at the root when used
        self.pool: CutPool | None = None
        self.pool_limit = options.cut_pool_max
        self.queued = 0

    # -- sharing the open domains with another process -----------------------------------------
    def give(self, fraction: float = 0.5, count: bool = True) -> Portion:
        """Take ``fraction`` of the queued domains (at least one) off the bottom of the stack,
        the oldest (the largest subtrees), for another process to go on with (``part``).
        This search then no longer covers them: its ``refuted`` and a later "unsat" are about
        the domains it kept. ``count``: add them to ``stats["domains_given"]``."""
        n = min(self.queued, max(1, int(round(self.queued * fraction))))
        dom = _pop(self.stack, n, bottom=True)
        got = len(dom)
        self.queued -= got
        rows = None
        if dom.cuts is not None:
            dom.cuts, rows = self.pool.export(dom.cuts)
        if count:
            self.stats["domains_given"] = self.stats.get("domains_given", 0) + got
        return Portion(dom, rows)

    def left(self) -> Portion | None:
        """All its open domains (``give`` of the whole queue, not counted as given), to go on
        with later (``part``); None when it has none to go on with: the root was never bounded,
        or a domain that could not be split left the queue (``stuck``)."""
        if self.stack is None or self.stuck or self.queued == 0:
            return None
        return self.give(1.0, count=False)

    def part(self, portion: Portion) -> "ReluSplitSearch":
        """A search of the same pair that goes on with the domains another process gave
        (``give``) instead of the root; its ``refuted`` counts from 0 (the parts' shares add
        up)."""
        new = copy.copy(self)
        lo, hi, slopes = self.root_bounds(self.cb, self.case, self.opt, self.optimised,
                                          self.deadline)
        new.slopes = slopes if self.opt.rebound_slopes else None
        new.pool = None
        if portion.rows is not None:
            new.pool = self._empty_pool(lo, hi)
            new.pool.load(portion.rows)
        new.pool_limit = self.opt.cut_pool_max
        new.ce, new.stuck, new.refuted = None, False, 0.0
        new.stack = [portion.domains]
        new.queued = len(portion.domains)
        return new

    # -- helpers ------------------------------------------------------------------------------
    def _empty_pool(self, lo: list, hi: list) -> CutPool:
        """A pool of hull rows over the root: its pre-activation bounds ``lo, hi`` (1, n_i)."""
        return CutPool(self.cb, self.xl0[0], self.xu0[0], [a[0] for a in lo],
                       [a[0] for a in hi], self.opt.cut_slots)

    def _boxes(self, n: int):
        """The case's box repeated for n domains."""
        return np.repeat(self.xl0, n, axis=0), np.repeat(self.xu0, n, axis=0)

    def _descend_from(self, X: np.ndarray, lb: np.ndarray, open_: np.ndarray) -> None:
        """PGD on the chain from the bound minimisers of the weakest subproblems (lowest
        bounds first); raises ``_Found`` when a replayed point violates the property."""
        n = min(self.opt.tree_attack_starts, X.shape[0])
        if n <= 0 or self.opt.tree_attack_steps <= 0:
            return
        order = np.argsort(lb)[:n]
        for j in range(self.J):
            rows = self.row_conj == j
            sel = order[open_[order, j]]
            if sel.size == 0 or not rows.any():
                continue
            P, m = pgd(self.cb.chain, X[sel], self.xl0[0], self.xu0[0], self.C[rows],
                       self.d[rows], steps=self.opt.tree_attack_steps)
            self.stats["tree_attack_starts"] = self.stats.get("tree_attack_starts", 0) + n
            hit = m <= 0.0
            if hit.any() and self._check_points(P[hit], open_[sel][hit]):
                raise _Found

    def _finish(self, dom: Domains, pas, xl, xu) -> Domains | None:
        """Refute, check the bound minimisers, and choose the next split of freshly bounded
        domains; returns the open ones (None if none). Raises ``_Found`` on a counterexample."""
        dom.open = dom.open & (self._conj_lb(dom.lb) <= 0.0)
        rows = dom.open[:, self.row_conj]
        b, k = np.nonzero(rows)
        X = np.where(pas.lam0[b, k] > 0.0, xl[b], xu[b])
        if self._check_points(X, dom.open[b]):
            raise _Found
        self._descend_from(X, dom.lb[b, k], dom.open[b])
        keep = np.flatnonzero(dom.open.any(axis=1))
        if keep.size == 0:
            return None
        sub = dom.take(keep)
        sub_rows = sub.open[:, self.row_conj]
        sub_pas = pas.take(keep)
        scores = relu_scores(self.cb, sub_pas, sub.lo, sub.hi, sub.alpha, sub_rows)
        cap_layer_splits(scores, sub.split, self.opt.relu_layer_cap)
        sub.choice = _best_scored(scores, len(sub))
        view, mu = self._cut_args(sub)
        if self.opt.branching == "fsb":
            # in chunks, so that a batch stops at the deadline (the rest keep the best score)
            for c in range(0, len(sub), CHUNK):
                if time.monotonic() >= self.deadline:
                    break
                q = np.arange(c, min(c + CHUNK, len(sub)))
                xs, xus = self._boxes(q.size)
                sub.choice[q] = fsb_choice(
                    self.cb, sub_pas.take(q), {i: v[q] for i, v in scores.items()},
                    [a[q] for a in sub.lo], [a[q] for a in sub.hi],
                    {i: a[q] for i, a in sub.alpha.items()},
                    {i: b[q] for i, b in sub.beta.items()},
                    {i: v[q] for i, v in sub.split.items()}, xs, xus, sub_rows[q],
                    self.opt.fsb_candidates, self.opt.fsb_per_layer,
                    None if view is None else view.take(q),
                    None if mu is None else {k: m[q] for k, m in mu.items()})
        return sub

    def _cut_args(self, dom: Domains):
        """(cut view, multipliers) of the domains' hull rows for a bound, or (None, None) when
        they have none."""
        if dom.cuts is None or all((ix < 0).all() for ix in dom.cuts.idx.values()):
            return None, None
        return self.pool.view(dom.cuts.idx), dom.cuts.mu

    def _cut_rebound(self, dom: Domains, pas, iterations: int) -> None:
        """Tighten the open domains at least ``cut_depth`` splits deep (above, beta-CROWN alone
        refutes faster) with hull cuts: rows that cut off the point the best open row's lines
        pick in every ReLU layer (``CutPool.separate``) go into the domains' free slots, and the
        final bound is ascended again with them (alpha, beta, mu warm-started). Updates ``dom``
        and ``pas`` in place; children inherit the rows and multipliers."""
        open_ = dom.open & (self._conj_lb(dom.lb) <= 0.0)
        sel = np.flatnonzero(open_.any(axis=1) & (dom.depth() >= self.opt.cut_depth))
        # in chunks: the deadline is checked between them
        for c in range(0, sel.size, 2 * CHUNK):
            if time.monotonic() >= self.deadline:
                return
            self._cut_rebound_some(dom, pas, iterations, sel[c:c + 2 * CHUNK], open_)

    def _cut_rebound_some(self, dom: Domains, pas, iterations: int, sel: np.ndarray,
                          open_: np.ndarray) -> None:
        """``_cut_rebound`` of the domains ``sel`` (their open conjunctions ``open_[sel]``)."""
        sub = dom.take(sel)
        sub_pas = pas.take(sel)
        xl, xu = self._boxes(sel.size)
        view, _ = self._cut_args(sub)
        points: dict = {}
        self.cb.gradients(self.cb.L - 1, sub_pas, xl, xu, sub.alpha, sub.split, cuts=view,
                          points=points)
        rows_open = open_[sel][:, self.row_conj]
        row = np.argmax(np.where(rows_open, sub.lb, -np.inf), axis=1)
        b = np.arange(sel.size)
        for k, (below, v) in points.items():
            pt, rows, viol = self.pool.separate(k, below[b, row], v[b, row], self.opt.cut_slots)
            sub.cuts.fill(k, pt, rows, viol)
        view, mu = self._cut_args(sub)
        if view is None:
            return
        res = self._optimise(sub, xl, xu, iterations, view, mu)
        dom.lb[sel] = np.maximum(sub.lb, res.lb)
        for i in self.cb.relu_layers:
            dom.alpha[i][sel] = res.alpha[i]
            if res.beta.get(i) is not None:
                dom.beta[i][sel] = res.beta[i]
        for k in dom.cuts.idx:
            dom.cuts.idx[k][sel] = sub.cuts.idx[k]
            dom.cuts.mu[k][sel] = res.mu[k] if k in res.mu else sub.cuts.mu[k]
        pas.put(sel, res.pas)
        self.stats["cut_rebounds"] = self.stats.get("cut_rebounds", 0) + sel.size

    def _branch(self, par: Domains) -> Domains:
        """Two children per domain: its chosen neuron inactive (first half), active (second)."""
        kids = Domains.concat([par, par])
        N = len(par)
        layer = np.concatenate([par.choice[:, 0], par.choice[:, 0]])
        nrn = np.concatenate([par.choice[:, 1], par.choice[:, 1]])
        sign = np.concatenate([np.full(N, -1.0), np.full(N, 1.0)])
        for i in np.unique(layer):
            r = np.flatnonzero(layer == i)
            c = nrn[r]
            kids.split[i][r, c] = sign[r]
            lo, hi = kids.lo[i], kids.hi[i]
            lo[r, c] = np.where(sign[r] > 0, np.maximum(lo[r, c], 0.0), lo[r, c])
            hi[r, c] = np.where(sign[r] < 0, np.minimum(hi[r, c], 0.0), hi[r, c])
        return kids

    def _bound(self, dom: Domains, start: int, iterations: int):
        """Re-bound the layers from ``start`` on and optimise the final bound; updates ``dom``
        (bounds, lb, alpha, beta, open) and returns (pass of the final bound, xl, xu)."""
        cb = self.cb
        N = len(dom)
        xl, xu = self._boxes(N)
        ri = self.opt.relu_intermediate
        if ri == "crown" or (ri == "first" and start <= 1):
            cb.intermediate(xl, xu, dom.lo, dom.hi, split=dom.split, start=start,
                            slopes=self.slopes)
        elif ri == "deep":
            self._rebound_deep(dom, xl, xu)
        empty = empty_domains(dom.lo, dom.hi)
        view, mu = self._cut_args(dom)
        res = self._optimise(dom, xl, xu, iterations if self.optimised else 0, view, mu)
        dom.lb = np.maximum(dom.lb, res.lb)
        if view is not None:
            dom.cuts.mu = res.mu
        dom.alpha = res.alpha
        for i in cb.relu_layers:
            b = res.beta.get(i)
            dom.beta[i] = b if b is not None else np.zeros_like(res.alpha[i])
        dom.open[empty] = False
        if self.pool is not None:
            self._cut_rebound(dom, res.pas, iterations)
        self.stats["bound_calls"] = self.stats.get("bound_calls", 0) + 1
        self.stats["domains"] = self.stats.get("domains", 0) + N
        return res.pas, xl, xu

    def _optimise(self, dom: Domains, xl, xu, iterations: int, view, mu):
        """``bab_crown.optimise`` of the domains' final bound from their alpha and beta (and
        hull rows ``view`` with multipliers ``mu``, or None), until the deadline; a domain
        stops iterating once each of its open conjunctions has a row proven > 0."""
        return optimise(self.cb, self.C, self.d, xl, xu, dom.lo, dom.hi, split=dom.split,
                        alpha=dom.alpha or None, beta=dom.beta or None, iterations=iterations,
                        lr_alpha=self.opt.lr_alpha, lr_beta=self.opt.lr_beta,
                        deadline=self.deadline, clock=time.monotonic,
                        settled=lambda best, idx: (~dom.open[idx]
                                                   | (self._conj_lb(best) > 0.0)).all(axis=1),
                        cuts=view, mu=mu, lr_mu=self.opt.lr_mu)

    def _rebound_deep(self, dom: Domains, xl, xu) -> None:
        """Re-bound the layers (IBP, then CROWN of the unstable neurons, with all splits
        applied) of the domains at least ``relu_intermediate_depth`` splits deep, in place, in
        chunks until the deadline (the rest keep their bounds, which hold as they are).

        A child one split deeper than that was re-bounded as its parent, and one pass is a
        fixed point: layer j's CROWN bound depends only on the bounds of the layers below j.
        The child's split in layer k changes none of the layers <= k (layer k only by the
        clip), so its pass starts at k + 1; a child exactly at the depth starts at layer 1."""
        depth = dom.depth()
        thr = self.opt.relu_intermediate_depth
        deep = np.flatnonzero(depth >= thr)
        first = np.where(depth[deep] > thr, dom.choice[deep, 0] + 1, 1)
        for s in np.unique(first):
            if s > self.cb.relu_layers[-1]:
                continue  # split in the last ReLU layer: no layer above it to re-bound
            group = deep[first == s]
            for c in range(0, group.size, CHUNK):
                if time.monotonic() >= self.deadline:
                    return
                q = group[c:c + CHUNK]
                lo = [a[q] for a in dom.lo]
                hi = [a[q] for a in dom.hi]
                self.cb.intermediate(xl[q], xu[q], lo, hi,
                                     split={k: v[q] for k, v in dom.split.items()},
                                     start=int(s), slopes=self.slopes)
                for i in range(len(lo)):
                    dom.lo[i][q] = lo[i]
                    dom.hi[i][q] = hi[i]

    # -- the loop -----------------------------------------------------------------------------
    def run(self, pause_at: float | None = None) -> str:
        """Search until the answer or the deadline. With ``pause_at`` (a ``time.monotonic()``
        value) the search stops between batches once it has passed (after one batch at least)
        and returns "paused"; the open domains stay, and the next ``run`` goes on with them (the
        root's bounds are made in full in any case)."""
        if self.empty_conj.any():
            X = 0.5 * (self.xl0 + self.xu0)
            return "sat" if self._check_points(X, np.ones((1, self.J), bool)) else "unknown"
        try:
            if self.stack is None:
                status = self._root()
                if status is not None:
                    return status
            return self._run(pause_at)
        except _Found:
            return "sat"

    def _root(self) -> str | None:
        """Bound the root domain: "unsat" when that refutes it, else None (stack set)."""
        cb, opt = self.cb, self.opt
        lo, hi, slopes = self.root_bounds(cb, self.case, opt, self.optimised, self.deadline)
        self.slopes = slopes if opt.rebound_slopes else None
        lo = [a.copy() for a in lo]
        hi = [a.copy() for a in hi]
        K = self.C.shape[0]
        cuts = None
        if self.optimised and opt.cut_slots > 0:
            self.pool = self._empty_pool(lo, hi)
            cuts = self.pool.empty_slots(1, K)
        root = Domains(lo, hi, {i: np.zeros((1, lo[i].shape[1])) for i in cb.relu_layers},
                       {}, {}, np.full((1, K), -np.inf), np.ones((1, self.J), dtype=bool),
                       np.zeros((1, 2), dtype=np.int64), cuts)
        pas, xl, xu = self._bound(root, cb.L, opt.root_iterations)
        root = self._finish(root, pas, xl, xu)
        self.stack = [] if root is None else [root]
        self.queued = len(self.stack)
        if root is None:
            self.refuted = 1.0
            return "unsat"
        return None

    def _run(self, pause_at: float | None) -> str:
        opt = self.opt
        stack = self.stack
        rounds = 0
        while stack:
            now = time.monotonic()
            if now >= self.deadline:
                return "timeout"
            if rounds > 0 and pause_at is not None and now >= pause_at:
                return "paused"  # after one batch at least: every run makes progress
            par = _pop(stack, opt.relu_batch)
            self.queued -= len(par)
            stuck = par.choice[:, 0] < 0
            if stuck.any():
                self._unsplittable(par.take(np.flatnonzero(stuck)))
                par = par.take(np.flatnonzero(~stuck))
                if len(par) == 0:
                    continue
            kids = self._branch(par)
            start = int(par.choice[:, 0].min()) + 1
            pas, xl, xu = self._bound(kids, start, opt.iterations)
            weight = np.ldexp(1.0, -kids.depth())
            kids = self._finish(kids, pas, xl, xu)
            done = weight.sum() - (0.0 if kids is None else np.ldexp(1.0, -kids.depth()).sum())
            self.refuted += float(done)
            rounds += 1
            if log.isEnabledFor(logging.DEBUG) and rounds % 10 == 0:
                log.debug("relu split: %d domains bounded, %d queued, %.4f of the tree "
                          "refuted, worst bound %.4g", self.stats["domains"], self.queued,
                          self.refuted,
                          float(self._conj_lb(par.lb).max(axis=1).min()))
            if kids is None:
                continue
            stack.append(kids)
            self.queued += len(kids)
            if self.pool is not None and self.pool.size > self.pool_limit:
                self.pool.compact([d.cuts for d in stack])
                # rows the queued domains use stay: compact again only once the pool doubled
                self.pool_limit = max(opt.cut_pool_max, 2 * self.pool.size)
            self.stats["max_queue"] = max(self.stats.get("max_queue", 0), self.queued)
            if self.queued > opt.max_domains:
                log.info("relu split: more than %d domains queued", opt.max_domains)
                return "unknown"
        return "unknown" if self.stuck else "unsat"

    @staticmethod
    def root_bounds(cb: ChainBounder, case, opt, optimised: bool, deadline: float):
        """Pre-activation bounds of the case's box (shared by all its conjunctions): IBP, CROWN,
        then (when ``optimised``) alpha-CROWN for the inner layers with ``root_iterations``
        steps, given at most ``root_share`` of the time left. Cached on the case object's id."""
        key = (id(case), optimised)
        cache = cb.__dict__.setdefault("_root_cache", {})
        if key in cache:
            return cache[key]
        xl, xu = case.input.lower[None, :], case.input.upper[None, :]
        slopes: dict = {}
        lo, hi = cb.ibp(xl, xu)
        cb.intermediate(xl, xu, lo, hi)
        if optimised and opt.root_iterations > 0:
            now = time.monotonic()
            stop = now + opt.root_share * max(deadline - now, 0.0)
            cb.optimise_intermediate(xl, xu, lo, hi, iterations=opt.root_iterations,
                                     lr=opt.lr_alpha, deadline=stop, clock=time.monotonic,
                                     slopes=slopes)
            if opt.cut_slots > 0:
                refine_intermediate(cb, xl, xu, lo, hi, slopes, opt.cut_slots,
                                    iterations=opt.root_iterations, deadline=stop,
                                    clock=time.monotonic)
        cache[key] = (lo, hi, slopes)
        return lo, hi, slopes

    @staticmethod
    def give_root_bounds(cb: ChainBounder, case, optimised: bool, lo, hi, slopes) -> None:
        """Make ``(lo, hi, slopes)`` the root bounds ``root_bounds`` returns for ``case`` (the
        only case in ``cb``'s cache then): bounds known valid on its box, e.g. a larger
        chain's (``bab_stabilise``)."""
        cache = cb.__dict__.setdefault("_root_cache", {})
        cache.clear()
        cache[(id(case), optimised)] = (lo, hi, slopes)

    def _unsplittable(self, dom: Domains) -> None:
        """Domains without an unstable neuron: the relaxation is exact up to the split
        multipliers; optimise them longer, and if still open the search cannot finish."""
        pas, xl, xu = self._bound(dom, self.cb.L, 5 * max(self.opt.iterations, 10))
        left = self._finish(dom, pas, xl, xu)
        if left is None:
            return
        # the chain is affine on each of these regions: the LP minimiser is the candidate
        for q in range(len(left)):
            if (left.lo[-1][q] > left.hi[-1][q]).any():
                continue
            pattern = {i: np.where(left.lo[i][q] >= 0.0, 1.0, -1.0) for i in self.cb.relu_layers}
            for j in np.flatnonzero(left.open[q]):
                rows = self.row_conj == j
                x = region_minimiser(self.cb.chain, pattern, self.xl0[0], self.xu0[0],
                                     self.C[rows], self.d[rows])
                if x is not None and self._check_points(x[None, :], left.open[q:q + 1]):
                    raise _Found
        left = self._lp_refute(left)
        if left is None:
            return
        log.info("relu split: %d domains with every neuron fixed stay open", len(left))
        self.stuck = True

    def _lp_refute(self, dom: Domains) -> Domains | None:
        """The domains not refuted by their triangle LP (``bounds.lp.lp_bounds`` over the
        domain's bounds and splits, certified from the duals; +inf when a Farkas ray proves the
        region empty). With every neuron fixed the LP is exact, where beta ascent may still
        fall short (an empty region's bound grows only as fast as beta does)."""
        layers = self.cb.relu_layers
        try:
            prog = relu_program(self.net)
        except UnsupportedOpError:
            return dom
        if prog.sizes[1:] != tuple(dom.lo[i].shape[1] for i in layers):
            return dom
        xl, xu = self._boxes(len(dom))
        res = lp_bounds(self.net, xl, xu, self.C, self.d,
                        intermediate={name: LayerBounds(dom.lo[i], dom.hi[i])
                                      for name, i in zip(prog.pre_nodes, layers)},
                        options=LPOptions(upper=False),
                        splits={k: dom.split[i] for k, i in enumerate(layers, 1)})
        dom.lb = np.maximum(dom.lb, res.lower)
        dom.open = dom.open & (self._conj_lb(dom.lb) <= 0.0)
        keep = np.flatnonzero(dom.open.any(axis=1))
        return dom.take(keep) if keep.size else None


def _best_scored(scores: dict, N: int) -> np.ndarray:
    """(N, 2) the (layer, neuron) of best score of every domain; -1 where none is unstable."""
    choice = np.full((N, 2), -1, dtype=np.int64)
    best = np.full(N, -np.inf)
    for i, sc in scores.items():
        j = np.argmax(sc, axis=1)
        v = sc[np.arange(N), j]
        better = v > best
        choice[better, 0] = i
        choice[better, 1] = j[better]
        best = np.where(better, v, best)
    choice[~(best >= 0.0)] = -1  # no unstable neuron left
    return choice


class _Found(Exception):
    """A counterexample was confirmed (``ReluSplitSearch.ce``)."""


def _pop(stack: list, n: int, bottom: bool = False) -> Domains:
    """Up to n domains from the top of the stack (the newest), or from its bottom."""
    parts = []
    got = 0
    end = 0 if bottom else -1
    while stack and got < n:
        dom = stack.pop(end)
        take = min(n - got, len(dom))
        if take < len(dom):
            keep, out = ((np.arange(take, len(dom)), np.arange(take)) if bottom else
                         (np.arange(len(dom) - take), np.arange(len(dom) - take, len(dom))))
            stack.insert(0 if bottom else len(stack), dom.take(keep))
            dom = dom.take(out)
        parts.append(dom)
        got += take
    return Domains.concat(parts)
