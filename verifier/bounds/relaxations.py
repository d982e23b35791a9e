"""The LP and SDP relaxations behind ``verifier.bounds.compute``'s common interface.

``compute(net, lower, upper, C, d, method=...)`` sends the methods of ``RELAXATION_METHODS``
here, with the box already checked and shaped (B, n) and the rows as C (1 or B, k, m),
d (1 or B, k):

* ``"lp"``: the triangle LP (``lp.lp_bounds``), certified from its duals;
* ``"lp-all"``: the same after tightening every pre-activation bound by LP (``lp_all_bounds``);
* ``"milp"``: the exact MILP (``milp.milp_bounds``) -- HiGHS's optimum within its tolerances,
  NOT a floating-point certificate (see below);
* ``"sdp"``: the full SDP through cvxpy (``sdp.sdp_bounds``), certified from its dual;
* ``"sdp-lowrank"``: the Burer-Monteiro SDP (``sdp_lowrank.sdp_lowrank_bounds``), certified.

Each runs on pre-activation bounds from the bound core's CROWN over the same boxes (with the
same ``splits`` and ``known`` bounds), and the reported bound of every row is the tighter of the
relaxation's and CROWN's (both are valid, so their max is; for LP and SDP it only matters when
a solver stopped early or failed, since with these intermediate bounds they are never looser).
A solver failure thus never yields more than a valid bound; a failure that leaves no bound at
all raises. One set of rows for all boxes is solved box by box inside the relaxation; rows
given per box (C of shape (B, k, m)) are solved one box at a time here.

Split constraints (branch and bound's ``splits``) are taken by "lp" and "lp-all" only; the
other methods raise ``ValueError`` when given any. A network with an op other than Relu and
the affine ops raises ``UnsupportedOpError`` naming the op, its node and the method, before
any work.

MILP: its ``lower``/``upper`` are the solver's exact values (the tests' ground truth). Since
they are not certificates, ``stats["certified"]`` is False and ``stats["certified_lower"]``
(B, k) holds a sound lower bound of the same rows (the triangle LP's, or CROWN's); the
verification pipeline decides from that one.
"""
from __future__ import annotations

import importlib
import logging
import time

import numpy as np

from .types import BoundResult, Bounds

log = logging.getLogger(__name__)

RELAXATION_METHODS = ("lp", "lp-all", "milp", "sdp", "sdp-lowrank")
_SPLITTABLE = ("lp", "lp-all")
# module, entry function, options class of each method (imported when first used: the SDP
# modules load cvxpy, which a process bounding by CROWN alone need not pay for)
_WHERE = {"lp": ("lp", "lp_bounds", "LPOptions"),
          "lp-all": ("lp", "lp_all_bounds", "LPOptions"),
          "milp": ("milp", "milp_bounds", "MILPOptions"),
          "sdp": ("sdp", "sdp_bounds", "SDPOptions"),
          "sdp-lowrank": ("sdp_lowrank", "sdp_lowrank_bounds", "LowRankOptions")}


def _load(method: str, what: int):
    if method not in _WHERE:
        raise ValueError(f"unknown relaxation {method!r}; use one of {RELAXATION_METHODS}")
    mod = importlib.import_module(f"{__package__}.{_WHERE[method][0]}")
    return getattr(mod, _WHERE[method][what])


def options_class(method: str) -> type:
    """The options dataclass ``method`` takes (``LPOptions``, ``MILPOptions``, ``SDPOptions``,
    ``LowRankOptions``)."""
    return _load(method, 2)


def budget_options(method: str, seconds: float, rows: int = 1):
    """Options of ``method`` for the verification pipeline: lower bounds only, and solver time
    limits that keep one call near ``seconds`` for ``rows`` rows (building the problems and the
    LP-All tightening's last solve come on top). The low-rank SDP stops a row once its bound
    is positive (proven)."""
    s = max(float(seconds), 1e-3)
    per_row = max(s / max(int(rows), 1), 1e-3)
    cls = options_class(method)
    limits = {"lp": dict(time_limit=per_row),
              "lp-all": dict(tighten=True, time_limit=per_row, tighten_time_limit=0.5 * s),
              "milp": dict(time_limit=per_row),
              "sdp": dict(time_limit=per_row),
              "sdp-lowrank": dict(time_limit=per_row, target=0.0)}[method]
    return cls(upper=False, **limits)


def _check_options(method: str, options):
    cls = options_class(method)
    if options is None:
        return cls(tighten=True) if method == "lp-all" else cls()
    if not isinstance(options, cls):
        raise TypeError(f"method {method!r} takes {cls.__name__}, not {type(options).__name__}")
    return options


def _box_splits(splits: dict | None, idx: np.ndarray, B: int) -> dict | None:
    """The split masks of boxes ``idx`` ((B, n) masks are sliced, (n,) ones shared)."""
    if not splits:
        return None
    out = {}
    for name, s in splits.items():
        s = np.asarray(s)
        out[name] = s[idx] if s.ndim == 2 and s.shape[0] == B else s.reshape(-1)
    return out


