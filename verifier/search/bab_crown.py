"""Sound batched bounds of a ``ReluChain`` over boxes with ReLU split constraints: IBP, CROWN
intermediate bounds, and the final bound of spec rows with optimised slopes (alpha) and split
multipliers (beta), as in beta-CROWN (Wang et al., NeurIPS 2021).

Notation (0-based layers): ``z_i = W_i v_{i-1} + b_i``, ``v_{-1} = x``, ``v_i = relu(z_i)`` where
``chain.relu[i]``. A *domain* is a box ``xl <= x <= xu`` with split constraints
``split_i[j] = +1`` (``z_ij >= 0``), ``-1`` (``z_ij <= 0``) or 0, and pre-activation bounds
``lo_i <= z_i <= hi_i`` valid on it (a split is applied by clipping: ``lo = max(lo, 0)`` for
+1, ``hi = min(hi, 0)`` for -1; a domain with ``lo > hi`` somewhere is empty).

Backward pass (CROWN, Zhang et al. 2018) for the lower bound of ``A z_top + c`` over a domain:
the coefficient ``Lam`` on ``z_i`` becomes ``Lam W_i`` on ``v_{i-1}`` (constant ``+= Lam b_i``);
through a ReLU with bounds ``[l, u]`` the coefficient on ``z`` is

    g = max(Lam, 0) * k_lo + min(Lam, 0) * k_up - beta * split,   const += min(Lam, 0) . t_up,

with the lines ``v >= k_lo z`` (``k_lo = alpha in [0, 1]`` for unstable neurons, 1 / 0 for
stable active / inactive) and ``v <= k_up z + t_up`` (``k_up = s >= u / (u - l)`` rounded up,
``t_up = -s l``, for unstable neurons). Every term ``-beta_j split_j z_j`` is <= 0 on the domain
for any ``beta >= 0``, so the bound stays valid for every alpha in [0, 1] and beta >= 0. At the
input the box minimum is ``sum_j min(Lam_j xl_j, Lam_j xu_j)``.

Splits of the first ReLU layer are half-spaces of the input itself: ``s_k (W_0k x + b_0k) >= 0``.
The row-wise passes of the intermediate bounds (``descend_rows``) take them into the input step
with Lagrange multipliers ``mu_k >= 0``: ``min over the box of (Lam - sum_k mu_k s_k W_0k) . x +
const - sum_k mu_k s_k b_0k`` is a valid bound for every such mu (the subtracted terms are >= 0
on the domain), concave in mu, and maximised per row by exact coordinate ascent
(``bab_kernels.halfspace_rows``). With one split it is the LP bound of the row over the box cut
by the half-space. Without it a neuron's bounds in the layers above see only the box: on the
open domains of mnist_fc 256x4 prop_7_0.05 at 45 s (200 worst, 2-7 first-layer splits) the
unstable neurons of layers 1 and 3 fall from 56 and 64 to 48 and 51 per domain and 50 of the
200 are refuted by the next bound (none without).

Rows of a hull-cut pool (``bab_cuts``: ``p v_k[n] + q'v_{k-1} <= h`` valid on the domain) enter
the final bound with multipliers ``mu >= 0`` the same way: ``mu p`` on ``v_k``, ``mu q`` on
``v_{k-1}``, ``-mu h`` in the constant; each added term is <= 0 on the domain.

The gradient of the bound in alpha and beta is the forward evaluation of the chosen lines at the
box minimiser ``x*`` (``z~_i`` below): ``d lb / d alpha_ij = Lam_ij z~_ij`` where ``Lam_ij > 0``
and ``d lb / d beta_ij = -split_ij z~_ij`` (for a cut row, ``d lb / d mu = p v~_k[n] +
q'v~_{k-1} - h``); projected Adam ascends it and the best iterate of every row is kept.

Floating point: as in ``verifier.bounds.rounding``, every step adds its magnitude to ``mag``:
``|Lam| . w_i`` for an affine step (``w_i = |W_i| vmax_{i-1} + |b_i|``, ``vmax`` the largest
magnitude of the value over the domain), ``|g| . zmax + |min(Lam, 0) t_up|`` for a ReLU step and
``|Lam| . max(|xl|, |xu|) + |const|`` at the input; the bound returned is
``const + min - MARGIN_FACTOR * gamma_N * mag`` rounded down one ulp, N exceeding the longest dot
product plus the number of steps (with cut rows, ``mu . (|p| vmax_k[n] + |q| . vmax_{k-1} +
|h|)`` joins ``mag`` and N also exceeds the rows per layer). IBP uses the centre/radius rule
with the same margins. The
row-wise passes of the intermediate bounds (``descend_rows``) multiply coefficients by the
weights in float32 and add ``MARGIN_FACTOR * gamma32 * mag`` and underflow terms (``_product32``);
their half-space step is in float64, new coefficients computed afresh from ``Lam`` (S + 1 terms
each), and adds ``MARGIN_FACTOR * gamma_N`` times its magnitude ``|Lam| . xmax + sum_k mu_k
w_0k`` (N > S + 1). Estimates for branching (``descend(estimate=True)``) use float32
products without margins and are never taken as bounds.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..bounds.rounding import MARGIN_FACTOR, centre_radius, down, gamma, up
from ..kernels import adam_ascent
from .bab_chain import ReluChain
from .bab_forward import ForwardState
from .bab_kernels import (concretise, concretise_rows, halfspace_rows, relu_step,
                          relu_step_rows)

_EMPTY3 = np.zeros((0, 0, 0))
_EMPTY2 = np.zeros((0, 0))

#: quotients of two-term sums have relative error below 4u; this factor rounds past it
_UP = 1.0 + 2.0 ** -50

#: rounds of coordinate ascent of the split multipliers in intermediate bounds
HALFSPACE_SWEEPS = 2

#: float32: unit roundoff, and the absolute error of one operation near underflow (the spacing
#: of subnormals)
_U32 = 2.0 ** -24
_ETA32 = 2.0 ** -149
#: a float32 product whose entries could exceed this is made in float64 instead
_F32_SAFE = 1e36


@dataclass
class Relax:
    """ReLU relaxation of one layer over a batch: masks and the upper line (B, n)."""

    unstable: np.ndarray
    active: np.ndarray      # l >= 0
    k_up: np.ndarray        # upper slope: 1 active, 0 inactive, s unstable
    t_up: np.ndarray        # upper intercept (0 unless unstable)
    k_lo_default: np.ndarray  # adaptive lower slope (DeepPoly), 1 active, 0 inactive
    zmax: np.ndarray        # max(|l|, |u|)
    unstable_u8: np.ndarray

    def take(self, idx) -> "Relax":
        """The relaxation of the batch entries ``idx``."""
        return Relax(*(getattr(self, f)[idx] for f in _RELAX_FIELDS))


def relax(l: np.ndarray, u: np.ndarray) -> Relax:
    """The ReLU lines of a layer with pre-activation bounds l <= z <= u (B, n)."""
    active = l >= 0.0
    inactive = u <= 0.0
    unstable = ~(active | inactive)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(unstable, (u / (u - l)) * _UP, 0.0)
    k_up = np.where(active, 1.0, s)
    t_up = np.where(unstable, -s * l, 0.0)
    k_lo = np.where(active, 1.0, np.where(unstable & (u >= -l), 1.0, 0.0))
    return Relax(unstable, active, k_up, t_up, k_lo, np.maximum(np.abs(l), np.abs(u)),
                 unstable.astype(np.uint8))


def _rowdot(M: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``out[b, k] = sum_j M[b, k, j] v[b, j]``; M (Bm, K, n), v (Bv, n) -> (max(Bm, Bv), K)."""
    return np.matmul(M, v[:, :, None])[..., 0]


