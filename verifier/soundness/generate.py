"""The generator: models with planted, hidden counterexamples, as a VNN-COMP benchmark.

For every model of the configuration (``config.GenerateOptions``), with seeds derived from the
configuration's seed and the model's position (so the output is the same for a seed, whatever
the number of workers):

1. points (``data.make_points``): centres with random labels, disjoint boxes, and for the
   planted ones a counterexample strictly inside the box (checked against the very box the
   VNN-LIB file states: ``specs.robustness`` with the data range as clip);
2. training (``plant.plant_counterexamples``), then export to ONNX (float32 weights);
3. each planted counterexample is *confirmed* on onnxruntime on the exported file (its margin
   ``z_t - z_y`` at least ``threshold``, the centre classified right), then attacked by the
   whole battery (``pgd.battery``, float64 on the exported weights) ``battery_runs`` times
   with independent fresh seeds; a point that any run finds is dropped, as is one that fails
   to confirm (one run alone keeps points that it missed by luck, which a later audit's fresh
   battery then finds);
4. files: ``benchmark/onnx/<model>.onnx``, ``benchmark/vnnlib/<model>_<k>.vnnlib`` (robustness
   of the centre's label; ``k`` a shuffled index, so names say nothing of what was planted),
   ``benchmark/instances.csv``; and apart from them ``answers/<model>_<k>.counterexample`` (the
   counterexample in VNN-COMP results format, as onnxruntime computes it) and
   ``answers/manifest.json`` (seed, recipe, models, every instance with ``planted`` true/false,
   margins, attack results, and the dropped points with the reason; each model's entry is also
   written to ``answers/parts/<model>.json`` as soon as the model is done). Every answer file
   is read back and replayed against the VNN-LIB file as written before it counts.

Clean instances are recorded as "no counterexample planted": nothing is claimed about them.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np

from specs import read_vnnlib, robustness, write_vnnlib

from ..network.runtime import OnnxRunner
from ..network.onnx_export import save_onnx
from ..result import Result
from ..run import format_results, limit_blas_threads
from .config import GenerateOptions
from .data import make_points
from .judge import parse_results, replay_point
from .models import build_model, dense_equivalent
from .pgd import battery, margins
from .plant import plant_counterexamples

log = logging.getLogger(__name__)

VERSION = 1


def _seeds(seed: int, index: int) -> list[int]:
    """Four independent seeds (data, init, training, battery) of model ``index``."""
    return [int(s) for s in np.random.SeedSequence([seed, index]).generate_state(4)]


def boxes(points, eps: float, r: float):
    """The robustness property of every point (label of its centre, box clipped to ``[-r, r]``)
    and the boxes as arrays (N, n)."""
    specs_ = [robustness(points.x[i], eps, int(points.labels[i]), 2, clip=(-r, r))
              for i in range(len(points))]
    lo = np.stack([s.cases[0].input.lower for s in specs_])
    hi = np.stack([s.cases[0].input.upper for s in specs_])
    return specs_, lo, hi


def _check_inside(points, lo, hi, eps: float) -> None:
    """Every planted counterexample lies strictly inside its box, at least 0.5% of eps from it."""
    for i in np.flatnonzero(points.planted):
        x = points.x_cex[i].reshape(-1)
        gap = min(float(np.min(x - lo[i])), float(np.min(hi[i] - x)))
        if not gap > 0.005 * eps:
            raise AssertionError(f"planted counterexample {i} lies {gap:.3g} from its box's "
                                 "boundary")


def generate_model(index: int, opts: GenerateOptions, out: Path, progress=None) -> dict:
    """Steps 1-4 of the module for model ``opts.models[index]``; returns its manifest entry
    ``{"model": ..., "instances": [...], "dropped": [...]}``."""
    spec = opts.models[index]
    t0, c0 = time.perf_counter(), time.process_time()
    s_data, s_init, s_train, s_attack = _seeds(opts.seed, index)
    r = opts.data_range
    n_planted = opts.planted if spec.planted is None else spec.planted
    n_clean = opts.clean if spec.clean is None else spec.clean
    changes = {k: getattr(spec, k) for k in ("rounds", "lr") if getattr(spec, k) is not None}
    plant_opts = dataclasses.replace(opts.plant, **changes) if changes else opts.plant
    points = make_points(spec.input_shape, n_planted, n_clean, spec.eps, r, seed=s_data)
    props, lo, hi = boxes(points, spec.eps, r)
    _check_inside(points, lo, hi, spec.eps)
    net0 = build_model(spec, seed=s_init, input_range=r)
    net, history = plant_counterexamples(
        net0, points, lo, hi, spec.eps, opts.threshold, plant_opts, opts.battery, seed=s_train,
        progress=None if progress is None else (lambda rec: progress(spec.name, rec)))
    onnx_rel = f"onnx/{spec.name}.onnx"
    onnx_path = out / "benchmark" / onnx_rel
    save_onnx(net, onnx_path)
    runner = OnnxRunner(onnx_path)
    N = len(points)
    y_centre = runner(points.x.reshape(N, -1))
    centre_margin = margins(y_centre, points.labels)
    pl = np.flatnonzero(points.planted)
    ort_margin = np.full(N, np.nan)
    if len(pl):
        y_cex = runner(points.x_cex[pl].reshape(len(pl), -1))
        ort_margin[pl] = -margins(y_cex, points.labels[pl])
    confirmed = np.zeros(N, bool)
    confirmed[pl] = (ort_margin[pl] >= opts.threshold) & (centre_margin[pl] > 0)
    # the battery, on the exported weights, ``battery_runs`` times with independent seeds of
    # their own; every point is attacked (clean ones for the record), and a planted point that
    # any run finds is dropped: a point that one run misses by luck falls to the next
    runs = [battery(dense_equivalent(net), lo, hi, points.labels, spec.eps, opts.battery,
                    seed=s) for s in battery_seeds(opts.seed, index, s_attack, opts.battery_runs)]
    att = runs[0]
    order = np.random.default_rng(s_data + 1).permutation(N)  # names hide what was planted
    instances, dropped = [], []
    for k, i in enumerate(order):
        stem = f"{spec.name}_{k}"
        rec = {"onnx": onnx_rel, "vnnlib": f"vnnlib/{stem}.vnnlib", "model": spec.name,
               "label": int(points.labels[i]), "eps": spec.eps,
               "centre": [float(v) for v in points.x[i].reshape(-1)],
               "centre_margin": float(centre_margin[i]),
               "attack_min_margin": float(min(a.margin[i] for a in runs)),
               "attack_found": bool(any(a.found[i] for a in runs)),
               "attack_found_by": int(att.found_by[i]),
               "attack_runs": [{"found": bool(a.found[i]), "found_by": int(a.found_by[i]),
                                "min_margin": float(a.margin[i])} for a in runs]}
        if points.planted[i]:
            rec["counterexample_margin"] = float(ort_margin[i])
            why = _drop_reason(confirmed[i], [(a.found[i], a.found_by[i]) for a in runs],
                               ort_margin[i], centre_margin[i], opts.threshold)
            if why:
                dropped.append({**rec, "planted": True, "reason": why})
                continue
            rec["answer"] = _write_answer(out, stem, points.x_cex[i].reshape(-1), runner,
                                          props[i])
        rec.update(planted=bool(points.planted[i]),
                   status="planted counterexample" if points.planted[i]
                   else "clean: no counterexample planted")
        write_vnnlib(props[i], out / "benchmark" / rec["vnnlib"])
        instances.append(rec)
    if instances and any(i["planted"] for i in instances):
        _replay_answers(out, instances, runner)
    seconds = time.perf_counter() - t0
    log.info("%s: %d planted kept of %d, %d clean, %.1f s", spec.name,
             sum(i["planted"] for i in instances), len(pl), N - len(pl), seconds)
    model = {"name": spec.name, "spec": {k: v for k, v in vars(spec).items()},
             "description": spec.describe(), "onnx": onnx_rel, "seconds": round(seconds, 2),
             "cpu_seconds": round(time.process_time() - c0, 2), "training": history}
    part = {"model": model, "instances": instances, "dropped": dropped}
    # the model's manifest entry, written as soon as it is done: a long generation that is
    # stopped keeps what it finished (``answers/parts/`` is read by nothing else)
    parts_dir = out / "answers" / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    (parts_dir / f"{spec.name}.json").write_text(json.dumps(part, indent=1))
    return part


def _drop_reason(confirmed, attacks, ort_margin, centre_margin, threshold) -> str:
    """Why a planted point is dropped ("" if kept); ``attacks`` holds ``(found, found_by)`` of
    each battery run."""
    if centre_margin <= 0:
        return "the centre is misclassified on onnxruntime"
    if not confirmed:
        return f"onnxruntime margin {ort_margin:.4g} is below the threshold {threshold}"
    for run, (found, found_by) in enumerate(attacks):
        if found:
            return (f"found by attack {int(found_by)} of the battery" if run == 0 else
                    f"found by attack {int(found_by)} of battery run {run + 1}")
    return ""


def battery_seeds(seed: int, index: int, first: int, runs: int) -> list[int]:
    """The seeds of the ``runs`` battery runs of model ``index``: ``first`` (the model's battery
    seed), then seeds drawn from ``(seed, index, 1000 + k)``, independent of every other."""
    more = [int(np.random.SeedSequence([seed, index, 1000 + k]).generate_state(1)[0])
            for k in range(1, runs)]
    return [first] + more


def _write_answer(out: Path, stem: str, x: np.ndarray, runner, prop) -> str:
    """Write the counterexample in VNN-COMP results format with onnxruntime's output."""
    y = runner(x[None, :]).reshape(-1)
    if not prop.violated_by(x[None, :], y[None, :])[0]:
        raise AssertionError(f"{stem}: the confirmed counterexample does not violate its "
                             "property")
    rel = f"{stem}.counterexample"
    path = out / "answers" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(format_results(Result("sat", counterexample=(x, y))))
    return rel


