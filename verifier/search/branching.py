"""Branching heuristics: which input dimension to bisect, which ReLU to split.

Input split: the score of dimension j in a box is ``sum over open rows k of |Lam0_kj| w_j``,
where ``Lam0`` is the CROWN coefficient of x in the row's linear lower bound and ``w`` the box
width: the range of the linear bound along j, i.e. how much of the looseness the dimension
carries (the "smear" of Bunel et al., 2020, with the bound's own coefficients). Without
coefficients (IBP), the widest dimension.
"""
from __future__ import annotations

import numpy as np

from .bab_crown import apply_split, relax


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


def cap_layer_splits(scores: dict, split: dict, cap: int) -> None:
    """Take the neurons of a layer out of the candidates (score -1, as a stable one's) in the
    domains that already hold ``cap`` splits in that layer, unless no other layer of the
    domain has an unstable neuron below its cap. In place; ``cap`` 0: nothing.

    FSB's estimate of a child keeps the parent's intermediate bounds, so it misses what a split
    of an early layer does to the later layers' bounds (``relu_intermediate``), and deep in a
    tree it keeps choosing the last layer: on mnist_fc 256x4 prop_10_0.05 the open domains held
    37-41 of their 48-49 splits in the last ReLU layer with 52 neurons of the second one still
    unstable (``BabOptions.relu_layer_cap``)."""
    if cap <= 0 or not scores:
        return
    full = {i: (split[i] != 0).sum(axis=1) >= cap for i in scores}
    free = np.zeros(next(iter(scores.values())).shape[0], dtype=bool)
    for i, sc in scores.items():
        free |= (sc >= 0.0).any(axis=1) & ~full[i]
    for i, sc in scores.items():
        sc[full[i] & free] = -1.0  # stable neurons score -1 already


def fsb_choice(cb, pas, scores: dict, lo, hi, alpha, beta, split, xl, xu, rows_open,
               k: int, per_layer: int = 0, cuts=None, mu=None) -> np.ndarray:
    """Filtered smart branching (De Palma et al., 2021): the ``k`` neurons of best score per
    domain, and the ``per_layer`` best of every layer, are each tried by estimating the bound
    of both children (the parent's intermediate bounds, alpha and beta; the candidate's bounds
    clipped at 0 and its split in place), and the one whose worse child is best is chosen.
    Returns (N, 2) (layer, neuron), -1 where no neuron is unstable.

    A split in layer i changes the backward pass only from ``v_i`` down: the children's pass
    continues from the parent's (``pas``: its coefficient on ``v_i`` and what it gathered
    above, ``Pass.heads``), in float32 (``descend(estimate=True)``; the estimate only ranks
    candidates, no bound is taken from it). With ``per_layer >= k`` the layers' lists hold
    the global top k already, and each is tried once. Ties go to the first candidate: the
    global top k (by score), then the layers' lists in layer order.

    pas: the parents' backward pass; scores: ``relu_scores``; lo, hi: the domains' bounds
    (N, n_i) per layer; alpha, beta, split: per ReLU layer; xl, xu (N, n0); rows_open (N, K);
    cuts, mu: the hull rows of the parents' bound and their multipliers (``bab_cuts``)."""
    layers = sorted(scores)
    N = xl.shape[0]
    flat = np.concatenate([scores[i] for i in layers], axis=1)
    offsets = np.cumsum([0] + [scores[i].shape[1] for i in layers])
    k = max(1, min(k, flat.shape[1]))
    top = np.argsort(-flat, axis=1)[:, :k]                       # (N, k)
    if per_layer > 0:
        # the best of every layer too: later layers' scores dominate the global ranking
        extra = np.concatenate([offsets[j] + np.argsort(-scores[i], axis=1)[:, :per_layer]
                                for j, i in enumerate(layers)], axis=1)
        dup = (extra[:, :, None] == top[:, None, :]).any(axis=2)
        if (dup.sum(axis=1) == k).all():
            # each of the global top k is in its layer's list (per_layer >= k): try it once
            extra = extra[~dup].reshape(N, -1)
        top = np.concatenate([top, extra], axis=1)
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
    lb = child_estimates(cb, pas, lo, hi, alpha, beta, split, xl, xu, rep, c_layer, c_nrn,
                         side, np.repeat(valid.reshape(-1), 2), cuts, mu)
    lb = np.where(rows_open[rep], lb, np.inf).min(axis=1)  # worst open row
    worse = lb.reshape(N, k, 2).min(axis=2)
    worse = np.where(valid, worse, -np.inf)
    best = np.argmax(worse, axis=1)
    r = np.arange(N)
    choice = np.stack([layer[r, best], nrn[r, best]], axis=1).astype(np.int64)
    choice[~valid.any(axis=1)] = -1
    return choice


def child_estimates(cb, pas, lo, hi, alpha, beta, split, xl, xu, parent, layer, nrn, side,
                    wanted=None, cuts=None, mu=None) -> np.ndarray:
    """Estimated bounds (R, K) of R children: child r is domain ``parent[r]`` with neuron
    ``nrn[r]`` of ReLU layer ``layer[r]`` split to ``side[r]`` (-1 inactive, +1 active), under
    the parent's intermediate bounds (that neuron's clipped), alpha and beta. The children of
    a split in layer i share the parent's pass (``pas``) above ``v_i``; each continues from
    ``lams[i]`` with its own relaxation of layer i, in float32 (``descend(estimate=True)``).
    ``wanted`` (R,) bool: children to estimate (the others get -inf). ``cuts``, ``mu``: the
    parents' hull rows (their terms of layer i are in ``lams[i]`` already; those below join
    the pass)."""
    w = cb.magnitudes(cb.L - 1, xl, xu, lo, hi)
    lb = np.full((parent.size, pas.lam0.shape[1]), -np.inf)
    for i in np.unique(layer if wanted is None else layer[wanted]):
        r = np.flatnonzero(layer == i)
        p = parent[r]
        t = np.arange(r.size)
        c = nrn[r]
        li, ui = lo[i][p], hi[i][p]
        li[t, c], ui[t, c] = apply_split(li[t, c], ui[t, c], side[r])
        sp = {j: s[p] for j, s in split.items() if j <= i}
        sp[i][t, c] = side[r]
        relaxes = {j: rx.take(p) for j, rx in pas.relaxes.items() if j < i}
        relaxes[i] = relax(li, ui)
        lam = pas.lams[i]
        c0, m0 = pas.heads[i]
        lb[r], _ = cb.descend(i, lam if lam.shape[0] == 1 else lam[p], c0[p], m0[p], xl[p],
                              xu[p], None, None, [a[p] for a in w[:i + 1]],
                              {j: a[p] for j, a in alpha.items() if j <= i} if alpha else None,
                              {j: b[p] for j, b in beta.items() if j <= i} if beta else None,
                              sp, relaxes, estimate=True,
                              cuts=None if cuts is None else cuts.take(p, upto=i),
                              mu={j: m[p] for j, m in mu.items() if j <= i} if mu else None)
    return lb
