"""Typed bound objects and the options of each method (one dataclass per method)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Bounds:
    """Elementwise bounds ``lower <= v <= upper`` of one value, batch axis first."""

    lower: np.ndarray
    upper: np.ndarray


@dataclass
class BoundResult:
    """Bounds of ``C y - d`` (or of the flattened outputs y when no C was given) for every
    y = net(x), x in each box: ``lower``, ``upper`` of shape (B, k). ``intermediate`` maps node
    names to their ``Bounds`` (shape (B, *node shape)) when asked for; ``stats`` counts work
    (unstable neurons per ReLU node, CROWN rows, iterations, seconds per phase)."""

    lower: np.ndarray
    upper: np.ndarray
    method: str
    intermediate: dict[str, Bounds] | None = None
    stats: dict = field(default_factory=dict)


@dataclass(frozen=True)
class IbpOptions:
    """Interval bound propagation has no knobs; the class exists so every method takes one."""


@dataclass(frozen=True)
class CrownOptions:
    """Options of CROWN (backward linear relaxation).

    relu_slope: lower slope of unstable ReLUs: "adaptive" (DeepPoly: 1 if u >= -l else 0),
        "zero", "one" or "same" (the upper slope u / (u - l)).
    intermediate: how the bounds of pre-activation nodes are computed: "crown" (the elementwise
        tighter of IBP and CROWN) or "ibp" (IBP only; cheaper and looser).
    dense_fraction: when more than this fraction of a node's neurons is unstable, CROWN bounds
        every neuron of it (as auto_LiRPA does), else only the unstable ones (the relaxation
        of a stable neuron does not depend on its bounds).
    dense_below: nodes with at most this many neurons get CROWN bounds for every neuron: cheap
        there, and the tighter bounds of stable neurons tighten the next layers' IBP bounds
        (ACAS Xu: 223 instead of 213 of 300 sub-boxes of property 2 proven).
    reuse_known: values whose bounds the caller passes in ``known`` keep them (intersected with
        IBP) without a CROWN pass of their own -- a branch-and-bound child reuses its parent's
        bounds for the layers before its split.
    max_elements: coefficient tensors (boxes x rows x neurons) are processed in chunks of rows
        so that one tensor stays below this many float64 values (memory, not results).
    """

    relu_slope: str = "adaptive"
    intermediate: str = "crown"
    dense_fraction: float = 0.9
    dense_below: int = 64
    reuse_known: bool = False
    max_elements: int = 1 << 24

    def __post_init__(self):
        if self.relu_slope not in ("adaptive", "zero", "one", "same"):
            raise ValueError(f"unknown relu_slope {self.relu_slope!r}")
        if self.intermediate not in ("crown", "ibp"):
            raise ValueError(f"unknown intermediate method {self.intermediate!r}")


@dataclass(frozen=True)
class AlphaOptions:
    """Options of alpha-CROWN: projected Adam ascent on the lower slopes of unstable ReLUs, one
    slope per neuron, per spec row and per box, warm-started from CROWN's slopes; the bound of a
    row is the best over all iterates (so never worse than CROWN). Intermediate bounds are
    CROWN's (fixed during the optimisation, as auto_LiRPA's default ``fix_interm_bounds``).

    iterations: Adam steps (the bound is evaluated iterations + 1 times, first with CROWN's
        slopes); lr: initial step size, multiplied by lr_decay after every step;
    beta1, beta2, eps: Adam's constants; crown: the options of the CROWN pass underneath.
    Defaults follow auto_LiRPA (20 iterations, lr 0.5, decay 0.98, Adam (0.9, 0.999, 1e-8)).
    """

    iterations: int = 20
    lr: float = 0.5
    lr_decay: float = 0.98
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    crown: CrownOptions = CrownOptions()
