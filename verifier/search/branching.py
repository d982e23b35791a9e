"""Branching heuristics: which input dimension to bisect, which ReLU to split.

Input split: the score of dimension j in a box is ``sum over open rows k of |Lam0_kj| w_j``,
where ``Lam0`` is the CROWN coefficient of x in the row's linear lower bound and ``w`` the box
width: the range of the linear bound along j, i.e. how much of the looseness the dimension
carries (the "smear" of Bunel et al., 2020, with the bound's own coefficients). Without
coefficients (IBP), the widest dimension.
"""
from __future__ import annotations

import numpy as np

from .bab_crown import apply_split, optimise


def input_scores(lam0: np.ndarray | None, rows_open: np.ndarray, width: np.ndarray) -> np.ndarray:
    """(B, n0) scores of the input dimensions. lam0: (B, K, n0) or None; rows_open: (B, K);
    width: (B, n0)."""
    if lam0 is None:
        return width
    s = np.einsum("bk,bkj->bj", rows_open.astype(np.float64), np.abs(lam0)) * width
    # a box whose bounds do not depend on x (all coefficients 0) still needs a split
    return s + 1e-12 * width


def relu_scores(cb, pas, lo, hi, alpha, rows_open) -> dict:
    """{relu layer i: (N, n_i)} split scores of the neurons: -1 for stable ones; for an unstable
    neuron (l < 0 < u) the largest loss its relaxation can cause in the bound of the open rows,

        sum over open rows of  -Lam (-s l)                   where Lam < 0 (upper line),
                               Lam max((1 - a) u, -a l)       where Lam > 0 (lower line, slope a),

    ``Lam`` being the row's coefficient on the neuron's output in the last backward pass and
    ``s = u / (u - l)`` (a BaBSR-like estimate; Bunel et al., JMLR 2020), plus a tie-breaking
    ``1e-12 (u - l)``."""
    out = {}
    w = rows_open.astype(np.float64)[:, :, None]
    for i in cb.relu_layers:
        lam = pas.lams.get(i)
        l, u = lo[i], hi[i]
        unst = (l < 0.0) & (u > 0.0)
        if lam is None or not unst.any():
            out[i] = np.where(unst, 0.0, -1.0)
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            gap_up = np.where(unst, u * (-l) / (u - l), 0.0)
        a = alpha.get(i) if alpha else None
        if a is None:
            a = np.where(u >= -l, 1.0, 0.0)[:, None, :]
        gap_lo = np.maximum((1.0 - a) * u[:, None, :], -a * l[:, None, :])
        loss = np.where(lam < 0.0, -lam * gap_up[:, None, :], lam * gap_lo)
        s = (loss * w).sum(axis=1) + 1e-12 * (u - l)
        out[i] = np.where(unst, s, -1.0)
    return out


def fsb_choice(cb, scores: dict, lo, hi, alpha, beta, split, xl, xu, C, d, rows_open,
               k: int, per_layer: int = 0) -> np.ndarray:
    """Filtered smart branching (De Palma et al., 2021): the ``k`` neurons of best score per
    domain, and the ``per_layer`` best of every layer (a neuron can be in both), are each tried
    by bounding both children once (the parent's intermediate bounds, alpha and beta; the
    candidate's bounds clipped at 0), and the one whose worse child is best is chosen. Returns
    (N, 2) (layer, neuron), -1 where no neuron is unstable.

    scores: ``relu_scores``; lo, hi: the domains' bounds (N, n_i) per layer; alpha, beta,
    split: per ReLU layer; xl, xu (N, n0); C (K, m), d (K,); rows_open (N, K)."""
    layers = sorted(scores)
    N = xl.shape[0]
    flat = np.concatenate([scores[i] for i in layers], axis=1)
    offsets = np.cumsum([0] + [scores[i].shape[1] for i in layers])
    k = max(1, min(k, flat.shape[1]))
    top = np.argsort(-flat, axis=1)[:, :k]                       # (N, k)
    if per_layer > 0:
        # the best of every layer too: later layers' scores dominate the global ranking
        extra = [offsets[j] + np.argsort(-scores[i], axis=1)[:, :per_layer]
                 for j, i in enumerate(layers)]
        top = np.concatenate([top] + extra, axis=1)
        k = top.shape[1]
    valid = np.take_along_axis(flat, top, axis=1) >= 0.0
    lay_idx = np.searchsorted(offsets, top, side="right") - 1
    layer = np.asarray(layers)[lay_idx]
    nrn = top - offsets[lay_idx]
    # 2 k children per domain: candidate c, side s (0 inactive, 1 active)
    rep = np.repeat(np.arange(N), 2 * k)
    c_layer = np.repeat(layer, 2, axis=1).reshape(-1)
    c_nrn = np.repeat(nrn, 2, axis=1).reshape(-1)
    side = np.tile([-1.0, 1.0], N * k)
    lo2 = [a[rep] for a in lo]
    hi2 = [a[rep] for a in hi]
    sp2 = {i: s[rep] for i, s in split.items()}
    for i in np.unique(c_layer):
        r = np.flatnonzero(c_layer == i)
        c = c_nrn[r]
        sp2[i][r, c] = side[r]
        lo2[i][r, c], hi2[i][r, c] = apply_split(lo2[i][r, c], hi2[i][r, c], side[r])
    # a child lies inside its parent: the parents' rounding magnitudes hold for the children
    w = [m[rep] for m in cb.magnitudes(cb.L - 1, xl, xu, lo, hi)]
    res = optimise(cb, C, d, xl[rep], xu[rep], lo2, hi2, split=sp2,
                   alpha={i: a[rep] for i, a in alpha.items()} if alpha else None,
                   beta={i: b[rep] for i, b in beta.items()} if beta else None, iterations=0,
                   w=w)
    lb = np.where(rows_open[rep], res.lb, np.inf).min(axis=1)  # worst open row
    worse = lb.reshape(N, k, 2).min(axis=2)
    worse = np.where(valid, worse, -np.inf)
    best = np.argmax(worse, axis=1)
    r = np.arange(N)
    choice = np.stack([layer[r, best], nrn[r, best]], axis=1).astype(np.int64)
    choice[~valid.any(axis=1)] = -1
    return choice