@dataclass
class Pass:
    """What a backward pass leaves for gradients and branching: ``lams[i]`` the coefficient on
    ``v_i`` (before the ReLU step) for every layer below the top (None where no ReLU), ``lam0``
    the coefficient on x (B, K, n0), the relaxations used, and ``heads[i]``: the constant and
    magnitude (B, K) the pass had gathered above ``v_i`` (for a pass that continues from
    ``lams[i]``)."""

    lams: dict
    lam0: np.ndarray
    relaxes: dict
    heads: dict

    def take(self, idx) -> "Pass":
        """The pass restricted to the batch entries ``idx`` (a coefficient with a batch axis of
        1, shared by all entries, stays as it is)."""
        return Pass({i: a if a.shape[0] == 1 else a[idx] for i, a in self.lams.items()},
                    self.lam0[idx], {i: r.take(idx) for i, r in self.relaxes.items()},
                    {i: (c[idx], m[idx]) for i, (c, m) in self.heads.items()})


    def put(self, idx, other: "Pass") -> None:
        """Replace the entries ``idx`` of this pass by those of ``other`` (a pass over the
        same domains' relaxations, e.g. re-optimised), in place."""
        B = self.lam0.shape[0]
        for i, a in other.lams.items():
            if self.lams[i].shape[0] != B:
                self.lams[i] = np.repeat(self.lams[i], B, axis=0)
            self.lams[i][idx] = a
        self.lam0[idx] = other.lam0
        for i, (c, m) in other.heads.items():
            self.heads[i][0][idx] = c
            self.heads[i][1][idx] = m


