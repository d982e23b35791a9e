"""The harness: run verifiers on a hidden-counterexample benchmark and report every false proof.

``run_harness(bench, tools, out_dir)`` takes a generated benchmark (``generate.py``: a folder
with ``benchmark/`` in the VNN-COMP layout and, kept apart, ``answers/manifest.json``), copies
the instances' ONNX and VNN-LIB files to ``out_dir/staged/`` (so a tool never sees the answers),
runs every tool on every instance (``tools.py``: the competition interface or our own
verifier, one results file per instance under ``out_dir/<tool>/``), reads each results file by
exact string, replays every counterexample a tool claims on onnxruntime, and judges each answer
(``judge.py``): ``unsat`` on a planted instance is a *false proof*, a soundness bug named in the
report. The report (per tool: false proofs, invalid counterexamples, correct ``sat`` on planted
and clean instances, ``unsat`` on clean ones, unknown, timeouts, errors) is written as
``report.json`` and returned; ``format_report`` renders it as a table.

A benchmark without a manifest (any VNN-COMP folder) can be run too: every instance then counts
as clean, and only counterexamples are judged.
"""
from __future__ import annotations

import csv
import json
import logging
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .judge import VERDICTS, judge, read_results_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchInstance:
    """One row of ``instances.csv`` and whether a counterexample was planted in it."""

    onnx: str
    vnnlib: str
    timeout: float
    planted: bool

    @property
    def name(self) -> str:
        return f"{Path(self.onnx).stem}+{Path(self.vnnlib).stem}"


def locate(bench) -> tuple[Path, Path | None]:
    """The VNN-COMP folder and the manifest of a benchmark given as the generator's output folder
    (``benchmark/`` + ``answers/manifest.json``) or as a VNN-COMP folder (no manifest, unless
    one lies beside it in ``../answers/``)."""
    bench = Path(bench)
    if (bench / "benchmark" / "instances.csv").is_file():
        root = bench / "benchmark"
    elif (bench / "instances.csv").is_file():
        root = bench
    else:
        raise FileNotFoundError(f"{bench}: no instances.csv (nor benchmark/instances.csv)")
    manifest = root.parent / "answers" / "manifest.json"
    return root, manifest if manifest.is_file() else None


def load_instances(root: Path, manifest: dict | None) -> list[BenchInstance]:
    """The instances of ``root/instances.csv``, marked planted from the manifest."""
    planted = set()
    if manifest is not None:
        planted = {(i["onnx"], i["vnnlib"]) for i in manifest["instances"] if i["planted"]}
    out = []
    with open(root / "instances.csv", newline="") as f:
        for rec in csv.reader(f):
            if not rec or not "".join(rec).strip():
                continue
            onnx, vnnlib, timeout = rec[0].strip(), rec[1].strip(), float(rec[2])
            out.append(BenchInstance(onnx, vnnlib, timeout, (onnx, vnnlib) in planted))
    return out


def stage(root: Path, instances: list[BenchInstance], dest: Path) -> Path:
    """Copy the instances' files to ``dest`` (same relative paths); returns ``dest``."""
    for inst in instances:
        for rel in (inst.onnx, inst.vnnlib):
            src, dst = root / rel, dest / rel
            if not dst.is_file() or dst.stat().st_size != src.stat().st_size:
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
    return dest


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name)


@dataclass
class HarnessOptions:
    """Knobs of a harness run.

    timeout: seconds per instance (None: each instance's own from instances.csv).
    timeout_scale: multiplies the instances' own timeouts (1).
    grace: seconds past the timeout before a tool is killed (5 + 10% of the timeout).
    workers: instances run at the same time (1).
    input_tol: how far outside the input box a claimed counterexample may lie (0: none).
    limit: only the first N instances (None: all).
    stop_at_false_proof: stop a tool at its first false proof (the self-test's bug runs).
    """

    timeout: float | None = None
    timeout_scale: float = 1.0
    grace: float = 5.0
    workers: int = 1
    input_tol: float = 0.0
    limit: int | None = None
    stop_at_false_proof: bool = False


