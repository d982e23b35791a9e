"""Benchmark runs: rows written one at a time, resumable, a crashing or hanging instance costs
one row (error / timeout), and the summary names every wrong answer.

The worker's ``solve_instance`` is replaced by fakes, and workers are started by plain fork so
that they see the replacement: these tests check the runner's machinery, not the verifier's
answers (tests/test_cli.py runs real instances with the default forkserver)."""
import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from verifier import run
from verifier.result import Result
from verifier.run import (Row, RunOptions, format_results, read_results, run_benchmark,
                          summarize)


def make_bench(tmp_path: Path, n: int, timeout: float = 5.0) -> Path:
    bench = tmp_path / "bench"
    bench.mkdir()
    rows = [f"onnx/net{i % 3}.onnx,vnnlib/prop_{i}.vnnlib,{timeout}" for i in range(n)]
    (bench / "instances.csv").write_text("\n".join(rows) + "\n")
    return bench


def fake_solver(log_path, delay=0.0, phase="run", hang_from=None, runner=None):
    """A solve_instance that records each call in ``log_path`` and answers by the index.

    With ``hang_from``, instances of that index and later do not finish while the worker's
    parent is ``runner`` (so a test can kill a run at a known point, whatever the load)."""
    def solve(onnx, vnnlib, timeout, method="auto", ce_path=None, processes=1):
        time.sleep(delay)
        i = int(Path(vnnlib).stem.split("_")[1])
        if hang_from is not None and i >= hang_from:
            while os.getppid() == runner:
                time.sleep(0.05)
        with open(log_path, "a") as f:
            f.write(f"{phase} {Path(vnnlib).name}\n")
        return {"result": ("sat", "unsat", "unknown")[i % 3], "seconds": delay, "method": "fake",
                "message": ""}
    return solve


def test_every_instance_gets_exactly_one_row(tmp_path, monkeypatch):
    bench = make_bench(tmp_path, 7)
    calls = tmp_path / "calls.txt"
    monkeypatch.setattr(run, "solve_instance", fake_solver(calls))
    out = tmp_path / "results.csv"
    seen = []
    rows = run_benchmark(bench, out, RunOptions(workers=2, start_method="fork"),
                         progress=lambda done, total, row: seen.append((done, total)))
    assert sorted(r.vnnlib for r in rows) == sorted(f"vnnlib/prop_{i}.vnnlib" for i in range(7))
    assert [r.key for r in read_results(out)] == [r.key for r in rows]
    assert seen[0] == (0, 7) and seen[-1] == (7, 7)
    assert out.read_text().splitlines()[0] == ",".join(run.RESULT_FIELDS)


@pytest.mark.parametrize("processes", [1, 2])
def test_each_instance_gets_the_processes_asked_in_a_worker_that_may_fork(tmp_path, monkeypatch,
                                                                          processes):
    bench = make_bench(tmp_path, 2)
    seen = tmp_path / "seen.txt"

    def solve(onnx, vnnlib, timeout, method="auto", ce_path=None, processes=1):
        with open(seen, "a") as f:  # a daemonic worker could not fork branch and bound's
            f.write(f"{processes} {mp.current_process().daemon}\n")
        return {"result": "unknown", "seconds": 0.0, "method": "", "message": ""}
    monkeypatch.setattr(run, "solve_instance", solve)
    run_benchmark(bench, tmp_path / "results.csv",
                  RunOptions(start_method="fork", processes=processes))
    assert seen.read_text().splitlines() == [f"{processes} {processes == 1}"] * 2


def test_a_second_run_redoes_nothing(tmp_path, monkeypatch):
    bench = make_bench(tmp_path, 4)
    calls = tmp_path / "calls.txt"
    monkeypatch.setattr(run, "solve_instance", fake_solver(calls))
    out = tmp_path / "results.csv"
    run_benchmark(bench, out, RunOptions(start_method="fork"))
    run_benchmark(bench, out, RunOptions(start_method="fork"))
    assert len(calls.read_text().splitlines()) == 4
    assert len(read_results(out)) == 4


