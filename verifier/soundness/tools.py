"""The verifiers a soundness run can test, each started on one instance at a time.

- ``CompetitionTool(tool_dir)``: any tool with the VNN-COMP interface. ``prepare_instance.sh v1
  CATEGORY ONNX VNNLIB`` (if the folder has it) runs first, untimed but limited to
  ``prepare_timeout`` seconds; then ``run_instance.sh v1 CATEGORY ONNX VNNLIB RESULTS TIMEOUT``
  (the competition's argument order) in its own process group, killed with the whole group at
  ``timeout + grace`` seconds.
- ``VerifierTool(method)``: this package's ``verify`` with a forced method, in a forked worker
  process (the modules are imported once, in the parent), which writes the same VNN-COMP results
  file (``verifier.run.write_results``) and is killed at ``timeout + grace`` seconds.

Both are driven through ``start(...) -> Job``; ``Job.poll()`` says whether it ended and
``Job.kill()`` ends it. Either kind of tool only ever sees the instance's ONNX and VNN-LIB files.
"""
from __future__ import annotations

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


def _verify_worker(onnx: str, vnnlib: str, results: str, timeout: float, method: str) -> None:
    """Body of a worker: verify and write the results file; anything that escapes is ``error``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from specs import read_vnnlib  # noqa: PLC0415 (preloaded by the parent)

    from .. import load_onnx  # noqa: PLC0415
    from ..result import Result  # noqa: PLC0415
    from ..run import write_results  # noqa: PLC0415
    from ..verify import verify  # noqa: PLC0415

    t0 = time.monotonic()
    try:
        net = load_onnx(onnx)
        spec = read_vnnlib(vnnlib, n_inputs=net.n_inputs, n_outputs=net.n_outputs)
        left = max(0.0, timeout - (time.monotonic() - t0))
        result = verify(net, spec, timeout=left, method=method, onnx_path=onnx)
    except Exception as exc:  # the worker's answer to anything unexpected is error, never unsat
        result = Result("error", message=f"{type(exc).__name__}: {exc}")
    write_results(results, result)


class VerifierTool:
    """This package's verifier with a forced ``method`` (see ``verifier.verify.METHODS``)."""

    def __init__(self, method: str):
        from ..verify import METHODS  # noqa: PLC0415

        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; one of {', '.join(METHODS)}")
        self.method = method
        self.name = f"verifier:{method}"
        # import what the workers need once, so that each fork starts warm
        import specs  # noqa: F401, PLC0415

        from .. import run, verify  # noqa: F401, PLC0415
        from ..network import runtime  # noqa: F401, PLC0415

    def prepare(self, onnx, vnnlib) -> str:
        return ""

    def start(self, onnx, vnnlib, results, timeout: float) -> Job:
        ctx = mp.get_context("fork")
        proc = ctx.Process(target=_verify_worker,
                           args=(str(onnx), str(vnnlib), str(results), float(timeout),
                                 self.method), daemon=True)
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
