"""Branch and bound: complete the proof (or find the counterexample) on the (case, conjunction)
pairs the incomplete bounds left open.

Two ways to split a problem into smaller ones whose bounds are tighter:

* **input split** (``bab_input``) for low-dimensional inputs (at most ``input_split_max_dim``
  values, e.g. ACAS Xu's 5): bisect the box along the dimension of largest score;
* **ReLU split** (``bab_relu``) otherwise: fix an unstable ReLU active (``z >= 0``) or inactive
  (``z <= 0``) in each child; the split constraints enter the bounds by clipping the neuron's
  bounds and through beta-CROWN's Lagrangian terms, optimised with the slopes. One search per
  open (case, conjunction) pair: each first gets a short slice (``relu_probe_share`` of the
  time), then each goes on where it paused, in order, so a counterexample in a late pair is
  not stuck behind an early one that holds out. With ``processes`` > 1 the searches run in
  that order on forked workers (``bab_parallel``).

Both bound subproblems in batches with the sound chain bounds of ``bab_crown`` (networks that
are chains of affine ops and ReLUs, ``bab_chain``); any other network gets ``unknown`` here.
A pair is refuted in a subproblem when some row of its conjunction has a proven lower bound
``> 0``; ``unsat`` needs every subproblem of every open pair refuted. ``sat`` is returned only
with a counterexample that the ``replay`` confirmed. At the deadline the answer is ``timeout``.
"""
from __future__ import annotations

import logging
import math
import multiprocessing as mp
import time
from dataclasses import dataclass

import numpy as np

from ..result import Result
from .bab_chain import as_relu_chain
from .bab_crown import ChainBounder
from .bab_input import InputSplitSearch
from .bab_parallel import ParallelOutcome, run_parallel
from .bab_relu import Portion, ReluSplitSearch
from .bab_stabilise import narrow, stabilise

log = logging.getLogger(__name__)