class ChainBounder:
    """Bounds of one ``ReluChain``; caches transposes and magnitudes of its weights."""

    def __init__(self, chain: ReluChain):
        self.chain = chain
        self.L = chain.L
        self.W = chain.W
        self.b = chain.b
        self.WT = [np.ascontiguousarray(W.T) for W in chain.W]
        self.absWT = [np.abs(WT) for WT in self.WT]
        self.absb = [np.abs(b) for b in chain.b]
        widest = max((chain.n0,) + chain.widths)
        self.gamma = gamma(widest + 2 * self.L + 8)
        self.eps = MARGIN_FACTOR * self.gamma
        # float32 copies for the row-wise passes: the coefficient products ``g @ W_i`` are
        # dot products of n_i terms (n_i the width of layer i)
        self.W32 = [W.astype(np.float32) for W in chain.W]
        self.colsum = [float(np.abs(W).sum(axis=0).max(initial=0.0)) for W in chain.W]
        n32 = max(chain.widths) + 2
        self.eps32 = MARGIN_FACTOR * n32 * _U32 / (1.0 - n32 * _U32)
        self.relu_layers = [i for i in range(self.L) if chain.relu[i]]

    # -- interval bounds ----------------------------------------------------------------------
    def ibp(self, xl, xu, split=None, lo_ref=None, hi_ref=None):
        """Pre-activation bounds ``lo[i], hi[i]`` (B, n_i) of every layer by IBP (centre/radius
        with rounding margins), intersected with ``lo_ref``/``hi_ref`` where given and clipped by
        the splits. Returns (lo, hi) lists."""
        lo, hi = [], []
        vl, vu = xl, xu
        for i in range(self.L):
            li, ui = self.ibp_layer(i, vl, vu)
            if lo_ref is not None and lo_ref[i] is not None:
                li = np.maximum(li, lo_ref[i])
                ui = np.minimum(ui, hi_ref[i])
            if split is not None and split.get(i) is not None:
                li, ui = apply_split(li, ui, split[i])
            lo.append(li)
            hi.append(ui)
            vl, vu = self.post(i, li, ui)
        return lo, hi

    def ibp_layer(self, i, vl, vu):
        """IBP bounds of ``z_i`` from bounds ``vl <= v_{i-1} <= vu`` (B, n_{i-1}): centre
        ``c = W mu + b``, radius ``|W| r`` plus ``eps (|W| (|mu| + r) + |b|)``, rounded out."""
        mu, r = centre_radius(vl, vu)
        c = mu @ self.WT[i] + self.b[i]
        rho = r @ self.absWT[i]
        s = (np.abs(mu) + r) @ self.absWT[i] + self.absb[i]
        R = rho + self.eps * s
        return down(c - R), up(c + R)

    def post(self, i, li, ui):
        """Bounds of ``v_i`` from those of ``z_i``."""
        if self.chain.relu[i]:
            return np.maximum(li, 0.0), np.maximum(ui, 0.0)
        return li, ui

    def interval_rows(self, C, d, lo, hi):
        """Sound lower bounds (B, K) of ``C z - d`` over the box ``lo <= z <= hi`` (B, n):
        ``C+ lo + C- hi - d`` with the rounding margin of an n-term dot product."""
        val = lo @ np.maximum(C, 0.0).T + hi @ np.minimum(C, 0.0).T - d
        mag = np.maximum(np.abs(lo), np.abs(hi)) @ np.abs(C).T + np.abs(d)
        return down(val - self.eps * mag)

    # -- magnitudes ---------------------------------------------------------------------------
    def _vmax(self, i, xl, xu, lo, hi):
        """Largest magnitude of ``v_{i-1}`` (the input of layer i) over the domain."""
        if i == 0:
            return np.maximum(np.abs(xl), np.abs(xu))
        if self.chain.relu[i - 1]:
            return np.maximum(hi[i - 1], 0.0)
        return np.maximum(np.abs(lo[i - 1]), np.abs(hi[i - 1]))

    def magnitudes(self, top, xl, xu, lo, hi):
        """``w_i = |W_i| vmax_{i-1} + |b_i|`` (B, n_i) for i <= top."""
        return [self._vmax(i, xl, xu, lo, hi) @ self.absWT[i] + self.absb[i]
                for i in range(top + 1)]

    # -- the backward pass --------------------------------------------------------------------
    def backward(self, top, A, const, xl, xu, lo, hi, w=None, alpha=None, beta=None,
                 split=None, relaxes=None, keep=False, cuts=None, mu=None):
        """Sound lower bound (B, K) of ``A z_top + const`` over each domain.

        A: (Ba, K, n_top) with Ba in (1, B); const: (Bc, K). ``alpha[i]``: lower slopes (B, K,
        n_i) or None (adaptive); ``beta[i]`` (B, K, n_i) >= 0 with ``split[i]`` (B, n_i) in
        {-1, 0, 1} (beta is only read where split != 0). ``w``: ``magnitudes`` (computed when
        None); ``relaxes``: cached ``relax`` per layer (filled in). ``cuts``: a ``CutView``
        of hull rows with multipliers ``mu[k]`` (B, K, M) >= 0 (``bab_cuts``). Returns (lb,
        Pass or None)."""
        B = xl.shape[0]
        if w is None:
            w = self.magnitudes(top, xl, xu, lo, hi)
        Ba, K, n = A.shape
        c = np.broadcast_to(const + A @ self.b[top], (B, K)).copy()
        mag = np.broadcast_to(_rowdot(np.abs(A), w[top]), (B, K)).copy()
        lam = (A.reshape(Ba * K, n) @ self.W[top]).reshape(Ba, K, -1)
        if mu:
            lam = self._cut_rows(top - 1, lam, c, mag, cuts, mu, xl, xu, lo, hi)
        return self.descend(top - 1, lam, c, mag, xl, xu, lo, hi, w, alpha, beta, split,
                            relaxes, keep, cuts=cuts, mu=mu)

    def descend(self, j, lam, c, mag, xl, xu, lo, hi, w, alpha=None, beta=None, split=None,
                relaxes=None, keep=False, estimate=False, cuts=None, mu=None):
        """Continue a backward pass from the coefficient ``lam`` (Ba, K, n_j) on ``v_j`` with
        constant ``c`` and magnitude ``mag`` (B, K) (both updated in place) down to the input.
        Returns (lb, Pass or None) as ``backward``. ``estimate``: the products in float32
        without their rounding margin, for branching only (the result is not a sound bound).

        With a cut pool (``cuts``, multipliers ``mu``) the rows of layer i join the pass as
        ``bab_cuts`` says: ``mu P`` on ``v_i``, ``-mu h`` in the constant and ``mu .
        magnitude`` in ``mag`` (``_cut_rows``; for layer j the caller has added them to
        ``lam``, ``c``, ``mag``), ``mu Q`` on ``v_{i-1}`` after the affine step; the final
        margin uses the pool's ``eps`` (its N covers the pool's dot products of R terms)."""
        if relaxes is None:
            relaxes = {}
        lams, heads = {}, {}
        W = self.W32 if estimate else self.W
        eps = self.eps
        if mu is not None and mu:
            eps = max(eps, cuts.eps)
        else:
            mu = None
        for i in range(j, -1, -1):
            m_i = mu.get(i) if mu is not None else None
            if self.chain.relu[i]:
                rx = relaxes.get(i)
                if rx is None:
                    rx = relaxes[i] = relax(lo[i], hi[i])
                if keep:
                    lams[i] = lam
                    heads[i] = (c.copy(), mag.copy())
                a_i = alpha.get(i) if alpha is not None else None
                b_i = beta.get(i) if beta is not None else None
                g, cc, mm = relu_step(np.ascontiguousarray(lam), rx.k_lo_default, rx.k_up,
                                      rx.t_up, rx.zmax + w[i], self.b[i], rx.unstable_u8,
                                      _EMPTY3 if a_i is None else np.ascontiguousarray(a_i),
                                      _EMPTY3 if b_i is None else np.ascontiguousarray(b_i),
                                      _EMPTY2 if b_i is None else split[i])
                c += cc
                mag += mm
            else:
                g = lam
                c += g @ self.b[i]
                mag += _rowdot(np.abs(g), w[i])
            Bg, K, n = g.shape
            lam = (g.reshape(Bg * K, n).astype(W[i].dtype) @ W[i]).reshape(Bg, K, -1)
            if m_i is not None and self.chain.relu[i]:
                lam = lam + np.matmul(m_i, cuts.Q[i])
            if i > 0:
                lam = self._cut_rows(i - 1, lam, c, mag, cuts, mu, xl, xu, lo, hi, estimate)
        lam = lam.astype(np.float64, copy=False)
        val, m0 = concretise(np.ascontiguousarray(lam), xl, xu)
        lb = down((c + val) - eps * (mag + m0 + np.abs(c)))
        lb = np.where(np.isnan(lb), -np.inf, lb)
        if not keep:
            return lb, None
        lam0 = lam if lam.shape[0] == xl.shape[0] else np.repeat(lam, xl.shape[0], axis=0)
        return lb, Pass(lams, lam0, relaxes, heads)

    def _cut_rows(self, i, lam, c, mag, cuts, mu, xl, xu, lo, hi, estimate=False):
        """The coefficient on ``v_i`` with the pool's rows of layer i taken in: ``lam + mu_i
        P_i``; ``c -= mu_i h_i`` and ``mag += mu_i . magnitude`` in place (no magnitude for an
        estimate). Unchanged without rows or multipliers of layer i."""
        m_i = mu.get(i) if mu else None
        if m_i is None:
            return lam
        c -= _rowdot(m_i, cuts.h[i])
        if not estimate:
            mag += _rowdot(m_i, cuts.magnitude(i, *self._cut_vmax(i, xl, xu, lo, hi)))
        return cuts.add_p(i, lam, m_i)

    def _cut_vmax(self, i, xl, xu, lo, hi):
        """(vmax of ``v_i``, vmax of ``v_{i-1}``) over the domains: what a cut row of layer
        i is measured on (``CutView.magnitude``)."""
        return np.maximum(hi[i], 0.0), self._vmax(i, xl, xu, lo, hi)

    def gradients(self, top, pas: Pass, xl, xu, alpha=None, split=None, want_beta=False,
                  want_top=False, cuts=None, points=None):
        """Gradients of the bound of the pass ``pas`` (made with ``alpha``) in alpha and beta:
        dicts {i: (B, K, n_i)}. Forward evaluation of the chosen lines at the box minimiser x*
        of every row: ``z~_i = W_i v~_{i-1} + b_i``, ``v~_i`` the line chosen for row's sign.
        ``want_top``: also return ``z~_top`` (B, K, n_top), the gradient of the bound in the
        row's coefficients A. ``cuts``: a ``CutView``; then the gradients in its multipliers
        are returned too (after gb): ``gm[k]`` (B, K, M) = ``p v~_k[n] + q . v~_{k-1} - h``.
        ``points``: a dict to fill with ``(v~_{i-1}, v~_i)`` of every ReLU layer i."""
        lam0 = pas.lam0
        v = np.where(lam0 > 0.0, xl[:, None, :], xu[:, None, :])
        ga, gb, gm = {}, {}, {}
        for i in range(top):
            B, K, n = v.shape
            z = (v.reshape(B * K, n) @ self.WT[i]).reshape(B, K, -1) + self.b[i]
            if not self.chain.relu[i]:
                v = z
                continue
            lam = pas.lams[i]
            rx = pas.relaxes[i]
            ga[i] = np.where(rx.unstable[:, None, :] & (lam > 0.0), lam * z, 0.0)
            if want_beta and split is not None and split.get(i) is not None:
                gb[i] = -split[i][:, None, :] * z
            below = v
            v = np.where(lam >= 0.0, z * _lower_slope(rx, alpha, i),
                         z * rx.k_up[:, None, :] + rx.t_up[:, None, :])
            if points is not None:
                points[i] = (below, v)
            if cuts is not None and i in cuts.h:
                gm[i] = (cuts.p_value(i, v)
                         + np.matmul(below, cuts.Q[i].transpose(0, 2, 1)) - cuts.h[i][:, None, :])
        out = (ga, gb) if cuts is None else (ga, gb, gm)
        if want_top:
            B, K, n = v.shape
            ztop = (v.reshape(B * K, n) @ self.WT[top]).reshape(B, K, -1) + self.b[top]
            return out + (ztop,)
        return out

    def descend_rows(self, j, lam, box, c, mag, xl, xu, lo, hi, w, relaxes, alpha=None,
                     cuts=None):
        """``descend`` for a flat list of rows (T, n_j), row r belonging to box ``box[r]``,
        with the lower slopes ``alpha[i]`` (T, n_i) (any values in [0, 1]; NaN or a missing
        layer: the default adaptive slope). Returns the sound lower bounds (T,).

        The products ``g @ W_i`` are made in float32 (``_product32``, half the time of these
        passes): the pass goes on with the computed coefficients as they are, and their error
        ``|(g W_i - lam) . v| <= gamma32 |g| . (|W_i| vmax) + eta`` is covered by
        ``eps32 * mag`` (``mag`` already holds ``|g| . w_i``) and the underflow terms ``eta``.

        ``cuts``: half-spaces of the input that hold on the boxes' domains (``Cuts``); they
        enter the input step with multipliers chosen per row (``halfspace_rows``)."""
        tiny = np.zeros(lam.shape[0])
        for i in range(j, -1, -1):
            if self.chain.relu[i]:
                rx = relaxes.get(i)
                if rx is None:
                    rx = relaxes[i] = relax(lo[i], hi[i])
                a_i = alpha.get(i) if alpha is not None else None
                g, cc, mm = relu_step_rows(lam, box, rx.k_lo_default, rx.k_up, rx.t_up,
                                           rx.zmax + w[i], self.b[i], rx.unstable_u8,
                                           _EMPTY2 if a_i is None else a_i)
                c = c + cc
                mag = mag + mm
            else:
                g = lam
                c = c + g @ self.b[i]
                mag = mag + np.einsum("tn,tn->t", np.abs(g), w[i][box])
            lam = self._product32(g, i, box, xl, xu, lo, hi, w, tiny)
        cut_mag = 0.0  # a float64 step: its error is within eps (not eps32) of it
        if cuts is not None:
            lam, dc, cut_mag = halfspace_rows(lam, box, xl, xu, cuts.G, cuts.h, cuts.gm,
                                              cuts.first(xl.shape[0]), HALFSPACE_SWEEPS)
            c = c + dc
        val, m0 = concretise_rows(lam, box, xl, xu)
        err = self.eps * (mag + m0 + np.abs(c) + cut_mag) + self.eps32 * mag + tiny
        lb = down((c + val) - err)
        return np.where(np.isnan(lb), -np.inf, lb)

    def _product32(self, g, i, box, xl, xu, lo, hi, w, tiny):
        """``g @ W_i`` (T, n_{i-1}) computed in float32 (returned in float64), adding to
        ``tiny`` (T,) its error from underflow: casting g loses at most ``eta`` per entry
        (``eta sum_j w_ij`` after the layer), and each of the n_i products and sums of an entry
        at most ``eta`` more (``2 (n_i + 1) eta sum_k vmax_k``); the relative part is in
        ``eps32``. In float64 (no extra error) when an entry could overflow float32:
        ``max |g| max_k sum_j |W_jk| >= 1e36``."""
        if not np.abs(g).max(initial=0.0) * self.colsum[i] < _F32_SAFE:
            return g @ self.W[i]
        lam = (g.astype(np.float32) @ self.W32[i]).astype(np.float64)
        n_i = self.W[i].shape[0]
        vsum = self._vmax(i, xl, xu, lo, hi).sum(axis=1)
        tiny += _ETA32 * (2 * (n_i + 1) * vsum[box] + w[i].sum(axis=1)[box])
        return lam

    # -- intermediate bounds ------------------------------------------------------------------
    def optimise_intermediate(self, xl, xu, lo, hi, split=None, iterations=20, lr=0.1,
                              deadline=None, clock=None, slopes=None):
        """alpha-CROWN for the intermediate bounds: for every ReLU layer j >= 1 in order, the
        bounds of its unstable neurons (rows ``+-e_q``, slopes per row) are optimised by
        ``optimise`` and intersected in. For one or a few domains (the root). Returns (lo, hi).

        ``slopes``: a dict to fill with the optimised lower slopes of the first domain,
        ``slopes[j][i]`` (2 n_j, n_i): row q those of the lower bound of neuron q of layer j,
        row n_j + q those of its upper bound (NaN for neurons not bounded here), for
        ``intermediate`` to start from in subdomains."""
        for j in self.relu_layers:
            if j < 1:
                continue
            if deadline is not None and clock() >= deadline:
                break
            unst = ((lo[j] < 0.0) & (hi[j] > 0.0)).any(axis=0)
            idx = np.flatnonzero(unst)
            if idx.size == 0:
                continue
            m = idx.size
            E = np.zeros((2 * m, lo[j].shape[1]))
            E[np.arange(m), idx] = 1.0
            E[m + np.arange(m), idx] = -1.0
            res = optimise(self, E, np.zeros(2 * m), xl, xu, lo, hi, split=split,
                           iterations=iterations, lr_alpha=lr, use_beta=False,
                           deadline=deadline, clock=clock, top=j)
            if slopes is not None:
                n_j = lo[j].shape[1]
                slopes[j] = {}
                for i, a in res.alpha.items():
                    tab = np.full((2 * n_j, a.shape[2]), np.nan)
                    tab[idx] = a[0, :m]
                    tab[n_j + idx] = a[0, m:]
                    slopes[j][i] = tab
            lo[j][:, idx] = np.maximum(lo[j][:, idx], res.lb[:, :m])
            hi[j][:, idx] = np.minimum(hi[j][:, idx], -res.lb[:, m:])
            if split is not None and split.get(j) is not None:
                lo[j], hi[j] = apply_split(lo[j], hi[j], split[j])
            # the next layer's cheap bounds from the tightened ones
            nl, nu = self.ibp_layer(j + 1, *self.post(j, lo[j], hi[j]))
            lo[j + 1] = np.maximum(lo[j + 1], nl)
            hi[j + 1] = np.minimum(hi[j + 1], nu)
        return lo, hi

    def intermediate(self, xl, xu, lo, hi, split=None, start=1, forward=False, crown=True,
                     slopes=None):
        """Tighten ``lo[j], hi[j]`` in place by CROWN for every ReLU layer j >= max(start, 1),
        in order. Each layer is first re-bounded cheaply from the (tightened) layer below (IBP,
        and with ``forward`` the forward linear bounds of ``bab_forward``); CROWN then bounds
        only the neurons still unstable, each domain its own (rows flattened over the batch);
        ``crown=False`` stops at the cheap bounds. Splits are re-applied. ``slopes``: lower
        slopes per bounded neuron as ``optimise_intermediate`` leaves them (the default slopes
        where absent).

        The first layer's split constraints enter the CROWN rows as half-spaces of the input
        (``first_layer_cuts``). Returns (lo, hi)."""
        relaxes: dict = {}
        w = [None] * self.L
        w[0] = self._vmax(0, xl, xu, lo, hi) @ self.absWT[0] + self.absb[0]
        cuts = self.first_layer_cuts(split, w[0]) if crown else None
        fs = ForwardState(xl, xu) if forward else None
        for i in range(self.L - 1):
            redo = self.chain.relu[i] and i >= max(start, 1)
            if fs is not None:
                fl, fu = fs.affine(self.W[i], self.absWT[i].T, self.b[i], self.eps)
                lo[i] = np.maximum(lo[i], fl)
                hi[i] = np.minimum(hi[i], fu)
            if redo:
                # IBP again from the (tightened) layer below: cheap, and fewer rows for CROWN
                li, ui = self.ibp_layer(i, *self.post(i - 1, lo[i - 1], hi[i - 1]))
                lo[i] = np.maximum(lo[i], li)
                hi[i] = np.minimum(hi[i], ui)
            s_i = split.get(i) if split is not None else None
            if s_i is not None:
                lo[i], hi[i] = apply_split(lo[i], hi[i], s_i)
            if redo and crown:
                self._crown_rows(i, xl, xu, lo, hi, w, relaxes,
                                 None if slopes is None else slopes.get(i), cuts)
                if s_i is not None:
                    lo[i], hi[i] = apply_split(lo[i], hi[i], s_i)
            if self.chain.relu[i]:
                relaxes[i] = relax(lo[i], hi[i])
            if fs is not None:
                fs.relu(lo[i], hi[i]) if self.chain.relu[i] else fs.identity()
            w[i + 1] = self._vmax(i + 1, xl, xu, lo, hi) @ self.absWT[i + 1] + self.absb[i + 1]
        return lo, hi

    def first_layer_cuts(self, split, w0) -> "Cuts | None":
        """The first layer's split constraints ``s (W_0k x + b_0k) >= 0``: half-spaces of the
        input itself (magnitudes ``w0`` (B, n_0) = ``|W_0| xmax + |b_0|``); None without any
        (or when layer 0 has no ReLU)."""
        s0 = split.get(0) if split is not None and self.chain.relu[0] else None
        if s0 is None or not s0.any():
            return None
        box, k = np.nonzero(s0)
        sign = s0[box, k]
        return Cuts(sign[:, None] * self.W[0][k], sign * self.b[0][k], w0[box, k], box)

    def _crown_rows(self, i, xl, xu, lo, hi, w, relaxes, slopes=None, cuts=None):
        """CROWN bounds of the unstable neurons of layer i in each domain, intersected in
        (with the lower slopes ``slopes[k]`` (2 n_i, n_k) of each neuron's two bounds), under
        the half-spaces ``cuts``."""
        box, nrn = np.nonzero((lo[i] < 0.0) & (hi[i] > 0.0))
        if box.size == 0:
            return
        T = box.size
        Wsel = self.W[i][nrn]
        lam = np.concatenate([Wsel, -Wsel])
        bsel = self.b[i][nrn]
        c = np.concatenate([bsel, -bsel])
        wsel = w[i][box, nrn]
        mag = np.concatenate([wsel, wsel])
        alpha = None
        if slopes:
            rows = np.concatenate([nrn, lo[i].shape[1] + nrn])
            alpha = {k: tab[rows] for k, tab in slopes.items()}
        lb = self.descend_rows(i - 1, lam, np.concatenate([box, box]), c, mag, xl, xu, lo, hi,
                               w, relaxes, alpha, cuts)
        lo[i][box, nrn] = np.maximum(lo[i][box, nrn], lb[:T])
        hi[i][box, nrn] = np.minimum(hi[i][box, nrn], -lb[T:])


