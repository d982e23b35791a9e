"""Benchmark runs: every instance of a VNN-COMP style ``instances.csv``, in worker processes.

A benchmark folder holds ``instances.csv`` (rows ``onnx,vnnlib,timeout`` with paths relative to
the folder) and optionally ``ground_truth.csv`` (``onnx,vnnlib,expected,certainty,...``).

``run_benchmark`` runs the instances in worker processes (at most ``workers`` at a time; each
solves up to ``tasks_per_worker`` instances in turn, reusing its imports and compiled kernels),
forked from a clean "forkserver" process that has imported the verifier but run nothing (forking
the caller itself is unsafe once it has used OpenMP threads, e.g. Numba's parallel kernels).
A crash, a kill for memory or a hang costs one instance only: a worker that dies without
answering is recorded as ``error``, one still running at ``timeout + grace`` seconds is killed
(with the processes it forked) and recorded as ``timeout``; a new worker takes over the rest. Results are appended to a CSV
file one complete row at a time (flushed and synced), so a run interrupted by Ctrl-C or a crash
leaves a valid file, and a restart skips every instance already recorded (a torn last line is
dropped first).
Counterexamples of ``sat`` answers are written as VNN-COMP results files into a folder beside
the CSV (``<results stem>_ce/``).
"""
from __future__ import annotations

import csv
import io
import logging
import multiprocessing as mp
import os
import signal
import statistics
import time
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

RESULT_FIELDS = ("onnx", "vnnlib", "timeout", "result", "seconds", "method", "message")
#: modules the forkserver imports once, so that each worker starts with them loaded
PRELOAD = ["numpy", "onnx", "onnxruntime", "specs", "verifier", "verifier.verify",
           "verifier.bounds", "verifier.network.runtime", "verifier.run"]


@dataclass(frozen=True)
class Instance:
    """One row of ``instances.csv``: paths relative to the benchmark folder, timeout in s."""

    onnx: str
    vnnlib: str
    timeout: float

    @property
    def key(self) -> tuple[str, str]:
        return (self.onnx, self.vnnlib)

    @property
    def name(self) -> str:
        return f"{Path(self.onnx).stem}+{Path(self.vnnlib).stem}"


@dataclass
class Row:
    """One line of the results CSV."""

    onnx: str
    vnnlib: str
    timeout: float
    result: str
    seconds: float
    method: str = ""
    message: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.onnx, self.vnnlib)


def read_instances(bench_dir) -> list[Instance]:
    """The rows of ``bench_dir/instances.csv`` (no header; blank lines skipped)."""
    path = Path(bench_dir) / "instances.csv"
    out = []
    with open(path, newline="") as f:
        for i, rec in enumerate(csv.reader(f), start=1):
            if not rec or all(not s.strip() for s in rec):
                continue
            if len(rec) < 3:
                raise ValueError(f"{path}:{i}: expected onnx,vnnlib,timeout")
            out.append(Instance(rec[0].strip(), rec[1].strip(), float(rec[2])))
    return out


def read_ground_truth(bench_dir) -> dict[tuple[str, str], tuple[str, str]] | None:
    """{(onnx, vnnlib): (expected, certainty)} from ``ground_truth.csv``, or None if absent."""
    path = Path(bench_dir) / "ground_truth.csv"
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        return {(r["onnx"].strip(), r["vnnlib"].strip()):
                (r["expected"].strip(), r.get("certainty", "").strip())
                for r in csv.DictReader(f)}


# --------------------------------------------------------------------------------------------
# the VNN-COMP results file of one instance
# --------------------------------------------------------------------------------------------
def format_results(result) -> str:
    """The VNN-COMP results text of a ``Result``: the status on the first line; after ``sat``
    the counterexample as ``((X_0 v)\n (X_1 v)\n ... (Y_0 v)\n ...)`` with every value written
    by ``repr`` (it reads back to the same float64)."""
    text = result.status + "\n"
    if result.status == "sat":
        x, y = result.counterexample
        items = [f"(X_{i} {float(v)!r})" for i, v in enumerate(np.ravel(x))]
        items += [f"(Y_{i} {float(v)!r})" for i, v in enumerate(np.ravel(y))]
        text += "(" + "\n ".join(items) + ")\n"
    return text


