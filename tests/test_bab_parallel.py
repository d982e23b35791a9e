"""ReLU-split searches on forked workers: the same answers and trees as in one process, a
counterexample confirmed by the parent, and a worker that dies or fails never makes ``unsat``."""
import multiprocessing as mp
import os
import signal
import time

import numpy as np
import pytest

from verifier.bounds.milp import milp_bounds
from verifier.search import bab_parallel
from verifier.search.bab import BabOptions, as_relu_chain, branch_and_bound
from verifier.search.bab_crown import ChainBounder
from verifier.search.bab_relu import ReluSplitSearch
from verifier.search.replay import Replay

from test_bab import mlp, spec_of


def _three_conjunctions(seed, sat_row=None, slack=0.02, widths=(8, 8)):
    """A random 6-8-8-3 network (other ``widths`` in the middle) and a spec of three one-row conjunctions, each threshold
    ``slack`` below its exact (MILP) minimum: unsat, not at the root; with ``sat_row`` that one
    is 0.05 above it instead (violated)."""
    net = mlp(seed, 6, list(widths), 3, scale=1.5)
    lo, hi = -np.ones(6) * 0.5, np.ones(6) * 0.5
    rng = np.random.default_rng(seed)
    conjs = []
    for j in range(3):
        C = rng.normal(size=(1, 3))
        m = float(milp_bounds(net, lo, hi, C, np.zeros(1)).stats["argmin_value"][0, 0])
        conjs.append((C, np.array([m + 0.05 if j == sat_row else m - slack])))
    return net, spec_of(lo, hi, conjs, 3)


def _bab(net, spec, processes, seconds=60.0, **kw):
    kw.setdefault("relu_batch", 4)
    return branch_and_bound(net, spec, [(0, j) for j in range(3)],
                            deadline=time.monotonic() + seconds, replay=Replay(spec, net=net),
                            options=BabOptions(split="relu", processes=processes, **kw))


@pytest.mark.parametrize("seed", range(3))
def test_parallel_searches_give_the_serial_answer_and_trees(seed):
    net, spec = _three_conjunctions(seed)
    # without work sharing, each search is one tree in one process
    one, two = _bab(net, spec, 1), _bab(net, spec, 2, share_work=False)
    assert one.status == two.status == "unsat"
    # each search is the same tree whichever process runs it; the workers' counts add up
    assert two.stats["domains"] == one.stats["domains"] > 3
    assert two.stats["bound_calls"] == one.stats["bound_calls"]


@pytest.mark.parametrize("seed", range(3))
def test_a_workers_counterexample_is_returned_confirmed(seed):
    net, spec = _three_conjunctions(seed, sat_row=2)
    res = _bab(net, spec, 2)
    assert res.status == "sat"
    x, y = res.counterexample
    assert spec.violated_by(x[None], net(x[None]))[0]
    np.testing.assert_array_equal(y, net(x[None])[0])


def _patch_workers(monkeypatch, conj_rows, action):
    """Make ``ReluSplitSearch.run`` call ``action()`` in a forked worker (never in this process)
    when its search is the one of ``conj_rows``."""
    parent, run = os.getpid(), ReluSplitSearch.run

    def patched(self, pause_at=None):
        if os.getpid() != parent and np.array_equal(self.C, conj_rows):
            action()
        return run(self, pause_at)
    monkeypatch.setattr(ReluSplitSearch, "run", patched)


def test_a_worker_that_dies_leaves_the_pairs_open_never_unsat(monkeypatch):
    net, spec = _three_conjunctions(0)
    _patch_workers(monkeypatch, spec.cases[0].unsafe[1].C,
                   lambda: os.kill(os.getpid(), signal.SIGKILL))  # as out of memory does
    res = _bab(net, spec, 2)
    assert res.status == "unknown"
    assert "1 0.0% (unknown)" in res.message  # the others were refuted
    assert "0 all" in res.message and "2 all" in res.message


