"""ReLU-split searches of several open (case, conjunction) pairs in parallel processes.

Each pair has its own search (``bab``); they share nothing but their case's root bounds, which
are made before the workers are forked, so that no worker makes them again. ``P`` forked
workers take the searches one at a time from a shared counter, in order: each gives the search
it took the probe slice and keeps it if it paused; once the counter is past the last search,
the worker goes on with its paused searches in order until each is decided or the deadline
passes. This is the serial order of ``bab`` on P cores: a counterexample in a late pair is
still found early, and a pair that holds out does not hold up the pairs of the other workers.

Work sharing (``share``): a worker with nothing left to do says so (``hungry``); a busy worker,
between batches, then gives it open domains (``ReluSplitSearch.give``): its last paused search
whole when it has several, else the older half of the current search's queue (the largest
subtrees), with the hull rows they use. The receiver goes on with them as a *part* of that
search (``ReluSplitSearch.part``). Domains partition the search's input set, so the search is
refuted when every part is: the giver counts the parts in shared memory *before* it hands one
over, and the parent counts the parts' reports, so it sees a search as decided only once as
many reports as parts came back (a part lost in transit or with a dead worker leaves it open).

Every part a worker ran is reported (status, share of the split tree it refuted; the shares of a
search's parts add up), then the worker's statistics; with ``hand_back`` a part that ran out of
time sends its open domains along (a ``Portion``), for the caller to go on with them. A
counterexample is confirmed again by the parent's own replay before it is returned, and the
other workers are stopped. A worker that dies (out of memory, a signal) leaves its searches
without an answer, so the pairs can no longer be all refuted: the caller never answers
``unsat`` then. An exception inside a worker is raised again in the parent.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import queue
import signal
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

#: seconds past the deadline the parent waits for the workers' last reports (a bound
#: computation is not interrupted at the deadline) before it stops them
GRACE = 30.0


#: seconds a busy worker runs between looks at whether another one waits for work
SHARE_SLICE = 1.0


@dataclass
class ParallelOutcome:
    """What the workers reported: ``status[k]`` of each search they decided or left open
    ("unsat" once every part of it is refuted, "sat", "timeout", "unknown"; absent when a part
    never reported), ``refuted[k]`` the share of its split tree refuted, ``ce`` the confirmed
    counterexample (or None), ``lost`` the number of workers that died and ``given`` the
    portions of domains handed from one worker to another; with ``hand_back``, ``left[k]`` the
    open domains (``Portion`` list) of the parts of search k that ran out of time."""

    status: dict = field(default_factory=dict)
    refuted: dict = field(default_factory=dict)
    ce: object = None
    lost: int = 0
    given: int = 0
    left: dict = field(default_factory=dict)


@dataclass
class _Shared:
    """What the workers share: ``hungry`` (workers waiting for domains), ``parts`` (parts of
    every search: 1 + the portions given off it), ``stop`` (set once every search is decided,
    or a worker died) and the ``handoff`` queue of (search, ``Portion``)."""

    hungry: object
    parts: object
    stop: object
    handoff: object



def run_parallel(searches: list, processes: int, probe: float, deadline: float, replay,
                 stats: dict, share: bool = True, hand_back: bool = False) -> ParallelOutcome:
    """Run ``searches`` (``ReluSplitSearch`` objects sharing ``stats``, root bounds made) on
    ``processes`` forked workers as the module says; ``probe``: seconds of each search's first
    slice (0: none); ``share``: idle workers take domains from busy ones; ``hand_back``: parts
    that run out of time send their open domains (``ParallelOutcome.left``). The workers'
    statistics are added into ``stats``."""
    ctx = mp.get_context("fork")
    counter = ctx.Value("i", 0)
    reports = ctx.Queue()
    n = len(searches)
    sh = _Shared(ctx.Value("i", 0), ctx.Array("i", [1] * n), ctx.Value("i", 0), ctx.Queue())
    before = dict(stats)
    procs = [ctx.Process(target=_worker,
                         args=(w, searches, counter, reports, probe, deadline, sh, share,
                               hand_back),
                         daemon=True) for w in range(processes)]
    for p in procs:
        p.start()
    out = ParallelOutcome()
    parts: dict[int, list[str]] = {}  # the statuses reported by each search's parts
    ended: set[int] = set()
    error = None
    try:
        while len(ended) < len(procs) and out.ce is None and error is None:
            try:
                msg = reports.get(timeout=0.2)
            except queue.Empty:
                if time.monotonic() > deadline + GRACE:
                    log.warning("branch and bound: workers still busy %.0f s after the "
                                "deadline; stopped", GRACE)
                    break
                for w, p in enumerate(procs):
                    if w not in ended and not p.is_alive() and reports.empty():
                        ended.add(w)  # died without its last report
                        out.lost += 1
                        sh.stop.value = 1  # its parts are lost: no unsat, idle workers go
                        log.error("branch and bound: worker %d died (exit code %s)", w,
                                  p.exitcode)
                continue
            kind = msg[0]
            if kind == "search":
                _, k, status, share_done, ce, left = msg
                out.refuted[k] = out.refuted.get(k, 0.0) + share_done
                if left is not None:
                    out.left.setdefault(k, []).append(left)
                if status == "sat":
                    # the worker confirmed it; confirm it here too, on the parent's model
                    ce = replay(ce.x[None, :], case=ce.case)
                    if ce is None:
                        raise RuntimeError("a worker's counterexample was not confirmed by "
                                           "the parent's replay")
                    out.ce = ce
                    out.status[k] = status
                    continue
                parts.setdefault(k, []).append(status)
                if _decided(k, parts, sh):
                    got = parts[k]
                    out.status[k] = ("unsat" if all(x == "unsat" for x in got) else
                                     "timeout" if "timeout" in got else "unknown")
                    if all(_decided(j, parts, sh) for j in range(n)):
                        sh.stop.value = 1  # the idle workers may go
            elif kind == "end":
                ended.add(msg[1])
                out.given += msg[2].pop("portions_given", 0)
                _merge_stats(stats, before, msg[2])
            elif kind == "error":
                error = msg[2]
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(5)
    # a search some of whose parts never reported (a worker died, the deadline passed while a
    # portion was handed over) has no status: it stays open
    if error is not None:
        raise RuntimeError(f"branch and bound worker failed: {error}")
    return out


def _decided(k: int, parts: dict, sh: _Shared) -> bool:
    """Every part of search k reported: a part is counted (``sh.parts``) before it is handed
    over, so its report cannot arrive before it counts."""
    with sh.parts.get_lock():
        return len(parts.get(k, ())) == sh.parts[k]


def _worker(w: int, searches: list, counter, reports, probe: float, deadline: float,
            sh: _Shared, share: bool, hand_back: bool) -> None:
    """Take searches from ``counter`` and run them, then take domains other workers give
    (module docstring); report to ``reports``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops the workers
    stats = searches[0].stats
    given = 0
    try:
        _fresh_runner(searches[0].replay)
        mine: list = []  # (search index, search or part) to go on with, in order
        while probe > 0.0:  # the first pass: a slice of each search in turn
            k = _next(counter, len(searches))
            if k is None:
                break
            if not _step(k, searches[k], reports, probe, deadline, mine, hand_back):
                return
        while True:
            if not mine:
                k = _next(counter, len(searches))
                got = ((k, None) if k is not None else
                       _wait_for_domains(sh, deadline) if share else None)
                if got is None:
                    break
                k, portion = got
                if portion is None:
                    mine.append((k, searches[k]))
                else:
                    log.debug("branch and bound: took %d domains of search %d",
                              len(portion.domains), k)
                    mine.append((k, searches[k].part(portion)))
            k, search = mine[0]
            if time.monotonic() >= deadline:
                status = "timeout"
            elif share:
                status = search.run(pause_at=time.monotonic() + SHARE_SLICE)
            else:
                status = search.run()
            if status == "paused":
                given += _give(mine, sh)
                continue
            mine.pop(0)
            if not _report(k, search, status, reports, hand_back):
                return
    except Exception as exc:  # re-raised in the parent: an error is never an answer
        reports.put(("error", w, f"{type(exc).__name__}: {exc}"))
    finally:
        reports.put(("end", w, dict(stats, portions_given=given)))


