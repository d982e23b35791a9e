"""The triangle LP against the same LP with hull cuts (``LPOptions.cut_rounds``, see
``verifier/bounds/lp_cuts.py``), in the same run, on mnist_fc.

Two parts:

1. **root**: the 9 margins of mnist_fc 256x2 properties over their input box, CROWN's
   intermediate bounds: the mean lower bound, the rows proven (> 0) and the seconds of each.
2. **stalled domains**: ReLU-split branch and bound runs on one conjunction of 256x4
   prop_7_0.05 (a timeout at 120 s, its tree stalled near 90% refuted) for ``--search``
   seconds; then every ``--every``-th open domain (worst bound first) is bounded by the triangle
   LP and by the LP with cuts, with the domain's bounds and splits. A domain is refuted when
   its bound is > 0 (or +inf: the cuts prove that no input reaches it).

    python benchmarks/lp_cuts.py [--rounds R] [--search S] [--every K] [--out DIR]

Every bound is certified from the LP's duals (or a Farkas ray). The table ends in ratios
against the triangle LP: seconds, and rows / domains decided. Results go to
``DIR/lp_cuts.json``.
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

ROOT_PROPS = ["prop_0_0.03", "prop_1_0.05", "prop_2_0.05", "prop_3_0.05", "prop_4_0.05"]


def load(net_name: str, prop: str):
    from specs import read_vnnlib
    from verifier.network import load_onnx
    data = vnncomp_dir() / "mnist_fc"
    net = load_onnx(data / "onnx" / f"mnist-net_{net_name}.onnx")
    spec = read_vnnlib(data / "vnnlib" / f"{prop}.vnnlib", n_inputs=net.n_inputs,
                       n_outputs=net.n_outputs)
    return net, spec


def root_part(rounds: int) -> list[dict]:
    """Part 1: triangle LP vs LP with cuts on the margins of 256x2 properties."""
    from verifier.bounds.lp import LPOptions, lp_bounds
    rows = []
    for prop in ROOT_PROPS:
        net, spec = load("256x2", prop)
        case = spec.cases[0]
        C = np.concatenate([c.C for c in case.unsafe])
        d = np.concatenate([c.d for c in case.unsafe])
        lo, hi = case.input.lower[None], case.input.upper[None]
        out = {"property": prop}
        for name, r in (("triangle", 0), ("cuts", rounds)):
            t = time.perf_counter()
            res = lp_bounds(net, lo, hi, C, d, options=LPOptions(upper=False, cut_rounds=r))
            lb = res.lower[0]
            out[name] = {"mean_lower": float(np.mean(lb)), "proven": int(np.sum(lb > 0)),
                         "rows": int(lb.size), "seconds": time.perf_counter() - t,
                         "cuts": int(res.stats.get("cuts", 0))}
        rows.append(out)
        print(f"root 256x2 {prop}: triangle mean {out['triangle']['mean_lower']:.4f} "
              f"({out['triangle']['proven']}/9, {out['triangle']['seconds']:.2f} s), cuts mean "
              f"{out['cuts']['mean_lower']:.4f} ({out['cuts']['proven']}/9, "
              f"{out['cuts']['seconds']:.2f} s, {out['cuts']['cuts']} cuts)", flush=True)
    return rows


def stalled_part(rounds: int, seconds: float, every: int) -> dict:
    """Part 2: the open domains of a stalled ReLU-split search, bounded both ways."""
    from verifier.bounds.lp import LPOptions, lp_bounds
    from verifier.bounds.lp_program import LayerBounds, relu_program
    from verifier.search.bab import BabOptions
    from verifier.search.bab_chain import as_relu_chain
    from verifier.search.bab_crown import ChainBounder
    from verifier.search.bab_relu import Domains, ReluSplitSearch
    net, spec = load("256x4", "prop_7_0.05")
    cb = ChainBounder(as_relu_chain(net))
    t0 = time.monotonic()
    search = ReluSplitSearch(cb, net, spec.cases[0], 0, [0], lambda *a, **k: None, BabOptions(),
                             t0 + 10 * seconds + 60, {})
    status = search.run(pause_at=t0 + seconds)
    if status != "paused":
        raise SystemExit(f"the search ended ({status}) before it stalled: nothing to measure")
    dom = Domains.concat(search.stack)
    lb = search._conj_lb(dom.lb)[:, 0]
    picked = np.argsort(lb)[::every]
    prog = relu_program(net)
    layers = cb.relu_layers
    res = {"search_seconds": seconds, "refuted_share": search.refuted, "open": len(dom),
           "bounded": int(picked.size)}
    for name, r in (("triangle", 0), ("cuts", rounds)):
        t = time.perf_counter()
        got = []
        for q in picked:
            inter = {n: LayerBounds(dom.lo[i][q:q + 1], dom.hi[i][q:q + 1])
                     for n, i in zip(prog.pre_nodes, layers)}
            splits = {k: dom.split[i][q:q + 1] for k, i in enumerate(layers, 1)}
            got.append(lp_bounds(net, search.xl0, search.xu0, search.C, search.d, inter,
                                 LPOptions(upper=False, cut_rounds=r), splits).lower[0, 0])
        got = np.array(got)
        res[name] = {"refuted": int(np.sum(got > 0)), "empty": int(np.sum(got == np.inf)),
                     "seconds": time.perf_counter() - t,
                     "median_bound": float(np.median(got))}
        print(f"stalled domains, {name}: {res[name]['refuted']}/{picked.size} refuted "
              f"({res[name]['empty']} proven empty), {res[name]['seconds']:.1f} s", flush=True)
    res["crown_median_bound"] = float(np.median(lb[picked]))
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=4, help="cut rounds (default 4)")
    ap.add_argument("--search", type=float, default=40.0,
                    help="seconds of branch and bound before the open domains are taken")
    ap.add_argument("--every", type=int, default=12, help="bound every K-th open domain")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    root = root_part(args.rounds)
    stalled = stalled_part(args.rounds, args.search, args.every)
    tri_s = sum(r["triangle"]["seconds"] for r in root)
    cut_s = sum(r["cuts"]["seconds"] for r in root)
    tri_p = sum(r["triangle"]["proven"] for r in root)
    cut_p = sum(r["cuts"]["proven"] for r in root)
    print()
    print("| part | triangle LP | LP + cuts | ratio (cuts / triangle) |")
    print("| --- | --- | --- | --- |")
    print(f"| root, 256x2, {len(root)} properties: rows proven | {tri_p}/{9 * len(root)} | "
          f"{cut_p}/{9 * len(root)} | - |")
    print(f"| root: mean lower bound | "
          f"{np.mean([r['triangle']['mean_lower'] for r in root]):.4f} | "
          f"{np.mean([r['cuts']['mean_lower'] for r in root]):.4f} | - |")
    print(f"| root: seconds | {tri_s:.1f} | {cut_s:.1f} | {cut_s / tri_s:.2f} |")
    st, sc = stalled["triangle"], stalled["cuts"]
    print(f"| stalled domains ({stalled['bounded']} of {stalled['open']} open after "
          f"{stalled['search_seconds']:g} s, tree {stalled['refuted_share']:.2%} refuted): "
          f"refuted | {st['refuted']} | {sc['refuted']} ({sc['empty']} empty) | - |")
    print(f"| stalled domains: seconds | {st['seconds']:.1f} | {sc['seconds']:.1f} | "
          f"{sc['seconds'] / st['seconds']:.2f} |")
    write_record(args.out, "lp_cuts", rounds=args.rounds, root=root, stalled=stalled)
    return 0


if __name__ == "__main__":
    sys.exit(main())