def _clean(a: np.ndarray, bad: float) -> np.ndarray:
    """NaN (a failed solve) -> the trivial bound ``bad``."""
    a = np.asarray(a, dtype=np.float64)
    return np.where(np.isnan(a), bad, a)


def relaxation_bounds(net, l0: np.ndarray, u0: np.ndarray, C3: np.ndarray, d2: np.ndarray,
                      method: str, options=None, intermediate: bool = False,
                      splits: dict | None = None, known: dict | None = None) -> BoundResult:
    """Bounds of ``C y - d`` by the relaxation ``method`` (module docstring).

    l0, u0: (B, n) boxes; C3: (1 or B, k, m); d2: (1 or B, k); options: the method's options
    class (``options_class``; defaults when None); intermediate: also return ``Bounds`` of
    every node (B, *shape): CROWN's, with the pre-activation nodes of the ReLUs intersected
    with the relaxation's (LP-tightened for "lp-all"); splits, known: as ``compute``.
    Returns ``BoundResult`` (lower, upper (B, k)); boxes emptied by their splits get +inf/-inf."""
    from . import compute  # noqa: PLC0415 (the package imports this module)
    from .lp import LPOptions, lp_bounds  # noqa: PLC0415
    from .lp_program import relu_program  # noqa: PLC0415

    t0 = time.perf_counter()
    opts = _check_options(method, options)
    relu_program(net, method)  # an unsupported op fails here, naming op, node and method
    if splits and method not in _SPLITTABLE:
        raise ValueError(f"method {method!r} does not take split constraints; "
                         f"use one of {_SPLITTABLE}")
    B, k = l0.shape[0], C3.shape[1]
    shape = (-1,) + tuple(net.input_shape)
    core = compute(net, l0.reshape(shape), u0.reshape(shape), C3, d2, method="crown",
                   intermediate=True, splits=splits, known=known)
    lower = np.array(core.lower, dtype=np.float64, copy=True)
    upper = np.array(core.upper, dtype=np.float64, copy=True)
    certified = lower.copy()
    stats: dict = {"boxes": B, "rows": k, "crown_seconds": time.perf_counter() - t0,
                   "relaxation": []}
    empty = np.zeros(B, dtype=bool) if k == 0 else np.all(np.isposinf(lower), axis=1)
    live = np.flatnonzero(~empty)
    per_box = C3.shape[0] > 1 or d2.shape[0] > 1
    groups = [np.array([b]) for b in live] if per_box else ([live] if live.size else [])
    pre = {}  # pre-activation node -> (lower, upper) (B, n) from the relaxation
    for idx in groups:
        if k == 0 and not intermediate:
            break
        b0 = int(idx[0])
        C = C3[b0 if C3.shape[0] > 1 else 0]
        d = d2[b0 if d2.shape[0] > 1 else 0]
        inter = {name: Bounds(np.asarray(bd.lower)[idx], np.asarray(bd.upper)[idx])
                 for name, bd in core.intermediate.items()}
        kwargs = {"splits": _box_splits(splits, idx, B)} if method in _SPLITTABLE else {}
        res = _load(method, 1)(net, l0[idx], u0[idx], C, d, inter, opts, **kwargs)
        lo_r, hi_r = _clean(res.lower, -np.inf), _clean(res.upper, np.inf)
        if method == "milp":  # exact values, not certificates (module docstring)
            lower[idx], upper[idx] = lo_r, hi_r
            lp = lp_bounds(net, l0[idx], u0[idx], C, d, inter, LPOptions(upper=False))
            certified[idx] = np.maximum(certified[idx], _clean(lp.lower, -np.inf))
        else:
            lower[idx] = np.maximum(lower[idx], lo_r)
            upper[idx] = np.minimum(upper[idx], hi_r)
        for name, lb in res.intermediate.items():
            pl, pu = pre.setdefault(name, (np.full((B, lb.lower.shape[1]), -np.inf),
                                           np.full((B, lb.lower.shape[1]), np.inf)))
            pl[idx], pu[idx] = lb.lower, lb.upper
        stats["relaxation"].append({key: v for key, v in res.stats.items()
                                    if key in ("lp_solves", "seconds", "statuses")})
    if method == "milp":
        stats["certified"] = False
        stats["certified_lower"] = certified
    inter_out = None
    if intermediate:
        inter_out = {}
        for name, bd in core.intermediate.items():
            lo_n, hi_n = np.asarray(bd.lower), np.asarray(bd.upper)
            if name in pre:
                pl, pu = pre[name]
                lo_n = np.maximum(lo_n, pl.reshape(lo_n.shape))
                hi_n = np.minimum(hi_n, pu.reshape(hi_n.shape))
            inter_out[name] = Bounds(lo_n, hi_n)
    if empty.any():
        lower[empty], upper[empty] = np.inf, -np.inf
        stats["empty_boxes"] = int(empty.sum())
    stats["seconds"] = time.perf_counter() - t0
    return BoundResult(lower, upper, method, inter_out, stats)
