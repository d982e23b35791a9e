"""``evaluate``: clean, PGD and certified accuracy of a classifier on a labelled set.

A sample ``(x, t)`` counts as
- clean-correct if ``argmax f(x) = t``;
- PGD-correct if it is clean-correct and ``argmax f(x') = t`` at the PGD point ``x'`` of the box;
- certified if the lower bound of every margin ``y_t - y_j`` (``j != t``) over the box
  ``[x - eps, x + eps]`` (ends rounded outward, then intersected with ``domain``) is > 0, the
  bound coming from the sound bound core ``verifier.bounds.compute`` with the given method.
Certified implies PGD-correct; a sample certified but broken by PGD would be a soundness bug
and raises ``RuntimeError``.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..network import Network
from .interval_grad import ibp_margin_lower
from .losses import input_box, margin_matrix, pgd_attack

log = logging.getLogger(__name__)


def certified_mask(net: Network, X: np.ndarray, y: np.ndarray, eps: float, method: str = "ibp",
                   domain=None, batch_size: int = 500, options=None) -> np.ndarray:
    """Boolean (N,): every margin lower bound over the box around ``X[i]`` is > 0, by
    ``verifier.bounds.compute(net, lower, upper, C, method=method)``. ``method="train-ibp"``
    uses the training IBP pass instead: no rounding margins, an estimate for training curves,
    not a certificate."""
    out = np.zeros(len(X), dtype=bool)
    for s in range(0, len(X), batch_size):
        xb, yb = X[s:s + batch_size], y[s:s + batch_size]
        lo, hi = input_box(xb, eps, domain, outward=True)
        C = margin_matrix(yb, net.n_outputs)
        if method == "train-ibp":
            lb, _ = ibp_margin_lower(net, {}, lo, hi, C)
            out[s:s + batch_size] = lb.value.min(axis=1) > 0
            continue
        from ..bounds import compute
        res = compute(net, lo.reshape(len(xb), -1), hi.reshape(len(xb), -1), C=C, method=method,
                      options=options)
        out[s:s + batch_size] = np.asarray(res.lower).min(axis=1) > 0
    return out


def evaluate(net: Network, X, y, eps: float, method: str = "ibp", domain=None,
             pgd_steps: int = 20, pgd_restarts: int = 1, batch_size: int = 500, seed: int = 0,
             options=None, workers: int = 1) -> dict:
    """Accuracies of ``net`` on ``(X, y)`` at radius ``eps``: ``{"clean", "pgd", "certified"}``
    as fractions (``pgd`` is None when ``pgd_steps`` is 0), with ``n``, ``eps``, ``method`` and
    the seconds each part took. ``method`` is any bound method of ``verifier.bounds`` ("ibp",
    "crown", "alpha-crown"), ``options`` its options object. ``workers`` threads share the
    PGD attack (by chunks of ``batch_size``); the result does not depend on their number."""
    X = net._as_batch(X)
    y = np.asarray(y, dtype=np.int64)
    t0 = time.perf_counter()
    pred = np.concatenate([net(X[s:s + batch_size]).reshape(-1, net.n_outputs).argmax(1)
                           for s in range(0, len(X), batch_size)])
    clean = pred == y
    t1 = time.perf_counter()
    pgd_ok = None
    if pgd_steps > 0:
        starts = list(range(0, len(X), batch_size))
        seeds = np.random.default_rng(seed).integers(0, 2 ** 63, size=len(starts))

        def attack(s, sd):
            xa = pgd_attack(net, X[s:s + batch_size], y[s:s + batch_size], eps, pgd_steps,
                            domain=domain, rng=np.random.default_rng(sd),
                            restarts=pgd_restarts)
            return net(xa).reshape(len(xa), -1).argmax(1) == y[s:s + batch_size]
        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                held = list(pool.map(attack, starts, seeds))
        else:
            held = [attack(s, sd) for s, sd in zip(starts, seeds)]
        pgd_ok = clean & np.concatenate(held)
    t2 = time.perf_counter()
    cert = certified_mask(net, X, y, eps, method, domain, batch_size, options)
    t3 = time.perf_counter()
    broken = cert & ~clean if pgd_ok is None else cert & ~pgd_ok
    if broken.any():
        raise RuntimeError(f"{int(broken.sum())} samples certified by {method} are misclassified "
                           f"at a point of their box: the bound is unsound (first index "
                           f"{int(np.flatnonzero(broken)[0])})")
    n = len(X)
    return {"n": n, "eps": eps, "method": method, "clean": float(clean.mean()),
            "pgd": None if pgd_ok is None else float(pgd_ok.mean()),
            "certified": float(cert.mean()),
            "seconds": {"clean": t1 - t0, "pgd": t2 - t1, "certified": t3 - t2}}