@dataclass
class BabOptions:
    """Tuning knobs of branch and bound, with their defaults."""

    #: "auto" (input split when the input has at most ``input_split_max_dim`` values, else
    #: ReLU split), "input" or "relu"
    split: str = "auto"
    #: largest input size for which "auto" splits the input
    input_split_max_dim: int = 16
    #: boxes split per batch in input split (each is bisected along every candidate dimension
    #: and the children bounded together: the dimension whose children are best is kept); the
    #: tree of an unsat case does not depend on it, the cost per box does (ACAS Xu 3_3
    #: property 9: 128 boxes 1.56 s, 256 boxes 1.31 s CPU)
    input_batch: int = 256
    #: which boxes are split next: "best" (lowest bound first: finds counterexamples early)
    #: or "depth" (the most recent children first: least memory)
    input_order: str = "best"
    #: also bound averages of a conjunction's rows (``bab_input.mixture_rows``): "mean" (of
    #: all), "pairs" (of every pair, and of all) or "none"
    input_mixtures: str = "pairs"
    #: candidate dimensions per box (all when the input has no more values)
    input_lookahead: int = 8
    #: a dimension is not bisected while it is this many times narrower (relative to the
    #: case's box) than the widest one
    input_max_aspect: float = 64.0
    #: forward linear bounds filter the neurons CROWN bounds when the input has at most this
    #: many values
    forward_max_dim: int = 16
    #: alpha iterations on the boxes CROWN leaves open (input split; 0: CROWN only), once a
    #: box is at least ``input_alpha_depth`` bisections deep: with 10 instead of 20 the tree
    #: grows a little and the time falls (ACAS Xu 3_3 property 2: 321k -> 343k boxes, 11.7 ->
    #: 10.3 s CPU with batches of 256)
    input_alpha_iterations: int = 10
    input_alpha_depth: float = 12.0
    #: rows of each conjunction alpha optimises in a box: those of highest CROWN bound (0: all);
    #: on ACAS Xu property 2 the best row alone refutes where 3 rows do (4_2: the same 114k
    #: boxes; 3_3: 461k instead of 459k) at a third of the cost
    input_alpha_rows: int = 1
    #: ReLU-split subproblems bounded per batch (each yields two children)
    relu_batch: int = 64
    #: ReLU split with several open conjunctions: first give each search this share of the
    #: time (after its root), then let each go on in order; a counterexample in a later
    #: conjunction is then found early (mnist_fc 256x6 prop_1_0.05: conjunctions 7 and 8 fall
    #: to the search in 2.3 s, while 0-6 each hold out for minutes). 0, or no deadline: one
    #: after another
    relu_probe_share: float = 0.025
    #: ReLU split: "crown" re-bounds the neurons of the layers after the split (IBP, then
    #: CROWN for the unstable ones), "first" does so only after a split in the first ReLU
    #: layer, "deep" re-bounds every layer of the domains at least ``relu_intermediate_depth``
    #: splits deep, "none" keeps the parent's bounds (only the split neuron is clipped; the
    #: split reaches the final bound through beta). "none" bounds about ten times more
    #: subproblems per second than "first" on mnist_fc, but then a split of an early layer
    #: changes no later bound: with ``fsb_per_layer`` 2, "deep" from depth 6 proves 256x4
    #: prop_8_0.03 with 1.3k subproblems in 8.6 s where "none" left it open after 120 s
    relu_intermediate: str = "deep"
    relu_intermediate_depth: int = 6
    #: re-bound with the lower slopes alpha-CROWN found for each neuron at the root (else the
    #: adaptive ones): 60 s, share of the first open conjunction's tree refuted without / with:
    #: 256x4 prop_5_0.05 97.0% / done (2nd at 99.7%), prop_6_0.03 76.9% / 89.0%; 256x6
    #: prop_9_0.03 6.7% / 28.4%, prop_3_0.05 34.3% / done (2nd at 62.5%)
    rebound_slopes: bool = True
    #: alpha iterations at the root of ReLU split (intermediate and final bounds)
    root_iterations: int = 20
    #: most of the time left that the root's intermediate alpha-CROWN may take
    root_share: float = 0.25
    #: alpha/beta iterations per ReLU-split batch (warm-started from the parents); with 10 the
    #: deep subproblems of mnist_fc stall short of their bound (256x4 prop_3_0.05: 98.8% of
    #: conjunction 1's tree refuted after 14 s, still 98.8% at 120 s); with 30 it is unsat in 56 s
    iterations: int = 30
    #: Adam step sizes of the slopes (alpha) and split multipliers (beta)
    lr_alpha: float = 0.1
    lr_beta: float = 0.05
    #: ReLU branching: "babsr" (score only) or "fsb" (filtered smart branching: the best of
    #: the ``fsb_candidates`` top-scored neurons and the ``fsb_per_layer`` top-scored of every
    #: layer, by the bound of its two children). The scores favour the last layers: on mnist_fc
    #: 256x6 prop_7_0.03 the open domains had 43 splits in the last ReLU layer and none in the
    #: first two (25 and 34 unstable neurons) with the global top 4 alone. Per layer 2 / 4 / 8
    #: (120 s, 256x4): prop_11_0.05 unsat in 80 s / - / 22 s, prop_14_0.05 1st conjunction
    #: 84% refuted / 2nd 99.7% / unsat in 87 s; 8 costs more on easy ones (prop_8_0.03 8.6 s
    #: with 2, 16 s with 8)
    branching: str = "fsb"
    fsb_candidates: int = 4
    fsb_per_layer: int = 8
    #: a domain holding this many splits in one ReLU layer splits its other layers (while
    #: they have unstable neurons; ``branching.cap_layer_splits``; 0: no cap). FSB's estimate
    #: misses what an early split does to the later layers' bounds, and deep domains kept
    #: splitting the last layer. Seven hard 256x4 searches, 60 s each, one core: 2 / 4 / 2 /
    #: 4 unsat with no cap / 6 / 8 / 12 (prop_0_0.05 conjunction 5 unsat in 15-46 s with a
    #: cap, open without; prop_13_0.05 conjunction 0 refutes 90% of its tree without, 99.99%
    #: with 12); neutral on prop_6_0.03, prop_7_0.05 and two 256x6 searches (cap 8)
    relu_layer_cap: int = 12
    #: hull cuts (``bab_cuts``), rows per layer and bound (0: none). At the root they tighten
    #: the intermediate bounds (``refine_intermediate``); in the search, the open domains at
    #: least ``cut_depth`` splits deep get rows that cut off their bound's point and are
    #: bounded again with them (their children inherit the rows). ``lr_mu``: Adam step of the
    #: rows' multipliers. The pool is compacted to the rows the queued domains use once it
    #: holds more than ``cut_pool_max`` rows. 1 process, 120 s, without / with: 256x4
    #: prop_8_0.03 11.8 / 5.9 s, prop_11_0.05 16.5 / 5.9 s, prop_14_0.05 27.6 / 7.5 s, 256x6
    #: prop_7_0.03 8.9 / 4.5 s
    cut_slots: int = 32
    cut_depth: int = 12
    lr_mu: float = 0.05
    cut_pool_max: int = 100_000
    #: PGD starts (the bound minimisers of the weakest subproblems) and steps run after every
    #: batch, inside the case's box
    tree_attack_starts: int = 8
    tree_attack_steps: int = 20
    #: most candidate points replayed per check
    max_replay: int = 16
    #: processes for the ReLU-split searches when several (case, conjunction) pairs are open
    #: (``bab_parallel``: forked workers, each takes the next search, then open domains of the
    #: others' searches when ``share_work``); 1 runs them in this one
    processes: int = 1
    #: with several processes, a worker with no search left takes open domains from a busy one
    #: (``bab_parallel``): mnist_fc 256x4 prop_0_0.05 on 2 processes (one conjunction takes
    #: 86 s of the 137 s on one core all nine take) is unsat in 79 s instead of a timeout at
    #: 120 s
    share_work: bool = True
    #: give up (``unknown``) when more subproblems than this are queued (memory)
    max_domains: int = 2_000_000
    #: ReLU split: the searches first run for this share of the time; then the nearly stable
    #: neurons of the root's layers are proven stable (``bab_stabilise``; 0: never) and the
    #: pairs still open go on with their trees' open domains, narrowed to the new root bounds
    #: (``bab_stabilise.narrow``), or start again from them. Nearly stable: ``min(-lo, hi) <
    #: stabilise_ratio (hi - lo)``; each neuron's search may take ``stabilise_seconds``, all of
    #: them ``stabilise_share`` of the time left. mnist_fc 256x4 prop_10_0.05, conjunctions
    #: 3 / 5 / 8, 30 s each, one core: open at 100.0% / 99.86% / 100.0% from the plain root,
    #: unsat in 0.7 / 1.3 / 2.1 s after 29 of 78 neurons were proven stable (1 s each). With
    #: the trees kept, 2 processes, 120 s: unsat in 68.9 s with 0.5 s per neuron (19 proven),
    #: 39.9 s with 1 s (29 proven); 256x4 prop_13_0.05 65.7 / 52.6 s
    stabilise_after: float = 0.15
    stabilise_ratio: float = 0.25
    stabilise_seconds: float = 1.0
    stabilise_share: float = 0.3
    #: a layer's stabilising stops once fewer than this share of its nearest candidates (16
    #: at least) were proven: on 256x6 prop_1_0.05 (sat) 2 of 726 were, in 30% of the time
    stabilise_min_share: float = 0.1
    #: seed of the in-tree attacks
    seed: int = 0

    def __post_init__(self):
        if self.split not in ("auto", "input", "relu"):
            raise ValueError(f"unknown split {self.split!r}")
        if self.input_mixtures not in ("none", "mean", "pairs"):
            raise ValueError(f"unknown input_mixtures {self.input_mixtures!r}")
        if self.relu_intermediate not in ("none", "first", "deep", "crown"):
            raise ValueError(f"unknown relu_intermediate {self.relu_intermediate!r}")
        if self.branching not in ("babsr", "fsb"):
            raise ValueError(f"unknown branching {self.branching!r}")
        if self.relu_layer_cap < 0:
            raise ValueError(f"relu_layer_cap must be at least 0, not {self.relu_layer_cap}")
        if self.processes < 1:
            raise ValueError(f"processes must be at least 1, not {self.processes}")
        if not 0.0 <= self.stabilise_after < 1.0:
            raise ValueError(f"stabilise_after must be in [0, 1), not {self.stabilise_after}")


