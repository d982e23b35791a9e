"""Adam with global-norm gradient clipping, and mini-batches.

Adam (Kingma & Ba 2015), for each parameter ``p`` with gradient ``g`` at step ``t``:
``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2``,
``p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)``; optional decoupled weight decay
``p -= lr * wd * p`` (AdamW). Before the update, the gradients are scaled by
``min(1, max_norm / ||g||_2)`` over all parameters together (global-norm clipping).
"""
from __future__ import annotations

import numpy as np


def clip_by_global_norm(grads: dict, max_norm: float | None) -> tuple[dict, float]:
    """Gradients scaled so that their joint L2 norm is at most ``max_norm`` (None: unchanged),
    and the norm before clipping."""
    norm = float(np.sqrt(sum(float(np.vdot(g, g)) for g in grads.values())))
    if not np.isfinite(norm):
        raise FloatingPointError(f"gradient norm is {norm}: training diverged")
    if max_norm is None or norm <= max_norm:
        return grads, norm
    s = max_norm / norm
    return {k: g * s for k, g in grads.items()}, norm


class Adam:
    """Adam over a dict of float64 arrays, updated in place by ``step(grads, lr)``."""

    def __init__(self, params: dict, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        self.params = params
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, grads: dict, lr: float | None = None) -> None:
        """One update of every parameter that has a gradient in ``grads``."""
        lr = self.lr if lr is None else lr
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1.0 - b1 ** self.t, 1.0 - b2 ** self.t
        for k, g in grads.items():
            p, m, v = self.params[k], self.m[k], self.v[k]
            m *= b1
            m += (1.0 - b1) * g
            v *= b2
            v += (1.0 - b2) * g * g
            if self.weight_decay:
                p -= lr * self.weight_decay * p
            p -= lr * (m / c1) / (np.sqrt(v / c2) + self.eps)


def minibatches(n: int, batch_size: int, rng: np.random.Generator, shuffle: bool = True):
    """Index arrays of a pass over ``n`` samples in batches of ``batch_size`` (the last one may
    be smaller), in a random order drawn from ``rng`` when ``shuffle``."""
    order = rng.permutation(n) if shuffle else np.arange(n)
    for s in range(0, n, batch_size):
        yield order[s:s + batch_size]