def _run_in_child(bench, out, log_path):
    # a forked child inherits an ignored SIGINT (a suite launched in the background by a
    # non-interactive shell): Ctrl-C must reach the run here
    signal.signal(signal.SIGINT, signal.default_int_handler)
    run.solve_instance = fake_solver(log_path, delay=0.05, phase="first", hang_from=4,
                                   runner=os.getpid())
    run_benchmark(bench, out, RunOptions(workers=1, start_method="fork"))


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL])
def test_a_run_killed_halfway_resumes_without_redoing_finished_rows(tmp_path, monkeypatch, how):
    n = 12
    bench = make_bench(tmp_path, n, timeout=600.0)  # the 5th instance hangs until the kill
    out = tmp_path / "results.csv"
    calls = tmp_path / "calls.txt"
    proc = mp.get_context("fork").Process(target=_run_in_child, args=(bench, out, calls))
    proc.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(read_results(out)) < 4:
        time.sleep(0.05)
    os.kill(proc.pid, how)
    proc.join(10)
    assert not proc.is_alive()
    time.sleep(0.5)  # an orphaned worker (after SIGKILL) finishes its instance, unrecorded
    before = {r.key for r in read_results(out)}
    assert 4 <= len(before) < n
    text = out.read_bytes()
    assert text.endswith(b"\n")
    monkeypatch.setattr(run, "solve_instance", fake_solver(calls, phase="second"))
    rows = run_benchmark(bench, out, RunOptions(workers=2, start_method="fork"))
    assert len(rows) == n and len({r.key for r in rows}) == n
    second = {line.split()[1] for line in calls.read_text().splitlines()
              if line.startswith("second")}
    assert not second & {Path(v).name for _, v in before}
    assert len(second) == n - len(before)


def test_a_torn_last_line_is_dropped(tmp_path):
    out = tmp_path / "results.csv"
    w = run.ResultsWriter(out)
    w.write(Row("a.onnx", "p.vnnlib", 10.0, "unsat", 1.5, "crown"))
    w.close()
    with open(out, "a") as f:
        f.write("b.onnx,q.vnnlib,10.0,sa")
    rows = read_results(out)
    assert [r.key for r in rows] == [("a.onnx", "p.vnnlib")]
    assert out.read_text().endswith("crown,\n")


def test_a_crashing_worker_is_an_error_row_and_the_run_goes_on(tmp_path, monkeypatch):
    bench = make_bench(tmp_path, 3)

    def solve(onnx, vnnlib, timeout, method="auto", ce_path=None, processes=1):
        if "prop_1" in vnnlib:
            os.kill(os.getpid(), signal.SIGKILL)  # as the kernel does when memory runs out
        if "prop_2" in vnnlib:
            raise MemoryError("no more")
        return {"result": "unsat", "seconds": 0.0, "method": "fake", "message": ""}

    monkeypatch.setattr(run, "solve_instance", solve)
    opt = RunOptions(workers=2, start_method="fork")
    rows = {r.vnnlib: r for r in run_benchmark(bench, tmp_path / "r.csv", opt)}
    assert rows["vnnlib/prop_0.vnnlib"].result == "unsat"
    assert rows["vnnlib/prop_1.vnnlib"].result == "error"
    assert "signal 9" in rows["vnnlib/prop_1.vnnlib"].message
    assert rows["vnnlib/prop_2.vnnlib"].result == "error"
    assert "MemoryError" in rows["vnnlib/prop_2.vnnlib"].message