def _replay_answers(out: Path, instances: list[dict], runner) -> None:
    """Read every answer file and the VNN-LIB file as written, and replay: all must be valid."""
    for rec in instances:
        if not rec["planted"]:
            continue
        spec = read_vnnlib(out / "benchmark" / rec["vnnlib"], n_inputs=runner.n_inputs)
        ans = parse_results((out / "answers" / rec["answer"]).read_text(), spec.n_inputs)
        rep = replay_point(runner, spec, ans.xs[0]) if ans.xs else None
        if rep is None or not rep.valid:
            raise AssertionError(f"{rec['answer']}: the written counterexample does not replay "
                                 f"({rep.reason if rep else ans.problem})")


def _worker(args):
    index, opts, out = args
    limit_blas_threads(1)
    return generate_model(index, opts, Path(out))


def generate(out_dir, options: GenerateOptions | None = None, progress=None) -> dict:
    """Generate the benchmark of ``options`` into ``out_dir`` (see module); returns the
    manifest. ``progress(model_name, record)`` is called after each training check (only with
    one worker) and ``progress(model_name, None)`` when a model is done."""
    opts = options or GenerateOptions()
    out = Path(out_dir)
    for sub in ("benchmark/onnx", "benchmark/vnnlib", "answers"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    jobs = [(i, opts, str(out)) for i in range(len(opts.models))]
    if opts.workers > 1:
        with mp.get_context("fork").Pool(opts.workers) as pool:
            parts = []
            for part in pool.imap(_worker, jobs):
                parts.append(part)
                if progress is not None:
                    progress(part["model"]["name"], None)
    else:
        parts = []
        for i, _, _ in jobs:
            parts.append(generate_model(i, opts, out, progress))
            if progress is not None:
                progress(opts.models[i].name, None)
    instances = [i for p in parts for i in p["instances"]]
    with open(out / "benchmark" / "instances.csv", "w") as f:
        for rec in instances:
            f.write(f"{rec['onnx']},{rec['vnnlib']},{opts.timeout:g}\n")
    n_pl = sum(i["planted"] for i in instances)
    manifest = {"generator": "verifier.soundness", "version": VERSION, "seed": opts.seed,
                "recipe": opts.to_json(), "seconds": round(time.perf_counter() - t0, 1),
                "summary": {"models": len(parts), "instances": len(instances),
                            "planted": n_pl, "clean": len(instances) - n_pl,
                            "dropped": sum(len(p["dropped"]) for p in parts)},
                "models": [p["model"] for p in parts], "instances": instances,
                "dropped": [d for p in parts for d in p["dropped"]]}
    (out / "answers" / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest
