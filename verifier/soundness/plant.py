"""Training that plants counterexamples and hides them from attacks (after SoundnessBench).

Given the points of one model (``data.Points``: centres ``x_i`` with labels ``y_i``; for the
planted ones a counterexample ``x'_i`` inside the box of ``x_i`` with target ``t_i = 1 - y_i``),
every update minimises

    L = (1 / (N d)) sum_{(x, y) in S} relu(kappa - m_y(x))
        + w mean_i relu(z_{y_i}(x'_i) - z_{t_i}(x'_i) + mu)

with ``m_y(x) = z_y(x) - z_{1-y}(x)`` the margin of label ``y``:

- the first term is adversarial training on the *recent attack perturbations* ``S``: every round
  runs short PGD attacks (``pgd.pgd_rows``, margin loss, sign steps; step sizes and lengths taken
  in turn from ``attacks``) from uniform starts in each box, and from starts near each planted
  counterexample (within ``near_radius * eps``: the attacks that would find it), keeps the
  ``keep`` lowest-margin points of each, and appends them to a window of the last ``window``
  rounds; ``S`` is the window, the centres, and the *hard* points: those that the periodic
  checks' attack battery found (labelled with their centre's label). SoundnessBench uses the
  cross-entropy here; a hinge at ``kappa`` asks only for a margin, which lets the network dip
  to the counterexample over a short distance (a cross-entropy pushes margins up without end);
- the second term is the *planting* hinge: it pushes the logit of ``t_i`` at ``x'_i`` above that
  of ``y_i`` by ``mu`` (set above the benchmark's threshold, so that the float32 model keeps a
  margin past it), weighted by ``w``.

Gradients come from the training tape (``verifier.train.autodiff``: the ops' ``vjp`` and
``param_vjp``), are clipped by global norm, and Adam (``verifier.train.optim``) takes
``updates_per_attack`` steps per attack round, with a cosine learning-rate decay.

Every ``check_every`` rounds the network with float32-rounded weights (the exported model) is
checked: a planted point is *valid* when its centre is classified ``y_i``, its counterexample
reaches the threshold, and a scaled-down copy of the generator's attack battery finds no
violation in its box. The parameters with the most valid points (the latest among equals) are
returned; training stops early once every planted point has been valid for ``patience`` checks
in a row. Deterministic for a seed.
"""
from __future__ import annotations

import logging
import math
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from ..train import autodiff as ad
from ..train.losses import forward
from ..train.optim import Adam, clip_by_global_norm
from ..train.params import get_params, param_vars, set_params
from .models import dense_equivalent
from .pgd import DEFAULT_BATTERY, battery, margins, pgd_rows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlantOptions:
    """Knobs of the planting training, with their defaults.

    rounds: attack rounds (1200); updates_per_attack: Adam updates per round (3).
    lr / lr_final: Adam learning rate at the start / end of the cosine decay (1e-2 / 1e-3).
    grad_clip: global-norm gradient clipping (10).
    kappa: margin asked of every training point (0.1); normal_div: the normal term is the sum of
    its hinge losses over ``N * normal_div`` (N points) (5).
    margin: hinge margin ``mu`` of the planting term (0.03; the threshold is 0.01);
    plant_weight: its weight ``w`` (20).
    window: rounds of attack points kept (50).
    restarts / near_restarts: PGD starts per box, uniform / near the counterexample (8 / 8);
    near_radius: the near starts' L-inf distance from the counterexample, in eps (0.5).
    keep: lowest-margin points kept per box and kind of start each round (2).
    attacks: (step as a fraction of eps, iterations) of the rounds, in turn.
    check_every: rounds between checks (100); check_scale: fraction of the battery's restarts
    used by a check (0.1); hard_keep: most recent battery finds kept per point (16).
    patience: checks in a row with every planted point valid before stopping early (2).
    """

    rounds: int = 1200
    updates_per_attack: int = 3
    lr: float = 1e-2
    lr_final: float = 1e-3
    grad_clip: float = 10.0
    kappa: float = 0.1
    normal_div: float = 5.0
    margin: float = 0.03
    plant_weight: float = 20.0
    window: int = 50
    restarts: int = 8
    near_restarts: int = 8
    near_radius: float = 0.5
    keep: int = 2
    attacks: tuple[tuple[float, int], ...] = ((0.25, 10), (0.1, 20), (0.05, 40), (0.02, 60))
    check_every: int = 100
    check_scale: float = 0.1
    hard_keep: int = 16
    patience: int = 2


