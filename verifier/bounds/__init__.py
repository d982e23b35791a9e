"""How each method over-approximates a network: IBP, CROWN and alpha-CROWN over one core.

Entry points:

* ``compute(net, lower, upper, C=None, d=None, method="crown", options=None,
  intermediate=False, splits=None, known=None) -> BoundResult``: bounds of ``C y - d`` for
  every ``y = net(x)``, x in each box (rows folded into the network, never bounded separately
  and subtracted), or of the flattened outputs when C is None.
* ``spec_bounds(net, spec, method, options=None)``: per case, per unsafe conjunction, the
  bounds of its rows ``C y - d`` (file order).
* ``spec_report(net, spec, method, options=None) -> dict`` and ``bounds_json(...)``: the JSON
  object of ``verifier bounds --json``.
* ``warm_up()``: load every Numba kernel now (a server or forkserver before it forks).

``compute`` also takes the relaxations of ``RELAXATION_METHODS`` ("lp", "lp-all", "milp",
"sdp", "sdp-lowrank"; module ``relaxations``) with the same C/d conventions and result.

Branch and bound passes ``splits`` (ReLUs fixed active/inactive per box) and ``known`` (a
parent's intermediate bounds, from ``intermediate=True``; with ``CrownOptions(reuse_known=True)``
their CROWN passes are skipped). Many boxes go in one call (leading batch axis).

Every bound is sound in floating point (rounding.py). Modules: ``interval`` (IBP rules),
``relax`` (relaxations), ``backward`` (CROWN's backward rules), ``crown`` (intermediate bounds
and the final pass), ``alpha`` (alpha-CROWN), ``reference`` (plain-numpy reference for MLPs).
"""
from __future__ import annotations

import logging
import time

import numpy as np

from .alpha import optimise
from .crown import final_crown, final_ibp, spec_rows, sweep
from .plan import KINKED, get_plan
from .relaxations import RELAXATION_METHODS, relaxation_bounds
from .types import AlphaOptions, BoundResult, Bounds, CrownOptions, IbpOptions

log = logging.getLogger(__name__)

#: the bound core's methods (``RELAXATION_METHODS`` are the LP/SDP ones compute also takes)
METHODS = ("ibp", "crown", "alpha-crown")
_DEFAULT_OPTIONS = {"ibp": IbpOptions, "crown": CrownOptions, "alpha-crown": AlphaOptions}

__all__ = ["compute", "spec_bounds", "spec_report", "bounds_json", "warm_up", "Bounds",
           "BoundResult", "IbpOptions", "CrownOptions", "AlphaOptions", "METHODS",
           "RELAXATION_METHODS"]


def _as_box(plan, lower, upper):
    lo = np.asarray(lower, dtype=np.float64)
    hi = np.asarray(upper, dtype=np.float64)
    if lo.shape != hi.shape:
        raise ValueError(f"lower {lo.shape} and upper {hi.shape} differ in shape")
    n0, shp = plan.n0, plan.input_shape
    if lo.shape == shp or (lo.ndim == 1 and lo.size == n0):
        lo, hi = lo.reshape(1, n0), hi.reshape(1, n0)
    elif lo.shape[1:] == shp or (lo.ndim == 2 and lo.shape[1] == n0):
        lo, hi = lo.reshape(-1, n0), hi.reshape(-1, n0)
    else:
        raise ValueError(f"a box of shape {lo.shape} does not fit the input shape {shp}")
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise ValueError("the input box must be finite")
    if np.any(lo > hi):
        raise ValueError("the input box has lower > upper")
    return np.ascontiguousarray(lo), np.ascontiguousarray(hi)


def _as_rows(plan, C, d, B):
    m = int(np.prod(plan.net.output_shape, dtype=np.int64))
    if C is None:
        C3 = np.eye(m)[None]
    else:
        C3 = np.asarray(C, dtype=np.float64)
        if C3.ndim == 2:
            C3 = C3[None]
        if C3.ndim != 3 or C3.shape[2] != m or C3.shape[0] not in (1, B):
            raise ValueError(f"C of shape {np.shape(C)} does not fit {B} boxes and {m} outputs")
    k = C3.shape[1]
    if d is None:
        d2 = np.zeros((1, k))
    else:
        d2 = np.asarray(d, dtype=np.float64)
        if d2.ndim == 1:
            d2 = d2[None]
        if d2.ndim != 2 or d2.shape[1] != k or d2.shape[0] not in (1, B):
            raise ValueError(f"d of shape {np.shape(d)} does not fit C's {k} rows")
    return np.ascontiguousarray(C3), np.ascontiguousarray(d2)


def _split_targets(plan, splits, B):
    if not splits:
        return None
    out = {}
    for name, s in splits.items():
        if name not in plan.index or not isinstance(plan.node(name).op, KINKED):
            raise ValueError(f"split constraints name {name!r}, which is not a ReLU or "
                             "LeakyReLU node of the network")
        pn = plan.node(name)
        s = np.asarray(s).reshape(-1, pn.size)
        if s.shape[0] not in (1, B):
            raise ValueError(f"split mask of {name!r} has {s.shape[0]} boxes, expected {B}")
        x = pn.inputs[0]
        out[x] = s if x not in out else np.where(s != 0, s, out[x])
    return out


