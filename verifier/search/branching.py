"""Branching heuristics: which input dimension to bisect, which ReLU to split.

Input split: the score of dimension j in a box is ``sum over open rows k of |Lam0_kj| w_j``,
where ``Lam0`` is the CROWN coefficient of x in the row's linear lower bound and ``w`` the box
width: the range of the linear bound along j, i.e. how much of the looseness the dimension
carries (the "smear" of Bunel et al., 2020, with the bound's own coefficients). Without
coefficients (IBP), the widest dimension.
"""
from __future__ import annotations

import numpy as np


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
