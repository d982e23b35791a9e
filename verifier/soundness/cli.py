"""The ``verifier soundness`` command: generate, run, selftest.

    verifier soundness generate --out DIR [--seed S] [--tiny | --ci] [--planted N] [--clean N]
                                [--models NAME,...] [--workers N] [--timeout S]
    verifier soundness run BENCH_DIR --tool verifier:METHOD | --tool-dir DIR [...]
                                [--timeout S | --timeout-scale F] [--workers N] [--out DIR]
                                [--input-tol T] [--category NAME] [--check]
    verifier soundness audit DIR [--seed S] [--json FILE]
    verifier soundness selftest [--bench DIR] [--timeout S] [--bugs NAME,...] [--out DIR]

The main CLI wires it in with two lines: ``soundness.add_parser(sub)`` in ``build_parser`` (``sub``
being its subparsers), and nothing else: the parser sets ``func`` to ``main`` here, which
returns the exit status (0; 1 with ``--check`` when a tool made a false proof or claimed an
invalid counterexample, or when the self-test missed a bug or the unmodified verifier made a
false proof; 2 for bad input).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``soundness`` command (with its three subcommands) to ``subparsers``."""
    p = subparsers.add_parser("soundness", help="benchmarks with hidden counterexamples: "
                              "generate, run verifiers on them, self-test")
    sub = p.add_subparsers(dest="soundness_command", required=True)

    g = sub.add_parser("generate", help="train models with planted, hidden counterexamples")
    g.add_argument("--out", required=True, help="output folder (benchmark/ and answers/)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--tiny", action="store_true", help="the tiny test configuration")
    g.add_argument("--ci", action="store_true", help="the configuration of the benchmark "
                   "committed for the project's tests")
    g.add_argument("--planted", type=int, help="points with a planted counterexample per model")
    g.add_argument("--clean", type=int, help="clean points per model")
    g.add_argument("--models", help="comma-separated names: only these models of the "
                   "configuration")
    g.add_argument("--workers", type=int, help="models trained in parallel processes")
    g.add_argument("--timeout", type=float, help="seconds per instance in instances.csv")

    r = sub.add_parser("run", help="run verifiers on a benchmark and report false proofs")
    r.add_argument("bench_dir", help="the generator's output folder, or a VNN-COMP folder")
    r.add_argument("--tool", action="append", default=[],
                   help="verifier:METHOD (this package) or a VNN-COMP tool folder; repeatable")
    r.add_argument("--tool-dir", action="append", default=[],
                   help="a VNN-COMP tool folder with run_instance.sh; repeatable")
    r.add_argument("--category", default="soundness", help="CATEGORY argument of the scripts")
    r.add_argument("--timeout", type=float, help="seconds per instance (default: "
                   "instances.csv)")
    r.add_argument("--timeout-scale", type=float, default=1.0)
    r.add_argument("--workers", type=int, default=1, help="instances at the same time")
    r.add_argument("--input-tol", type=float, default=0.0,
                   help="tolerated distance of a counterexample outside the input box")
    r.add_argument("--limit", type=int, help="only the first N instances")
    r.add_argument("--out", help="folder for results files and report.json "
                   "(default: soundness_run/)")
    r.add_argument("--check", action="store_true",
                   help="exit 1 when a tool made a false proof or an invalid counterexample")

    a = sub.add_parser("audit", help="replay every planted counterexample and attack the "
                       "benchmark again with a fresh seed")
    a.add_argument("bench_dir", help="the generator's output folder")
    a.add_argument("--seed", type=int, default=12345, help="seed of the fresh battery")
    a.add_argument("--json", help="write the audit here")

    s = sub.add_parser("selftest", help="inject known bugs into our bound methods and show "
                       "that the benchmark catches each")
    s.add_argument("--bench", help="a generated benchmark (default: generate the tiny one)")
    s.add_argument("--timeout", type=float, default=10.0, help="seconds per instance")
    s.add_argument("--bugs", help="comma-separated bug names (default: all)")
    s.add_argument("--out", help="folder for the report (default: soundness_selftest/)")
    s.add_argument("--check", action="store_true",
                   help="exit 1 unless every bug is caught and the clean run is sound")
    p.set_defaults(func=main)
    return p


def main(args) -> int:
    """Run the subcommand of ``args``; returns the exit status."""
    cmd = args.soundness_command
    if cmd == "generate":
        return _generate(args)
    if cmd == "run":
        return _run(args)
    if cmd == "audit":
        return _audit(args)
    return _selftest(args)


