"""Run the shared VNN-COMP benchmarks through ``verifier run`` and tabulate the answers.

    python benchmarks/vnncomp.py [--bench acasxu mnist_fc test] [--timeout-scale F | --timeout S]
                                 [--workers N] [--processes N] [--out DIR] [--fresh]

For each benchmark under ``../shared/data/vnncomp`` (or ``$VERIFIER_SHARED_DATA/vnncomp``) it
runs every instance (resuming ``DIR/<bench>.csv`` unless ``--fresh``), compares with
``ground_truth.csv``, prints one row per benchmark, and updates that benchmark's record in
``DIR/vnncomp.json``. The table
ends in ratios against its baselines: the number of instances (decided / all) and the issue's
targets (ACAS Xu: all 186 decided; mnist_fc: 80 of 90; test: all 5). Wall time is the run's
elapsed time with ``--workers`` processes; "total" sums the instances' own times (loading
included), "median" is their median.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from shared_data import vnncomp_dir  # a sibling of this script

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from verifier.run import (RunOptions, read_ground_truth, read_instances,  # noqa: E402
                          run_benchmark, summarize)

TARGETS = {"acasxu": 186, "mnist_fc": 80, "test": 5}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bench", nargs="+", default=["test", "acasxu", "mnist_fc"])
    p.add_argument("--timeout-scale", type=float, default=1.0)
    p.add_argument("--timeout", type=float, help="seconds per instance instead of the file's")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--processes", type=int, default=1,
                   help="processes per instance for branch and bound's ReLU-split searches")
    p.add_argument("--method", default="auto")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--fresh", action="store_true", help="discard earlier results first")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = vnncomp_dir()
    table = []
    for bench in args.bench:
        folder = data / bench
        csv_path = out / f"{bench}.csv"
        if args.fresh and csv_path.exists():
            csv_path.unlink()
        opt = RunOptions(timeout_scale=args.timeout_scale, timeout=args.timeout,
                         workers=args.workers, processes=args.processes, method=args.method)
        t0 = time.monotonic()
        rows = run_benchmark(folder, csv_path, opt,
                             progress=lambda d, t, r: print(f"\r{bench}: {d}/{t}", end="",
                                                            file=sys.stderr))
        wall = time.monotonic() - t0
        print(file=sys.stderr)
        s = summarize(rows, read_ground_truth(folder))
        table.append({"benchmark": bench, "instances": len(read_instances(folder)),
                      "sat": s.sat, "unsat": s.unsat, "unknown": s.unknown, "timeout": s.timeout,
                      "error": s.error, "correct": s.correct, "wrong": len(s.wrong),
                      "wrong_instances": s.wrong, "total_s": round(s.total_seconds, 2),
                      "median_s": None if s.median_seconds is None else round(s.median_seconds, 3),
                      "wall_s": round(wall, 1), "target_decided": TARGETS.get(bench)})
    head = ("benchmark", "inst", "sat", "unsat", "unknown", "timeout", "error", "correct",
            "wrong", "total s", "median s", "decided/inst", "decided/target")
    print(" | ".join(f"{h:>10}" for h in head))
    for r in table:
        decided = r["sat"] + r["unsat"]
        tgt = r["target_decided"]
        cells = (r["benchmark"], r["instances"], r["sat"], r["unsat"], r["unknown"], r["timeout"],
                 r["error"], r["correct"], r["wrong"], f"{r['total_s']:.1f}",
                 "-" if r["median_s"] is None else f"{r['median_s']:.2f}",
                 f"{decided / r['instances']:.3f}", "-" if not tgt else f"{decided / tgt:.3f}")
        print(" | ".join(f"{c!s:>10}" for c in cells))
    # one record per benchmark, kept across runs of other benchmarks
    path = out / "vnncomp.json"
    records = json.loads(path.read_text()).get("benchmarks", {}) if path.exists() else {}
    for r in table:
        records[r["benchmark"]] = {
            "when": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": platform.platform(),
            "cpus": os.cpu_count(), "load_average_after": os.getloadavg(),
            "workers": args.workers, "processes": args.processes,
            "timeout_per_instance": args.timeout,
            "timeout_scale": args.timeout_scale, "method": args.method, **r}
    path.write_text(json.dumps({"benchmarks": records}, indent=2) + "\n")
    return 1 if any(r["wrong"] for r in table) else 0


if __name__ == "__main__":
    sys.exit(main())
