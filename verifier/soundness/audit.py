"""Audit a generated benchmark from its files alone: do the answers replay, are they hidden?

``audit(bench, seed)`` reads ``benchmark/`` and ``answers/`` (nothing of the generator's state):

- every planted instance's answer file is parsed and replayed on onnxruntime against the VNN-LIB
  file (``judge.replay_point``, no tolerance): it must lie strictly inside the box and reach the
  threshold margin;
- the battery of the manifest's recipe runs again on every planted instance, with a seed the
  generator did not use, on the model imported from the ONNX file (``load_onnx``, float64): the
  fraction it finds is the benchmark's *attack rate* (the generator kept only points its own
  battery missed, so this measures how well the counterexamples stay hidden from a fresh one).
"""
from __future__ import annotations

import json
import logging
import time

import numpy as np

from specs import read_vnnlib

from ..network.onnx_import import load_onnx
from ..network.runtime import OnnxRunner
from .harness import locate
from .judge import read_results_file, replay_point
from .models import dense_equivalent
from .pgd import battery

log = logging.getLogger(__name__)


def audit(bench, seed: int = 12345, attacks=None) -> dict:
    """The audit of the module; returns ``{"planted", "replayed", "min_margin", "min_gap",
    "attacked", "found", "attack_rate", "seconds", "instances": [...]}``. ``attacks`` overrides
    the manifest's battery."""
    t0 = time.perf_counter()
    root, mpath = locate(bench)
    if mpath is None:
        raise FileNotFoundError(f"{bench}: no answers/manifest.json to audit against")
    manifest = json.loads(mpath.read_text())
    attacks = attacks or [tuple(a) for a in manifest["recipe"]["battery"]]
    threshold = manifest["recipe"]["threshold"]
    rows, by_model = [], {}
    for rec in manifest["instances"]:
        if not rec["planted"]:
            continue
        runner = OnnxRunner(root / rec["onnx"])
        spec = read_vnnlib(root / rec["vnnlib"], n_inputs=runner.n_inputs)
        ans = read_results_file(mpath.parent / rec["answer"], spec.n_inputs)
        rep = replay_point(runner, spec, ans.xs[0]) if ans.xs else None
        box = spec.cases[0].input
        margin = gap = float("nan")
        if rep is not None and rep.y is not None:
            y = rep.y
            margin = float(y[1 - rec["label"]] - y[rec["label"]])
            gap = float(min(np.min(rep.x - box.lower), np.min(box.upper - rep.x)))
        ok = bool(rep is not None and rep.valid and margin >= threshold and gap > 0)
        rows.append({"vnnlib": rec["vnnlib"], "replayed": ok, "margin": margin, "gap": gap})
        by_model.setdefault(rec["onnx"], []).append((len(rows) - 1, box, rec))
    for k, (onnx, items) in enumerate(by_model.items()):
        net = load_onnx(root / onnx)
        try:
            net = dense_equivalent(net)
        except ValueError:  # an op the dense form lacks: attack the imported network itself
            pass
        lo = np.stack([b.lower for _, b, _ in items])
        hi = np.stack([b.upper for _, b, _ in items])
        labels = np.array([r["label"] for _, _, r in items])
        res = battery(net, lo, hi, labels, items[0][2]["eps"], attacks, seed=seed + k)
        for (i, _, _), found, m in zip(items, res.found, res.margin):
            rows[i].update(attack_found=bool(found), attack_min_margin=float(m))
    n = len(rows)
    found = sum(r["attack_found"] for r in rows)
    return {"planted": n, "replayed": sum(r["replayed"] for r in rows),
            "min_margin": min((r["margin"] for r in rows), default=None),
            "min_gap": min((r["gap"] for r in rows), default=None),
            "attacked": n, "found": found, "attack_rate": found / n if n else 0.0,
            "seed": seed, "seconds": round(time.perf_counter() - t0, 1), "instances": rows}
