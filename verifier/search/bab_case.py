"""What the input-split and ReLU-split searches share: one case's open conjunctions as a stack
of rows, and the check of candidate points.

A conjunction ``k`` of the unsafe set is ``C_r y - d_r <= 0`` for its rows ``r`` (``row_conj[r]
== k``). It is refuted over a region when some row's lower bound there is > 0, i.e. when the
largest of its rows' lower bounds is > 0 (``conj_lb``); a point violates the property when the
largest of a conjunction's row values is <= 0 (``margins``). A conjunction without rows holds
everywhere (-inf for both).
"""
from __future__ import annotations

import numpy as np


class CaseSearch:
    """Base of the searches: ``C`` (K, m), ``d`` (K,), ``row_conj`` (K,), ``J`` conjunctions,
    ``empty_conj`` (J,); ``replay``, ``ci`` (case index), ``opt`` (``BabOptions``),
    ``stats``, ``cb`` (``ChainBounder``) and ``ce`` (the confirmed counterexample) are set by
    the subclasses."""

    def _set_rows(self, Cs: list, ds: list) -> None:
        """The rows of the conjunctions ``Cs[k]`` (k_j, m), ``ds[k]`` (k_j,), stacked."""
        self.C = np.concatenate(Cs, axis=0)
        self.d = np.concatenate(ds, axis=0)
        self.J = len(Cs)
        self.row_conj = np.concatenate([np.full(c.shape[0], k) for k, c in enumerate(Cs)])
        self.empty_conj = np.array([c.shape[0] == 0 for c in Cs])

    def _conj_max(self, Z: np.ndarray) -> np.ndarray:
        """(N, J): the largest of each conjunction's columns of Z (N, K); -inf without rows."""
        out = np.full((Z.shape[0], self.J), -np.inf)
        for k in range(self.J):
            rows = self.row_conj == k
            if rows.any():
                out[:, k] = Z[:, rows].max(axis=1)
        return out

    def _conj_lb(self, lb: np.ndarray) -> np.ndarray:
        """(N, J): best row lower bound of each conjunction (refuted iff > 0). A NaN bound (an
        overflow, inf - inf) proves nothing: it counts as -inf, so that it can neither refute a
        conjunction nor hide another row's proof (``NaN <= 0`` is False: callers testing
        ``<= 0`` for "still open" would otherwise drop the region)."""
        return self._conj_max(np.where(np.isnan(lb), -np.inf, lb))

    def _margins(self, Y: np.ndarray) -> np.ndarray:
        """(P, J) float64 margins ``max_r (C y - d)_r`` per conjunction (violated iff <= 0)."""
        return self._conj_max(Y @ self.C.T - self.d)

    def _check_points(self, X: np.ndarray, open_: np.ndarray) -> bool:
        """Evaluate candidate points X (P, n0) on the chain; replay (best first, at most
        ``max_replay``) those whose margin on one of their open conjunctions (``open_`` (P, J))
        is <= 0. True when a counterexample is confirmed (``self.ce`` set)."""
        if X.shape[0] == 0:
            return False
        Y = self.cb.chain.forward(X)
        self.stats["points_checked"] = self.stats.get("points_checked", 0) + X.shape[0]
        m = np.where(open_, self._margins(Y), np.inf).min(axis=1)
        hit = m <= 0.0
        if not hit.any():
            return False
        cand = X[hit][np.argsort(m[hit])]
        ce = self.replay(cand[: self.opt.max_replay], case=self.ci)
        if ce is not None:
            self.ce = ce
            return True
        return False
