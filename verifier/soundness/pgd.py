"""PGD on the classification margin, batched over points and restarts, and the attack battery.

For a point with label ``y`` and logits ``z = f(x)`` the *margin* is

    m(x) = z_y - max_{j != y} z_j,

and the robustness property of the point fails in its box iff some ``x`` in the box has
``m(x) <= 0``. PGD (Madry et al. 2018) minimises ``m`` from uniform random starts:

    x <- clip(x - s * sign(grad m(x)), lo, hi),

with the gradient ``e_y - e_{j*}`` (``j*`` the best other class) pulled back through the
network by ``Network.vjp``. Every iterate counts: the lowest margin seen per point is kept.

The *battery* (``battery``) runs several such attacks one after the other, with different step
sizes (as fractions of the radius ``eps``) and lengths, each with many restarts, as
SoundnessBench does to check that a planted counterexample is hidden; a point counts as found as
soon as one attack reaches a margin ``<= 0`` (float64, on the network given: pass the network
whose weights are those of the exported model).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: the default battery: (step as a fraction of eps, iterations, restarts); 0 iterations means
#: uniform random samples only (SoundnessBench uses (0.25, 0), (0.25, 100), (0.02, 100),
#: (0.02, 250), (0.02, 500), (0.01, 1000), (0.01, 3000), (0.01, 5000) with 1000 restarts;
#: ours is shorter, sized for a CPU)
DEFAULT_BATTERY = ((0.25, 0, 2000), (0.25, 100, 500), (0.1, 100, 500), (0.02, 250, 250),
                   (0.02, 500, 200), (0.01, 1000, 100))


def _flat(z: np.ndarray) -> np.ndarray:
    return z if z.ndim == 2 else z.reshape(z.shape[0], int(np.prod(z.shape[1:])))


def margins(z: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``m = z_y - max_{j != y} z_j`` per row of the logits ``z`` (B, K)."""
    z = _flat(z)
    rows = np.arange(z.shape[0])
    zy = z[rows, labels]
    other = z.copy()
    other[rows, labels] = -np.inf
    return zy - other.max(axis=1)


