"""The constraint operator of the low-rank SDP: ``g(V)``, ``M(w) V`` and their adjoints for a
factor ``V`` (n, r) of ``G = V V'``, without ever forming an n x n matrix.

Every constraint matrix of ``sdp_program`` is a *star*: its entries lie in row and column
``a_i`` (its centre) and possibly at (0, 0), i.e. ``G_i = sym(e_a h_i') + kappa_i e0 e0'`` with
``sym(e h') = (e h' + h e')/2``, ``h_ia = G_i[a, a]``, ``h_ij = G_i[a, j] + G_i[j, a]``. For a
symmetric ``S``, ``<G_i, S> = h_i' S[:, a] + kappa_i S_00``. Two kinds:

* *linear* constraints (centre 0: lo, hi, relu, tri, actlo, acthi, and the objective ``C_0``),
  held as one sparse matrix ``Q`` (m_lin, n) (its rows are dense but for the coordinate
  bounds): ``g_lin(V) = Q (V V[0]')``, and
  ``(sum_lin w_i G_i) V = L(Q'w) V`` with ``L(u) V = (e0 (u'V) + u V[0]) / 2``;
* *quadratic* ones (box: centre i; complementarity: centre a, the neuron), held as a sparse
  ``H`` (m_quad, n) with centres ``a``: ``g_i(V) = (H V)_i . V[a_i] + kappa_i V[0].V[0]``, and
  ``(sum w_i G_i) V = (scatter_a(w * H V) + H'(w * V[a])) / 2 + (sum w kappa) e0 V[0]``.

So one pass costs a product with Q, one with H (r columns), and O((n + m) r),
never an n x n matrix; the row dot products are the "r forward and backward passes".
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp


class LowRankOperator:
    """The products the low-rank solver needs for ``SDPData`` ``data`` (module docstring).
    ``lin``/``quad``: indices of the linear and quadratic constraints; ``eq``: equality mask.
    Raises ValueError for a constraint that is not a star (none of ``sdp_program``'s)."""

    def __init__(self, data):
        self.data = data
        n = self.n = data.n
        m = data.m
        Gc = data.G_op.tocsc()
        Gc.sum_duplicates()
        Gc.eliminate_zeros()
        cols = np.repeat(np.arange(m), np.diff(Gc.indptr))
        p, q, val = Gc.indices // n, Gc.indices % n, Gc.data
        border = (p == 0) | (q == 0)
        lin = np.bincount(cols[~border], minlength=m) == 0
        self.lin, self.quad = np.flatnonzero(lin), np.flatnonzero(~lin)
        # linear: Q[i, j] = G_i[0, j] + G_i[j, 0] (j > 0), G_i[0, 0]
        pos = np.full(m, -1)
        pos[self.lin] = np.arange(self.lin.size)
        k = lin[cols]
        self.Q = sp.csr_matrix((val[k], (pos[cols[k]], np.where(p[k] == 0, q[k], p[k]))),
                               shape=(self.lin.size, n))
        self.Q.sum_duplicates()
        self.QT = self.Q.T.tocsr()
        C0 = np.asarray(data.C0, dtype=np.float64).reshape(n, n)
        if np.any(C0[1:, 1:]):
            raise ValueError("the objective must be linear in x (entries in row/column 0 only)")
        self.c = C0[0].copy()
        self.c[1:] += C0[1:, 0]
        # quadratic: the centre is the index on the diagonal entry off (0, 0)
        pos[:] = -1
        pos[self.quad] = np.arange(self.quad.size)
        k = ~lin[cols]
        cq, pq, qq, vq = pos[cols[k]], p[k], q[k], val[k]
        centre = np.zeros(self.quad.size, dtype=np.int64)
        dg = (pq == qq) & (pq > 0)
        centre[cq[dg]] = pq[dg]
        if np.any(np.bincount(cq[dg], minlength=self.quad.size) != 1):
            raise ValueError("a quadratic SDP constraint without one diagonal centre entry")
        a = centre[cq]
        corner = (pq == 0) & (qq == 0)
        if np.any(~corner & (pq != a) & (qq != a)):
            raise ValueError("an SDP constraint matrix that is not a star (row/column + corner)")
        self.kappa = np.zeros(self.quad.size)
        np.add.at(self.kappa, cq[corner], vq[corner])
        other = np.where(pq == a, qq, pq)
        self.H = sp.csr_matrix((vq[~corner], (cq[~corner], other[~corner])),
                               shape=(self.quad.size, n))
        self.H.sum_duplicates()
        self.HT = self.H.T.tocsr()
        self.a = centre
        # scatter of row i to row a_i (n, m_quad)
        self.E = sp.csr_matrix((np.ones(centre.size), (centre, np.arange(centre.size))),
                               shape=(n, centre.size))
        self.eq = data.equality

    # -- pieces ---------------------------------------------------------------------------------
    def _quad_values(self, V, HV) -> np.ndarray:
        return np.einsum("ij,ij->i", HV, V[self.a]) + self.kappa * float(V[0] @ V[0])

    def _quad_times(self, w, V) -> np.ndarray:
        """``(sum_quad w_i G_i) V``."""
        out = 0.5 * (self.HT @ (w[:, None] * V[self.a]) + self.E @ (w[:, None] * (self.H @ V)))
        out[0] += float(w @ self.kappa) * V[0]
        return out

    @staticmethod
    def _border_times(u, V) -> np.ndarray:
        """``L(u) V`` with ``L(u) = (e0 u' + u e0') / 2``."""
        out = 0.5 * np.outer(u, V[0])
        out[0] += 0.5 * (u @ V)
        return out

    # -- what the solver calls -------------------------------------------------------------------
    def values(self, V) -> np.ndarray:
        """``g_i(V) = <G_i, V V'>`` for all i."""
        g = np.empty(self.data.m)
        g[self.lin] = self.Q @ (V @ V[0])
        g[self.quad] = self._quad_values(V, self.H @ V)
        return g

    def sym_values(self, R, V) -> np.ndarray:
        """``<G_i, sym(R V')>`` for all i (the adjoint of ``w -> (sum_i w_i G_i) V``)."""
        g = np.empty(self.data.m)
        g[self.lin] = self.Q @ (0.5 * (R @ V[0] + V @ R[0]))
        g[self.quad] = (0.5 * (np.einsum("ij,ij->i", self.H @ R, V[self.a])
                               + np.einsum("ij,ij->i", self.H @ V, R[self.a]))
                        + self.kappa * float(R[0] @ V[0]))
        return g

    def objective(self, V) -> float:
        """``<C_0, V V'>``."""
        return float(self.c @ (V @ V[0]))

    def mat_times(self, w, V, const: bool = True) -> np.ndarray:
        """``(C_0 - sum_i w_i G_i) V`` (``const=False``: ``(sum_i w_i G_i) V``)."""
        u = self.QT @ w[self.lin]
        quad = self._quad_times(w[self.quad], V)
        if const:
            return self._border_times(self.c - u, V) - quad
        return self._border_times(u, V) + quad
    def weights(self, g, y, rho) -> np.ndarray:
        """w_i = max(0, y_i - rho g_i) (inequalities), y_i - rho g_i (equalities)."""
        w = y - rho * g
        return np.where(self.eq, w, np.maximum(w, 0.0))

    def lagrangian(self, V, y, rho):
        """The augmented Lagrangian (``sdp_lowrank``) and its gradient in V."""
        g = self.values(V)
        ineq = ~self.eq
        t = y[ineq] - rho * g[ineq]
        val = self.objective(V)
        val += float(np.sum(np.maximum(t, 0.0) ** 2 - y[ineq] ** 2)) / (2 * rho)
        e = self.eq
        val += float(np.sum(-y[e] * g[e] + 0.5 * rho * g[e] ** 2))
        w = self.weights(g, y, rho)
        return val, 2.0 * self.mat_times(w, V)

    def violation(self, V) -> float:
        """The largest violation of any constraint at ``V V'``."""
        g = self.values(V)
        v_ineq = np.maximum(-g[~self.eq], 0.0).max(initial=0.0)
        v_eq = np.abs(g[self.eq]).max(initial=0.0)
        return float(max(v_ineq, v_eq))