def run_tool(tool, staged: Path, instances: list[BenchInstance], out: Path,
             opt: HarnessOptions, progress: Callable | None = None) -> list[dict]:
    """Run ``tool`` on every instance and judge each answer as it comes (``judge_row``);
    returns one row per instance run, in instance order. Results files go to ``out``. With
    ``opt.stop_at_false_proof`` the run ends (the running instances killed and dropped) at the
    first false proof. No tool process outlives the call, whatever happens."""
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict | None] = [None] * len(instances)
    queue = list(range(len(instances)))
    running: dict[int, tuple] = {}
    ctx: dict = {}
    try:
        while queue or running:
            while queue and len(running) < max(1, opt.workers):
                k = queue.pop(0)
                started = _start_one(tool, staged, instances[k], out, opt, ctx)
                if isinstance(started, dict):
                    rows[k] = started
                else:
                    running[k] = started
            time.sleep(0.02)
            for k in list(running):
                row = _finish_one(running[k], instances[k], staged, opt, ctx)
                if row is None:
                    continue
                del running[k]
                rows[k] = row
                if progress is not None:
                    progress(tool.name, sum(r is not None for r in rows), len(rows), row)
                if opt.stop_at_false_proof and row["verdict"] == "false proof":
                    queue.clear()
                    for j in list(running):
                        running.pop(j)[0].kill()
                    break
    finally:
        for job, _, _ in running.values():
            job.kill()
    return [r for r in rows if r is not None]


def _start_one(tool, staged: Path, inst: BenchInstance, out: Path, opt: HarnessOptions,
               ctx: dict):
    """Start ``tool`` on ``inst``: ``(job, results path, kill limit)``, or the judged row when
    its preparation failed."""
    res = out / f"{_safe(inst.name)}.txt"
    if res.exists():
        res.unlink()
    timeout = opt.timeout if opt.timeout is not None else inst.timeout * opt.timeout_scale
    why = tool.prepare(staged / inst.onnx, staged / inst.vnnlib)
    if why:
        row = _row(inst, res, 0.0, False, prepare_error=why)
        judge_row(row, staged, opt, ctx)
        return row
    job = tool.start(staged / inst.onnx, staged / inst.vnnlib, res, timeout)
    return job, res, timeout + opt.grace + 0.1 * timeout


def _finish_one(running, inst: BenchInstance, staged: Path, opt: HarnessOptions, ctx: dict):
    """The judged row of a job that ended (or ran past its limit: then killed), else None."""
    job, res, limit = running
    code = job.poll()
    elapsed = time.monotonic() - job.start
    killed = False
    if code is None:
        if elapsed < limit:
            return None
        job.kill()
        killed = True
    row = _row(inst, res, elapsed, killed, exit_code=code)
    judge_row(row, staged, opt, ctx)
    return row


def _row(inst, res: Path, seconds: float, killed: bool, exit_code=None, prepare_error=""):
    return {"instance": inst.name, "onnx": inst.onnx, "vnnlib": inst.vnnlib,
            "planted": inst.planted, "results_file": str(res), "seconds": round(seconds, 3),
            "killed": killed, "exit_code": exit_code, "prepare_error": prepare_error}


def judge_row(row: dict, staged: Path, opt: HarnessOptions, ctx: dict) -> None:
    """Add ``status``, ``verdict``, ``detail`` (and the replayed point's output) to a row;
    ``ctx`` caches one onnxruntime session per model."""
    from specs import read_vnnlib  # noqa: PLC0415

    from ..network.runtime import OnnxRunner  # noqa: PLC0415

    if row["prepare_error"]:
        row.update(status="error", verdict="error", detail=row["prepare_error"])
        return
    runner = ctx.get(row["onnx"])
    if runner is None:
        runner = ctx[row["onnx"]] = OnnxRunner(staged / row["onnx"])
    spec = read_vnnlib(staged / row["vnnlib"], n_inputs=runner.n_inputs)
    ans = read_results_file(row["results_file"], spec.n_inputs)
    if ans.status == "no answer" and row["killed"]:
        ans.status, ans.problem = "timeout", "killed by the harness after its time"
    v = judge(ans, row["planted"], runner, spec, opt.input_tol)
    row.update(status=ans.status, verdict=v.verdict, detail=v.detail)
    if v.replay is not None and v.replay.y is not None:
        row["replayed_output"] = [float(t) for t in v.replay.y]
    if row["killed"] and v.verdict != "timeout":
        row["detail"] = (row["detail"] + "; " if row["detail"] else "") + \
            "written before the harness killed the tool"