def write_results(path, result) -> None:
    """Write ``format_results(result)`` to ``path`` (whole file at once, via a temporary)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(format_results(result))
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# the results CSV of a benchmark run
# --------------------------------------------------------------------------------------------
def read_results(path) -> list[Row]:
    """The complete rows of a results CSV. A last line without its newline (a torn write) is
    removed from the file, so that appending continues on a clean line."""
    path = Path(path)
    if not path.is_file():
        return []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        log.warning("%s: dropping a torn last line", path)
        with open(path, "r+b") as f:
            f.truncate(cut)
        data = data[:cut]
    rows = []
    reader = csv.DictReader(io.StringIO(data.decode()))
    for r in reader:
        if r.get("result") in (None, "") or r.get("seconds") in (None, ""):
            continue
        rows.append(Row(r["onnx"], r["vnnlib"], float(r["timeout"]), r["result"],
                        float(r["seconds"]), r.get("method") or "", r.get("message") or ""))
    return rows


class ResultsWriter:
    """Appends complete rows to the results CSV (header first if the file is new)."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.is_file() or self.path.stat().st_size == 0
        self.f = open(self.path, "a", newline="")
        if new:
            self._write(RESULT_FIELDS)

    def _write(self, values) -> None:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(values)
        self.f.write(buf.getvalue())  # one write call per line
        self.f.flush()
        os.fsync(self.f.fileno())

    def write(self, row: Row) -> None:
        self._write([row.onnx, row.vnnlib, repr(row.timeout), row.result,
                     f"{row.seconds:.4f}", row.method, row.message.replace("\n", " ")[:500]])

    def close(self) -> None:
        self.f.close()


# --------------------------------------------------------------------------------------------
# one instance, in a worker process
# --------------------------------------------------------------------------------------------
def solve_instance(onnx_path, vnnlib_path, timeout: float, method: str = "auto",
                   ce_path=None, processes: int = 1) -> dict:
    """Load, verify and (for ``sat``) write the counterexample file; returns a small dict
    ``{result, seconds, method, message}``. Bad input (``VerifierError``, ``SpecError``) is
    the answer ``error`` with its message; the time counts loading. ``processes``: branch and
    bound's ReLU-split searches on that many processes (``BabOptions.processes``)."""
    from specs import read_vnnlib  # noqa: PLC0415 (imported in the worker, lazily)

    from . import load_onnx  # noqa: PLC0415
    from .errors import INPUT_ERRORS  # noqa: PLC0415
    from .search.bab import BabOptions  # noqa: PLC0415
    from .verify import VerifyOptions, verify  # noqa: PLC0415

    t0 = time.monotonic()
    try:
        net = load_onnx(onnx_path)
        spec = read_vnnlib(vnnlib_path, n_inputs=net.n_inputs, n_outputs=net.n_outputs)
        left = max(0.0, timeout - (time.monotonic() - t0))
        res = verify(net, spec, timeout=left, method=method, onnx_path=onnx_path,
                     options=VerifyOptions(bab_options=BabOptions(processes=processes)))
    except INPUT_ERRORS as exc:
        return {"result": "error", "seconds": time.monotonic() - t0, "method": "",
                "message": f"bad input: {exc}"}
    if ce_path is not None and res.status == "sat":
        write_results(ce_path, res)
    return {"result": res.status, "seconds": time.monotonic() - t0, "method": res.method,
            "message": res.message}


def _openblas_libs() -> list:
    """The OpenBLAS libraries loaded in this process (found in its mappings), opened with
    ``ctypes``; empty when none is found."""
    import ctypes  # noqa: PLC0415

    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower()}
    except OSError:
        return []
    libs = []
    for path in sorted(paths):
        try:
            libs.append(ctypes.CDLL(path))
        except OSError:
            continue
    return libs


def _openblas_function(lib, name: str):
    """``lib``'s function ``name`` under any of the prefixes and suffixes OpenBLAS builds use
    (scipy-openblas, ILP64), or None."""
    for sym in (f"scipy_{name}64_", f"scipy_{name}", f"{name}64_", name):
        fn = getattr(lib, sym, None)
        if fn is not None:
            return fn
    return None


def limit_blas_threads(n: int) -> bool:
    """Set the thread count of the OpenBLAS library numpy loaded (called through ``ctypes``);
    False when none was found. Workers sharing the cores use one thread each: small matrix
    products are many times slower when BLAS threads compete for the same cores (ACAS Xu 4_2
    property 2 in a run worker: 114.6 s with 2 threads, 19.4 s with 1, on 2 cores that two
    other processes kept busy)."""
    import ctypes  # noqa: PLC0415

    done = False
    for lib in _openblas_libs():
        fn = _openblas_function(lib, "openblas_set_num_threads")
        if fn is not None:
            fn(ctypes.c_int(n))
            done = True
    return done