def _known(plan, known, B):
    if not known:
        return None
    out = {}
    for name, bnd in known.items():
        if name not in plan.index:
            raise ValueError(f"known bounds for {name!r}, which is not a node of the network "
                             "(the input box is given by lower/upper)")
        n = plan.node(name).size
        out[name] = (np.asarray(bnd.lower, dtype=np.float64).reshape(-1, n),
                     np.asarray(bnd.upper, dtype=np.float64).reshape(-1, n))
    return out


def compute(net, lower, upper, C=None, d=None, method: str = "crown", options=None,
            intermediate: bool = False, splits: dict | None = None,
            known: dict | None = None) -> BoundResult:
    """Sound bounds of ``C y - d`` over ``y = net(x)`` for x in each box ``lower <= x <= upper``.

    lower, upper: (B, n), (B, *input_shape) or one unbatched box (then B = 1).
    C: (k, m) or (B, k, m) over the flattened output (m values); d: (k,) or (B, k). Without C,
    the rows are the m outputs themselves. method: "ibp", "crown" or "alpha-crown"; options:
    ``IbpOptions`` / ``CrownOptions`` / ``AlphaOptions`` (defaults when None); or one of
    ``RELAXATION_METHODS`` with its options class (``relaxations.options_class``: ``LPOptions``,
    ``MILPOptions``, ``SDPOptions``, ``LowRankOptions``), see ``relaxations``.
    intermediate: also return the bounds of every node (``Bounds`` of shape (B, *shape)).
    splits: {ReLU node name: (B, n) or (n,) array in {-1, 0, +1}}: +1 fixes the neuron active
    (its input >= 0), -1 inactive (<= 0) -- branch and bound's split constraints; the bounds
    are then valid over the box intersected with those constraints (+inf / -inf when that set
    is empty). known: {value name: Bounds} known to hold (e.g. a parent subproblem's), which
    are intersected with the computed ones.
    Returns ``BoundResult`` with lower, upper (B, k). Every bound includes outward rounding
    margins (verifier.bounds.rounding)."""
    t0 = time.perf_counter()
    if method in RELAXATION_METHODS:
        plan = get_plan(net)
        l0, u0 = _as_box(plan, lower, upper)
        C3, d2 = _as_rows(plan, C, d, l0.shape[0])
        return relaxation_bounds(net, l0, u0, C3, d2, method, options, intermediate, splits,
                                 known)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of "
                         f"{METHODS + RELAXATION_METHODS}")
    if options is None:
        options = _DEFAULT_OPTIONS[method]()
    elif not isinstance(options, _DEFAULT_OPTIONS[method]):
        raise TypeError(f"method {method!r} takes {_DEFAULT_OPTIONS[method].__name__}, "
                        f"not {type(options).__name__}")
    plan = get_plan(net)
    l0, u0 = _as_box(plan, lower, upper)
    B = l0.shape[0]
    C3, d2 = _as_rows(plan, C, d, B)
    k = C3.shape[1]
    stats: dict = {"boxes": B, "rows": k}
    if k == 0 and not intermediate:
        return BoundResult(np.zeros((B, 0)), np.zeros((B, 0)), method, None, stats)
    crown_opts = options.crown if method == "alpha-crown" else (
        options if method == "crown" else CrownOptions())
    st = sweep(plan, l0, u0, crown_opts, _known(plan, known, B), _split_targets(plan, splits, B),
               crown=method != "ibp", stats=stats)
    t1 = time.perf_counter()
    A0, const, mag = spec_rows(C3, d2)
    best = final_ibp(st, A0, const, mag)
    if method == "crown":
        best = np.maximum(best, final_crown(st, A0, const, mag))
    elif method == "alpha-crown":
        best = np.maximum(best, optimise(st, A0, const, mag, options, stats))
    lo_out, hi_out = best[:, :k], -best[:, k:]
    if np.isnan(best).any():
        log.warning("NaN in bounds (overflow?): replaced by infinite bounds")
        lo_out = np.where(np.isnan(lo_out), -np.inf, lo_out)
        hi_out = np.where(np.isnan(hi_out), np.inf, hi_out)
    if st.empty.any():
        lo_out[st.empty] = np.inf
        hi_out[st.empty] = -np.inf
        stats["empty_boxes"] = int(st.empty.sum())
    inter = None
    if intermediate:
        inter = {pn.name: Bounds(st.lo[pn.name].reshape((B,) + pn.shape),
                                 st.hi[pn.name].reshape((B,) + pn.shape)) for pn in plan.nodes}
    t2 = time.perf_counter()
    stats["seconds"] = {"intermediate": t1 - t0, "final": t2 - t1, "total": t2 - t0}
    return BoundResult(lo_out, hi_out, method, inter, stats)


