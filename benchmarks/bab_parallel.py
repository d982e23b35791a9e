"""Time ``verifier verify`` with branch and bound's ReLU-split searches on P processes, against
one process and against P processes that do not share work (the baselines), in the same run, on
mnist_fc instances whose proof (or counterexample) needs the split trees of several
conjunctions.

    python benchmarks/bab_parallel.py [--processes P] [--timeout S] [--out DIR]

Each instance runs in a fresh ``verifier verify`` process (loading counts, as on the command
line), with ``--processes 1``, with ``--processes P --no-work-sharing`` and with ``--processes
P``, one after the other, on an otherwise idle machine: P should not exceed its cores. The table
ends in the ratios of the wall-clock seconds (> 1: work sharing is faster) and their sums;
answers that differ are flagged (a timeout against an answer is the point of the exercise; two
different answers would be a bug). Results go to ``DIR/bab_parallel.json``.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from record import write_record  # siblings of this script
from shared_data import vnncomp_dir

ROOT = Path(__file__).resolve().parent.parent

#: (network, property): several open conjunctions each; the first five are decided within 120 s
#: on one core, the last two hold one conjunction that takes most of the work
INSTANCES = [("256x4", "prop_8_0.03"), ("256x6", "prop_7_0.03"), ("256x4", "prop_11_0.05"),
             ("256x4", "prop_14_0.05"), ("256x6", "prop_1_0.05"), ("256x4", "prop_0_0.05"),
             ("256x4", "prop_10_0.05")]


def verify_once(onnx: Path, vnnlib: Path, processes: int, timeout: float,
                share: bool = True) -> tuple[str, float]:
    """(answer, wall seconds) of one ``verifier verify`` process."""
    cmd = [sys.executable, "-m", "verifier.cli", "verify", str(onnx), str(vnnlib),
           "--timeout", str(timeout), "--processes", str(processes)]
    if not share:
        cmd.append("--no-work-sharing")
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
    P = args.processes
    print(f"{'instance':<22} {'answers':<22} {'1 process s':>12} {P} unshared s {P} shared s"
          f" {'1/shared':>9} {'unshared/shared':>16}", flush=True)
    for net, prop in INSTANCES:
        onnx = root / "onnx" / f"mnist-net_{net}.onnx"
        vnnlib = root / "vnnlib" / f"{prop}.vnnlib"
        a1, s1 = verify_once(onnx, vnnlib, 1, args.timeout)
        au, su = verify_once(onnx, vnnlib, P, args.timeout, share=False)
        ap, sp = verify_once(onnx, vnnlib, P, args.timeout)
        rows.append(dict(instance=f"{net} {prop}", answer_serial=a1, answer_unshared=au,
                         answer_shared=ap, serial_s=s1, unshared_s=su, shared_s=sp,
                         ratio_serial=s1 / sp, ratio_unshared=su / sp))
        answers = "/".join((a1, au, ap))
        decided = {a for a in (a1, au, ap) if a in ("sat", "unsat")}
        flag = "  (answers differ)" if len(decided) > 1 else ""
        print(f"{net + ' ' + prop:<22} {answers:<22} {s1:>12.1f} {su:>12.1f} {sp:>10.1f}"
              f" {s1 / sp:>9.2f} {su / sp:>16.2f}{flag}", flush=True)
    tot1 = sum(r["serial_s"] for r in rows)
    totu = sum(r["unshared_s"] for r in rows)
    totp = sum(r["shared_s"] for r in rows)
    print(f"{'total':<22} {'':<22} {tot1:>12.1f} {totu:>12.1f} {totp:>10.1f} {tot1 / totp:>9.2f}"
          f" {totu / totp:>16.2f}")
    path = write_record(args.out, "bab_parallel", python=platform.python_version(),
                        processes=P, timeout=args.timeout, load_before=load0,
                        load_after=os.getloadavg(), rows=rows, total_ratio_serial=tot1 / totp,
                        total_ratio_unshared=totu / totp)
    print(f"wrote {path}; load average {load0} -> {os.getloadavg()}")
    differ = [r for r in rows if len({a for k, a in r.items() if k.startswith("answer_")
                                      and a in ("sat", "unsat")}) > 1]
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
