"""ReLU-split branch and bound without and with hull cuts (``BabOptions.cut_slots``, see
``verifier/search/bab_cuts.py``), in the same run, on mnist_fc instances.

Two parts:

1. **root**: for each instance's case, the unstable neurons per ReLU layer and the mean lower
   bound of its spec rows (alpha-CROWN, 30 steps) after the root's intermediate bounds, without
   and with the cut refinement (``refine_intermediate``), and the seconds those bounds took.
2. **verify**: ``verifier.verify`` of each instance with the competition timeout (120 s) on one
   process, without and with cuts: the answer and the seconds.

    python benchmarks/bab_cuts.py [--timeout T] [--out DIR] [NET:PROP ...]

The table ends in ratios (with / without): the summed seconds over the instances both decide,
and the number decided. Results go to ``DIR/bab_cuts.json``.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from record import write_record  # siblings of this script
from shared_data import vnncomp_dir

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

INSTANCES = ["256x4:prop_8_0.03", "256x4:prop_11_0.05", "256x4:prop_14_0.05",
             "256x6:prop_7_0.03", "256x4:prop_5_0.05"]


def load(item: str):
    from specs import read_vnnlib
    from verifier.network import load_onnx
    net_name, prop = item.split(":")
    data = vnncomp_dir() / "mnist_fc"
    net = load_onnx(data / "onnx" / f"mnist-net_{net_name}.onnx")
    spec = read_vnnlib(data / "vnnlib" / f"{prop}.vnnlib", n_inputs=net.n_inputs,
                       n_outputs=net.n_outputs)
    return net, spec


def root_part(item: str) -> dict:
    """Part 1 for one instance: root bounds without and with the cut refinement."""
    from verifier.search.bab import BabOptions
    from verifier.search.bab_chain import as_relu_chain
    from verifier.search.bab_crown import ChainBounder, optimise
    from verifier.search.bab_relu import ReluSplitSearch
    net, spec = load(item)
    case = spec.cases[0]
    C = np.concatenate([c.C for c in case.unsafe])
    d = np.concatenate([c.d for c in case.unsafe])
    out = {}
    for name, slots in (("without", 0), ("with", BabOptions().cut_slots)):
        cb = ChainBounder(as_relu_chain(net))
        t = time.perf_counter()
        lo, hi, _ = ReluSplitSearch.root_bounds(cb, case, BabOptions(cut_slots=slots), True,
                                                time.monotonic() + 1e6)
        secs = time.perf_counter() - t
        res = optimise(cb, C, d, case.input.lower[None], case.input.upper[None], lo, hi,
                       iterations=30)
        out[name] = {"unstable": [int(((a < 0) & (b > 0)).sum()) for a, b, r in
                                  zip(lo, hi, cb.chain.relu) if r],
                     "mean_lower": float(res.lb.mean()), "seconds": secs}
    return out


def verify_part(item: str, timeout: float) -> dict:
    """Part 2 for one instance: the verifier's answer without and with cuts."""
    from verifier.search.bab import BabOptions
    from verifier.verify import VerifyOptions, verify
    net, spec = load(item)
    out = {}
    for name, slots in (("without", 0), ("with", BabOptions().cut_slots)):
        opts = VerifyOptions(bab_options=BabOptions(cut_slots=slots, processes=1))
        t = time.monotonic()
        res = verify(net, spec, timeout=timeout, options=opts)
        out[name] = {"status": res.status, "seconds": time.monotonic() - t}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("instances", nargs="*", default=INSTANCES, help="NET:PROP of mnist_fc")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    rows = []
    for item in args.instances:
        r = {"instance": item, "root": root_part(item), "verify": verify_part(item, args.timeout)}
        rows.append(r)
        a, b = r["root"]["without"], r["root"]["with"]
        va, vb = r["verify"]["without"], r["verify"]["with"]
        print(f"{item}: root unstable {a['unstable']} -> {b['unstable']}, mean bound "
              f"{a['mean_lower']:.3f} -> {b['mean_lower']:.3f} ({a['seconds']:.1f} -> "
              f"{b['seconds']:.1f} s); verify {va['status']} {va['seconds']:.1f} s -> "
              f"{vb['status']} {vb['seconds']:.1f} s", flush=True)
    decided = {n: sum(r["verify"][n]["status"] in ("sat", "unsat") for r in rows)
               for n in ("without", "with")}
    both = [r for r in rows if all(r["verify"][n]["status"] in ("sat", "unsat")
                                   for n in ("without", "with"))]
    t_a = sum(r["verify"]["without"]["seconds"] for r in both)
    t_b = sum(r["verify"]["with"]["seconds"] for r in both)
    print()
    print("| instance | without cuts | with cuts |")
    print("| --- | --- | --- |")
    for r in rows:
        va, vb = r["verify"]["without"], r["verify"]["with"]
        print(f"| {r['instance']} | {va['status']} {va['seconds']:.1f} s | "
              f"{vb['status']} {vb['seconds']:.1f} s |")
    print(f"| decided | {decided['without']}/{len(rows)} | {decided['with']}/{len(rows)} |")
    if both:
        print(f"| seconds, the {len(both)} both decide | {t_a:.1f} | {t_b:.1f} "
              f"(ratio {t_b / t_a:.2f}) |")
    write_record(args.out, "bab_cuts", timeout=args.timeout, instances=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
