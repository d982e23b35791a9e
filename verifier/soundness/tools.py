"""The verifiers a soundness run can test, each started on one instance at a time.

- ``CompetitionTool(tool_dir)``: any tool with the VNN-COMP interface. ``prepare_instance.sh v1
  CATEGORY ONNX VNNLIB`` (if the folder has it) runs first, untimed but limited to
  ``prepare_timeout`` seconds; then ``run_instance.sh v1 CATEGORY ONNX VNNLIB RESULTS TIMEOUT``
  (the competition's argument order) in its own process group, killed with the whole group at
  ``timeout + grace`` seconds.
- ``VerifierTool(method, bug=None)``: this package's ``verify`` with a forced method, in a worker
  process forked from a clean "forkserver" that has imported the verifier once (so each start is
  quick, and no state of the caller -- threads of Numba or onnxruntime -- leaks into it); the
  worker writes the same VNN-COMP results file (``verifier.run.write_results``) and is killed at
  ``timeout + grace`` seconds. ``bug`` names an injected bug of the self-test
  (``selftest.BUGS``), applied inside the worker only.

Both are driven through ``start(...) -> Job``; ``Job.poll()`` says whether it ended and
``Job.kill()`` ends it. Either kind of tool only ever sees the instance's ONNX and VNN-LIB files.
"""
from __future__ import annotations

import importlib
import logging
import multiprocessing as mp
import os
import signal
import subprocess
import time
from pathlib import Path

log = logging.getLogger(__name__)


class Job:
    """One running instance: ``poll()`` -> exit code or None while running; ``kill()``."""

    def __init__(self, handle, kind: str):
        self.handle, self.kind = handle, kind
        self.start = time.monotonic()

    def poll(self) -> int | None:
        if self.kind == "popen":
            return self.handle.poll()
        if self.handle.is_alive():
            return None
        self.handle.join()
        return self.handle.exitcode

    def kill(self) -> None:
        if self.kind == "popen":
            try:
                os.killpg(self.handle.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.handle.wait()
        else:
            if self.handle.is_alive():
                self.handle.kill()
            self.handle.join()


class CompetitionTool:
    """A tool folder with ``run_instance.sh`` (and optionally ``prepare_instance.sh``)."""

    def __init__(self, tool_dir, category: str = "soundness", prepare_timeout: float = 300.0,
                 name: str | None = None):
        self.dir = Path(tool_dir).resolve()
        self.run_script = self.dir / "run_instance.sh"
        if not self.run_script.is_file():
            raise FileNotFoundError(f"{self.run_script} not found (a VNN-COMP tool folder has "
                                    "run_instance.sh)")
        prep = self.dir / "prepare_instance.sh"
        self.prepare_script = prep if prep.is_file() else None
        self.category = category
        self.prepare_timeout = prepare_timeout
        self.name = name or f"dir:{self.dir.name}"

    def _cmd(self, script: Path, *args) -> list[str]:
        return ["bash", str(script), "v1", self.category, *map(str, args)]

    def prepare(self, onnx, vnnlib) -> str:
        """Run ``prepare_instance.sh``; returns "" when ready, else why not."""
        if self.prepare_script is None:
            return ""
        try:
            p = subprocess.run(self._cmd(self.prepare_script, onnx, vnnlib), cwd=self.dir,
                               capture_output=True, text=True, timeout=self.prepare_timeout,
                               start_new_session=True)
        except subprocess.TimeoutExpired:
            return f"prepare_instance.sh ran over {self.prepare_timeout:g} s"
        if p.returncode != 0:
            tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or [""]
            return f"prepare_instance.sh exited with {p.returncode}: {tail[0][:200]}"
        return ""

    def start(self, onnx, vnnlib, results, timeout: float) -> Job:
        cmd = self._cmd(self.run_script, onnx, vnnlib, results, _timeout_arg(timeout))
        proc = subprocess.Popen(cmd, cwd=self.dir, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        return Job(proc, "popen")


def _timeout_arg(timeout: float) -> str:
    return str(int(timeout)) if float(timeout).is_integer() else repr(float(timeout))


#: modules the forkserver imports once, so that each worker starts with them loaded
PRELOAD = ["numpy", "onnx", "onnxruntime", "specs", "verifier", "verifier.verify",
           "verifier.bounds", "verifier.run", "verifier.network.runtime",
           "verifier.soundness.selftest"]


def _verify_worker(onnx: str, vnnlib: str, results: str, timeout: float, method: str,
                   bug: str | None) -> None:
    """Body of a worker: verify (with the bug ``bug`` injected, if any) and write the results
    file; anything that escapes ``verify`` is the answer ``error``, never anything else."""
    import contextlib  # noqa: PLC0415

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from specs import read_vnnlib  # noqa: PLC0415 (preloaded by the forkserver)

    from .. import load_onnx  # noqa: PLC0415
    from ..result import Result  # noqa: PLC0415
    from ..run import limit_blas_threads, write_results  # noqa: PLC0415

    limit_blas_threads(1)
    patch = contextlib.nullcontext()
    if bug is not None:
        from .selftest import BUGS  # noqa: PLC0415

        patch = BUGS[bug].patch()
    t0 = time.monotonic()
    with patch:
        # read the function now, from its module: a bug may have wrapped it
        verify = importlib.import_module("verifier.verify").verify
        try:
            net = load_onnx(onnx)
            spec = read_vnnlib(vnnlib, n_inputs=net.n_inputs, n_outputs=net.n_outputs)
            left = max(0.0, timeout - (time.monotonic() - t0))
            result = verify(net, spec, timeout=left, method=method, onnx_path=onnx)
        except Exception as exc:  # the worker's answer to anything unexpected: error
            result = Result("error", message=f"{type(exc).__name__}: {exc}")
    write_results(results, result)


_CONTEXT = None


def _context():
    """The forkserver context (its server started on first use, with ``PRELOAD``)."""
    global _CONTEXT
    if _CONTEXT is None:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        _CONTEXT = ctx
    return _CONTEXT


class VerifierTool:
    """This package's verifier with a forced ``method`` (see ``verifier.verify.METHODS``), and
    optionally an injected ``bug`` (a name of ``selftest.BUGS``)."""

    def __init__(self, method: str, bug: str | None = None):
        from ..verify import METHODS  # noqa: PLC0415

        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; one of {', '.join(METHODS)}")
        if bug is not None:
            from .selftest import BUGS  # noqa: PLC0415

            if bug not in BUGS:
                raise ValueError(f"unknown bug {bug!r}")
        self.method, self.bug = method, bug
        self.name = f"verifier:{method}"

    def prepare(self, onnx, vnnlib) -> str:
        return ""

    def start(self, onnx, vnnlib, results, timeout: float) -> Job:
        proc = _context().Process(target=_verify_worker,
                                  args=(str(onnx), str(vnnlib), str(results), float(timeout),
                                        self.method, self.bug), daemon=True)
        proc.start()
        return Job(proc, "process")


def make_tool(spec: str, category: str = "soundness"):
    """A tool from its command-line name: ``verifier:METHOD`` or ``dir:PATH`` (or a folder)."""
    if spec.startswith("verifier:"):
        return VerifierTool(spec.split(":", 1)[1])
    if spec.startswith("dir:"):
        return CompetitionTool(spec.split(":", 1)[1], category)
    if Path(spec).is_dir():
        return CompetitionTool(spec, category)
    raise ValueError(f"unknown tool {spec!r}: use verifier:METHOD or a VNN-COMP tool folder")