def float32_weights(net):
    """``net`` with every parameter rounded to float32 (kept as float64): the exported model."""
    params = get_params(net)
    return set_params(net, {k: v.astype(np.float32).astype(np.float64)
                            for k, v in params.items()})


def counter_margins(net, x_cex: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``z_t - z_y`` at each counterexample (two classes: ``t = 1 - y``); > 0 means violated."""
    return -margins(net(x_cex), labels)


def scaled_battery(attacks, scale: float):
    """The battery ``attacks`` with each attack's restarts multiplied by ``scale`` (at least 1)."""
    return tuple((f, i, max(1, int(round(r * scale)))) for f, i, r in attacks)


def check_points(net, points, lo, hi, eps: float, threshold: float, attacks, seed: int):
    """Validity of the planted points on ``net`` (see module): (P,) bool over the planted ones,
    and the ``BatteryResult`` of the attacks on those whose centre and counterexample are right
    (None when there were none)."""
    idx = np.flatnonzero(points.planted)
    y = points.labels[idx]
    flat = points.x.reshape(len(points), -1)
    ok = (margins(net(flat[idx]), y) > 0) & (
        counter_margins(net, points.x_cex.reshape(len(points), -1)[idx], y) >= threshold)
    found = None
    if ok.any():
        sel = np.flatnonzero(ok)
        found = battery(net, lo[idx[sel]], hi[idx[sel]], y[sel], eps, attacks, seed)
        ok[sel[found.found]] = False
        found.index = sel  # positions among the planted points
    return ok, found


def _attack_points(net, lo, hi, labels, step, iters, restarts, keep, rng, starts=None):
    """The ``keep`` lowest-margin points per box found by ``restarts`` PGD runs (N * keep, n)."""
    bx, bm = pgd_rows(net, lo, hi, labels, step, iters, restarts, rng, starts)
    order = np.argsort(bm, axis=1)[:, :keep]
    return np.take_along_axis(bx, order[:, :, None], axis=1).reshape(-1, lo.shape[1])


def _lr_at(opt: PlantOptions, update: int, total: int) -> float:
    """Cosine decay from ``opt.lr`` to ``opt.lr_final`` over ``total`` updates."""
    frac = update / max(1, total - 1)
    return opt.lr_final + 0.5 * (opt.lr - opt.lr_final) * (1 + math.cos(math.pi * frac))


def _update(net, params, adam, Xs, ys, Xc, yc, N: int, opt: PlantOptions, lr: float) -> float:
    """One Adam update on the loss of the module; returns the loss value."""
    pvars = param_vars(params)
    zs = ad.reshape(forward(net, pvars, Xs), (len(ys), -1))
    hinge = ad.relu(ad.pick(zs, 1 - ys) - ad.pick(zs, ys) + opt.kappa)
    loss = ad.total(hinge) * (1.0 / (N * opt.normal_div))
    if len(yc):
        zc = ad.reshape(forward(net, pvars, Xc), (len(yc), -1))
        gap = ad.pick(zc, yc) - ad.pick(zc, 1 - yc) + opt.margin
        loss = loss + ad.mean(ad.relu(gap)) * opt.plant_weight
    ad.backward(loss)
    grads, _ = clip_by_global_norm({k: np.zeros_like(v.value) if v.grad is None else v.grad
                                    for k, v in pvars.items()}, opt.grad_clip)
    adam.step(grads, lr)
    return float(loss.value)


def plant_counterexamples(net, points, lo: np.ndarray, hi: np.ndarray, eps: float,
                          threshold: float = 0.01, options: PlantOptions | None = None,
                          battery_attacks=DEFAULT_BATTERY, seed: int = 0, progress=None):
    """Train ``net`` on ``points`` (boxes ``[lo, hi]`` (N, n), radius ``eps``) by the recipe of the
    module; ``battery_attacks`` is the battery the checks scale down. Returns the best network
    (float32-rounded weights) and a history: one dict per check with ``round``, ``loss``,
    ``valid`` (planted points valid), ``seconds``. ``progress(record)`` is called after each
    check. Deterministic for ``seed``."""
    opt = options or PlantOptions()
    rng = np.random.default_rng(seed)
    N = len(points)
    X, y = points.x.reshape(N, -1), points.labels
    n = X.shape[1]
    pl = np.flatnonzero(points.planted)
    Xc, yc = points.x_cex[pl].reshape(len(pl), n), y[pl]
    near = opt.near_restarts > 0 and len(pl) > 0
    y_round = np.repeat(np.concatenate([y, yc]) if near else y, opt.keep)
    params = get_params(net)
    adam = Adam(params, lr=opt.lr)
    window: deque = deque(maxlen=opt.window)
    hard = [deque(maxlen=opt.hard_keep) for _ in pl]
    check_attacks = scaled_battery(battery_attacks, opt.check_scale)
    best, history = (-1, None), []
    streak, t0, losses = 0, time.perf_counter(), []
    total = opt.rounds * opt.updates_per_attack
    for rnd in range(1, opt.rounds + 1):
        current = dense_equivalent(set_params(net, params))
        frac, iters = opt.attacks[(rnd - 1) % len(opt.attacks)]
        xa = _attack_points(current, lo, hi, y, frac * eps, iters, opt.restarts, opt.keep, rng)
        if near:
            rho = opt.near_radius * eps
            xn = _attack_points(current, lo[pl], hi[pl], yc, frac * eps, iters,
                                opt.near_restarts, opt.keep, rng, starts=(Xc - rho, Xc + rho))
            xa = np.concatenate([xa, xn], axis=0)
        window.append(xa)
        Xs = np.concatenate([X] + list(window), axis=0)
        ys = np.concatenate([y] + [y_round] * len(window))
        hx = [x for h in hard for x in h]
        if hx:
            Xs = np.concatenate([Xs, np.stack(hx)], axis=0)
            ys = np.concatenate([ys, [yc[k] for k, h in enumerate(hard) for _ in h]])
        for u in range(opt.updates_per_attack):
            lr = _lr_at(opt, (rnd - 1) * opt.updates_per_attack + u, total)
            losses.append(_update(net, params, adam, Xs, ys, Xc, yc, N, opt, lr))
        if rnd % opt.check_every and rnd != opt.rounds:
            continue
        trained = float32_weights(set_params(net, params))
        ok, found = check_points(dense_equivalent(trained), points, lo, hi, eps, threshold,
                                 check_attacks,
                                 int(rng.integers(2**31)))
        if found is not None:
            for j in np.flatnonzero(found.found):
                hard[found.index[j]].append(found.x[j].copy())
        valid = int(ok.sum())
        rec = {"round": rnd, "loss": float(np.mean(losses)), "valid": valid,
               "seconds": round(time.perf_counter() - t0, 2)}
        losses = []
        history.append(rec)
        log.info("plant round %d: loss %.4f, %d of %d planted valid", rnd, rec["loss"], valid,
                 len(pl))
        if progress is not None:
            progress(rec)
        if valid >= best[0]:
            best = (valid, trained)
        streak = streak + 1 if valid == len(pl) else 0
        if streak >= opt.patience:
            break
    return best[1], history