def split_kind(n_inputs: int, options: BabOptions | None = None) -> str:
    """What branch and bound splits for an input of ``n_inputs`` values: "input" or "relu"
    (``BabOptions.split``; "auto" splits inputs of at most ``input_split_max_dim`` values)."""
    opt = options if isinstance(options, BabOptions) else BabOptions()
    if opt.split != "auto":
        return opt.split
    return "input" if n_inputs <= opt.input_split_max_dim else "relu"


def branch_and_bound(net, spec, open_pairs, *, deadline, replay, method="auto", options=None,
                     progress=None) -> Result:
    """Decide the open (case index, conjunction index) pairs of ``spec`` on ``net``.

    ``deadline``: a ``time.monotonic()`` value; ``replay`` confirms candidate points;
    ``method``: "auto" or a forced bound method ("ibp", "crown", "alpha-crown"; alpha and beta
    are optimised only for "auto" and "alpha-crown"). Returns ``Result`` with status "sat"
    (replayed counterexample), "unsat" (every pair refuted), "timeout" or "unknown"; ``stats``
    counts subproblems and bound calls."""
    t0 = time.monotonic()
    opt = options if isinstance(options, BabOptions) else BabOptions()
    stats: dict = {"boxes": 0, "bound_calls": 0}
    chain = as_relu_chain(net)
    if chain is None:
        return Result("unknown", method="bab", stats=stats,
                      message="branch and bound handles chains of affine ops and ReLUs only")
    cb = ChainBounder(chain)
    split = split_kind(chain.n0, opt)
    stats["split"] = split
    by_case: dict[int, list[int]] = {}
    for ci, j in open_pairs:
        by_case.setdefault(int(ci), []).append(int(j))
    optimised = method in ("auto", "alpha-crown")  # alpha and beta ascended
    stabilising = (split == "relu" and opt.stabilise_after > 0.0 and math.isfinite(deadline)
                   and optimised)
    first_end = t0 + opt.stabilise_after * (deadline - t0) if stabilising else deadline

    def relu_search(ci: int, j: int, end: float) -> ReluSplitSearch:
        return ReluSplitSearch(cb, net, spec.cases[ci], ci, [j], replay, opt, end, stats, method)

    searches: list[tuple[int, list[int], object]] = []  # (case index, conjunctions, search)
    for ci in sorted(by_case):
        case, conj = spec.cases[ci], sorted(set(by_case[ci]))
        if split == "input":
            # one search for all conjunctions: a box is dropped once each is refuted in it
            searches.append((ci, conj, InputSplitSearch(cb, net, case, ci, conj, replay, opt,
                                                        deadline, stats, method)))
        else:
            # one search per conjunction (its rows only), sharing the case's root bounds
            searches += [(ci, [j], relu_search(ci, j, first_end)) for j in conj]
    if progress is not None:
        progress("branch and bound", 0.0)
    if split == "relu":  # made here with the whole time, not the first stage's
        for ci in by_case:
            ReluSplitSearch.root_bounds(cb, spec.cases[ci], opt, optimised, deadline)
    # ReLU split: a first pass gives each search a short slice (a counterexample may sit in any
    # conjunction), then each goes on from where it paused, in order
    slices = split == "relu" and len(searches) > 1 and math.isfinite(deadline)
    probe = opt.relu_probe_share * (deadline - t0) if slices else 0.0
    done: list[str | None] = [None] * len(searches)
    started = [False] * len(searches)
    ce, trees = _run_searches(cb, searches, opt, probe, first_end, replay, stats, done, started,
                              split, hand_back=stabilising)
    # the pairs the first stage's end cut short (not those left "unknown": stuck, or lost
    # with a worker that died, as out of memory, which trying again would likely repeat)
    again = [k for k, s in enumerate(done) if s in (None, "timeout")]
    if ce is None and stabilising and again and time.monotonic() < deadline:
        ce = _second_stage(cb, net, spec, searches, again, trees, relu_search, opt, probe,
                           deadline, replay, stats, done, started)
    if ce is not None:
        return Result("sat", counterexample=(ce.x, ce.y), method="bab",
                      seconds=time.monotonic() - t0, stats=stats,
                      message=f"{split} split found a counterexample")
    seconds = time.monotonic() - t0
    # a search that paused and did not get its turn again ran out of time too
    ran = [(x, d or "timeout") for x, d, st in zip(searches, done, started) if st]
    statuses = [s for _, s in ran]
    stable = ""
    if "stabilise_tried" in stats:
        stable = (f"; {stats['stabilise_stabilised']} of {stats['stabilise_tried']} nearly "
                  f"stable neurons proven stable")
    if all(s == "unsat" for s in statuses):
        return Result("unsat", method="bab", seconds=seconds, stats=stats,
                      message=f"{split} split refuted every open pair{stable}")
    status = "timeout" if "timeout" in statuses or time.monotonic() >= deadline else "unknown"
    if split == "input":
        return Result(status, method="bab", seconds=seconds, stats=stats,
                      message=f"input split: {', '.join(statuses)}")
    notes = []
    for (ci, group, search), s in ran:
        label = f"{group[0]}" if len(spec.cases) == 1 else f"{ci}:{group[0]}"
        # the parts' shares of a search shared between processes add up in floating point:
        # an undecided one never reads 100%
        share = "all" if s == "unsat" else share_percent(min(search.refuted, _BELOW_ONE))
        notes.append(f"{label} {share}" + (" (unknown)" if s == "unknown" else ""))
    return Result(status, method="bab", seconds=seconds, stats=stats,
                  message=f"relu split: {status}{stable}; split tree refuted per conjunction: "
                          f"{', '.join(notes)}")


def _second_stage(cb, net, spec, searches: list, again: list[int], trees: dict, relu_search,
                  opt, probe: float, deadline: float, replay, stats: dict, done: list,
                  started: list):
    """The ReLU-split searches ``again`` (indices into ``searches``) after the first stage:
    their cases' root bounds are stabilised, and each pair goes on with its first stage's open
    domains carried over to them (``_carry_over`` of ``trees[k]``), or starts again from the
    root (``relu_search(ci, j, deadline)``) when its tree did not come back whole. Updates
    ``done``, ``started`` and the searches' ``refuted``; returns the confirmed counterexample
    or None."""
    sign = {ci: _stabilise_root(cb, net, spec.cases[ci], opt, deadline, stats)
            for ci in sorted({searches[k][0] for k in again})}
    entries, mine, base = [], {}, {}  # mine[k]: the entries of pair k
    for k in again:
        ci, group, _ = searches[k]
        fresh = relu_search(ci, group[0], deadline)
        kept = _carry_over(trees.get(k), fresh, sign[ci])
        if kept is not None:
            stats["trees_kept"] = stats.get("trees_kept", 0) + 1
        base[k], parts = (0.0, [fresh]) if kept is None else kept
        mine[k] = range(len(entries), len(entries) + len(parts))
        entries += [(ci, group, x) for x in parts]
    status: list[str | None] = [None] * len(entries)
    ce, _ = _run_searches(cb, entries, opt, probe, deadline, replay, stats, status,
                          [False] * len(entries), "relu")
    for k in again:
        got = [status[e] for e in mine[k]]
        # no entry left: every open domain was proven empty
        done[k] = ("unsat" if all(x == "unsat" for x in got) else
                   "timeout" if any(x in (None, "timeout") for x in got) else "unknown")
        started[k] = True
        searches[k][2].refuted = base[k] + sum(entries[e][2].refuted for e in mine[k])
    return ce


def _run_searches(cb, searches, opt, probe: float, deadline: float, replay, stats: dict,
                  done, started, split: str, hand_back: bool = False):
    """Run ``searches`` until ``deadline``: on forked workers with ReLU split, several
    searches and ``opt.processes`` > 1 (not from a daemonic process, which may not fork),
    else in turn. Fills ``done`` and ``started``; returns the confirmed counterexample or
    None, and with ``hand_back`` the trees of the ReLU-split searches that ran out of time:
    {k: (share of the tree refuted, open domains as a ``Portion`` list)}."""
    trees: dict = {}
    if (split == "relu" and len(searches) > 1 and opt.processes > 1
            and not mp.current_process().daemon):
        out = _in_parallel(cb, searches, opt, probe, deadline, replay, stats, done, started,
                           hand_back)
        if hand_back:
            # a search whose every part reported (a part lost on the way leaves no status)
            trees = {k: (out.refuted.get(k, 0.0), out.left.get(k, []))
                     for k, s in out.status.items() if s == "timeout"}
        return out.ce, trees
    ce = _in_turn(searches, probe, done, started, split)
    if hand_back:  # (only ReLU-split searches are stabilised)
        for k, (_, _, search) in enumerate(searches):
            left = search.left() if done[k] in (None, "timeout") else None
            trees[k] = (search.refuted, [] if left is None else [left])
    return ce, trees


