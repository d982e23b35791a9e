"""Benchmark runs on a Ray cluster: the instances of ``instances.csv`` as Ray tasks.

``verifier run BENCH --ray local`` starts a Ray instance on this machine (``--workers`` CPUs);
``--ray auto`` (or ``HOST:PORT``, ``ray://HOST:PORT``) joins a cluster started the usual way
(``ray start --head`` on one machine, ``ray start --address HOST:PORT`` on the others). Ray is
an optional dependency (``pip install "verifier[ray]"``); the local default needs no cluster.

The driver (the machine running ``verifier run``) keeps the bookkeeping of ``verifier.run``:
the results CSV is written row by row as tasks finish, a restart skips the rows already there,
and ground truth is compared at the end. A task carries the ONNX and VNN-LIB bytes (put in the
object store once per file), so the cluster's machines need no shared file system; it writes
them to a temporary folder, solves the instance with ``verifier.run.solve_instance``
(``RunOptions.blas_threads`` BLAS threads) and returns the answer and, after ``sat``, the
counterexample text, which the driver writes to ``<results stem>_ce/``.

At most ``workers`` tasks are in flight, each asking for one CPU, so a task starts when it is
submitted if the cluster has that many free CPUs; its time is counted from submission (a task
left waiting for a CPU loses that time: set ``workers`` to at most the cluster's CPUs). A task still
running at ``timeout + grace`` is cancelled (its worker process killed) and recorded as
``timeout``; a task whose worker dies (a crash, Ray's out-of-memory killer) is recorded as
``error``; neither stops the run.
"""
from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from .errors import VerifierError
from .run import Instance, Row, RunOptions, instance_timeout, limit_blas_threads, solve_instance

log = logging.getLogger(__name__)


def _solve_task(onnx_rel: str, onnx_data: bytes, vnnlib_rel: str, vnnlib_data: bytes,
                timeout: float, method: str, blas_threads: int) -> dict:
    """Body of a Ray task: the instance's files written to a temporary folder under their
    benchmark-relative names, solved by ``solve_instance`` with ``blas_threads`` BLAS threads;
    returns its answer dict with the counterexample text under ``"counterexample"`` after
    ``sat``."""
    limit_blas_threads(blas_threads)
    with tempfile.TemporaryDirectory(prefix="verifier-ray-") as tmp:
        root = Path(tmp)
        onnx_path, vnnlib_path = root / "files" / onnx_rel, root / "files" / vnnlib_rel
        for path, data in ((onnx_path, onnx_data), (vnnlib_path, vnnlib_data)):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        ce_path = root / "counterexample.txt"
        out = solve_instance(str(onnx_path), str(vnnlib_path), timeout, method, str(ce_path))
        out["message"] = out.get("message", "").replace(str(root / "files") + "/", "")
        if ce_path.is_file():
            out["counterexample"] = ce_path.read_text()
    return out


def connect(address: str, cpus: int) -> bool:
    """Start (``address == "local"``: ``cpus`` CPUs, no dashboard) or join a Ray cluster unless
    this process is already connected. Returns True when this call connected (the caller then
    disconnects at the end). A cluster that cannot be reached is a ``VerifierError``."""
    import ray  # noqa: PLC0415 (optional dependency)

    check_reachable(address)
    if ray.is_initialized():
        return False
    kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        if address == "local":
            ray.init(num_cpus=cpus, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise VerifierError(f"cannot start or join the Ray cluster {address!r}: {exc}") from exc
    return True


def check_reachable(address: str, seconds: float = 5.0) -> None:
    """For an explicit ``HOST:PORT`` (or ``ray://HOST:PORT``) address, one TCP connection
    within ``seconds``; ``VerifierError`` when none is made (``ray.init`` itself retries an
    unreachable address for minutes). "local" and "auto" are left to Ray."""
    import socket  # noqa: PLC0415

    host_port = address.split("://", 1)[-1]
    host, sep, port = host_port.rpartition(":")
    if address in ("local", "auto") or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=seconds).close()
    except OSError as exc:
        raise VerifierError(f"cannot reach the Ray cluster at {address}: {exc}") from exc


def ray_rows(queue: list[Instance], bench: Path, opt: RunOptions, ce_dir: Path):
    """Solve ``queue`` as Ray tasks (at most ``opt.workers`` at a time); yields each instance's
    row as it finishes. Without Ray installed: ``VerifierError`` naming the install command.
    ``opt.memory_limit`` does not apply (Ray's own memory monitor kills a task that exhausts the
    node's memory: an ``error`` row)."""
    try:
        import ray  # noqa: PLC0415
        from ray.exceptions import RayError  # noqa: PLC0415
    except ImportError as exc:
        raise VerifierError('running on Ray needs the ray package: pip install "verifier[ray]"'
                            ) from exc
    if opt.memory_limit:
        log.warning("--memory-limit applies to local workers only; not to Ray tasks")
    slots = max(1, opt.workers)
    started = connect(opt.ray, slots)
    solve = ray.remote(num_cpus=1, max_retries=0,
                       max_calls=max(1, opt.tasks_per_worker))(_solve_task)
    files: dict[str, object] = {}

    def data(rel: str):
        if rel not in files:
            files[rel] = ray.put((bench / rel).read_bytes())
        return files[rel]

    queue = list(queue)
    running: dict = {}  # object ref -> (instance, start, limit)
    try:
        while queue or running:
            while queue and len(running) < slots:
                inst = queue.pop(0)
                timeout = instance_timeout(inst, opt)
                ref = solve.remote(inst.onnx, data(inst.onnx), inst.vnnlib, data(inst.vnnlib),
                                   timeout, opt.method, opt.blas_threads)
                running[ref] = (inst, time.monotonic(),
                                timeout + opt.grace + opt.grace_share * timeout)
            soonest = min(start + limit for _, start, limit in running.values())
            ready, _ = ray.wait(list(running), num_returns=1,
                                timeout=max(0.0, min(soonest - time.monotonic(), 1.0)))
            now = time.monotonic()
            for ref in ready:
                inst, start, _ = running.pop(ref)
                yield _answer_row(ray, ref, inst, opt, ce_dir, now - start, RayError)
            for ref, (inst, start, limit) in list(running.items()):
                if now - start > limit:
                    ray.cancel(ref, force=True)
                    del running[ref]
                    yield Row(inst.onnx, inst.vnnlib, instance_timeout(inst, opt), "timeout",
                              now - start, "", f"cancelled after {now - start:.1f} s "
                              f"(timeout {instance_timeout(inst, opt):g} s + grace)")
    finally:
        for ref in running:  # Ctrl-C or an error in the driver: cancel, record nothing
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()


def _answer_row(ray, ref, inst: Instance, opt: RunOptions, ce_dir: Path, elapsed: float,
                failure: type) -> Row:
    """The row of a finished task: its answer (the counterexample file written for ``sat``), or
    ``error`` naming why the task failed."""
    timeout = instance_timeout(inst, opt)
    try:
        answer = ray.get(ref)
    except failure as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return Row(inst.onnx, inst.vnnlib, timeout, "error", elapsed, "",
                   f"{type(exc).__name__}: {why}"[:300])
    ce_text = answer.pop("counterexample", None)
    ce_path = ce_dir / f"{inst.name}.txt"
    if ce_text is not None:
        ce_dir.mkdir(parents=True, exist_ok=True)
        ce_path.write_text(ce_text)
    elif ce_path.exists():  # left by an earlier run of this instance
        ce_path.unlink()
    return Row(inst.onnx, inst.vnnlib, timeout, answer["result"], float(answer["seconds"]),
               answer.get("method", ""), answer.get("message", ""))