def blas_threads() -> int | None:
    """The thread count of the first OpenBLAS library loaded in this process (None: none)."""
    for lib in _openblas_libs():
        fn = _openblas_function(lib, "openblas_get_num_threads")
        if fn is not None:
            return int(fn())
    return None


def _runner_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else (pid reused): treat as gone
        return False
    return True


def _serve(conn, runner_pid: int, memory_limit: int | None, blas_threads: int | None) -> None:
    """Body of a worker process: ignore Ctrl-C (the parent ends workers), lead a process group
    of its own (so that ``_kill`` also ends the processes it forks), optionally cap the
    address space and the BLAS threads, then solve the instances the parent sends (argument
    tuples for ``solve_instance``; None ends the loop) and send back each answer (or the
    exception's message). An idle worker whose runner (``runner_pid``) has died exits."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.setpgid(0, 0)  # a group of its own, with the processes branch and bound forks: _kill
    if blas_threads:
        limit_blas_threads(blas_threads)
    if memory_limit:
        import resource  # noqa: PLC0415 (POSIX only)
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    while True:
        while not conn.poll(1.0):
            if not _runner_alive(runner_pid):
                return
        try:
            args = conn.recv()
        except EOFError:
            return
        if args is None:
            break
        try:
            out = solve_instance(*args)
        except BaseException as exc:  # report anything; the worker lives on for the next one
            out = {"result": "error", "seconds": 0.0, "method": "",
                   "message": f"{type(exc).__name__}: {exc}"}
        try:
            conn.send(out)
        except OSError:  # the runner is gone
            return
    conn.close()


@dataclass
class RunOptions:
    """Knobs of a benchmark run."""

    #: multiply every instance's timeout by this
    timeout_scale: float = 1.0
    #: when set, every instance gets this many seconds instead (the scale is then ignored)
    timeout: float | None = None
    #: worker processes at a time
    workers: int = 1
    #: verification method passed to ``verify``
    method: str = "auto"
    #: processes per instance for branch and bound's ReLU-split searches (``BabOptions``); with
    #: more than 1 the workers are not daemonic (a daemonic process may not fork); a worker
    #: killed past its time is killed with the processes it forked (``_kill``)
    processes: int = 1
    #: seconds past the timeout before a worker is killed: ``grace + grace_share * timeout``
    grace: float = 10.0
    grace_share: float = 0.1
    #: address-space cap per worker in bytes (None: none); a worker over it fails with error
    memory_limit: int | None = None
    #: BLAS threads per worker: the verifier's matrix products are small (a batch of boxes
    #: times a layer), and more threads than one per worker made ACAS Xu 4_2 property 2 six
    #: times slower (114.6 s instead of 19.4 s with one worker on 2 busy cores)
    blas_threads: int = 1
    #: instances one worker process solves before it is replaced (imports and compiled
    #: kernels are reused in between; 1: a fresh process per instance)
    tasks_per_worker: int = 20
    #: only the first ``limit`` instances (None: all)
    limit: int | None = None
    #: folder for the counterexample files of sat answers (None: <results stem>_ce beside it)
    ce_dir: str | None = None
    #: how workers start: "forkserver" (default, safe), or "fork" (inherits the caller's state;
    #: only for callers that have not used OpenMP threads, e.g. tests that replace the solver)
    start_method: str = "forkserver"
    #: run the instances on Ray instead of local processes (``verifier.run_ray``): "local"
    #: starts a Ray instance on this machine, anything else is the address of a running cluster
    #: ("auto", "HOST:PORT", "ray://HOST:PORT"); None: local worker processes
    ray: str | None = None


class _Worker:
    """One worker process and the instance it is solving (``inst`` None when idle)."""

    def __init__(self, ctx, opt: RunOptions):
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_serve,
                                args=(child, os.getpid(), opt.memory_limit, opt.blas_threads),
                                daemon=opt.processes <= 1)
        self.proc.start()
        child.close()
        self.tasks = 0
        self.inst: Instance | None = None
        self.start = 0.0
        self.limit = 0.0

    def assign(self, inst: Instance, args: tuple, limit: float) -> None:
        self.inst, self.start, self.limit = inst, time.monotonic(), limit
        self.tasks += 1
        self.conn.send(args)

    def stop(self, kill: bool = False) -> None:
        if kill and self.proc.is_alive():
            _kill(self.proc)
        elif self.proc.is_alive():
            try:
                self.conn.send(None)
            except OSError:
                _kill(self.proc)
        self.proc.join(5)
        if self.proc.is_alive():
            _kill(self.proc)
            self.proc.join()
        self.conn.close()


def run_benchmark(bench_dir, results_path, options: RunOptions | None = None,
                  progress: Callable[[int, int, Row | None], None] | None = None) -> list[Row]:
    """Run every instance of ``bench_dir`` not yet in ``results_path``; return all rows of the
    file (old and new), in file order. ``progress(done, total, row)`` is called at the start
    (row None) and after each instance. The instances run in local worker processes, or on a
    Ray cluster when ``options.ray`` is set (``verifier.run_ray``); either way each row is
    written as soon as its instance finishes."""
    opt = options or RunOptions()
    bench = Path(bench_dir)
    instances = read_instances(bench)
    if opt.limit is not None:
        instances = instances[:opt.limit]
    done_rows = read_results(results_path)
    done = {r.key for r in done_rows}
    queue = [i for i in instances if i.key not in done]
    total = len(instances)
    n_done = sum(1 for i in instances if i.key in done)
    ce_dir = Path(opt.ce_dir) if opt.ce_dir else Path(results_path).with_name(
        Path(results_path).stem + "_ce")
    log.info("%s: %d instances, %d already done, %d to run with %d workers%s", bench, total,
             n_done, len(queue), opt.workers, f" on Ray ({opt.ray})" if opt.ray else "")
    if progress:
        progress(n_done, total, None)
    if opt.ray:
        from .run_ray import ray_rows  # noqa: PLC0415 (optional dependency)
        rows = ray_rows(queue, bench, opt, ce_dir)
    else:
        rows = _local_rows(queue, bench, opt, ce_dir)
    writer = ResultsWriter(results_path)
    try:
        for row in rows:
            writer.write(row)
            done_rows.append(row)
            n_done += 1
            if progress:
                progress(n_done, total, row)
    finally:
        rows.close()  # Ctrl-C or an error here: the executor ends its workers, records nothing
        writer.close()
    return done_rows


def _kill(proc) -> None:
    """SIGKILL a worker and every process of its group: the branch-and-bound processes it forked
    (``_serve`` makes the worker a group leader), which would otherwise run on to their own
    deadline beside the next instance. A worker killed before it formed its group has no
    children yet: then the kill of the worker alone is enough."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.kill()


