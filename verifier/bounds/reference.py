"""Plain-numpy reference implementations of IBP, CROWN and alpha-CROWN for MLPs.

Straightforward: dense matrices materialised in numpy (identity rows, every coefficient column
through every product, no kernel, no fusion). They compute the same mathematics as the Numba
path -- the same relaxations, the same choice of the neurons that get CROWN bounds, the same
intersection of IBP and CROWN intermediate bounds, the same Adam iterations and the same
rounding margins (rounding.py) -- so the tests compare the two to ~1e-9, and
benchmarks/bounds.py times the Numba path against them.

Networks: a chain of Reshape nodes, then Linear (1-d) / Relu alternating, ending in a Linear.
"""
from __future__ import annotations

import numpy as np

from verifier.network import ops as O

from .rounding import MARGIN_FACTOR, centre_radius, down, gamma, up
from .types import AlphaOptions


def mlp_layers(net) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (W, b) of each Linear of a Reshape* (Linear Relu)* Linear chain, or ValueError."""
    layers, expect_linear = [], True
    for node in net.nodes:
        op = node.op
        if isinstance(op, O.Reshape) and not layers:
            continue
        if expect_linear and isinstance(op, O.Linear) and len(node.shape) == 1:
            layers.append((op.W, op.b))
            expect_linear = False
        elif not expect_linear and isinstance(op, O.Relu):
            expect_linear = True
        else:
            raise ValueError(f"not a Linear/ReLU chain at node {node.name}")
    if expect_linear or not layers:
        raise ValueError("the chain must end in a Linear")
    return layers


def _gamma(layers, n0):
    big = max([n0] + [max(W.shape) for W, _ in layers])
    return MARGIN_FACTOR * gamma(2 * big + 2 * len(layers) + 16)


def _ibp_affine(W, b, lo, hi, g):
    mu, r = centre_radius(lo, hi)
    aW = np.abs(W)
    c = mu @ W.T + b
    R = r @ aW.T
    s = (np.abs(mu) + r) @ aW.T + np.abs(b)
    return down(c - R - g * s), up(c + R + g * s)


def ibp(net, lower, upper, C, d):
    """IBP bounds (B, k) of ``C y - d``; the rows are folded into the last layer."""
    layers = mlp_layers(net)
    g = _gamma(layers, lower.shape[1])
    lo, hi = lower, upper
    for W, b in layers[:-1]:
        lo, hi = _ibp_affine(W, b, lo, hi, g)
        lo, hi = np.maximum(lo, 0), np.maximum(hi, 0)
    W, b = layers[-1]
    M = C @ W
    lo, hi = _ibp_affine(M, C @ b - d, lo, hi, g)
    return lo, hi


def _relax(l, u):
    unst = (l < 0) & (u > 0)
    s = np.where(unst, u / np.where(unst, u - l, 1.0) * (1.0 + 2.0 ** -50), (l >= 0) * 1.0)
    t = np.where(unst, -s * l, 0.0)
    a = np.where(unst, (u >= -l) * 1.0, (l >= 0) * 1.0)
    return a, s, t


def _vm(bnd):
    return np.maximum(np.abs(bnd[0]), np.abs(bnd[1]))


def _backward(layers, rels, A, const, ins, pre, g, alphas=None, record=None):
    """Lower bounds (B, K) of the rows A (1, K, m) on the output of ``layers[-1]``, by dense
    backward substitution. ``ins[i]``: bounds of the input of Linear i; ``pre[j]``: bounds of
    the pre-activation of ReLU j; ``rels[j]``: its lines; ``alphas[j]``: per-row slopes."""
    lo0, hi0 = ins[0]
    B = lo0.shape[0]
    mag = np.abs(const) * np.ones((B, 1))
    const = const * np.ones((B, 1))
    A = A * np.ones((B, 1, 1))
    for i in range(len(layers) - 1, -1, -1):
        W, b = layers[i]
        w = _vm(ins[i]) @ np.abs(W).T + np.abs(b)
        const = const + A @ b
        mag = mag + np.einsum("bkm,bm->bk", np.abs(A), w)
        A = A @ W
        if i == 0:
            break
        a, s, t = rels[i - 1]
        lo_k = a[:, None, :] if alphas is None else alphas[i - 1]
        if record is not None:
            record[i - 1] = A
        pos = A > 0
        Az = np.where(pos, A * lo_k, A * s[:, None, :])
        at = np.where(pos, 0.0, A * t[:, None, :])
        const = const + at.sum(-1)
        mag = mag + np.einsum("bkn,bn->bk", np.abs(Az), _vm(pre[i - 1])) + np.abs(at).sum(-1)
        A = Az
    x = np.where(A > 0, lo0[:, None, :], hi0[:, None, :])
    const = const + (A * x).sum(-1)
    mag = mag + np.einsum("bkn,bn->bk", np.abs(A), _vm(ins[0]))
    if record is not None:
        record["input"] = A
    return down(const - g * mag)


def _sweep(layers, lower, upper, g, dense_fraction=0.9, dense_below=64):
    """Intermediate bounds: per hidden layer, IBP from the previous bounds intersected with
    CROWN for the neurons that IBP leaves unstable in some box (all of them once more than
    ``dense_fraction`` are, or the layer has at most ``dense_below``: as the Numba path).
    Returns (ins, pre, rels)."""
    ins, pre, rels = [(lower, upper)], [], []
    for i, (W, b) in enumerate(layers[:-1]):
        zl, zh = _ibp_affine(W, b, ins[i][0], ins[i][1], g)
        n = W.shape[0]
        rows = np.flatnonzero(((zl < 0) & (zh > 0)).any(axis=0))
        if rows.size and (rows.size > dense_fraction * n or n <= dense_below):
            rows = np.arange(n)
        if i > 0 and rows.size:
            R = rows.size
            A = np.zeros((1, 2 * R, n))
            A[0, np.arange(R), rows] = 1.0
            A[0, R + np.arange(R), rows] = -1.0
            lb = _backward(layers[:i + 1], rels, A, np.zeros((1, 2 * R)), ins, pre, g)
            zl, zh = zl.copy(), zh.copy()
            zl[:, rows] = np.maximum(zl[:, rows], lb[:, :R])
            zh[:, rows] = np.minimum(zh[:, rows], -lb[:, R:])
        pre.append((zl, zh))
        rels.append(_relax(zl, zh))
        ins.append((np.maximum(zl, 0), np.maximum(zh, 0)))
    return ins, pre, rels


def _folded_ibp(layers, ins, C, d, g):
    """IBP of the rows folded into the last layer, over the refined bounds of its input."""
    W, b = layers[-1]
    return _ibp_affine(C @ W, C @ b - d, ins[-1][0], ins[-1][1], g)


def crown(net, lower, upper, C, d, dense_fraction=0.9, dense_below=64):
    """CROWN bounds (B, k) of ``C y - d`` (dense products, same row selection)."""
    layers = mlp_layers(net)
    g = _gamma(layers, lower.shape[1])
    ins, pre, rels = _sweep(layers, lower, upper, g, dense_fraction, dense_below)
    A = np.concatenate([C, -C])[None]
    const = np.concatenate([-d, d])[None]
    lb = _backward(layers, rels, A, const, ins, pre, g)
    il, ih = _folded_ibp(layers, ins, C, d, g)
    k = C.shape[0]
    return np.maximum(lb[:, :k], il), np.minimum(-lb[:, k:], ih)


def alpha_crown(net, lower, upper, C, d, options: AlphaOptions = AlphaOptions()):
    """alpha-CROWN bounds (B, k) of ``C y - d`` (dense products, same iterations)."""
    layers = mlp_layers(net)
    g = _gamma(layers, lower.shape[1])
    ins, pre, rels = _sweep(layers, lower, upper, g, options.crown.dense_fraction,
                            options.crown.dense_below)
    k = C.shape[0]
    A0 = np.concatenate([C, -C])[None]
    const = np.concatenate([-d, d])[None]
    B, K = lower.shape[0], 2 * k
    alphas = [np.broadcast_to(a[:, None, :], (B, K, a.shape[1])).copy() for a, _, _ in rels]
    masks = [(zl < 0) & (zh > 0) for zl, zh in pre]
    ms = [np.zeros_like(a) for a in alphas]
    vs = [np.zeros_like(a) for a in alphas]
    rec = {}
    best = _backward(layers, rels, A0, const, ins, pre, g, alphas, rec)
    lr = options.lr
    b1, b2 = options.beta1, options.beta2
    for t in range(1, options.iterations + 1):
        x = np.where(rec["input"] > 0, lower[:, None, :], upper[:, None, :])
        for j, (W, b) in enumerate(layers[:-1]):
            z = x @ W.T + b
            A = rec[j]
            a, s, tt = rels[j]
            grad = np.where(A > 0, A * z, 0.0)
            x = np.where(A >= 0, alphas[j] * z, s[:, None, :] * z + tt[:, None, :])
            m = np.where(masks[j][:, None, :], b1 * ms[j] + (1 - b1) * grad, ms[j])
            v = np.where(masks[j][:, None, :], b2 * vs[j] + (1 - b2) * grad * grad, vs[j])
            ms[j], vs[j] = m, v
            step = lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + options.eps)
            alphas[j] = np.where(masks[j][:, None, :], np.clip(alphas[j] + step, 0, 1),
                                 alphas[j])
        lr *= options.lr_decay
        rec = {}
        best = np.maximum(best, _backward(layers, rels, A0, const, ins, pre, g, alphas, rec))
    il, ih = _folded_ibp(layers, ins, C, d, g)
    return np.maximum(best[:, :k], il), np.minimum(-best[:, k:], ih)