def _audit(args) -> int:
    from .audit import audit  # noqa: PLC0415

    try:
        a = audit(args.bench_dir, seed=args.seed)
    except FileNotFoundError as exc:
        print(f"verifier: error: {exc}", file=sys.stderr)
        return 2
    print(f"{a['replayed']} of {a['planted']} planted counterexamples replay on onnxruntime "
          f"(least margin {a['min_margin']:.4g}, least distance inside the box "
          f"{a['min_gap']:.3g}); a fresh battery (seed {a['seed']}) finds {a['found']} "
          f"({100 * a['attack_rate']:.1f}%); {a['seconds']:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(a, indent=1))
    return 0


def _generate(args) -> int:
    import dataclasses  # noqa: PLC0415

    from .config import GenerateOptions, ci, tiny  # noqa: PLC0415
    from .generate import generate  # noqa: PLC0415

    opts = (tiny(seed=args.seed) if args.tiny else ci(seed=args.seed) if args.ci
            else GenerateOptions(seed=args.seed))
    changes = {k: getattr(args, k) for k in ("planted", "clean", "workers", "timeout")
               if getattr(args, k) is not None}
    if args.models:
        names = [n.strip() for n in args.models.split(",") if n.strip()]
        known = {m.name: m for m in opts.models}
        unknown = [n for n in names if n not in known]
        if unknown:
            print(f"verifier: error: unknown model {unknown[0]!r}; one of "
                  f"{', '.join(known)}", file=sys.stderr)
            return 2
        changes["models"] = tuple(known[n] for n in names)
    opts = dataclasses.replace(opts, **changes)

    def progress(name, rec):
        if rec is None:
            print(f"{name}: done", file=sys.stderr)
        else:
            print(f"{name}: round {rec['round']}, loss {rec['loss']:.4f}, "
                  f"{rec['valid']} planted valid", file=sys.stderr)

    m = generate(args.out, opts, progress=progress)
    s = m["summary"]
    print(f"{s['models']} models, {s['instances']} instances: {s['planted']} with a hidden "
          f"counterexample, {s['clean']} clean; {s['dropped']} planted points dropped; "
          f"{m['seconds']:.1f} s")
    print(f"benchmark: {Path(args.out) / 'benchmark'}   answers (keep apart): "
          f"{Path(args.out) / 'answers'}")
    return 0


def _run(args) -> int:
    from .harness import HarnessOptions, format_report, run_harness  # noqa: PLC0415
    from .tools import CompetitionTool, make_tool  # noqa: PLC0415

    try:
        tools = [make_tool(t, args.category) for t in args.tool]
        tools += [CompetitionTool(d, args.category) for d in args.tool_dir]
    except (ValueError, FileNotFoundError) as exc:
        print(f"verifier: error: {exc}", file=sys.stderr)
        return 2
    if not tools:
        print("verifier: error: name at least one --tool or --tool-dir", file=sys.stderr)
        return 2
    opt = HarnessOptions(timeout=args.timeout, timeout_scale=args.timeout_scale,
                         workers=args.workers, input_tol=args.input_tol, limit=args.limit)
    out = Path(args.out or "soundness_run")

    def progress(tool, done, total, row):
        print(f"[{tool} {done}/{total}] {row['instance']}: {row.get('status', '?')}"
              f"{' (killed)' if row['killed'] else ''} {row['seconds']:.1f} s", file=sys.stderr)

    report = run_harness(args.bench_dir, tools, out, opt, progress)
    print(format_report(report))
    print(f"report: {out / 'report.json'}")
    bad = sum(t["summary"]["false_proofs"] + t["summary"]["invalid_counterexamples"]
              for t in report["tools"].values())
    return 1 if (args.check and bad) else 0


def _selftest(args) -> int:
    from .selftest import BUGS, format_selftest, selftest  # noqa: PLC0415

    names = None
    if args.bugs:
        names = [n.strip() for n in args.bugs.split(",") if n.strip()]
        unknown = [n for n in names if n not in BUGS]
        if unknown:
            print(f"verifier: error: unknown bug {unknown[0]!r}; one of {', '.join(BUGS)}",
                  file=sys.stderr)
            return 2
    out = Path(args.out or "soundness_selftest")
    report = selftest(bench=args.bench, out_dir=out, timeout=args.timeout, bugs=names,
                      progress=lambda line: print(line, file=sys.stderr))
    print(format_selftest(report))
    (out / "selftest.json").write_text(json.dumps(report, indent=1))
    return 1 if (args.check and not report["passed"]) else 0