def _case_rows(case):
    Cs = [c.C for c in case.unsafe]
    ds = [c.d for c in case.unsafe]
    sizes = [c.C.shape[0] for c in case.unsafe]
    return Cs, ds, sizes


def spec_bounds(net, spec, method: str = "crown", options=None) -> list[list[BoundResult]]:
    """For each case of ``spec`` (its input box; extra linear input constraints are ignored,
    which only enlarges the set), for each unsafe conjunction in file order, the
    ``BoundResult`` (B = 1) of its rows ``C y - d``. All rows of a case share one call."""
    out = []
    for case in spec.cases:
        if case.input.A is not None:
            log.debug("linear input constraints are ignored by the bound methods (sound)")
        Cs, ds, sizes = _case_rows(case)
        if not Cs:
            out.append([])
            continue
        res = compute(net, case.input.lower, case.input.upper, np.concatenate(Cs),
                      np.concatenate(ds), method, options)
        parts, a = [], 0
        for s in sizes:
            parts.append(BoundResult(res.lower[:, a:a + s], res.upper[:, a:a + s], method,
                                     None, res.stats))
            a += s
        out.append(parts)
    return out


def bounds_json(results: list[list[BoundResult]], method: str, seconds: float,
                outputs: BoundResult | None = None) -> dict:
    """The JSON object of ``verifier bounds --json``: ``{"method", "seconds", "disjuncts":
    [{"rows": [{"lower", "upper"}, ...]}, ...], "outputs": [{"lower", "upper"}, ...]}``, the
    disjuncts being the conjunctions of every case in order (box 0 of each result)."""
    disjuncts = [{"rows": [{"lower": float(lo), "upper": float(hi)}
                           for lo, hi in zip(r.lower[0], r.upper[0])]}
                 for case in results for r in case]
    outs = [] if outputs is None else [{"lower": float(lo), "upper": float(hi)}
                                       for lo, hi in zip(outputs.lower[0], outputs.upper[0])]
    return {"method": method, "seconds": float(seconds), "disjuncts": disjuncts,
            "outputs": outs}


def spec_report(net, spec, method: str = "crown", options=None) -> dict:
    """Bounds of every unsafe row of ``spec`` and of the outputs (over the union of the cases'
    boxes), computed together (one call per case, rows and outputs stacked) and timed: the
    ``bounds_json`` object, ``seconds`` covering the bound computation alone."""
    m = int(np.prod(net.output_shape, dtype=np.int64))
    t0 = time.perf_counter()
    results, out_lo, out_hi = [], None, None
    for case in spec.cases:
        Cs, ds, sizes = _case_rows(case)
        C = np.concatenate(Cs + [np.eye(m)])
        d = np.concatenate(ds + [np.zeros(m)])
        res = compute(net, case.input.lower, case.input.upper, C, d, method, options)
        parts, a = [], 0
        for s in sizes:
            parts.append(BoundResult(res.lower[:, a:a + s], res.upper[:, a:a + s], method,
                                     None, res.stats))
            a += s
        results.append(parts)
        lo, hi = res.lower[:, a:], res.upper[:, a:]
        out_lo = lo if out_lo is None else np.minimum(out_lo, lo)
        out_hi = hi if out_hi is None else np.maximum(out_hi, hi)
    seconds = time.perf_counter() - t0
    outputs = None if out_lo is None else BoundResult(out_lo, out_hi, method)
    return bounds_json(results, method, seconds, outputs)


def warm_up() -> float:
    """Load every Numba kernel (from the on-disk cache, compiling on a cold cache) by bounding a
    tiny network with each method; returns the seconds it took. A process that will bound
    several models (a server, a forkserver before it forks workers) can call it once at start
    so that no later call pays the loading."""
    from verifier.network import Network, Node
    from verifier.network import ops as O

    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    nodes, cur = [], "x"
    for i, act in enumerate((O.Relu(), O.LeakyRelu(0.1), O.Sigmoid(), O.Tanh(), O.Softplus())):
        nodes.append(Node(f"l{i}", O.Linear(rng.standard_normal((4, 4)), np.zeros(4)), (cur,),
                          (4,)))
        nodes.append(Node(f"a{i}", act, (f"l{i}",), (4,)))
        cur = f"a{i}"
    nodes.append(Node("r", O.Reshape((1, 2, 2)), (cur,), (1, 2, 2)))
    nodes.append(Node("m", O.MaxPool((2, 2), (1, 1)), ("r",), (1, 1, 1)))
    nodes.append(Node("s", O.Select(np.array([0, 0, -1])), ("m",), (3,)))
    net = Network("x", (4,), nodes, "s")
    for method in METHODS:
        compute(net, -np.ones(4), np.ones(4), method=method)
        compute(net, -np.ones((2, 4)), np.ones((2, 4)), method=method)
    return time.perf_counter() - t0
