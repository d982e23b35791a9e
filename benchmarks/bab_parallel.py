"""Time ``verifier verify`` with branch and bound's ReLU-split searches on P processes against one
process (the baseline), in the same run, on mnist_fc instances whose proof (or counterexample)
needs the split trees of several conjunctions.

    python benchmarks/bab_parallel.py [--processes P] [--timeout S] [--out DIR]

Each instance runs in a fresh ``verifier verify`` process (loading counts, as on the command
line), once with ``--processes 1`` and once with ``--processes P``, one after the other, on an
otherwise idle machine: P should not exceed its cores. The table ends in the ratio serial /
parallel of the wall-clock seconds (> 1: parallel is faster) and their sum; both answers must
agree. Results go to ``DIR/bab_parallel.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from shared_data import vnncomp_dir  # a sibling of this script

ROOT = Path(__file__).resolve().parent.parent

#: (network, property): several open conjunctions each, decided within 120 s on one core
INSTANCES = [("256x4", "prop_8_0.03"), ("256x6", "prop_7_0.03"), ("256x4", "prop_11_0.05"),
             ("256x4", "prop_14_0.05"), ("256x6", "prop_1_0.05")]


def verify_once(onnx: Path, vnnlib: Path, processes: int, timeout: float) -> tuple[str, float]:
    """(answer, wall seconds) of one ``verifier verify`` process."""
    cmd = [sys.executable, "-m", "verifier.cli", "verify", str(onnx), str(vnnlib),
           "--timeout", str(timeout), "--processes", str(processes)]
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    seconds = time.perf_counter() - t
    answer = out.stdout.split()[0] if out.stdout.strip() else f"exit {out.returncode}"
    return answer, seconds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    root = vnncomp_dir() / "mnist_fc"
    load0 = os.getloadavg()
    rows = []
    print(f"{'instance':<22} {'answer':<8} {'1 process s':>12} {args.processes} processes s"
          f" {'ratio':>7}", flush=True)
    for net, prop in INSTANCES:
        onnx = root / "onnx" / f"mnist-net_{net}.onnx"
        vnnlib = root / "vnnlib" / f"{prop}.vnnlib"
        a1, s1 = verify_once(onnx, vnnlib, 1, args.timeout)
        ap, sp = verify_once(onnx, vnnlib, args.processes, args.timeout)
        rows.append(dict(instance=f"{net} {prop}", answer_serial=a1, answer_parallel=ap,
                         serial_s=s1, parallel_s=sp, ratio=s1 / sp))
        flag = "" if a1 == ap else "  (answers differ)"
        print(f"{net + ' ' + prop:<22} {ap:<8} {s1:>12.1f} {sp:>13.1f} {s1 / sp:>7.2f}{flag}",
              flush=True)
    tot1 = sum(r["serial_s"] for r in rows)
    totp = sum(r["parallel_s"] for r in rows)
    print(f"{'total':<22} {'':<8} {tot1:>12.1f} {totp:>13.1f} {tot1 / totp:>7.2f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(python=platform.python_version(), cpus=os.cpu_count(), processes=args.processes,
               timeout=args.timeout, load_before=load0, load_after=os.getloadavg(),
               date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    (out / "bab_parallel.json").write_text(
        json.dumps(dict(environment=env, rows=rows, total_ratio=tot1 / totp), indent=2) + "\n")
    print(f"wrote {out / 'bab_parallel.json'}; load average {load0} -> {os.getloadavg()}")
    return 0 if all(r["answer_serial"] == r["answer_parallel"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