def _margin_grad(z: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The subgradient ``e_y - e_{j*}`` of the margin with respect to the logits (B, K)."""
    z = _flat(z)
    rows = np.arange(z.shape[0])
    other = z.copy()
    other[rows, labels] = -np.inf
    g = np.zeros_like(z)
    g[rows, labels] = 1.0
    g[rows, other.argmax(axis=1)] -= 1.0
    return g


def descend(net, x: np.ndarray, L: np.ndarray, H: np.ndarray, labels: np.ndarray,
            step: np.ndarray, iters: int) -> tuple[np.ndarray, np.ndarray]:
    """Sign-PGD from the rows of ``x`` (R, n) in their boxes ``[L, H]``, ``iters`` steps of size
    ``step`` (R,); returns each row's best iterate (R, n) and its margin (R,)."""
    s = np.asarray(step, dtype=np.float64).reshape(-1, 1)
    best_x, best_m = x.copy(), np.full(x.shape[0], np.inf)
    for it in range(iters + 1):
        values = net.forward_all(x)
        z = _flat(values[net.output_name])
        m = margins(z, labels)
        better = m < best_m
        best_x[better], best_m[better] = x[better], m[better]
        if it == iters:
            break
        g = net.vjp(x, _margin_grad(z, labels), values).reshape(x.shape)
        x = np.clip(x - s * np.sign(g), L, H)
    return best_x, best_m


def pgd_rows(net, lo: np.ndarray, hi: np.ndarray, labels: np.ndarray, step, iters: int,
             restarts: int, rng: np.random.Generator,
             starts: tuple[np.ndarray, np.ndarray] | None = None):
    """``restarts`` runs of ``descend`` per point of the boxes ``[lo, hi]`` (N, n), from uniform
    starts in the box (or in ``starts=(slo, shi)``, clipped to it); returns the best iterate of
    every run (N, restarts, n) and its margin (N, restarts)."""
    N, n = lo.shape
    if starts is None:
        slo, shi = lo, hi
    else:
        slo = np.maximum(np.reshape(starts[0], (N, n)), lo)
        shi = np.minimum(np.reshape(starts[1], (N, n)), hi)
    L, H = np.repeat(lo, restarts, axis=0), np.repeat(hi, restarts, axis=0)
    x = rng.uniform(np.repeat(slo, restarts, axis=0), np.repeat(shi, restarts, axis=0))
    s = np.repeat(np.broadcast_to(np.asarray(step, dtype=np.float64), (N,)), restarts)
    bx, bm = descend(net, x, L, H, np.repeat(labels, restarts), s, iters)
    return bx.reshape(N, restarts, n), bm.reshape(N, restarts)


def pgd(net, lo: np.ndarray, hi: np.ndarray, labels: np.ndarray, step, iters: int,
        restarts: int, rng: np.random.Generator, chunk: int = 8192,
        starts: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Minimise the margin of each of N points over its box ``[lo, hi]`` (N, n) by sign-PGD with
    ``restarts`` uniform random starts and ``iters`` steps of size ``step`` (N,) (absolute, per
    point), in batches of at most ``chunk`` rows. Returns the best point per point (N, n) and its
    margin (N,) (float64 on ``net``). ``starts=(slo, shi)`` draws the starts from that smaller
    box (clipped to ``[lo, hi]``) instead."""
    lo = np.asarray(lo, dtype=np.float64).reshape(lo.shape[0], -1)
    hi = np.asarray(hi, dtype=np.float64).reshape(hi.shape[0], -1)
    N = lo.shape[0]
    labels = np.asarray(labels, dtype=np.int64)
    best_x, best_m = (lo + hi) / 2, np.full(N, np.inf)
    per = max(1, chunk // max(1, N))
    done = 0
    while done < restarts:
        r = min(per, restarts - done)
        done += r
        bx, bm = pgd_rows(net, lo, hi, labels, step, iters, r, rng, starts)
        k = bm.argmin(axis=1)
        cand = bm[np.arange(N), k]
        better = cand < best_m
        best_x[better] = bx[np.arange(N), k][better]
        best_m[better] = cand[better]
    return best_x, best_m


@dataclass
class BatteryResult:
    """Per point: ``found`` (some attack reached margin <= 0), ``margin`` (the lowest margin
    seen), ``x`` (where), ``found_by`` (index of the first attack that found it, -1 if none)."""

    found: np.ndarray
    margin: np.ndarray
    x: np.ndarray
    found_by: np.ndarray

    def summary(self) -> dict:
        return {"found": int(self.found.sum()), "points": int(self.found.size),
                "min_margin": [float(v) for v in self.margin]}


def battery(net, lo, hi, labels, eps: float, attacks=DEFAULT_BATTERY, seed: int = 0,
            stop_when_found: bool = True) -> BatteryResult:
    """Run every attack ``(step_fraction, iters, restarts)`` of ``attacks`` on the N points (boxes
    ``[lo, hi]`` (N, n), ``labels`` (N,)), step ``step_fraction * eps``. With
    ``stop_when_found``, a point already found is not attacked again."""
    lo = np.asarray(lo, dtype=np.float64).reshape(len(labels), -1)
    hi = np.asarray(hi, dtype=np.float64).reshape(len(labels), -1)
    labels = np.asarray(labels, dtype=np.int64)
    N = labels.size
    rng = np.random.default_rng(seed)
    res = BatteryResult(np.zeros(N, bool), np.full(N, np.inf), (lo + hi) / 2,
                        np.full(N, -1, dtype=np.int64))
    for a, (frac, iters, restarts) in enumerate(attacks):
        todo = np.flatnonzero(~res.found) if stop_when_found else np.arange(N)
        if todo.size == 0:
            break
        x, m = pgd(net, lo[todo], hi[todo], labels[todo], frac * eps, int(iters), int(restarts),
                   rng)
        better = m < res.margin[todo]
        res.margin[todo[better]] = m[better]
        res.x[todo[better]] = x[better]
        hit = todo[m <= 0]
        res.found_by[hit[res.found_by[hit] < 0]] = a
        res.found[hit] = True
    return res
