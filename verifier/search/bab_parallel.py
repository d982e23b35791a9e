"""ReLU-split searches of several open (case, conjunction) pairs in parallel processes.

Each pair has its own search (``bab``); they share nothing but their case's root bounds, which
are made before the workers are forked, so that no worker makes them again. ``P`` forked
workers take the searches one at a time from a shared counter, in order: each gives the search
it took the probe slice and keeps it if it paused; once the counter is past the last search,
the worker resumes its paused searches in order until each is decided or the deadline passes.
This is the serial order of ``bab`` on P cores: a counterexample in a late pair is still found
early, and a pair that holds out does not hold up the pairs of the other workers.

Every search a worker touched is reported (status, share of its split tree refuted), then the
worker's statistics. A counterexample is confirmed again by the parent's own replay before it
is returned, and the other workers are stopped. A worker that dies (out of memory, a signal)
leaves its searches without an answer, so the pairs can no longer be all refuted: the caller
never answers ``unsat`` then. An exception inside a worker is raised again in the parent.
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


@dataclass
class ParallelOutcome:
    """What the workers reported: ``status[k]`` of each search they touched ("unsat", "sat",
    "timeout", "unknown"), ``refuted[k]`` its share of the split tree refuted, ``ce`` the
    confirmed counterexample (or None) and ``lost`` the number of workers that died."""

    status: dict = field(default_factory=dict)
    refuted: dict = field(default_factory=dict)
    ce: object = None
    lost: int = 0


def run_parallel(searches: list, processes: int, probe: float, deadline: float, replay,
                 stats: dict) -> ParallelOutcome:
    """Run ``searches`` (``ReluSplitSearch`` objects sharing ``stats``, root bounds made) on
    ``processes`` forked workers as the module says; ``probe``: seconds of each search's first
    slice (0: none). The workers' statistics are added into ``stats``."""
    ctx = mp.get_context("fork")
    counter = ctx.Value("i", 0)
    reports = ctx.Queue()
    before = dict(stats)
    procs = [ctx.Process(target=_worker, args=(w, searches, counter, reports, probe, deadline),
                         daemon=True) for w in range(processes)]
    for p in procs:
        p.start()
    out = ParallelOutcome()
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
                        log.error("branch and bound: worker %d died (exit code %s)", w,
                                  p.exitcode)
                continue
            kind = msg[0]
            if kind == "search":
                _, k, status, share, ce = msg
                out.refuted[k] = share
                if status == "sat":
                    # the worker confirmed it; confirm it here too, on the parent's model
                    ce = replay(ce.x[None, :], case=ce.case)
                    if ce is None:
                        raise RuntimeError("a worker's counterexample was not confirmed by "
                                           "the parent's replay")
                    out.ce = ce
                out.status[k] = status
            elif kind == "end":
                ended.add(msg[1])
                _merge_stats(stats, before, msg[2])
            elif kind == "error":
                error = msg[2]
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(5)
    if error is not None:
        raise RuntimeError(f"branch and bound worker failed: {error}")
    return out


def _worker(w: int, searches: list, counter, reports, probe: float, deadline: float) -> None:
    """Take searches from ``counter`` and run them (module docstring); report to ``reports``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops the workers
    stats = searches[0].stats
    try:
        _fresh_runner(searches[0].replay)
        mine = []
        while True:
            with counter.get_lock():
                k = counter.value
                counter.value += 1
            if k >= len(searches):
                break
            if not _step(k, searches[k], reports, probe, deadline, mine):
                return
        for k in mine:
            if not _step(k, searches[k], reports, 0.0, deadline, None):
                return
    except Exception as exc:  # re-raised in the parent: an error is never an answer
        reports.put(("error", w, f"{type(exc).__name__}: {exc}"))
    finally:
        reports.put(("end", w, dict(stats)))


def _step(k: int, search, reports, probe: float, deadline: float, paused) -> bool:
    """Run search k (a slice of ``probe`` seconds when ``paused`` is a list to keep it in);
    report it unless it paused. False when it found a counterexample (the worker stops)."""
    if time.monotonic() >= deadline:
        status = "timeout"
    elif paused is not None and probe > 0.0:
        status = search.run(pause_at=time.monotonic() + probe)
        if status == "paused":
            paused.append(k)
            return True
    else:
        status = search.run()
    log.info("branch and bound (relu split) search %d: %s", k, status)
    reports.put(("search", k, status, search.refuted, search.ce if status == "sat" else None))
    return status != "sat"


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