@dataclass
class Cuts:
    """Half-spaces ``G_k . x + h_k >= 0`` of the input, each holding on the domain of box
    ``box[k]`` (sorted): G (R, n0), h (R,), gm (R,) their magnitudes ``|G_k| . xmax +
    |h_k|``."""

    G: np.ndarray
    h: np.ndarray
    gm: np.ndarray
    box: np.ndarray

    def first(self, B: int) -> np.ndarray:
        """(B + 1,) where each box's half-spaces start, once sorted by box."""
        return np.searchsorted(self.box, np.arange(B + 1)).astype(np.int64)


def _lower_slope(rx: Relax, alpha, i):
    """Lower slopes at layer i, (B, 1 or K, n): alpha on unstable neurons where given, else the
    adaptive choice."""
    k_lo = rx.k_lo_default[:, None, :]
    if alpha is not None and alpha.get(i) is not None:
        k_lo = np.where(rx.unstable[:, None, :], alpha[i], k_lo)
    return k_lo


def apply_split(lo: np.ndarray, hi: np.ndarray, s: np.ndarray):
    """Clip bounds by split constraints: +1 -> lo >= 0, -1 -> hi <= 0."""
    return np.where(s > 0, np.maximum(lo, 0.0), lo), np.where(s < 0, np.minimum(hi, 0.0), hi)


