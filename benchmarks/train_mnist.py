"""Certified training on MNIST: IBP and CROWN-IBP at eps 0.1, Gowal et al.'s small CNN.

Trains on images 0-7999 of the MNIST test set (../shared/data/mnist), evaluates on images
8000-9999: clean accuracy, PGD accuracy and certified accuracy by the sound bound core
(``verifier.bounds``: IBP, and CROWN with IBP intermediate bounds), and the training time per
epoch. Prints a table that ends
with ratios against the PyTorch yardstick of issue 5 (98.3% clean / 94.1% IBP-certified after
8 minutes of IBP training on the same images and two cores), writes
``benchmarks/results/train_mnist.json`` (and the table as ``train_mnist.txt``) and, when
matplotlib is installed, a plot of the training curves ``benchmarks/results/train_mnist.png``.

    python benchmarks/train_mnist.py                 # both methods, the recorded settings
    python benchmarks/train_mnist.py --quick         # a small smoke run (1,000 images)
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

# One BLAS thread per worker: OpenBLAS's own threads on small products stall when the cores are
# shared, and two workers on two halves of each batch use both cores better (FitOptions.workers).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from verifier import save_onnx  # noqa: E402
from verifier.bounds import CrownOptions  # noqa: E402
from verifier.train import cnn_small, evaluate, fit, load_mnist  # noqa: E402

#: CROWN certification with IBP intermediate bounds (the bound CROWN-IBP trains): full CROWN
#: intermediate bounds over the CNN's 5,904 hidden neurons cost seconds per image.
CROWN = CrownOptions(intermediate="ibp")

YARDSTICK = {"clean": 0.983, "certified": 0.941, "minutes": 8.0}
EPS = 0.1
DOMAIN = (0.0, 1.0)

#: the recorded training settings of each method (FitOptions fields): Gowal et al.'s schedule
#: (one natural epoch, a smoothed 10-epoch eps ramp to eps_train = 0.15, kappa 1 -> 0.5), IBP
#: initialisation, Adam 1e-3 decayed by 0.2 at 70% and 85% of the epochs; CROWN-IBP's beta goes
#: 1 -> 0 over the first 4 epochs of the ramp (its CROWN pass costs about 4 IBP passes).
SETTINGS = {
    "ibp": dict(epochs=40, batch_size=100, lr=1e-3, lr_milestones=(0.7, 0.85), lr_decay=0.2,
                warmup_epochs=1, ramp_epochs=10, eps_train=0.15, kappa_end=0.5, grad_clip=10.0),
    "crown-ibp": dict(epochs=40, batch_size=100, lr=1e-3, lr_milestones=(0.7, 0.85),
                      lr_decay=0.2, warmup_epochs=1, ramp_epochs=10, eps_train=0.15,
                      kappa_end=0.5, grad_clip=10.0, beta_ramp_epochs=4),
}


def run(method: str, X, y, Xt, yt, settings: dict, pgd_steps: int, seed: int,
        workers: int, save_dir: str | None = None) -> dict:
    log = logging.getLogger("train_mnist")
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    net, history = fit(cnn_small(seed=seed), X, y, eps=EPS, method=method, seed=seed,
                       domain=DOMAIN, workers=workers, **settings,
                       progress=lambda r: log.info("%s epoch %d: %.1f s, loss %.4f, "
                                                   "train verified %s", method, r["epoch"],
                                                   r["seconds"], r["loss"],
                                                   r["train_verified"]))
    train_s = time.perf_counter() - t0
    load_after = os.getloadavg()
    if save_dir:
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        save_onnx(net, Path(save_dir) / f"mnist_{method}.onnx")
    evals, errors = {}, {}
    for bound in ("ibp", "crown"):
        try:
            evals[bound] = evaluate(net, Xt, yt, EPS, method=bound, domain=DOMAIN,
                                    pgd_steps=pgd_steps if bound == "ibp" else 0, seed=seed,
                                    workers=workers, options=CROWN if bound == "crown" else None)
        except Exception as exc:  # recorded and printed: a failed bound method is a result
            log.error("%s certification failed: %s: %s", bound, type(exc).__name__, exc)
            errors[bound] = f"{type(exc).__name__}: {exc}"
    secs = [r["seconds"] for r in history]
    get = lambda b, k: evals[b][k] if b in evals else None  # noqa: E731
    return {"method": method, "settings": {k: list(v) if isinstance(v, tuple) else v
                                           for k, v in settings.items()},
            "train_seconds": train_s, "epochs": len(history),
            "seconds_per_epoch": float(np.mean(secs)),
            "seconds_per_epoch_max": float(np.max(secs)),
            "cpu_seconds_per_epoch": float(np.mean([r["cpu_seconds"] for r in history])),
            "clean": get("ibp", "clean"), "pgd": get("ibp", "pgd"),
            "certified_ibp": get("ibp", "certified"),
            "certified_crown": get("crown", "certified"),
            "eval_seconds": {b: e["seconds"] for b, e in evals.items()},
            "load_average_1_5_15": {"before": load_before, "after_training": load_after},
            "errors": errors, "history": history}


def _pct(v) -> str:
    return "error" if v is None else f"{v:.2%}"


def table(results: list[dict]) -> str:
    head = (f"{'method':<10} {'epochs':>6} {'s/epoch':>8} {'cpu s/ep':>8} {'train min':>9} "
            f"{'clean':>7} {'PGD':>7} {'cert IBP':>9} {'cert CROWN':>10}")
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(f"{r['method']:<10} {r['epochs']:>6} {r['seconds_per_epoch']:>8.1f} "
                     f"{r['cpu_seconds_per_epoch']:>8.1f} {r['train_seconds'] / 60:>9.2f} "
                     f"{_pct(r['clean']):>7} {_pct(r['pgd']):>7} "
                     f"{_pct(r['certified_ibp']):>9} {_pct(r['certified_crown']):>10}")
    for r in results:
        la = r["load_average_1_5_15"]
        lines.append(f"{r['method']:<10} load average (1 min) before / after training: "
                     f"{la['before'][0]:.1f} / {la['after_training'][0]:.1f} on "
                     f"{os.cpu_count()} cores")
    lines.append("")
    lines.append(f"yardstick (PyTorch IBP, same images, 2 cores): clean {YARDSTICK['clean']:.1%}, "
                 f"IBP-certified {YARDSTICK['certified']:.1%} in {YARDSTICK['minutes']:.0f} min")
    for r in results:
        best = max(v for v in (r["certified_ibp"], r["certified_crown"], 0.0) if v is not None)
        lines.append(f"{r['method']:<10} ratio to yardstick: time "
                     f"{r['train_seconds'] / 60 / YARDSTICK['minutes']:.2f}x, clean "
                     f"{(r['clean'] or 0.0) / YARDSTICK['clean']:.3f}, certified "
                     f"{best / YARDSTICK['certified']:.3f}")
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for r in results:
        ep = [h["epoch"] for h in r["history"]]
        axes[0].plot(ep, [h["loss"] for h in r["history"]], label=r["method"])
        axes[1].plot(ep, [h["train_verified"] or 0.0 for h in r["history"]], label=r["method"])
    axes[0].set(xlabel="epoch", ylabel="training loss", yscale="log")
    axes[1].set(xlabel="epoch", ylabel="verified on the batch (training bounds, eps_t)")
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: 1,000 training images, 3 epochs (accuracies meaningless)")
    p.add_argument("--epochs", type=int, help="override the recorded number of epochs")
    p.add_argument("--pgd-steps", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2,
                   help="threads sharing each batch (BLAS is single-threaded, see below)")
    p.add_argument("--save-models", metavar="DIR",
                   help="write each trained model as DIR/mnist_<method>.onnx (float32)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train_mnist.json"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    X, y = load_mnist(args.data)
    Xtr, ytr, Xt, yt = X[:8000], y[:8000], X[8000:], y[8000:]
    if args.quick:
        Xtr, ytr, Xt, yt = Xtr[:1000], ytr[:1000], Xt[:200], yt[:200]
    results = []
    for method in args.methods:
        settings = dict(SETTINGS[method])
        if args.quick:
            settings.update(epochs=3, ramp_epochs=1)
        if args.epochs:
            settings["epochs"] = args.epochs
        results.append(run(method, Xtr, ytr, Xt, yt, settings, args.pgd_steps, args.seed,
                           args.workers, args.save_models))
    text = table(results)
    print(text)
    out = Path(args.out)
    if args.quick:
        out = out.with_name(out.stem + "_quick" + out.suffix)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"eps": EPS, "domain": DOMAIN, "train_images": [0, len(Xtr)],
            "test_images": [8000, 8000 + len(Xt)], "model": "cnn_small (Gowal et al.)",
            "crown_options": {"intermediate": CROWN.intermediate, "relu_slope": CROWN.relu_slope},
            "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
            "cpu_count": os.cpu_count(), "yardstick": YARDSTICK, "table": text}
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    out.with_suffix(".txt").write_text(text + "\n")
    if plot(results, out.with_suffix(".png")):
        print(f"plot: {out.with_suffix('.png')}")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