def _next(counter, n: int) -> int | None:
    """The next search no worker took yet, or None."""
    with counter.get_lock():
        k = counter.value
        counter.value += 1
    return k if k < n else None


def _step(k: int, search, reports, probe: float, deadline: float, paused: list,
          hand_back: bool) -> bool:
    """Run a slice of ``probe`` seconds of search k, kept in ``paused`` if it paused; report
    it unless it paused. False when it found a counterexample (the worker stops)."""
    if time.monotonic() >= deadline:
        status = "timeout"
    else:
        status = search.run(pause_at=time.monotonic() + probe)
        if status == "paused":
            paused.append((k, search))
            return True
    return _report(k, search, status, reports, hand_back)


def _report(k: int, search, status: str, reports, hand_back: bool) -> bool:
    """Report a part of search k that ended, with its open domains when it ran out of time and
    ``hand_back`` (``ReluSplitSearch.left``); False for a counterexample (the worker stops)."""
    log.info("branch and bound (relu split) search %d: %s", k, status)
    left = search.left() if hand_back and status == "timeout" else None
    reports.put(("search", k, status, search.refuted, search.ce if status == "sat" else None,
                 left))
    return status != "sat"


def _give(mine: list, sh: _Shared) -> int:
    """When a worker waits for domains: hand it the last paused search (not the current one)
    that has open domains, all of them, else the older half of the current one's queue.
    Returns the portions given."""
    if sh.hungry.value <= 0:
        return 0
    others = [x for x in mine[1:] if x[1].queued > 0]
    k, search, fraction = (*others[-1], 1.0) if others else (*mine[0], 0.5)
    if search.queued < (1 if fraction == 1.0 else 2):
        return 0
    with sh.hungry.get_lock():
        if sh.hungry.value <= 0:
            return 0
        sh.hungry.value -= 1
    portion = search.give(fraction)
    with sh.parts.get_lock():
        sh.parts[k] += 1  # before the hand-over: see _decided
    sh.handoff.put((k, portion))
    log.debug("branch and bound: gave %d domains of search %d (%d left here)",
              len(portion.domains), k, search.queued)
    return 1


def _wait_for_domains(sh: _Shared, deadline: float):
    """Say this worker waits, and wait for a (search index, ``Portion``); None once every
    search is decided or the deadline passed."""
    with sh.hungry.get_lock():
        sh.hungry.value += 1
    while True:
        try:
            return sh.handoff.get(timeout=0.05)
        except queue.Empty:
            pass
        if sh.stop.value or time.monotonic() >= deadline:
            return None


def _fresh_runner(replay) -> None:
    """Give a forked worker its own onnxruntime session (a session is not shared across a
    fork)."""
    runner = getattr(replay, "runner", None)
    if runner is None:
        return
    from ..network.runtime import OnnxRunner  # noqa: PLC0415

    replay.runner = OnnxRunner(runner.path, allow_batch=runner.batched)


def _merge_stats(stats: dict, before: dict, worker: dict) -> None:
    """Add a worker's counts (what it added to the ``before`` it was forked with) into
    ``stats``; ``max_*`` entries take the largest."""
    for key, v in worker.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        if key.startswith("max_"):
            stats[key] = max(stats.get(key, v), v)
        else:
            stats[key] = stats.get(key, 0) + v - before.get(key, 0)
