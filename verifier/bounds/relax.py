"""Linear relaxations of the nonlinear ops, one rule per op class (``RELAX_RULES``), built from
the final bounds of the op's input.

* ReLU: upper ``y <= u (z - l) / (u - l)``, lower ``y >= a z`` with a in [0, 1] (adaptive by
  default, or per-row slopes optimised by alpha-CROWN); stable neurons are exact.
* LeakyReLU: secant and a line through the origin (``kernels.activation.leaky_relax``).
* Sigmoid, tanh, softplus: tangent/secant lines with rigorous intercepts (``kernels.sshape``).
* MaxPool: ``y >= x_{j*}`` (j* = argmax of the window's lower bounds) and ``y <= max u``
  (exact ``y = x_{j*}`` when x_{j*}'s lower bound dominates the others' upper bounds).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from verifier.kernels import leaky_relax, maxpool_relax, relu_relax, sshape_relax
from verifier.network import ops as O

from .interval import pool_table
from .plan import PlanNode
from .state import State


@dataclass
class Lines:
    """Elementwise lines ``lo_k z + lo_t <= y <= up_k z + up_t``: lo_k (B, 1, n), the rest (B, n);
    ``cols``: the neurons whose lines are not identically zero in some box (the others, e.g.
    stably inactive ReLUs, drop out of the backward pass)."""

    lo_k: np.ndarray
    lo_t: np.ndarray
    up_k: np.ndarray
    up_t: np.ndarray
    cols: np.ndarray = None

    def __post_init__(self):
        if self.cols is None:
            live = ((self.lo_k[:, 0] != 0) | (self.up_k != 0) | (self.lo_t != 0)
                    | (self.up_t != 0)).any(axis=0)
            self.cols = np.flatnonzero(live).astype(np.int64)


@dataclass
class PoolLines:
    """MaxPool lines: argmax index ``jstar``, upper constant ``U``, ``exact`` flags (B, n_out)."""

    jstar: np.ndarray
    U: np.ndarray
    exact: np.ndarray


def _bounds(st, pn):
    x = pn.inputs[0]
    return st.lo[x], st.hi[x]


def _relu(st, pn):
    l, u = _bounds(st, pn)
    lo_k, up_k, up_t = relu_relax(l, u, st.relu_mode)
    return Lines(lo_k.reshape(lo_k.shape[0], 1, -1), np.zeros_like(up_t), up_k, up_t)


def _leaky(st, pn):
    l, u = _bounds(st, pn)
    lo_k, lo_t, up_k, up_t = leaky_relax(l, u, float(pn.op.alpha))
    return Lines(lo_k.reshape(lo_k.shape[0], 1, -1), lo_t, up_k, up_t)


def _sshape(kind):
    def rule(st, pn):
        l, u = _bounds(st, pn)
        lo_k, lo_t, up_k, up_t = sshape_relax(l, u, kind)
        return Lines(lo_k.reshape(lo_k.shape[0], 1, -1), lo_t, up_k, up_t)
    return rule


def _maxpool(st, pn):
    l, u = _bounds(st, pn)
    jstar, U, exact = maxpool_relax(l, u, pool_table(pn))
    return PoolLines(jstar, U, exact)


RELAX_RULES = {
    O.Relu: _relu,
    O.LeakyRelu: _leaky,
    O.Sigmoid: _sshape(0),
    O.Tanh: _sshape(1),
    O.Softplus: _sshape(2),
    O.MaxPool: _maxpool,
}


def relaxation(st: State, pn: PlanNode):
    """The (cached) relaxation of a nonlinear node, from its input's final bounds."""
    r = st.relax.get(pn.name)
    if r is None:
        r = st.relax[pn.name] = RELAX_RULES[type(pn.op)](st, pn)
    return r