def _local_rows(queue: list[Instance], bench: Path, opt: RunOptions, ce_dir: Path):
    """Solve ``queue`` in local worker processes; yields each instance's row as it finishes."""
    ctx = mp.get_context(opt.start_method)
    if opt.start_method == "forkserver":
        ctx.set_forkserver_preload(PRELOAD)
    pool: list[_Worker] = []
    queue = list(queue)
    try:
        while queue or any(w.inst is not None for w in pool):
            while queue and (len(pool) < max(1, opt.workers) or any(w.inst is None for w in pool)):
                idle = next((w for w in pool if w.inst is None), None)
                if idle is None:
                    idle = _Worker(ctx, opt)
                    pool.append(idle)
                _assign(idle, queue.pop(0), bench, opt, ce_dir)
            _wait_any(pool)
            now = time.monotonic()
            for w in list(pool):
                row = _collect(w, now, opt)
                if row is None:
                    continue
                yield row
                if not w.proc.is_alive() or w.tasks >= max(1, opt.tasks_per_worker):
                    w.stop()
                    pool.remove(w)
    finally:
        for w in pool:
            w.stop(kill=w.inst is not None)


def instance_timeout(inst: Instance, opt: RunOptions) -> float:
    """Seconds given to ``inst``: ``opt.timeout`` if set, else its own times ``timeout_scale``."""
    return float(opt.timeout) if opt.timeout is not None else inst.timeout * opt.timeout_scale


def _assign(w: _Worker, inst: Instance, bench: Path, opt: RunOptions, ce_dir: Path) -> None:
    timeout = instance_timeout(inst, opt)
    ce_path = ce_dir / f"{inst.name}.txt"
    if ce_path.exists():
        ce_path.unlink()
    ce_dir.mkdir(parents=True, exist_ok=True)
    args = (str(bench / inst.onnx), str(bench / inst.vnnlib), timeout, opt.method, str(ce_path),
            opt.processes)
    w.assign(inst, args, timeout + opt.grace + opt.grace_share * timeout)