def summarize(rows: list[dict]) -> dict:
    """Counts per verdict, split by planted / clean, and the named false proofs."""
    counts = {v: 0 for v in VERDICTS}
    for r in rows:
        counts[r["verdict"]] += 1
    sat_planted = sum(1 for r in rows if r["verdict"] == "sat" and r["planted"])
    return {"instances": len(rows), "planted": sum(r["planted"] for r in rows),
            "clean": sum(not r["planted"] for r in rows),
            "false_proofs": counts["false proof"],
            "invalid_counterexamples": counts["invalid counterexample"],
            "sat_planted": sat_planted, "sat_clean": counts["sat"] - sat_planted,
            "unsat_clean": counts["unsat (clean)"], "unknown": counts["unknown"],
            "timeout": counts["timeout"], "error": counts["error"],
            "no_answer": counts["no answer"], "unparsable": counts["unparsable"],
            "seconds": round(sum(r["seconds"] for r in rows), 2),
            "false_proof_instances": [r["instance"] for r in rows
                                      if r["verdict"] == "false proof"],
            "invalid_counterexample_instances": [r["instance"] for r in rows
                                                 if r["verdict"] == "invalid counterexample"]}


def run_harness(bench, tools, out_dir, options: HarnessOptions | None = None,
                progress: Callable | None = None) -> dict:
    """Run every tool on every instance of ``bench`` (see module); writes ``out_dir/report.json``
    and returns the report ``{"benchmark", "options", "tools": {name: {"summary", "rows"}}}``."""
    opt = options or HarnessOptions()
    root, manifest_path = locate(bench)
    manifest = json.loads(manifest_path.read_text()) if manifest_path else None
    instances = load_instances(root, manifest)
    if opt.limit is not None:
        instances = instances[:opt.limit]
    out = Path(out_dir)
    staged = stage(root, instances, out / "staged")
    report = {"benchmark": str(root), "manifest": str(manifest_path) if manifest_path else None,
              "options": vars(opt).copy(), "tools": {}}
    if manifest is None:
        log.warning("%s: no manifest; every instance counts as clean", root)
    for tool in tools:
        log.info("running %s on %d instances", tool.name, len(instances))
        rows = run_tool(tool, staged, instances, out / _safe(tool.name), opt, progress)
        summary = summarize(rows)
        report["tools"][tool.name] = {"summary": summary, "rows": rows}
        for name in summary["false_proof_instances"]:
            log.error("%s: FALSE PROOF on %s", tool.name, name)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    return report


COLUMNS = (("false proofs", "false_proofs"), ("invalid CE", "invalid_counterexamples"),
           ("sat planted", "sat_planted"), ("sat clean", "sat_clean"),
           ("unsat clean", "unsat_clean"), ("unknown", "unknown"), ("timeout", "timeout"),
           ("error", "error"), ("no answer", "no_answer"), ("unparsable", "unparsable"),
           ("seconds", "seconds"))


def format_report(report: dict) -> str:
    """The report as a table (one line per tool), followed by every false proof and invalid
    counterexample by name."""
    tools = report["tools"]
    if not tools:
        return "no tools were run"
    width = max(12, max(len(n) for n in tools) + 2)
    any_s = next(iter(tools.values()))["summary"]
    head = (f"{any_s['instances']} instances: {any_s['planted']} with a planted counterexample, "
            f"{any_s['clean']} clean (no counterexample planted)")
    lines = [head, "tool".ljust(width) + "".join(f"{c:>14}" for c, _ in COLUMNS)]
    for name, t in tools.items():
        s = t["summary"]
        cells = [f"{s[k]:>14.1f}" if k == "seconds" else f"{s[k]:>14d}" for _, k in COLUMNS]
        lines.append(name.ljust(width) + "".join(cells))
    for name, t in tools.items():
        for r in t["rows"]:
            if r["verdict"] in ("false proof", "invalid counterexample"):
                lines.append(f"{r['verdict'].upper()}: {name} on {r['instance']}"
                             + (f" ({r['detail']})" if r["detail"] else ""))
    return "\n".join(lines)