def _carry_over(tree, fresh, sign: dict):
    """A first stage's tree ``(share refuted, [Portion])`` carried over to the stabilised root
    bounds (``bab_stabilise.narrow``, with the root's ``sign``): (share refuted, searches that
    go on with the domains left, as parts of ``fresh``), or None when there is no tree or its
    refuted share and open domains do not add up to the whole tree (some part's domains did
    not come back: they must be searched again from the root)."""
    if tree is None:
        return None
    refuted, portions = tree
    held = sum(float(np.ldexp(1.0, -p.domains.depth()).sum()) for p in portions)
    if not abs(refuted + held - 1.0) <= _COVERED:
        return None
    lo, hi, _ = ReluSplitSearch.root_bounds(fresh.cb, fresh.case, fresh.opt, True,
                                            fresh.deadline)
    parts = []
    for p in portions:
        dom, dropped = narrow(p.domains, lo, hi, sign)
        refuted += dropped
        if dom is not None:
            parts.append(fresh.part(Portion(dom, p.rows)))
    return refuted, parts


#: how far from 1 the refuted share and the open domains' shares of a tree may add up in
#: floating point (each is a sum of powers of two) for the tree to count as whole
_COVERED = 1e-9


def _stabilise_root(cb, net, case, opt, deadline: float, stats: dict) -> dict:
    """Prove nearly stable neurons of ``case``'s root bounds stable (``bab_stabilise``), in
    place in the bounds every later search of the case starts from, in at most
    ``opt.stabilise_share`` of the time left; returns the proven signs
    (``Stabilised.sign``)."""
    lo, hi, slopes = ReluSplitSearch.root_bounds(cb, case, opt, True, deadline)
    now = time.monotonic()
    got = stabilise(cb, net, case, lo, hi, slopes, opt,
                    now + opt.stabilise_share * max(deadline - now, 0.0), opt.processes)
    stats["stabilise_tried"] = stats.get("stabilise_tried", 0) + got.tried
    stats["stabilise_stabilised"] = stats.get("stabilise_stabilised", 0) + got.stabilised
    return got.sign


def _in_turn(searches, probe: float, done: list, started: list, split: str):
    """Run the searches in this process: with ``probe`` > 0 each first gets a slice of that
    many seconds, then each goes on from where it paused, in order. Fills ``done`` (status) and
    ``started``; returns the confirmed counterexample of a search that found one, else None."""
    for pause in ([probe, None] if probe > 0 else [None]):
        for k, (ci, group, search) in enumerate(searches):
            if done[k] is not None:
                continue
            started[k] = True
            if pause is None:
                status = search.run()
            else:
                status = search.run(pause_at=time.monotonic() + pause)
            if status == "paused":
                continue
            log.info("branch and bound (%s split) case %d %s: %s", split, ci, group, status)
            if status == "sat":
                return search.ce
            done[k] = status
            if status == "timeout":
                return None  # the deadline passed: no other search gets a turn
    return None


def _in_parallel(cb, searches, opt, probe: float, deadline: float, replay, stats: dict,
                 done: list, started: list, hand_back: bool) -> ParallelOutcome:
    """The ReLU-split searches on ``opt.processes`` forked workers (``bab_parallel``), after
    their cases' root bounds are made here; fills ``done``, ``started`` and each search's
    ``refuted`` from the reports, and returns the workers' ``ParallelOutcome``."""
    for _, _, search in searches:  # made once per case, before the fork
        ReluSplitSearch.root_bounds(cb, search.case, opt, search.optimised, deadline)
    out = run_parallel([x for _, _, x in searches], min(opt.processes, len(searches)), probe,
                       deadline, replay, stats, share=opt.share_work, hand_back=hand_back)
    if out.given:
        stats["portions_given"] = out.given
    for k, (_, _, search) in enumerate(searches):
        started[k] = True
        search.refuted = out.refuted.get(k, search.refuted)
        # a search without a report: its worker died (unknown) or the time ran out
        done[k] = out.status.get(k, "unknown" if out.lost else "timeout")
    return out


_BELOW_ONE = math.nextafter(1.0, 0.0)


def share_percent(share: float) -> str:
    """``share`` in [0, 1] as a percentage with one decimal, or as many more as it takes not to
    read 100% while ``r = 1 - share > 0`` is left: ``ceil(-log10 r) - 1`` decimals resolve steps
    of at most r/10, so rounding cannot reach 100 (a stalled search with 0.003% of its tree
    open reads "99.9970%", not "100.0%")."""
    rest = 1.0 - share
    if share >= 1.0 or rest >= 5e-4:
        return f"{share:.1%}"
    return f"{share:.{min(math.ceil(-math.log10(rest)) - 1, 15)}%}"  # rest < 5e-4: >= 3
