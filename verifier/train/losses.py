"""Training losses: natural cross-entropy, IBP and CROWN-IBP worst-case cross-entropy, PGD.

For a sample ``x`` with label ``t`` the specification rows are the margins ``y_t - y_j``
(``j != t``): ``C = e_t - e_j`` (``margin_matrix``). Given lower bounds ``lb_j`` of these margins
over the input box, the worst-case logits (Gowal et al. 2018; Wong & Kolter 2018) are
``z_t = 0``, ``z_j = -lb_j``, whose cross-entropy is

    CE(z, t) = log(1 + sum_{j != t} exp(-lb_j))                       (``robust_ce``)

an upper bound on the cross-entropy of every output in the box. CROWN-IBP (Zhang et al. 2020)
uses ``lb = beta lb_CROWN-IBP + (1 - beta) lb_IBP``. The training objective mixes natural and
robust terms: ``kappa CE(f(x), t) + (1 - kappa) CE_robust`` (``kappa`` from Gowal et al.).
PGD (Madry et al. 2018) takes signed gradient steps on the cross-entropy inside the box.
"""
from __future__ import annotations

import numpy as np

from ..network import Network
from . import autodiff as ad
from .autodiff import Var
from .batchnorm import BatchContext, batch_affine
from .crown_ibp import crown_margin_lower
from .interval_grad import as_input, foldable_output, ibp_margin_lower, interval_forward
from .params import node_params


def margin_matrix(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows ``e_t - e_j`` for every ``j != t``: (B, n_classes - 1, n_classes)."""
    labels = np.asarray(labels, dtype=np.int64)
    B = labels.size
    others = np.array([[j for j in range(n_classes) if j != t] for t in range(n_classes)])
    C = np.zeros((B, n_classes - 1, n_classes))
    rows = np.arange(n_classes - 1)
    C[np.arange(B)[:, None], rows[None, :], labels[:, None]] = 1.0
    C[np.arange(B)[:, None], rows[None, :], others[labels]] = -1.0
    return C


def input_box(x: np.ndarray, eps: float, domain: tuple[float, float] | None,
              outward: bool = False):
    """The L-infinity box ``[x - eps, x + eps]``, intersected with ``domain = (lo, hi)`` when
    given (e.g. (0, 1) for images): (lower, upper). ``outward``: move each end one ulp outward
    so that the floating-point box contains the exact one (``x - eps`` rounds by at most half
    an ulp), as a certificate needs."""
    lo, hi = x - eps, x + eps
    if outward:
        lo, hi = np.nextafter(lo, -np.inf), np.nextafter(hi, np.inf)
    if domain is not None:
        lo = np.maximum(lo, domain[0])
        hi = np.minimum(hi, domain[1])
    return lo, hi


def forward(net: Network, pvars: dict, x, batchnorm: BatchContext | None = None) -> Var:
    """``net(x)`` on the tape (x: (B, *input_shape) array or Var). With ``batchnorm``, its
    nodes normalise with the statistics of this batch (``batchnorm.batch_affine``); their
    effective ``a``, ``c`` and the batch statistics are recorded in ``batchnorm``."""
    values = {net.input_name: as_input(net, x)}
    for node in net.nodes:
        params = node_params(node, pvars)
        if batchnorm is not None and node.name in batchnorm.names:
            a, c, m, v = batch_affine(values[node.inputs[0]], params["a"], params["c"],
                                      batchnorm.eps)
            batchnorm.record(node.name, a, c, m, v)
            params = {"a": a, "c": c}
        values[node.name] = ad.apply_op(node.op, params, [values[i] for i in node.inputs])
    return values[net.output_name]


def cross_entropy(logits: Var, labels: np.ndarray) -> Var:
    """Mean over the batch of ``logsumexp(z) - z_t``; logits (B, K)."""
    B = logits.shape[0]
    z = ad.reshape(logits, (B, -1))
    return ad.mean(ad.logsumexp(z, axis=1) - ad.pick(z, np.asarray(labels)))


def robust_ce(lb: Var) -> Var:
    """Mean over the batch of ``log(1 + sum_j exp(-lb_j))`` for margin lower bounds (B, K-1)."""
    z = ad.concat([ad.const(np.zeros((lb.shape[0], 1))), ad.neg(lb)], axis=1)
    return ad.mean(ad.logsumexp(z, axis=1))


def margin_lower(net: Network, pvars: dict, x: np.ndarray, labels: np.ndarray, eps: float,
                 domain=None, beta: float = 0.0) -> Var:
    """Lower bounds (B, K-1) of the margins ``y_t - y_j`` over the box around ``x``:
    ``beta * CROWN-IBP + (1 - beta) * IBP`` (the CROWN pass is skipped when beta == 0)."""
    lo, hi = input_box(np.asarray(x, dtype=np.float64), eps, domain)
    C = margin_matrix(labels, net.n_outputs)
    if beta == 0.0:
        lb, _ = ibp_margin_lower(net, pvars, lo, hi, C)
        return lb
    folded = foldable_output(net)
    boxes = interval_forward(net, pvars, lo, hi, stop=folded.name if folded is not None else None)
    crown = crown_margin_lower(net, pvars, lo, hi, C, boxes=boxes)
    if beta == 1.0:
        return crown
    ibp, _ = ibp_margin_lower(net, pvars, lo, hi, C, boxes=boxes)
    return crown * beta + ibp * (1.0 - beta)


def pgd_attack(net: Network, x: np.ndarray, labels: np.ndarray, eps: float, steps: int,
               step_size: float | None = None, domain=None, rng=None,
               restarts: int = 1) -> np.ndarray:
    """Projected gradient ascent on the cross-entropy inside the box around ``x`` (Madry et al.
    2018): ``x <- proj(x + step * sign(grad))`` from a uniform random start, ``steps`` steps,
    ``step_size`` (default ``2.5 eps / steps``). With several restarts, keeps per sample the
    point of highest loss. Returns points in the box (B, *input_shape)."""
    x = net._as_batch(x)
    labels = np.asarray(labels)
    lo, hi = input_box(x, eps, domain)
    rng = np.random.default_rng(0) if rng is None else rng
    step = 2.5 * eps / max(steps, 1) if step_size is None else step_size
    best, best_loss = x.copy(), _ce_per_sample(net(x), labels)
    for _ in range(restarts):
        xa = rng.uniform(lo, hi)
        for _ in range(steps):
            values = net.forward_all(xa)
            g = _ce_grad(values[net.output_name], labels)
            gx = net.vjp(xa, g, values)
            xa = np.clip(xa + step * np.sign(gx), lo, hi)
        loss = _ce_per_sample(net(xa), labels)
        better = loss > best_loss
        best[better] = xa[better]
        best_loss = np.where(better, loss, best_loss)
    return best


def _ce_per_sample(logits, labels):
    z = logits.reshape(len(labels), -1)
    m = z.max(axis=1, keepdims=True)
    return (np.log(np.exp(z - m).sum(axis=1)) + m[:, 0]) - z[np.arange(len(labels)), labels]


def _ce_grad(logits, labels):
    z = logits.reshape(len(labels), -1)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(labels)), labels] -= 1.0
    return p.reshape(logits.shape)
