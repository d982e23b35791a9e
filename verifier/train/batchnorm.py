"""BatchNorm in training mode (Ioffe & Szegedy 2015), as certified training uses it (Shi et al.
2021): the statistics come from the clean batch and the same affine map then applies to the
clean values, the IBP boxes and the CROWN-IBP pass.

A BatchNorm layer is a ``Scale`` node of the ``Network`` (its inference form ``a x + c``) whose
``Node.source`` is ``BN_SOURCE`` (the model builders' ``batchnorm=True``). During training its
``a`` and ``c`` fields hold the scale and shift ``gamma`` and ``beta``, and on a batch with clean
pre-normalisation values ``z`` (mean ``m`` and biased variance ``v`` per channel, over the batch
and spatial axes) the layer computes

    y = a_eff z + c_eff,   a_eff = gamma / sqrt(v + eps),   c_eff = beta - a_eff m,

differentiable in ``gamma``, ``beta`` and (through ``m`` and ``v``) in everything before it.
Running statistics follow ``r <- (1 - momentum) r + momentum * batch value`` and are folded in at
the end (``fold``): ``a = gamma / sqrt(r_v + eps)``, ``c = beta - a r_m``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..network import Network
from ..network import ops as O
from . import autodiff as ad
from .autodiff import Var

#: ``Node.source`` of a Scale node that trains as BatchNorm
BN_SOURCE = "BatchNormalization (training)"


def bn_nodes(net: Network) -> list[str]:
    """Names of the Scale nodes of ``net`` that train as BatchNorm."""
    return [n.name for n in net.nodes if isinstance(n.op, O.Scale) and n.source == BN_SOURCE]


@dataclass
class BatchNormStats:
    """Running mean and variance of one BatchNorm node (shape of its ``a``)."""

    mean: np.ndarray
    var: np.ndarray


class BatchContext:
    """The BatchNorm nodes of one training pass (``names``, ``eps``) and what the clean pass
    found: ``params`` {(node, "a"|"c"): Var} (the effective affine maps, to be used by the bound
    passes of the same batch) and ``stats`` {node: (mean, var)}."""

    def __init__(self, names, eps: float):
        self.names, self.eps = frozenset(names), eps
        self.params: dict = {}
        self.stats: dict = {}

    def record(self, name: str, a: Var, c: Var, mean: np.ndarray, var: np.ndarray) -> None:
        self.params[(name, "a")], self.params[(name, "c")] = a, c
        self.stats[name] = (mean, var)


def batch_affine(z: Var, gamma: Var, beta: Var, eps: float) -> tuple[Var, Var, np.ndarray,
                                                                      np.ndarray]:
    """``(a_eff, c_eff, m, v)`` for the batch ``z`` (B, C, ...) or (B, n): statistics per
    channel (axis 1; per feature for vectors) over every other axis; ``a_eff`` and ``c_eff`` in
    the shape of ``gamma``."""
    nd = z.value.ndim
    axes = (0,) + tuple(range(2, nd))
    count = int(np.prod([z.shape[a] for a in axes]))
    m = ad.total(z, axis=axes, keepdims=True) * (1.0 / count)
    dev = z - m
    v = ad.total(ad.mul(dev, dev), axis=axes, keepdims=True) * (1.0 / count)
    m = ad.reshape(m, gamma.shape)
    v = ad.reshape(v, gamma.shape)
    inv = ad.elementwise(lambda t: 1.0 / np.sqrt(t), lambda t, y: -0.5 * y / t, v + eps)
    a = ad.mul(gamma, inv)
    c = beta - ad.mul(a, m)
    return a, c, m.value.copy(), v.value.copy()


def fold(net: Network, params: dict, stats: dict[str, BatchNormStats], eps: float) -> dict:
    """``params`` with each BatchNorm node's ``(gamma, beta)`` replaced by the inference-form
    ``(a, c)`` from its running statistics."""
    out = dict(params)
    for name, st in stats.items():
        gamma = params.get((name, "a"), net.node(name).op.a)
        beta = params.get((name, "c"), net.node(name).op.c)
        a = gamma / np.sqrt(st.var + eps)
        out[(name, "a")] = a
        out[(name, "c")] = beta - a * st.mean
    return out