def empty_domains(lo, hi) -> np.ndarray:
    """(B,) True where some bound has lo > hi: the domain holds no point."""
    bad = np.zeros(lo[0].shape[0], dtype=bool)
    for li, ui in zip(lo, hi):
        if li is not None:
            bad |= (li > ui).any(axis=1)
    return bad


@dataclass
class Optimised:
    """Result of ``optimise``: the best bound of every row (B, K), the alpha, beta and cut
    multipliers mu of its best iterate, and the backward pass at those (for branching scores
    and the minimiser x*)."""

    lb: np.ndarray
    alpha: dict
    beta: dict
    pas: Pass
    mu: dict


def optimise(cb: ChainBounder, C, d, xl, xu, lo, hi, split=None, alpha=None, beta=None,
             iterations=20, lr_alpha=0.1, lr_beta=0.05, use_beta=True, deadline=None,
             clock=None, top=None, settled=None, w=None, cuts=None, mu=None,
             lr_mu=0.05) -> Optimised:
    """Projected Adam ascent of the final bound of ``C z_L - d`` (C: (K, n_L) or (B, K, n_L),
    d: (K,) or (B, K)) in the lower slopes ``alpha_i`` (B, K, n_i) in [0, 1] of unstable neurons
    and the split multipliers ``beta_i`` (B, K, n_i) >= 0 of split neurons, warm-started from the
    given ``alpha``/``beta`` (None: adaptive slopes, beta 0). Every iterate is a valid bound;
    the best per row is kept. Stops early at ``deadline`` (``clock()`` values). ``top``: bound
    ``C z_top - d`` of an inner layer instead (default the output layer).

    ``settled(best, idx) -> (n,) bool``: called after every iteration with the best bounds so
    far ``best`` (n, K) of the domains still iterated and their indices ``idx`` (n,) into the
    batch; once it marks a quarter of them (e.g. those whose bound already decides them), or
    all, they stop iterating and keep their best iterate. The bound of every row stays the
    best of valid bounds. ``w``: the rounding magnitudes (``ChainBounder.magnitudes``) of these
    domains or of domains containing them (larger, so still valid); computed when None.

    ``cuts``: a ``CutView`` (``bab_cuts``) of the batch's rows, which join the bound with
    multipliers ``mu[k]`` (B, K, M) >= 0, ascended with step ``lr_mu`` from the given ``mu``
    (0 where None)."""
    top = cb.L - 1 if top is None else top
    layers = [j for j in cb.relu_layers if j < top]
    B = xl.shape[0]
    A = C if C.ndim == 3 else C[None]
    K = A.shape[1]
    const = -(d if d.ndim == 2 else d[None])
    relaxes = {j: relax(lo[j], hi[j]) for j in layers}
    al = {}
    for j in layers:
        rx = relaxes[j]
        a0 = alpha.get(j) if alpha is not None else None
        if a0 is None:
            a0 = np.broadcast_to(rx.k_lo_default[:, None, :], (B, K, rx.k_lo_default.shape[1]))
        al[j] = np.where(rx.unstable[:, None, :], np.clip(a0, 0.0, 1.0), 0.0)
    be = {}
    if use_beta and split is not None:
        for j in layers:
            s = split.get(j)
            if s is None or not s.any():
                continue
            b0 = beta.get(j) if beta is not None else None
            if b0 is None:
                b0 = np.zeros((B, K, s.shape[1]))
            be[j] = np.where(s[:, None, :] != 0, np.maximum(b0, 0.0), 0.0)
    mus = {}
    if cuts is not None:
        for k, h in cuts.h.items():
            if k < top:
                m0 = mu.get(k) if mu is not None else None
                mus[k] = np.zeros((B, K, h.shape[1])) if m0 is None else np.maximum(m0, 0.0)
    if w is None:
        w = cb.magnitudes(top, xl, xu, lo, hi)
    if cuts is not None:  # fixed while alpha, beta and mu move: measured once
        cuts = cuts.with_magnitudes(lambda k: cb._cut_vmax(k, xl, xu, lo, hi))
    lb, pas = cb.backward(top, A, const, xl, xu, lo, hi, w, al, be or None, split, relaxes,
                          keep=True, cuts=cuts, mu=mus)
    best = lb.copy()
    best_al = {j: a.copy() for j, a in al.items()}
    best_be = {j: b.copy() for j, b in be.items()}
    best_mu = {k: m.copy() for k, m in mus.items()}
    every = {k: np.ones((1, m.shape[2]), dtype=bool) for k, m in mus.items()}
    # the domains still iterated: ``act`` indexes the batch; ``it`` holds their arrays
    act = np.arange(B)
    it = _Active(xl, xu, lo, hi, split, A, const, w, relaxes, al, be, mus, cuts, {}, pas)
    b1, b2, eps = 0.9, 0.999, 1e-8
    for t in range(1, iterations + 1):
        if deadline is not None and clock() >= deadline:
            break
        ga, gb, *gm = cb.gradients(top, it.pas, it.xl, it.xu, it.al, it.split,
                                   want_beta=bool(it.be), cuts=it.cuts if it.mu else None)
        gm = gm[0] if gm else {}
        # projected Adam in place, only on unstable (alpha) and split (beta) neurons: the
        # others stay 0
        for key, params, grads, lr, upper in (("a", it.al, ga, lr_alpha, 1.0),
                                              ("b", it.be, gb, lr_beta, np.inf),
                                              ("m", it.mu, gm, lr_mu, np.inf)):
            for j, p in params.items():
                g = grads.get(j)
                if g is None:
                    continue
                mv = it.state.get((key, j))
                if mv is None:
                    mv = it.state[(key, j)] = (np.zeros_like(p), np.zeros_like(p))
                mask = (it.relaxes[j].unstable if key == "a" else
                        it.split[j] != 0 if key == "b" else every[j])
                adam_ascent(p, np.ascontiguousarray(g), mv[0], mv[1], mask, lr, b1, b2, eps, t,
                            upper)
        lb, it.pas = cb.backward(top, it.A, it.const, it.xl, it.xu, it.lo, it.hi, it.w, it.al,
                                 it.be or None, it.split, it.relaxes, keep=True, cuts=it.cuts,
                                 mu=it.mu)
        sel = slice(None) if act.size == B else act
        cur = best[sel]
        better = lb > cur
        if better.any():
            best[sel] = np.where(better, lb, cur)
            for j in it.al:
                best_al[j][sel] = np.where(better[:, :, None], it.al[j], best_al[j][sel])
            for j in it.be:
                best_be[j][sel] = np.where(better[:, :, None], it.be[j], best_be[j][sel])
            for j in it.mu:
                best_mu[j][sel] = np.where(better[:, :, None], it.mu[j], best_mu[j][sel])
        if settled is not None:
            done = np.asarray(settled(best[sel], act), dtype=bool)
            if done.all():
                break
            # compacting copies every array: only once a quarter of the domains are settled
            if 4 * done.sum() >= done.size:
                keep = np.flatnonzero(~done)
                act = act[keep]
                it = it.take(keep)
    if iterations > 0:
        lb, pas = cb.backward(top, A, const, xl, xu, lo, hi, w, best_al, best_be or None, split,
                              relaxes, keep=True, cuts=cuts, mu=best_mu)
        best = np.maximum(best, lb)
    return Optimised(best, best_al, best_be, pas, best_mu)