def test_an_error_in_a_worker_is_an_error_of_the_run(monkeypatch):
    net, spec = _three_conjunctions(1)

    def fail():
        raise ValueError("broken bound")
    _patch_workers(monkeypatch, spec.cases[0].unsafe[0].C, fail)
    with pytest.raises(RuntimeError, match="broken bound"):  # verify makes it an error
        _bab(net, spec, 2)


def _in_daemon(net, spec, out):
    out.put(_bab(net, spec, 2).status)


def test_a_daemonic_process_runs_the_searches_itself():
    # a daemonic process may not have children: branch and bound then runs them in turn
    net, spec = _three_conjunctions(2)
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    p = ctx.Process(target=_in_daemon, args=(net, spec, out), daemon=True)
    p.start()
    status = out.get(timeout=120)
    p.join(10)
    assert status == "unsat"


# -- work sharing -----------------------------------------------------------------------------
def _sharing(monkeypatch):
    """Workers look for a waiting worker after every batch (one domain each), and take the
    searches one after another (no first slices)."""
    monkeypatch.setattr(bab_parallel, "SHARE_SLICE", 0.0)
    return {"relu_batch": 1, "relu_probe_share": 0.0}


@pytest.mark.parametrize("seed", [1, 2])
def test_idle_workers_take_domains_and_the_answer_stays(monkeypatch, seed):
    net, spec = _three_conjunctions(seed, widths=(12, 12))  # trees of about 450 domains
    one = _bab(net, spec, 1, relu_batch=1, relu_probe_share=0.0)
    two = _bab(net, spec, 2, **_sharing(monkeypatch))
    assert one.status == two.status == "unsat"
    assert two.stats["portions_given"] > 0
    # one domain per batch: a domain's bound does not depend on the process; the parts
    # together are the serial tree
    assert two.stats["domains"] == one.stats["domains"]


@pytest.mark.parametrize("seed", [1, 2])
def test_a_counterexample_with_work_sharing_is_confirmed(monkeypatch, seed):
    net, spec = _three_conjunctions(seed, sat_row=2, widths=(12, 12))
    res = _bab(net, spec, 2, **_sharing(monkeypatch))
    assert res.status == "sat"
    x, y = res.counterexample
    assert spec.violated_by(x[None], net(x[None]))[0]


def test_a_portion_lost_with_its_worker_leaves_the_pair_open(monkeypatch):
    net, spec = _three_conjunctions(1, widths=(12, 12))
    parent, part = os.getpid(), ReluSplitSearch.part

    def dying(self, portion):
        if os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)  # the receiver dies with the domains
        return part(self, portion)
    monkeypatch.setattr(ReluSplitSearch, "part", dying)
    res = _bab(net, spec, 2, **_sharing(monkeypatch))
    assert res.status == "unknown"


def test_given_domains_and_the_kept_ones_partition_the_search():
    # one search, paused: half its queue given to a part; both go on to unsat, and their
    # refuted shares add up to the whole tree
    net, spec = _three_conjunctions(1, widths=(12, 12))
    case = spec.cases[0]
    replay = Replay(spec, net=net)
    opt = BabOptions(split="relu", relu_batch=1)
    cb = ChainBounder(as_relu_chain(net))
    stats = {"boxes": 0, "bound_calls": 0}
    deadline = time.monotonic() + 60
    whole = ReluSplitSearch(cb, net, case, 0, [1], replay, opt, deadline, dict(stats))
    assert whole.run() == "unsat"
    s = ReluSplitSearch(cb, net, case, 0, [1], replay, opt, deadline, stats)
    while True:
        assert s.run(pause_at=time.monotonic()) == "paused"
        if s.queued >= 4:
            break
    before, queued = s.refuted, s.queued
    portion = s.give(0.5)
    assert len(portion.domains) == queued // 2 and s.queued == queued - queued // 2
    p = s.part(portion)
    assert p.refuted == 0.0 and s.refuted == before
    assert s.run() == "unsat" and p.run() == "unsat"
    assert s.refuted + p.refuted == pytest.approx(1.0, abs=1e-12)
