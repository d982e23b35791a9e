"""``fit``: certified (or adversarial, or natural) training of a ``Network``.

Each optimisation step on a mini-batch ``(x, t)`` minimises (Gowal et al. 2018)

    kappa * CE(f(x), t) + (1 - kappa) * CE_robust

where ``CE_robust`` is, by ``method``:
- ``"ibp"``: the cross-entropy of the worst-case logits from IBP margin bounds (``losses``);
- ``"crown-ibp"``: the same with ``beta * CROWN-IBP + (1 - beta) * IBP`` bounds (Zhang et al.
  2020), the CROWN pass skipped once beta reaches 0;
- ``"pgd"``: the cross-entropy at a PGD point (Madry et al. 2018);
- ``"natural"``: none (kappa = 1).
over the L-infinity box of radius ``eps_t`` (intersected with ``options.domain``). ``eps_t``,
``kappa`` and ``beta`` follow ``schedules.Schedule``: natural warm-up, then a ramp, then
constants. Gradients come from the tape (``autodiff``), are clipped by global norm, and Adam
updates the parameters; the learning rate is multiplied by ``lr_decay`` at each milestone.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..network import Network
from . import autodiff as ad
from .batchnorm import BatchContext, BatchNormStats, bn_nodes, fold
from .losses import cross_entropy, forward, margin_lower, pgd_attack, robust_ce
from .optim import Adam, clip_by_global_norm, minibatches
from .params import get_params, param_vars, set_params
from .schedules import Schedule

log = logging.getLogger(__name__)

METHODS = ("ibp", "crown-ibp", "pgd", "natural")


@dataclass(frozen=True)
class FitOptions:
    """Every knob of ``fit``, with its default.

    epochs: passes over the data (20).
    batch_size: samples per step (100).
    lr: Adam learning rate (1e-3); lr_decay: factor applied at each milestone (0.2);
    lr_milestones: milestones as fractions of ``epochs`` ((0.7, 0.85)).
    grad_clip: global-norm gradient clipping, None for none (10.0).
    weight_decay: decoupled (AdamW) weight decay (0).
    warmup_epochs: natural training before the ramp (1.0, may be fractional).
    ramp_epochs: length of the eps/kappa/beta ramp (10.0).
    ramp_shape: "smoothed" (Gowal et al.'s smoothed start) or "linear".
    eps_train: training radius; None means ``eps_train_factor * eps`` (factor 1.0).
    kappa_start / kappa_end: natural-loss weight at the start / end of the ramp (1.0 / None:
    0.5 for ibp and crown-ibp, as Gowal et al., and 0.0 for pgd).
    beta_start / beta_end: CROWN-IBP weight along the ramp (1.0 -> 0.0, Zhang et al.).
    beta_ramp_epochs: length of the beta ramp from the start of the eps ramp (None: the eps
    ramp's length). The CROWN pass costs several IBP passes (its batch is K times larger), so
    a shorter beta ramp trades CROWN-IBP's tighter start for time.
    pgd_steps / pgd_step_size / pgd_restarts: the training attack (7, None = 2.5 eps / steps, 1).
    domain: (lo, hi) the inputs are confined to (e.g. (0.0, 1.0) for images), None for none.
    frozen: names of nodes whose parameters stay fixed (e.g. an input normalisation).
    shuffle: reshuffle the samples every epoch (True).
    validation_method: bound method of the per-epoch validation ("ibp", the sound core;
    "train-ibp", the training pass, is cheaper but not a certificate).
    workers: threads that share each batch (1). numpy releases the GIL in BLAS and array
    loops, so 2 workers with a single-threaded BLAS (``OPENBLAS_NUM_THREADS=1``) use two cores
    on independent halves of the batch; results are deterministic for a given worker count
    (BatchNorm statistics are then per half, "ghost batch" style).
    bn_momentum / bn_eps: BatchNorm running-statistics momentum and variance offset (0.1, 1e-5;
    see ``batchnorm``).
    """

    epochs: int = 20
    batch_size: int = 100
    lr: float = 1e-3
    lr_decay: float = 0.2
    lr_milestones: tuple[float, ...] = (0.7, 0.85)
    grad_clip: float | None = 10.0
    weight_decay: float = 0.0
    warmup_epochs: float = 1.0
    ramp_epochs: float = 10.0
    ramp_shape: str = "smoothed"
    eps_train: float | None = None
    eps_train_factor: float = 1.0
    kappa_start: float = 1.0
    kappa_end: float | None = None
    beta_start: float = 1.0
    beta_end: float = 0.0
    beta_ramp_epochs: float | None = None
    pgd_steps: int = 7
    pgd_step_size: float | None = None
    pgd_restarts: int = 1
    domain: tuple[float, float] | None = None
    frozen: tuple[str, ...] = ()
    shuffle: bool = True
    validation_method: str = "ibp"
    workers: int = 1
    bn_momentum: float = 0.1
    bn_eps: float = 1e-5


def _schedule(opts: FitOptions, eps: float, method: str, steps_per_epoch: int) -> Schedule:
    eps_train = opts.eps_train if opts.eps_train is not None else opts.eps_train_factor * eps
    kappa_end = opts.kappa_end
    if kappa_end is None:
        kappa_end = 0.0 if method == "pgd" else 0.5
    if method == "natural":
        eps_train, kappa_start, kappa_end = 0.0, 1.0, 1.0
    else:
        kappa_start = opts.kappa_start
    beta_start, beta_end = ((opts.beta_start, opts.beta_end) if method == "crown-ibp"
                            else (0.0, 0.0))
    return Schedule(eps=eps_train, warmup=int(round(opts.warmup_epochs * steps_per_epoch)),
                    ramp=int(round(opts.ramp_epochs * steps_per_epoch)), shape=opts.ramp_shape,
                    kappa_start=kappa_start, kappa_end=kappa_end, beta_start=beta_start,
                    beta_end=beta_end,
                    beta_ramp=(None if opts.beta_ramp_epochs is None
                               else int(round(opts.beta_ramp_epochs * steps_per_epoch))))


def _lr_at(opts: FitOptions, epoch: int) -> float:
    passed = sum(1 for m in opts.lr_milestones if epoch >= m * opts.epochs)
    return opts.lr * opts.lr_decay ** passed


def training_loss(net: Network, pvars: dict, x: np.ndarray, t: np.ndarray, method: str,
                  eps: float, kappa: float, beta: float, opts: FitOptions, rng=None,
                  current: Network | None = None) -> tuple[ad.Var, dict]:
    """The objective of one step (a scalar ``Var``) and batch statistics: ``natural`` and
    ``robust`` loss values, ``correct`` (clean) and ``verified`` (all margin bounds > 0) counts,
    and ``bn`` {node: (mean, var)} when the network has BatchNorm nodes (``batchnorm``; they
    then hold ``gamma``/``beta`` in ``pvars`` and the clean pass always runs). ``current`` is
    ``net`` with the parameters of ``pvars`` (needed by the PGD attack)."""
    stats = {}
    terms = []
    bn = BatchContext(bn_nodes(net), opts.bn_eps) if bn_nodes(net) else None
    if kappa > 0.0 or method == "natural" or bn is not None:
        logits = forward(net, pvars, x, bn)
        if bn is not None:  # the bound passes use the clean batch's normalisation
            pvars = {**pvars, **bn.params}
            stats["bn"] = bn.stats
    if kappa > 0.0 or method == "natural":
        nat = cross_entropy(logits, t)
        stats["natural"] = float(nat.value)
        stats["correct"] = int((logits.value.reshape(len(t), -1).argmax(1) == t).sum())
        terms.append(nat * kappa if method != "natural" else nat)
    if method != "natural" and kappa < 1.0:
        if method == "pgd":
            xa = pgd_attack(current, x, t, eps, opts.pgd_steps, opts.pgd_step_size,
                            opts.domain, rng, opts.pgd_restarts)
            rob = cross_entropy(forward(net, pvars, xa), t)
        else:
            lb = margin_lower(net, pvars, x, t, eps, opts.domain,
                              beta if method == "crown-ibp" else 0.0)
            rob = robust_ce(lb)
            stats["verified"] = int((lb.value.min(axis=1) > 0).sum())
        stats["robust"] = float(rob.value)
        terms.append(rob * (1.0 - kappa))
    loss = terms[0]
    for term in terms[1:]:
        loss = loss + term
    stats["loss"] = float(loss.value)
    return loss, stats


def fit(net: Network, X, y, eps: float = 0.1, method: str = "ibp", epochs: int | None = None,
        options: FitOptions | None = None, progress=None, seed: int = 0, validation=None,
        **overrides) -> tuple[Network, list[dict]]:
    """Train ``net`` on ``X`` (N, *input_shape) with labels ``y`` (N,) for robustness at radius
    ``eps`` by ``method`` (see module). ``options`` (a ``FitOptions``) holds every knob;
    keyword ``overrides`` replace its fields (``fit(..., lr=1e-3)``); ``epochs`` likewise.
    ``progress(record)`` is called after every epoch with that epoch's history record;
    ``validation=(Xv, yv)`` adds clean accuracy and verified accuracy at ``eps`` on it to
    each record (``evaluate`` with ``options.validation_method``). Deterministic for ``seed``.

    Returns the trained network (same graph, new parameters) and the history: one dict per
    epoch with ``epoch``, ``lr``, ``eps``, ``kappa``, ``beta``, ``loss``, ``natural``,
    ``robust`` (mean batch losses), ``train_acc``, ``train_verified`` (fraction verified at the
    epoch's eps by the training bounds), ``seconds`` (wall) and ``cpu_seconds`` (all threads)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; one of {METHODS}")
    opts = options if options is not None else FitOptions()
    if epochs is not None:
        overrides["epochs"] = epochs
    if overrides:
        opts = dataclasses.replace(opts, **overrides)
    X = net._as_batch(X)
    y = np.asarray(y, dtype=np.int64)
    if len(X) != len(y):
        raise ValueError(f"{len(X)} inputs but {len(y)} labels")
    rng = np.random.default_rng(seed)
    params = get_params(net, frozenset(opts.frozen))
    adam = Adam(params, lr=opts.lr, weight_decay=opts.weight_decay)
    steps_per_epoch = -(-len(X) // opts.batch_size)
    sched = _schedule(opts, eps, method, steps_per_epoch)
    bn_stats = {name: BatchNormStats(np.zeros_like(net.node(name).op.a),
                                     np.ones_like(net.node(name).op.a)) for name in bn_nodes(net)}

    def trained() -> Network:
        return set_params(net, fold(net, params, bn_stats, opts.bn_eps) if bn_stats else params)
    history = []
    pool = ThreadPoolExecutor(opts.workers) if opts.workers > 1 else None
    try:
        _train(net, params, adam, sched, X, y, method, opts, rng, pool, eps, validation,
               progress, history, bn_stats, trained)
    finally:
        if pool is not None:
            pool.shutdown()
    return trained(), history


def _train(net, params, adam, sched, X, y, method, opts, rng, pool, eps, validation, progress,
           history, bn_stats, trained):
    """The epoch loop of ``fit``: updates ``params`` and ``bn_stats`` in place and appends to
    ``history``; ``trained()`` is the network of the current parameters."""
    step = 0
    for epoch in range(opts.epochs):
        t0, c0 = time.perf_counter(), time.process_time()
        lr = _lr_at(opts, epoch)
        sums = {"loss": 0.0, "natural": 0.0, "robust": 0.0, "correct": 0, "verified": 0}
        counts = {k: 0 for k in sums}
        for idx in minibatches(len(X), opts.batch_size, rng, opts.shuffle):
            eps_t, kappa, beta = sched.eps_at(step), sched.kappa_at(step), sched.beta_at(step)
            current = trained() if method == "pgd" else None
            grads, stats = batch_gradients(net, params, X[idx], y[idx], method, eps_t, kappa,
                                           beta, opts, rng, current, pool)
            grads, _ = clip_by_global_norm(grads, opts.grad_clip)
            adam.step(grads, lr)
            for name, (m, v) in stats.pop("bn", {}).items():
                st = bn_stats[name]
                st.mean += opts.bn_momentum * (m - st.mean)
                st.var += opts.bn_momentum * (v - st.var)
            for k, v in stats.items():
                w = len(idx) if k in ("loss", "natural", "robust") else 1
                sums[k] += v * w
                counts[k] += len(idx)
            step += 1
        rec = {"epoch": epoch + 1, "lr": lr, "eps": sched.eps_at(step - 1),
               "kappa": sched.kappa_at(step - 1), "beta": sched.beta_at(step - 1)}
        for k in ("loss", "natural", "robust"):
            rec[k] = sums[k] / counts[k] if counts[k] else None
        rec["train_acc"] = sums["correct"] / counts["correct"] if counts["correct"] else None
        rec["train_verified"] = (sums["verified"] / counts["verified"] if counts["verified"]
                                 else None)
        rec["seconds"] = time.perf_counter() - t0
        rec["cpu_seconds"] = time.process_time() - c0
        if validation is not None:
            from .evaluate import evaluate
            ev = evaluate(trained(), validation[0], validation[1], eps,
                          method=opts.validation_method, domain=opts.domain, pgd_steps=0)
            rec["val_clean"], rec["val_certified"] = ev["clean"], ev["certified"]
        history.append(rec)
        log.info("epoch %d/%d: %s", epoch + 1, opts.epochs,
                 ", ".join(f"{k}={v:.4g}" for k, v in rec.items()
                           if isinstance(v, float) and k != "epoch"))
        if progress is not None:
            progress(rec)


def batch_gradients(net: Network, params: dict, x: np.ndarray, t: np.ndarray, method: str,
                    eps: float, kappa: float, beta: float, opts: FitOptions, rng,
                    current: Network | None = None, pool=None) -> tuple[dict, dict]:
    """Gradients of the batch objective (the mean over the batch of ``training_loss``) with
    respect to ``params``, and the batch statistics (mean losses, counts). With a thread
    ``pool`` the batch is cut into ``opts.workers`` chunks computed concurrently; the objective
    is the same (chunk means weighted by chunk sizes), summed in a fixed order."""
    n = len(t)
    chunks = [c for c in np.array_split(np.arange(n), opts.workers if pool else 1) if len(c)]
    seeds = (rng.integers(0, 2 ** 63, size=len(chunks)) if method == "pgd"
             else [None] * len(chunks))

    def one(ix, seed):
        pvars = param_vars(params)
        r = np.random.default_rng(seed) if seed is not None else None
        loss, stats = training_loss(net, pvars, x[ix], t[ix], method, eps, kappa, beta, opts,
                                    r, current)
        ad.backward(loss)
        grads = {k: np.zeros_like(v.value) if v.grad is None else v.grad
                 for k, v in pvars.items()}
        return grads, stats, len(ix)

    parts = list(pool.map(one, chunks, seeds)) if pool else [one(chunks[0], seeds[0])]
    grads = {k: sum(g[k] * (m / n) for g, _, m in parts) for k in parts[0][0]}
    stats = {}
    for _, st, m in parts:
        for k, v in st.items():
            if k == "bn":  # per-chunk ("ghost") batch statistics, averaged by chunk size
                acc = stats.setdefault("bn", {})
                for name, (mu, var) in v.items():
                    pm, pv = acc.get(name, (0.0, 0.0))
                    acc[name] = (pm + mu * (m / n), pv + var * (m / n))
            else:
                stats[k] = stats.get(k, 0) + (v * m / n if k in ("loss", "natural", "robust")
                                              else v)
    return grads, stats