@dataclass
class _Active:
    """The arrays of ``optimise`` restricted to the domains still iterated (batch axis first;
    ``A`` and ``const`` may have a batch axis of 1, shared by all domains)."""

    xl: np.ndarray
    xu: np.ndarray
    lo: list
    hi: list
    split: dict | None
    A: np.ndarray
    const: np.ndarray
    w: list
    relaxes: dict
    al: dict
    be: dict
    mu: dict
    cuts: object
    state: dict
    pas: Pass

    def take(self, idx: np.ndarray) -> "_Active":
        """The same arrays for the domains ``idx`` (indices into this batch)."""
        def sub(a):
            return a if a is None or np.ndim(a) == 0 or a.shape[0] == 1 else a[idx]

        def sub_relax(rx):
            return Relax(*(sub(getattr(rx, f)) for f in _RELAX_FIELDS))
        return _Active(
            self.xl[idx], self.xu[idx], [sub(x) for x in self.lo], [sub(x) for x in self.hi],
            None if self.split is None else {j: sub(s) for j, s in self.split.items()},
            sub(self.A), sub(self.const), [sub(x) for x in self.w],
            {j: sub_relax(r) for j, r in self.relaxes.items()},
            {j: a[idx] for j, a in self.al.items()}, {j: b[idx] for j, b in self.be.items()},
            {k: m[idx] for k, m in self.mu.items()},
            None if self.cuts is None else self.cuts.take(idx),
            {k: (sub(m), sub(v)) for k, (m, v) in self.state.items()}, self.pas.take(idx))


_RELAX_FIELDS = ("unstable", "active", "k_up", "t_up", "k_lo_default", "zmax", "unstable_u8")