def test_a_hanging_worker_is_killed_at_timeout_plus_grace(tmp_path, monkeypatch):
    bench = make_bench(tmp_path, 2, timeout=0.3)

    def solve(onnx, vnnlib, timeout, method="auto", ce_path=None, processes=1):
        if "prop_0" in vnnlib:
            time.sleep(600)
        return {"result": "unknown", "seconds": 0.0, "method": "", "message": ""}

    monkeypatch.setattr(run, "solve_instance", solve)
    t = time.monotonic()
    opt = RunOptions(workers=2, grace=0.5, start_method="fork")
    rows = {r.vnnlib: r for r in run_benchmark(bench, tmp_path / "r.csv", opt)}
    assert time.monotonic() - t < 30
    assert rows["vnnlib/prop_0.vnnlib"].result == "timeout"
    assert rows["vnnlib/prop_1.vnnlib"].result == "unknown"


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_a_worker_killed_past_its_time_takes_the_processes_it_forked_along(tmp_path, monkeypatch):
    # branch and bound with --processes forks searches; they must not outlive the killed worker
    bench = make_bench(tmp_path, 1, timeout=0.3)
    pid_file = tmp_path / "child.pid"

    def solve(onnx, vnnlib, timeout, method="auto", ce_path=None, processes=1):
        child = mp.get_context("fork").Process(target=time.sleep, args=(600,))
        child.start()
        pid_file.write_text(str(child.pid))
        time.sleep(600)

    monkeypatch.setattr(run, "solve_instance", solve)
    opt = RunOptions(grace=0.5, start_method="fork", processes=2)
    rows = run_benchmark(bench, tmp_path / "r.csv", opt)
    assert [r.result for r in rows] == ["timeout"]
    pid = int(pid_file.read_text())
    end = time.monotonic() + 10
    while _running(pid) and time.monotonic() < end:
        time.sleep(0.05)
    assert not _running(pid)


def test_workers_use_one_blas_thread_however_many_cores(tmp_path, monkeypatch):
    # small products with competing BLAS threads made an ACAS Xu instance 6x slower in a
    # worker than alone; a worker used cpu_count // workers threads
    if run.blas_threads() is None:
        pytest.skip("numpy is not linked against OpenBLAS here")
    bench = make_bench(tmp_path, 1)

    def solve(onnx, vnnlib, timeout, method="auto", ce_path=None, processes=1):
        return {"result": "unknown", "seconds": 0.0, "method": "",
                "message": str(run.blas_threads())}

    monkeypatch.setattr(run, "solve_instance", solve)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    run.limit_blas_threads(2)
    try:
        rows = run_benchmark(bench, tmp_path / "r.csv", RunOptions(workers=1,
                                                                   start_method="fork"))
    finally:
        run.limit_blas_threads(1)
    assert [r.message for r in rows] == ["1"]


def test_the_summary_names_every_wrong_answer():
    rows = [Row("n", "p1", 1, "sat", 1.0), Row("n", "p2", 1, "unsat", 3.0),
            Row("n", "p3", 1, "unknown", 2.0), Row("n", "p4", 1, "unsat", 4.0),
            Row("n", "p5", 1, "timeout", 9.0)]
    truth = {("n", "p1"): ("sat", "certain(CE)"), ("n", "p2"): ("sat", "certain(CE)"),
             ("n", "p3"): ("unsat", ""), ("n", "p4"): ("unknown", "none")}
    s = summarize(rows, truth)
    assert (s.total, s.solved, s.correct, s.unknown, s.timeout, s.unchecked) == (5, 3, 1, 1, 1, 1)
    assert s.wrong == ["n p2: answered unsat, expected sat"]
    assert s.total_seconds == 19.0 and s.median_seconds == 3.0
    assert summarize(rows, None).correct is None


def test_results_text_after_sat_lists_inputs_then_outputs():
    r = Result("sat", counterexample=(np.array([0.1, -2.5]), np.array([np.float32(0.3)])))
    text = format_results(r)
    assert text == "sat\n((X_0 0.1)\n (X_1 -2.5)\n (Y_0 0.30000001192092896))\n"
    for status in ("unsat", "unknown", "timeout", "error"):
        assert format_results(Result(status)) == status + "\n"
