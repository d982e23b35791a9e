"""Prove nearly stable neurons of the root stable by branch and bound on the chain cut at
their layer ("bab-refine" of alpha-beta-CROWN with ReLU splits in place of a MILP solver).

The root's pre-activation bounds ``lo_k[n] < 0 < hi_k[n]`` leave a neuron unstable, and every
domain of every conjunction's search then carries its relaxation, or splits it. Many of them are
nearly stable: on mnist_fc 256x4 prop_13_0.05, 110 of the last ReLU layer's 124 unstable neurons
have ``min(-lo, hi) < 0.2 (hi - lo)``. For such a neuron the question "is ``z_k[n] > 0`` on the
whole input box?" (or ``< 0``, the nearer side) is a verification problem of the chain cut after
layer k, with one output row: ``ReluSplitSearch`` answers it with the case's root bounds of the
layers below, within a small time budget. "unsat" (no input with ``z_k[n] <= 0``) proves
``z_k[n] > 0`` everywhere, and ``lo_k[n] = 0`` is then a valid bound (``hi_k[n] = 0`` on the
other side): the neuron is stable in every domain of every search that starts from these bounds.
Any other answer changes nothing. A point found with the neuron on the other side ends its
search early (it is no counterexample of anything: only a proof that the neuron is unstable).

Layers go first to last: a layer's stabilised neurons tighten the relaxation of the layers above
(``ChainBounder.intermediate`` re-bounds them by CROWN, intersected with what they had) and the
searches of the next layer's neurons. With several processes the neurons of a layer are shared
among forked workers.

Searches begun before the stabilising go on with their open domains (``narrow``): a domain's
bounds are intersected with the stabilised root's, and a domain split against a proven side
holds no point (the proof is strict: no input puts the neuron on that side) and is dropped.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import signal
import time
from dataclasses import dataclass, replace

import numpy as np

from specs.spec import Case, Conjunction

from .bab_chain import ReluChain
from .bab_crown import ChainBounder, empty_domains
from .bab_relu import Domains, ReluSplitSearch

log = logging.getLogger(__name__)


def nearly_stable(lo: np.ndarray, hi: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """The unstable neurons (``lo < 0 < hi``, (n,) each) with ``min(-lo, hi) < ratio (hi - lo)``,
    nearest to stable first, and the side to prove: True where ``hi < -lo`` (prove ``z < 0``),
    False where ``z > 0`` is nearer."""
    unstable = np.flatnonzero((lo < 0.0) & (hi > 0.0))
    near = np.minimum(-lo[unstable], hi[unstable]) / (hi[unstable] - lo[unstable])
    pick = unstable[near < ratio][np.argsort(near[near < ratio], kind="stable")]
    return pick, hi[pick] < -lo[pick]


class _Unstable:
    """Replay of a stability search: the chain already found the neuron on the other side at
    the candidate (its margin is <= 0), which ends the search; nothing is confirmed on a
    model."""

    def __call__(self, X, case=None):
        return X[0]


@dataclass
class Stabilised:
    """What ``stabilise`` did: ``tried`` and ``stabilised`` neurons, and ``sign[k]`` (n_k,) of
    each layer k it tried: +1 where ``z_k > 0`` was proven on the whole box, -1 where
    ``z_k < 0`` was, 0 elsewhere (both strict: the search's bound was > 0)."""

    tried: int
    stabilised: int
    sign: dict


def stabilise(cb: ChainBounder, net, case, lo: list, hi: list, slopes: dict, options,
              deadline: float, processes: int = 1) -> Stabilised:
    """Tighten the root's bounds ``lo[k], hi[k]`` (1, n_k) in place: every nearly stable
    neuron (``nearly_stable`` with ``options.stabilise_ratio``) of every ReLU layer k >= 1
    whose side a ``ReluSplitSearch`` on the chain cut after layer k proves within
    ``options.stabilise_seconds`` gets ``lo_k[n] = 0`` (``z > 0`` proven) or ``hi_k[n] = 0``;
    the layers above are then re-bounded. A layer's searches stop early once fewer than
    ``options.stabilise_min_share`` of those tried (16 at least, nearest first) succeeded.
    Each layer may use a part of the time left to ``deadline`` in proportion to its
    candidates among those of the layers left."""
    chain = cb.chain
    xl, xu = case.input.lower[None, :], case.input.upper[None, :]
    layers = [k for k in cb.relu_layers if k >= 1]
    out = Stabilised(0, 0, {})
    sub_opt = replace(options, processes=1, stabilise_after=0.0)
    for pos, k in enumerate(layers):
        now = time.monotonic()
        if now >= deadline:
            break
        pick, below = nearly_stable(lo[k][0], hi[k][0], options.stabilise_ratio)
        if pick.size == 0:
            continue
        # the time left in proportion to the candidates of this layer and the ones above
        ahead = sum(nearly_stable(lo[j][0], hi[j][0], options.stabilise_ratio)[0].size
                    for j in layers[pos + 1:])
        stop = now + (deadline - now) * pick.size / (pick.size + ahead)
        sub = ReluChain(chain.W[:k + 1], chain.b[:k + 1], chain.relu[:k] + (False,), chain.n0)
        job = _Job(ChainBounder(sub), net, case, lo[:k + 1], hi[:k + 1],
                   {j: s for j, s in slopes.items() if j < k}, sub_opt, stop)
        proven, tried = _run_jobs(job, pick, below, processes)
        out.tried += tried
        out.stabilised += int(proven.sum())
        lo[k][0, pick[proven & ~below]] = 0.0
        hi[k][0, pick[proven & below]] = 0.0
        out.sign[k] = np.zeros(lo[k].shape[1], dtype=np.int8)
        out.sign[k][pick[proven]] = np.where(below[proven], -1, 1)
        log.info("stabilise: layer %d, %d of the nearest %d of %d nearly stable neurons "
                 "proven stable in %.1f s", k, int(proven.sum()), tried, pick.size,
                 time.monotonic() - now)
        if proven.any() and k + 1 < cb.L - 1:
            cb.intermediate(xl, xu, lo, hi, start=k + 1, slopes=slopes)
    return out


def narrow(dom: Domains, lo: list, hi: list, sign: dict) -> tuple[Domains | None, float]:
    """Open domains of a search begun before the root was stabilised, carried over to the
    stabilised root bounds ``lo, hi`` (1, n_i) and signs (``Stabilised.sign``).

    A domain lies in the root's box, so both its bounds and the root's hold on it: they are
    intersected. A domain holds no point when some ``lo > hi``, or when it is split against a
    proven sign (``z <= 0`` where ``z > 0`` was proven, or ``z >= 0`` where ``z < 0`` was): it
    is dropped. A domain whose next split (``choice``) is a neuron now stable gets the unstable
    one of largest ``-lo hi / (hi - lo)`` instead (none left: -1). Returns the domains kept
    (None if none) and the share of the split tree dropped, ``sum 2^-depth``."""
    for i in range(len(dom.lo)):
        dom.lo[i] = np.maximum(dom.lo[i], lo[i])
        dom.hi[i] = np.minimum(dom.hi[i], hi[i])
    gone = empty_domains(dom.lo, dom.hi)
    for i, s in sign.items():
        gone |= (dom.split[i] * s[None, :] < 0).any(axis=1)
    dropped = float(np.ldexp(1.0, -dom.depth()[gone]).sum())
    keep = np.flatnonzero(~gone)
    if keep.size == 0:
        return None, dropped
    dom = dom.take(keep)
    for i in dom.split:  # (a domain without a choice has no unstable neuron: nor has it now)
        q = np.flatnonzero(dom.choice[:, 0] == i)
        n = dom.choice[q, 1]
        for r in q[(dom.lo[i][q, n] >= 0.0) | (dom.hi[i][q, n] <= 0.0)]:
            dom.choice[r] = _widest(dom, r)
    return dom, dropped


def _widest(dom: Domains, q: int) -> tuple[int, int]:
    """(layer, neuron) of domain q's unsplit unstable neuron of largest ``-lo hi / (hi - lo)``
    (the height of its triangle relaxation), or (-1, -1) when none is left."""
    best, choice = 0.0, (-1, -1)
    for i, s in dom.split.items():
        lo, hi = dom.lo[i][q], dom.hi[i][q]
        free = np.flatnonzero((lo < 0.0) & (hi > 0.0) & (s[q] == 0))
        if free.size == 0:
            continue
        h = -lo[free] * hi[free] / (hi[free] - lo[free])
        j = int(np.argmax(h))
        if h[j] > best:
            best, choice = float(h[j]), (i, int(free[j]))
    return choice


class _Job:
    """One layer's stability searches: the cut chain's bounder, the root bounds of its layers
    and slopes, and the time they may take (``stop``)."""

    def __init__(self, cb, net, case, lo, hi, slopes, options, stop):
        self.cb, self.net, self.case = cb, net, case
        self.lo, self.hi, self.slopes = lo, hi, slopes
        self.options, self.stop = options, stop

    def prove(self, n: int, below: bool) -> bool:
        """True when ``z[n] < 0`` (``below``) or ``z[n] > 0`` holds on the whole box."""
        now = time.monotonic()
        if now >= self.stop:
            return False
        row = np.zeros((1, self.lo[-1].shape[1]))
        row[0, n] = -1.0 if below else 1.0
        # the unsafe set row . z <= 0: z >= 0 when proving z < 0, z <= 0 when proving z > 0
        case = Case(self.case.input, (Conjunction(row, np.zeros(1)),))
        ReluSplitSearch.give_root_bounds(self.cb, case, True, self.lo, self.hi, self.slopes)
        search = ReluSplitSearch(self.cb, self.net, case, 0, [0], _Unstable(), self.options,
                                 min(self.stop, now + self.options.stabilise_seconds), {})
        return search.run() == "unsat"


_JOB: _Job | None = None  # the layer's job, inherited by the forked workers

#: candidates of a layer tried before its share of proofs may end it
TRIAL = 16


def _hopeless(proven: np.ndarray, tried: int, min_share: float) -> bool:
    """True when the first ``tried`` (>= ``TRIAL``) candidates, the nearest to stable, hold
    fewer than ``min_share`` proofs: the farther ones would fare worse."""
    return tried >= TRIAL and proven[:tried].sum() < min_share * tried


def _prove_one(arg) -> bool:
    return _JOB.prove(*arg)


def _run_jobs(job: _Job, pick: np.ndarray, below: np.ndarray,
              processes: int) -> tuple[np.ndarray, int]:
    """(len(pick),) bool: the neurons ``job`` proved stable, and how many were tried, in order
    until ``_hopeless``; on ``processes`` forked workers when more than one (a daemonic
    process, itself a worker, runs them in turn). A worker that dies or does not answer by the
    job's deadline ends the layer: its neurons stay unproven."""
    global _JOB
    proven = np.zeros(pick.size, dtype=bool)
    args = list(zip(pick.tolist(), below.tolist()))
    pool = None
    if processes > 1 and pick.size > 1 and not mp.current_process().daemon:
        _JOB = job
        # Ctrl-C is the parent's: the workers ignore it
        pool = mp.get_context("fork").Pool(min(processes, pick.size), initializer=signal.signal,
                                           initargs=(signal.SIGINT, signal.SIG_IGN))
        results = pool.imap(_prove_one, args)
    tried = 0
    try:
        for q, (n, b) in enumerate(args):
            if pool is None:
                proven[q] = job.prove(n, b)
            else:
                wait = max(job.stop - time.monotonic(), 0.0) + job.options.stabilise_seconds + 5
                try:
                    proven[q] = results.next(timeout=wait)
                except (mp.TimeoutError, StopIteration):
                    log.warning("stabilise: a worker did not answer; its neurons stay unstable")
                    break
            tried = q + 1
            if _hopeless(proven, tried, job.options.stabilise_min_share):
                break
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
            _JOB = None
    return proven, tried
