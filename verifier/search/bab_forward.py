"""Forward linear bounds of a ``ReluChain`` for low-dimensional inputs: a cheap filter before
CROWN's backward pass.

For every neuron the pass keeps two linear functions of the input x (n0 values) and an error
``E >= 0`` with ``Al x + cl - E <= v(x) <= Au x + cu + E`` over the box (symbolic intervals with
DeepPoly's relaxation; Singh et al. 2019, Wang et al. 2018). Through an affine layer
``Zl = W+ Al + W- Au``, ``zl = W+ cl + W- cu + b`` (upper likewise) and
``E_z = |W| E + gamma_N (|W| M + |b|)`` with ``M = max over both sides of |A| xmax + |c|`` the
magnitude of the functions (the rounding of the products, as in ``verifier.bounds.rounding``).
Through a ReLU with bounds [l, u]: lower ``v >= a z`` with ``a`` in {0, 1} (exact), upper
``v <= s z - s l`` (``s >= u / (u - l)``): ``Au = s Zu``, ``cu = s zu - s l`` and
``E_v = max(a, s) E_z + 4 u (|s Zu| xmax + |s zu| + |s l|)``.

Concretised, the bounds of ``z_i`` are ``min over the box of Zl x + zl - E_z`` (and max), minus
the rounding of that sum; they are intersected with the bounds already known. The cost per box
is ``O(n_i n_{i-1} n0)`` per layer, far below CROWN's, but the bounds are looser: they only
decide which neurons CROWN needs to bound.
"""
from __future__ import annotations

import numpy as np

from ..bounds.rounding import U, down, up
from .bab_kernels import fwd_concretise, fwd_relu

_UP = 1.0 + 2.0 ** -50


class ForwardState:
    """Linear bounds of ``v_{i-1}`` in terms of x for a batch, neuron-major so that an affine
    layer is one matrix product: ``A`` (2n, B, n0) stacks the lower functions over the upper
    ones, ``c`` (2n, B) their constants, ``E`` (n, B) their error and ``M`` (n, B) a bound of
    their magnitudes ``|A| xmax + |c|``."""

    def __init__(self, xl: np.ndarray, xu: np.ndarray):
        B, n0 = xl.shape
        self.B, self.n0 = B, n0
        self.xl, self.xu = xl, xu
        self.xmax = np.maximum(np.abs(xl), np.abs(xu))
        eye = np.ascontiguousarray(np.broadcast_to(np.eye(n0)[:, None, :], (n0, B, n0)))
        self.A = np.concatenate([eye, eye])
        self.c = np.zeros((2 * n0, B))
        self.E = np.zeros((n0, B))
        self.M = self.xmax.T.copy()
        self.Z = self.zc = self.Ez = self.mag = None
        self._big = {}

    def _stacked(self, W):
        """``[[W+, W-], [W-, W+]]``: lower rows from (lower, upper) inputs, then upper rows."""
        key = id(W)
        big = self._big.get(key)
        if big is None:
            Wp, Wn = np.maximum(W, 0.0), np.minimum(W, 0.0)
            big = self._big[key] = np.block([[Wp, Wn], [Wn, Wp]])
        return big

    def affine(self, W, absW, b, eps) -> tuple[np.ndarray, np.ndarray]:
        """Push the functions through ``z = W v + b``; returns the concretised bounds of z,
        (B, n_out) each."""
        big = self._stacked(W)
        m = W.shape[0]
        n2 = self.A.shape[0]
        self.Z = (big @ self.A.reshape(n2, -1)).reshape(2 * m, self.B, self.n0)
        bb = np.concatenate([b, b])[:, None]
        self.zc = big @ self.c + bb
        # |W| E + eps (|W| M + |b|), the float sums of nonnegative terms rounded up past exact
        self.Ez = (absW @ (self.E + eps * (self.M + self.E)) + eps * np.abs(b)[:, None]) \
            * (1.0 + eps)
        lo_val, hi_val, self.mag = fwd_concretise(self.Z, self.zc, self.xl, self.xu, self.xmax)
        lo = down(lo_val - self.Ez - eps * self.mag[:m])
        hi = up(hi_val + self.Ez + eps * self.mag[m:])
        return lo.T, hi.T

    def relu(self, l: np.ndarray, u: np.ndarray) -> None:
        """Replace the functions of z (last ``affine``) by those of ``relu(z)`` given the final
        bounds l <= z <= u (B, n)."""
        self.A, self.c, self.E, self.M = fwd_relu(self.Z, self.zc, self.Ez, self.mag,
                                                  np.ascontiguousarray(l.T),
                                                  np.ascontiguousarray(u.T), _UP, 4.0 * U)

    def identity(self) -> None:
        """The functions of z become those of v (no ReLU after the layer)."""
        m = self.Ez.shape[0]
        self.A, self.c, self.E = self.Z, self.zc, self.Ez
        self.M = np.maximum(self.mag[:m], self.mag[m:])
