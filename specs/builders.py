"""Builders of common properties.

``robustness``: local robustness of a classifier in an L-infinity ball. The input set is the
box ``[x0 - eps, x0 + eps]`` (flattened), optionally intersected with a valid input range
``[lo, hi]``; its ends are rounded outward, so the box always contains the exact ball (a proof
over it is a proof over the ball). The property is violated iff some input in the box gives an
output where another class ``j`` scores at least as high as ``label``:
``y_label - y_j <= 0`` (one ``Conjunction`` per ``j``; only ``j = target`` when targeted).
"""
from __future__ import annotations

import numpy as np

from .errors import SpecError
from .spec import Case, Conjunction, InputSet, Spec


def _two_sum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``s = fl(a + b)`` and its exact error ``e`` (``a + b = s + e``), Knuth's TwoSum."""
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    return s, e


def _add_down(a, b):
    """The greatest float64 ``<= a + b`` (exact sum rounded toward -inf)."""
    s, e = _two_sum(a, b)
    return np.where(e < 0, np.nextafter(s, -np.inf), s)


def _add_up(a, b):
    """The least float64 ``>= a + b`` (exact sum rounded toward +inf)."""
    s, e = _two_sum(a, b)
    return np.where(e > 0, np.nextafter(s, np.inf), s)


def robustness(x0, eps: float, label: int, n_classes: int, target: int | None = None,
               clip=None) -> Spec:
    """Local robustness of ``label`` at ``x0`` against L-infinity perturbations of size ``eps``.

    ``x0``: the input (any shape; flattened row-major). ``clip``: ``(lo, hi)``, scalars or
    arrays of ``x0``'s shape, the valid input range the box is intersected with. ``target``:
    only the class ``target`` counts as an attack (targeted robustness).

    Input set: ``max(lo, x0 - eps) <= x <= min(hi, x0 + eps)``, ends rounded outward.
    Unsafe outputs: for each ``j != label`` (or ``j = target``), ``y_label - y_j <= 0``.
    """
    x0 = np.asarray(x0, dtype=np.float64).reshape(-1)
    eps = float(eps)
    if not np.all(np.isfinite(x0)):
        raise SpecError("robustness: x0 has a non-finite value")
    if not (np.isfinite(eps) and eps >= 0):
        raise SpecError(f"robustness: eps must be finite and >= 0, got {eps}")
    n_classes = int(n_classes)
    if not 0 <= label < n_classes:
        raise SpecError(f"robustness: label {label} is not a class of 0 .. {n_classes - 1}")
    if target is not None and (not 0 <= target < n_classes or target == label):
        raise SpecError(f"robustness: target {target} must be a class of 0 .. {n_classes - 1} "
                        f"other than the label {label}")
    lower = _add_down(x0, np.full_like(x0, -eps))
    upper = _add_up(x0, np.full_like(x0, eps))
    if clip is not None:
        lo, hi = clip
        lo = np.broadcast_to(np.asarray(lo, dtype=np.float64).reshape(-1)
                             if np.ndim(lo) else np.float64(lo), x0.shape)
        hi = np.broadcast_to(np.asarray(hi, dtype=np.float64).reshape(-1)
                             if np.ndim(hi) else np.float64(hi), x0.shape)
        lower = np.maximum(lower, lo)
        upper = np.minimum(upper, hi)
        if np.any(lower > upper):
            i = int(np.argmax(lower > upper))
            raise SpecError(f"robustness: the box is empty after clipping at input {i} "
                            f"(x0[{i}] = {x0[i]!r} lies outside the clip range "
                            f"[{lo[i]!r}, {hi[i]!r}] by more than eps)")
    others = [target] if target is not None else [j for j in range(n_classes) if j != label]
    conjs = []
    for j in others:
        C = np.zeros((1, n_classes))
        C[0, label] = 1.0
        C[0, j] = -1.0
        conjs.append(Conjunction(C, np.zeros(1)))
    kind = f"targeted at {target}" if target is not None else "untargeted"
    source = f"robustness(label={label}, eps={eps!r}, {kind}{', clipped' if clip else ''})"
    return Spec((Case(InputSet(lower, upper), tuple(conjs)),), x0.size, n_classes, source=source)
