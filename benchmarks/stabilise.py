"""Time branch and bound with stabilised root bounds (``BabOptions.stabilise_after`` 0.15, the
default) against the same searches without (``stabilise_after=0``, the baseline), in the same
run, on mnist_fc instances that need ReLU split.

    python benchmarks/stabilise.py [--processes P] [--timeout S] [--out DIR]

Each instance runs in a fresh process per setting (loading counts, as on the command line), the
baseline first, on an otherwise idle machine (P processes each: P should not exceed its cores).
The table ends in the ratios of the wall-clock seconds (> 1: stabilising is faster; a timeout
counts as the timeout) and the number of instances decided by each; two different decided
answers would be a bug and fail the run. Results go to ``DIR/stabilise.json``.
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

from record import write_record  # siblings of this script
from shared_data import vnncomp_dir

ROOT = Path(__file__).resolve().parent.parent

#: (network, property): the three slowest decided instances of the mnist_fc run before
#: stabilising (256x6 prop_1_0.05 sat) and its two nearest misses
INSTANCES = [("256x4", "prop_0_0.05"), ("256x6", "prop_3_0.05"), ("256x6", "prop_1_0.05"),
             ("256x4", "prop_13_0.05"), ("256x4", "prop_10_0.05")]


def one(net: str, prop: str, after: float, processes: int, timeout: float) -> dict:
    """Verify one instance in this process; its answer and wall seconds, loading included."""
    t = time.perf_counter()
    sys.path.insert(0, str(ROOT))
    from specs import read_vnnlib  # noqa: PLC0415 (timed: loading counts)
    from verifier import load_onnx  # noqa: PLC0415
    from verifier.search.bab import BabOptions  # noqa: PLC0415
    from verifier.verify import VerifyOptions, verify  # noqa: PLC0415

    root = vnncomp_dir() / "mnist_fc"
    onnx = root / "onnx" / f"mnist-net_{net}.onnx"
    model = load_onnx(str(onnx))
    spec = read_vnnlib(str(root / "vnnlib" / f"{prop}.vnnlib"), n_inputs=model.n_inputs,
                       n_outputs=model.n_outputs)
    opts = VerifyOptions(bab_options=BabOptions(processes=processes, stabilise_after=after))
    # loading counts against the timeout, as on the command line
    res = verify(model, spec, timeout=max(0.0, timeout - (time.perf_counter() - t)),
                 onnx_path=str(onnx), options=opts)
    bab = res.stats.get("bab", {})  # branch and bound's own statistics
    return {"answer": res.status, "seconds": time.perf_counter() - t,
            "stabilised": bab.get("stabilise_stabilised"), "tried": bab.get("stabilise_tried")}


def run_fresh(net: str, prop: str, after: float, processes: int, timeout: float) -> dict:
    """``one`` in a fresh Python process."""
    cmd = [sys.executable, __file__, "--one", net, prop, "--after", str(after),
           "--processes", str(processes), "--timeout", str(timeout)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1"))
    if out.returncode != 0:
        return {"answer": f"exit {out.returncode}", "seconds": float("nan")}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--one", nargs=2, metavar=("NET", "PROP"), help=argparse.SUPPRESS)
    p.add_argument("--after", type=float, default=0.15, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(one(*args.one, args.after, args.processes, args.timeout)))
        return 0
    load0 = os.getloadavg()
    print(f"{'instance':<20} {'answers':<18} {'plain s':>8} {'stabilised s':>13} {'ratio':>6}"
          f"  neurons proven stable", flush=True)
    rows = []
    for net, prop in INSTANCES:
        base = run_fresh(net, prop, 0.0, args.processes, args.timeout)
        new = run_fresh(net, prop, 0.15, args.processes, args.timeout)
        rows.append(dict(instance=f"{net} {prop}", answer_plain=base["answer"],
                         answer_stabilised=new["answer"], plain_s=base["seconds"],
                         stabilised_s=new["seconds"], ratio=base["seconds"] / new["seconds"],
                         stabilised=new.get("stabilised"), tried=new.get("tried")))
        decided = {a for a in (base["answer"], new["answer"]) if a in ("sat", "unsat")}
        flag = "  (answers differ)" if len(decided) > 1 else ""
        # "-": decided before the second stage
        proven = "-" if new.get("tried") is None else f"{new['stabilised']} of {new['tried']}"
        print(f"{net + ' ' + prop:<20} {base['answer'] + '/' + new['answer']:<18}"
              f" {base['seconds']:>8.1f} {new['seconds']:>13.1f}"
              f" {base['seconds'] / new['seconds']:>6.2f}  {proven}{flag}", flush=True)
    tot_b = sum(r["plain_s"] for r in rows)
    tot_n = sum(r["stabilised_s"] for r in rows)
    dec_b = sum(r["answer_plain"] in ("sat", "unsat") for r in rows)
    dec_n = sum(r["answer_stabilised"] in ("sat", "unsat") for r in rows)
    print(f"{'total':<20} {f'decided {dec_b}/{dec_n}':<18} {tot_b:>8.1f} {tot_n:>13.1f}"
          f" {tot_b / tot_n:>6.2f}")
    path = write_record(args.out, "stabilise", python=platform.python_version(),
                        processes=args.processes, timeout=args.timeout, load_before=load0,
                        load_after=os.getloadavg(), rows=rows, total_ratio=tot_b / tot_n,
                        decided_plain=dec_b, decided_stabilised=dec_n)
    print(f"wrote {path}; load average {load0} -> {os.getloadavg()}")
    differ = [r for r in rows if len({r["answer_plain"], r["answer_stabilised"]}
                                     & {"sat", "unsat"}) > 1]
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