def _wait_any(pool: list[_Worker]) -> None:
    busy = [w for w in pool if w.inst is not None]
    if not busy:
        return
    soonest = min(w.start + w.limit for w in busy)
    handles = [h for w in busy for h in (w.conn, w.proc.sentinel)]
    wait(handles, timeout=max(0.0, min(soonest - time.monotonic(), 1.0)))


def _collect(w: _Worker, now: float, opt: RunOptions) -> Row | None:
    """The row of the instance of a worker that answered, died or ran over its time (the worker
    is then killed), or None while it is still working; the worker is idle afterwards."""
    inst = w.inst
    if inst is None:
        return None
    timeout = instance_timeout(inst, opt)
    answer = None
    if w.conn.poll():
        try:
            answer = w.conn.recv()
        except (EOFError, OSError):
            answer = None
    if answer is not None:
        w.inst = None
        return Row(inst.onnx, inst.vnnlib, timeout, answer["result"], float(answer["seconds"]),
                   answer.get("method", ""), answer.get("message", ""))
    if not w.proc.is_alive():
        w.proc.join()
        code = w.proc.exitcode
        why = (f"worker killed by signal {-code}" + (" (out of memory?)" if code == -9 else "")
               if code is not None and code < 0 else f"worker exited with status {code}")
        w.inst = None
        return Row(inst.onnx, inst.vnnlib, timeout, "error", now - w.start, "", why)
    if now - w.start > w.limit:
        _kill(w.proc)
        w.proc.join()
        w.inst = None
        return Row(inst.onnx, inst.vnnlib, timeout, "timeout", now - w.start, "",
                   f"killed after {now - w.start:.1f} s (timeout {timeout:g} s + grace)")
    return None


# --------------------------------------------------------------------------------------------
# the summary
# --------------------------------------------------------------------------------------------
@dataclass
class Summary:
    """Counts over the rows of a run, compared with the ground truth when there is one.
    ``correct``/``wrong`` count decided answers (sat/unsat) whose expected answer is sat/unsat;
    ``unchecked`` decided answers without a known expected answer."""

    total: int
    solved: int
    sat: int
    unsat: int
    unknown: int
    timeout: int
    error: int
    correct: int | None
    wrong: list[str]
    unchecked: int
    total_seconds: float
    median_seconds: float | None
    errors: list[str]


def summarize(rows: list[Row], ground_truth: dict | None) -> Summary:
    """Count answers; with ``ground_truth`` ({(onnx, vnnlib): (expected, certainty)}) name every
    instance whose decided answer contradicts the expected one."""
    by = {s: [r for r in rows if r.result == s] for s in ("sat", "unsat", "unknown", "timeout",
                                                           "error")}
    correct, wrong, unchecked = (0 if ground_truth is not None else None), [], 0
    for r in by["sat"] + by["unsat"]:
        exp = ground_truth.get(r.key, ("", ""))[0] if ground_truth is not None else ""
        if exp not in ("sat", "unsat"):
            unchecked += 1
        elif exp == r.result:
            correct += 1
        else:
            wrong.append(f"{r.onnx} {r.vnnlib}: answered {r.result}, expected {exp}")
    secs = [r.seconds for r in rows]
    return Summary(len(rows), len(by["sat"]) + len(by["unsat"]), len(by["sat"]), len(by["unsat"]),
                   len(by["unknown"]), len(by["timeout"]), len(by["error"]), correct, wrong,
                   unchecked, float(sum(secs)), statistics.median(secs) if secs else None,
                   [f"{r.onnx} {r.vnnlib}: {r.message}" for r in by["error"]])


def format_summary(s: Summary, name: str = "") -> str:
    """The summary as a few lines of text."""
    lines = [f"{name + ': ' if name else ''}{s.total} instances, solved {s.solved} "
             f"(sat {s.sat}, unsat {s.unsat}), unknown {s.unknown}, timeout {s.timeout}, "
             f"error {s.error}"]
    if s.correct is not None:
        lines.append(f"correct {s.correct}, wrong {len(s.wrong)}, decided without ground truth "
                     f"{s.unchecked}")
        lines += [f"  WRONG: {w}" for w in s.wrong]
    lines += [f"  error: {e}" for e in s.errors[:10]]
    if len(s.errors) > 10:
        lines.append(f"  ... and {len(s.errors) - 10} more errors")
    med = "-" if s.median_seconds is None else f"{s.median_seconds:.2f}"
    lines.append(f"total time {s.total_seconds:.1f} s, median {med} s")
    return "\n".join(lines)
