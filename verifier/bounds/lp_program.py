"""The ReLU program: a network put in the form the LP, MILP and SDP relaxations work on.

A network of affine ops and ReLUs is rewritten, once, as

    a_0 = x                                   (the flattened input, n_0 values, in a box)
    z_k = sum_{j<k} W_kj a_j + b_k            (pre-activations of ReLU layer k = 1..K)
    a_k = relu(z_k)
    y   = sum_j W_oj a_j + b_o                 (the flattened network output)

For the LP methods ("lp", "lp-all") a layer may instead be a sigmoid or tanh layer,
``a_k = sigmoid(z_k)`` or ``tanh(z_k)`` (``ReluProgram.kinds``); MILP and SDP take ReLU only.

Every chain of affine ops between two ReLU layers (Linear, Scale, Sum, Conv, ConvTranspose,
AvgPool, Reshape, Select, Concat) is composed into the blocks ``W_kj`` (dense; Conv by its
linear map, so for small images only). Residual connections give several source blocks.

Floating point: composing affine maps in float64 rounds. Each block carries an elementwise
bound ``E_kj >= |W_kj(exact) - W_kj(stored)|`` (``None`` where the composition was exact, e.g. a
Linear after reshapes), from the dot-product error bound ``gamma_n = n u / (1 - n u)``
(Higham, Accuracy and Stability, eq. 3.5). The relaxations add the resulting slack
``|multiplier| * (E a_max + e_b)`` to their certificates, so a bound proven on the stored program
holds for the exact composition of the network's ops.

``interval_pass`` gives rigorous interval pre-activation bounds on the program (outward
rounded); ``merge_intermediate`` intersects them with bounds from the bound core (CROWN).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..errors import UnsupportedOpError
from ..kernels import sshape_ibp
from ..network import ops as O

#: unit roundoff of float64
U = 2.0 ** -53

#: the smooth activations a program may hold, with their ``kernels.sshape`` kind
SMOOTH_KINDS = {"sigmoid": 0, "tanh": 1}
#: the methods whose relaxation handles the smooth activations (tangent/secant lines)
SMOOTH_METHODS = ("lp", "lp-all")


def activate(kind: str, z: np.ndarray) -> np.ndarray:
    """The activation ``kind`` ("relu", "sigmoid", "tanh") applied to ``z`` in float64."""
    if kind == "relu":
        return np.maximum(z, 0.0)
    if kind == "sigmoid":
        return 0.5 * (1.0 + np.tanh(0.5 * z))  # = 1 / (1 + exp(-z)), without overflow
    return np.tanh(z)


def activation_box(kind: str, l: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A box holding ``f(z)`` for every ``z`` in ``[l, u]`` (f monotone): ``[relu(l), relu(u)]``
    (exact), or ``[f(l), f(u)]`` rounded outward (``kernels.sshape_ibp``) for sigmoid / tanh."""
    if kind == "relu":
        return np.maximum(l, 0.0), np.maximum(u, 0.0)
    lo, hi = sshape_ibp(np.asarray(l, dtype=np.float64).reshape(1, -1),
                        np.asarray(u, dtype=np.float64).reshape(1, -1), SMOOTH_KINDS[kind])
    return lo[0], hi[0]


def gamma(n: int) -> float:
    """``gamma_n = n u / (1 - n u)``, rounded up by a factor (1 + 1e-12): the relative error bound
    of an n-term floating-point dot product (Higham 2002, Lemma 3.1)."""
    nu = (n + 1) * U
    return nu / (1.0 - nu) * (1.0 + 1e-12)


def inflate(x):
    """``x`` nudged away from zero by a relative 4u + 1e-300: covers the rounding of a short
    non-negative error formula evaluated in float (used on margins only)."""
    return np.abs(x) * (1.0 + 8 * U) + 1e-300


@dataclass(frozen=True, eq=False)
class AffineMap:
    """``z = sum_j blocks[j] @ a_j + bias``: blocks (m, n_j) keyed by source layer j (0 = input).
    ``err[j]`` bounds the stored block's elementwise error (absent: exact); ``bias_err`` likewise
    (None: exact)."""

    blocks: dict
    bias: np.ndarray
    err: dict
    bias_err: np.ndarray | None

    @property
    def size(self) -> int:
        return self.bias.shape[0]

    def apply(self, acts: list[np.ndarray]) -> np.ndarray:
        """Evaluate on activations ``acts[j]`` of shape (B, n_j): returns (B, m)."""
        out = np.broadcast_to(self.bias, (acts[0].shape[0], self.size)).copy()
        for j, Wj in self.blocks.items():
            out += acts[j] @ Wj.T
        return out

    def model_error(self, amax: list[np.ndarray]) -> np.ndarray:
        """Bound (m,) on ``|z(exact) - z(stored)|`` when ``|a_j| <= amax[j]``."""
        e = np.zeros(self.size)
        for j, Ej in self.err.items():
            e += Ej @ amax[j]
        if self.bias_err is not None:
            e += self.bias_err
        return inflate(e) if (self.err or self.bias_err is not None) else e

    def row(self, i: int) -> "AffineMap":
        """The map of output ``i`` alone (blocks (1, n_j))."""
        return AffineMap({j: W[i:i + 1] for j, W in self.blocks.items()}, self.bias[i:i + 1],
                         {j: E[i:i + 1] for j, E in self.err.items()},
                         None if self.bias_err is None else self.bias_err[i:i + 1])

    def rows(self, C: np.ndarray, d: np.ndarray) -> "AffineMap":
        """The map ``C z - d`` (C: (k, m), d: (k,)), with its rounding folded into the errors."""
        C = np.asarray(C, dtype=np.float64)
        absC = np.abs(C)
        g = gamma(self.size + 1)
        blocks, err = {}, {}
        for j, Wj in self.blocks.items():
            blocks[j] = C @ Wj
            e = g * (absC @ np.abs(Wj))
            if j in self.err:
                e = e + absC @ self.err[j]
            err[j] = inflate(e)
        bias = C @ self.bias - d
        be = g * (absC @ np.abs(self.bias) + np.abs(d))
        if self.bias_err is not None:
            be = be + absC @ self.bias_err
        return AffineMap(blocks, bias, err, inflate(be))


@dataclass(frozen=True, eq=False)
class ReluProgram:
    """A network as alternating affine maps and activation layers (see the module docstring).
    ``layers[k-1]`` is the pre-activation map of layer k; ``relu_nodes[k-1]`` the name of its
    activation node and ``pre_nodes[k-1]`` the name of the value feeding it; ``kinds[k-1]`` its
    activation, "relu", "sigmoid" or "tanh" (None: every layer ReLU); ``sizes`` is
    (n_0, ..., n_K)."""

    n_inputs: int
    layers: tuple
    output: AffineMap
    relu_nodes: tuple
    pre_nodes: tuple
    kinds: tuple | None = None

    def kind(self, k: int) -> str:
        """The activation of layer k (1-based)."""
        return "relu" if self.kinds is None else self.kinds[k - 1]

    @property
    def sizes(self) -> tuple:
        return (self.n_inputs,) + tuple(m.size for m in self.layers)

    @property
    def depth(self) -> int:
        return len(self.layers)

    def forward(self, x: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Activations [a_0..a_K] and pre-activations [z_1..z_K] for a batch x (B, n_0)."""
        acts, pres = [np.asarray(x, dtype=np.float64).reshape(-1, self.n_inputs)], []
        for k, m in enumerate(self.layers, 1):
            z = m.apply(acts)
            pres.append(z)
            acts.append(activate(self.kind(k), z))
        return acts, pres

    def __call__(self, x: np.ndarray) -> np.ndarray:
        acts, _ = self.forward(x)
        return self.output.apply(acts)


# --------------------------------------------------------------------------------------------
# extraction from a Network
# --------------------------------------------------------------------------------------------
@dataclass
class _Expr:
    """A value of the graph as an affine function of the activation layers (rows: the value's
    flattened entries)."""

    blocks: dict
    offset: np.ndarray
    err: dict
    offset_err: np.ndarray | None


def _is_unit_selection(A: np.ndarray) -> bool:
    """True when A has entries in {0, 1} and at most one nonzero per column: then A' v only
    moves values, and W @ A is exact."""
    if A.size == 0:
        return True
    nz = A != 0
    return bool(np.all((A == 0) | (A == 1)) and np.all(nz.sum(axis=0) <= 1))


def _gather(e: _Expr, index: np.ndarray, fill: float = 0.0) -> _Expr:
    """Rows picked by ``index`` (-1: the constant ``fill``): Reshape, Select, Concat, exact."""
    keep = index >= 0
    safe = np.where(keep, index, 0)

    def pick(A):
        out = A[safe]
        out[~keep] = 0.0
        return out

    off = pick(e.offset[:, None])[:, 0]
    off[~keep] = fill
    return _Expr({j: pick(A) for j, A in e.blocks.items()}, off,
                 {j: pick(E) for j, E in e.err.items()},
                 None if e.offset_err is None else pick(e.offset_err[:, None])[:, 0])


def _linear_rows(e: _Expr, W: np.ndarray, b: np.ndarray, shape_in: tuple) -> _Expr:
    """``y[..., i] = sum_l W[i, l] x[..., l] + b[i]`` on expression rows (last axis of
    shape_in)."""
    m, n = W.shape
    L = int(np.prod(shape_in[:-1], dtype=np.int64))
    g = gamma(n + 1)
    absW = np.abs(W)
    blocks, err = {}, {}
    for j, A in e.blocks.items():
        A3 = A.reshape(L, n, -1)
        blocks[j] = np.einsum("in,lnc->lic", W, A3).reshape(L * m, -1)
        if j in e.err or not _is_unit_selection(A):
            Ee = g * np.einsum("in,lnc->lic", absW, np.abs(A3))
            if j in e.err:
                Ee = Ee + np.einsum("in,lnc->lic", absW, e.err[j].reshape(L, n, -1))
            err[j] = inflate(Ee.reshape(L * m, -1))
    o = e.offset.reshape(L, n)
    off = (o @ W.T + b).reshape(-1)
    if e.offset_err is None and not np.any(o):
        return _Expr(blocks, off, err, None)  # W 0 + b is exact
    oe = g * (np.abs(o) @ absW.T + np.abs(b))
    if e.offset_err is not None:
        oe = oe + e.offset_err.reshape(L, n) @ absW.T
    return _Expr(blocks, off, err, inflate(oe.reshape(-1)))


def _scale_rows(e: _Expr, a: np.ndarray, c: np.ndarray, shape: tuple) -> _Expr:
    """Elementwise ``y = a * x + c`` on expression rows (a, c broadcast to ``shape``)."""
    a = np.broadcast_to(a, shape).reshape(-1)
    c = np.broadcast_to(c, shape).reshape(-1)
    blocks, err = {}, {}
    for j, A in e.blocks.items():
        blocks[j] = A * a[:, None]
        exact = np.all((A == 0) | (np.abs(A) == 1))
        if j in e.err or not exact:
            Ee = U * np.abs(blocks[j])
            if j in e.err:
                Ee = Ee + np.abs(a)[:, None] * e.err[j]
            err[j] = inflate(Ee)
    off = e.offset * a + c
    if e.offset_err is None and not np.any(e.offset):
        return _Expr(blocks, off, err, None)  # 0 a + c is exact
    oe = gamma(2) * (np.abs(e.offset * a) + np.abs(c))
    if e.offset_err is not None:
        oe = oe + np.abs(a) * e.offset_err
    return _Expr(blocks, off, err, inflate(oe))


def _sum_exprs(es: list[_Expr], weights) -> _Expr:
    """``y = sum_i w_i x_i`` of expressions of one size."""
    g = gamma(len(es) + 1)
    blocks, absb, err = {}, {}, {}
    for w, e in zip(weights, es):
        for j, A in e.blocks.items():
            blocks[j] = blocks.get(j, 0.0) + w * A
            absb[j] = absb.get(j, 0.0) + abs(w) * np.abs(A)
            if j in e.err:
                err[j] = err.get(j, 0.0) + abs(w) * e.err[j]
    for j in blocks:
        err[j] = inflate(err.get(j, 0.0) + g * absb[j])
    off = sum(w * e.offset for w, e in zip(weights, es))
    oe = g * sum(abs(w) * np.abs(e.offset) for w, e in zip(weights, es))
    for w, e in zip(weights, es):
        if e.offset_err is not None:
            oe = oe + abs(w) * e.offset_err
    return _Expr(blocks, off, err, inflate(oe))


def _probe_rows(e: _Expr, op: O.Op, shape_in: tuple, fan_in: int) -> _Expr:
    """A linear op known only through ``forward`` (Conv, ConvTranspose, AvgPool): push the
    columns of each block through the op with its bias zeroed; the error bound uses the same op
    with absolute weights (``|op|``) and ``gamma_{fan_in}``."""
    zero_b = {"b": np.zeros_like(op.b)} if hasattr(op, "b") else {}
    op0 = dataclasses.replace(op, **zero_b)
    opabs = dataclasses.replace(op0, W=np.abs(op.W)) if hasattr(op, "W") else op0
    g = gamma(fan_in + 1)

    def push(o, A):  # columns of A (rows: flattened input) through o -> (out, cols)
        cols = A.shape[1]
        return o.forward(A.T.reshape((cols,) + shape_in)).reshape(cols, -1).T

    blocks, err = {}, {}
    for j, A in e.blocks.items():
        blocks[j] = push(op0, A)
        Ee = g * push(opabs, np.abs(A))
        if j in e.err:
            Ee = Ee + push(opabs, e.err[j])
        err[j] = inflate(Ee)
    off = op.forward(e.offset.reshape((1,) + shape_in)).reshape(-1)
    oe = g * (push(opabs, np.abs(e.offset)[:, None])[:, 0]
              + (np.abs(op.forward(np.zeros((1,) + shape_in)).reshape(-1))))
    if e.offset_err is not None:
        oe = oe + push(opabs, e.offset_err[:, None])[:, 0]
    return _Expr(blocks, off, err, inflate(oe))


def _fan_in(op: O.Op) -> int:
    """An upper bound on the number of terms summed per output (all weights, for convolutions)."""
    if isinstance(op, (O.Conv, O.ConvTranspose)):
        return int(op.W.size)
    if isinstance(op, O.AvgPool):
        return int(np.prod(op.kernel)) + 1
    raise AssertionError(op)


def relu_program(net, method: str = "lp") -> ReluProgram:
    """Rewrite ``net`` as a ``ReluProgram``. Raises ``UnsupportedOpError`` naming the op, its
    node and ``method`` for any op other than the affine ones listed in the module docstring,
    Relu, and (for ``SMOOTH_METHODS`` only) Sigmoid and Tanh."""
    n0 = net.n_inputs
    exprs = {net.input_name: _Expr({0: np.eye(n0)}, np.zeros(n0), {}, None)}
    layers, relu_nodes, pre_nodes, sizes, kinds = [], [], [], [n0], []
    smooth = {O.Sigmoid: "sigmoid", O.Tanh: "tanh"} if method in SMOOTH_METHODS else {}
    for node in net.nodes:
        op = node.op
        ins = [exprs[i] for i in node.inputs]
        shape_in = net.shape_of(node.inputs[0]) if node.inputs else ()
        size = int(np.prod(node.shape, dtype=np.int64))
        if isinstance(op, O.Relu) or type(op) in smooth:
            e = ins[0]
            layers.append(AffineMap(e.blocks, e.offset, e.err, e.offset_err))
            kinds.append("relu" if isinstance(op, O.Relu) else smooth[type(op)])
            relu_nodes.append(node.name)
            pre_nodes.append(node.inputs[0])
            k = len(layers)
            sizes.append(size)
            exprs[node.name] = _Expr({k: np.eye(size)}, np.zeros(size), {}, None)
        elif isinstance(op, O.Reshape):
            exprs[node.name] = ins[0]
        elif isinstance(op, O.Select):
            exprs[node.name] = _gather(ins[0], op.index.reshape(-1), op.fill)
        elif isinstance(op, O.Concat):
            parts, start = [], 0
            for name in node.inputs:
                sz = int(np.prod(net.shape_of(name), dtype=np.int64))
                parts.append((np.arange(sz, dtype=np.float64) + start).reshape(net.shape_of(name)))
                start += sz
            index = op.forward(*[p[None] for p in parts])[0].reshape(-1).astype(np.int64)
            exprs[node.name] = _gather(_stack(ins, sizes), index)
        elif isinstance(op, O.Linear):
            exprs[node.name] = _linear_rows(ins[0], op.W, op.b, shape_in)
        elif isinstance(op, O.Scale):
            exprs[node.name] = _scale_rows(ins[0], op.a, op.c, node.shape)
        elif isinstance(op, O.Sum):
            exprs[node.name] = _sum_exprs(ins, op.weights)
        elif isinstance(op, (O.Conv, O.ConvTranspose, O.AvgPool)):
            exprs[node.name] = _probe_rows(ins[0], op, shape_in, _fan_in(op))
        else:
            raise UnsupportedOpError(
                f"the {method} relaxation does not support op {type(op).__name__} "
                f"(node {node.name!r}{', from ' + node.source if node.source else ''}); "
                f"it handles {'Relu, Sigmoid, Tanh' if smooth else 'Relu'} and affine ops only")
        assert exprs[node.name].offset.size == size, (node.name, size)
    out = exprs[net.output_name]
    return ReluProgram(n0, tuple(layers), AffineMap(out.blocks, out.offset, out.err,
                                                    out.offset_err),
                       tuple(relu_nodes), tuple(pre_nodes), tuple(kinds))


def _stack(es: list[_Expr], sizes: list[int]) -> _Expr:
    """The expressions' rows one after another (missing blocks are zero)."""
    srcs = sorted(set().union(*[e.blocks for e in es]))
    esrcs = sorted(set().union(*[e.err for e in es]))

    def cat(get, j):
        return np.concatenate([get(e, j) for e in es])

    zeros = lambda e, j: np.zeros((e.offset.size, sizes[j]))  # noqa: E731
    blocks = {j: cat(lambda e, j: e.blocks.get(j, zeros(e, j)), j) for j in srcs}
    err = {j: cat(lambda e, j: e.err.get(j, zeros(e, j)), j) for j in esrcs}
    oerr = None
    if any(e.offset_err is not None for e in es):
        oerr = np.concatenate([e.offset_err if e.offset_err is not None
                               else np.zeros(e.offset.size) for e in es])
    return _Expr(blocks, np.concatenate([e.offset for e in es]), err, oerr)


# --------------------------------------------------------------------------------------------
# pre-activation bounds
# --------------------------------------------------------------------------------------------
def affine_interval(amap: AffineMap, lows: list, ups: list) -> tuple[np.ndarray, np.ndarray]:
    """Rigorous interval bounds of ``amap`` over the boxes ``[lows[j], ups[j]]``.

    Centre/radius form: ``mid = W c + b``, ``rad = |W| r``; the float error of both products is
    at most ``gamma_{n+2} (|W| |c| + |W| r + |b|)`` and the model error adds ``E max|a| + e_b``;
    the bounds are ``mid -+ (rad + margin)``."""
    m = amap.size
    mid = amap.bias.copy()
    rad = np.zeros(m)
    mag = np.abs(amap.bias)
    n = 0
    amax = []
    for j in range(len(lows)):
        amax.append(np.maximum(np.abs(lows[j]), np.abs(ups[j])))
    for j, Wj in amap.blocks.items():
        c = 0.5 * lows[j] + 0.5 * ups[j]
        r = np.maximum(ups[j] - c, c - lows[j]) * (1 + 4 * U)
        absW = np.abs(Wj)
        mid += Wj @ c
        rad += absW @ r
        mag += absW @ np.abs(c)
        n += Wj.shape[1]
    margin = inflate(gamma(n + 2) * (mag + rad)) + amap.model_error(amax)
    spread = inflate(rad + margin)
    return mid - spread, mid + spread


def interval_pass(prog: ReluProgram, x_lo: np.ndarray, x_hi: np.ndarray,
                  given: list | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pre-activation bounds [(l_k, u_k)] for k = 1..K over the input box, by rigorous interval
    arithmetic (each layer's activations in ``activation_box`` of its bounds); where
    ``given[k-1]`` holds (l, u) from elsewhere (e.g. CROWN) the tighter of the two is kept at
    each layer before the next one is computed."""
    lows, ups = [np.asarray(x_lo, float).reshape(-1)], [np.asarray(x_hi, float).reshape(-1)]
    out = []
    for k, amap in enumerate(prog.layers):
        lo, hi = affine_interval(amap, lows, ups)
        if given is not None and given[k] is not None:
            lo = np.maximum(lo, given[k][0])
            hi = np.minimum(hi, given[k][1])
        out.append((lo, hi))
        a_lo, a_hi = activation_box(prog.kind(k + 1), lo, hi)
        lows.append(a_lo)
        ups.append(a_hi)
    return out


def merge_intermediate(prog: ReluProgram, intermediate, b: int = 0) -> list | None:
    """Per-layer (l, u) for batch element ``b`` from the bound core's ``intermediate`` mapping
    {node name: Bounds(lower, upper) batched}, looked up under each ReLU's input node; layers not
    found give None (the interval pass fills them in)."""
    if intermediate is None:
        return None
    out = []
    for name in prog.pre_nodes:
        bd = intermediate.get(name) if hasattr(intermediate, "get") else None
        if bd is None:
            out.append(None)
            continue
        lo = np.asarray(bd.lower, dtype=np.float64)
        hi = np.asarray(bd.upper, dtype=np.float64)
        out.append((lo.reshape(lo.shape[0], -1)[b], hi.reshape(hi.shape[0], -1)[b]))
    return out


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------
@dataclass
class LayerBounds:
    """Elementwise bounds of one value, batched: lower, upper (B, n)."""

    lower: np.ndarray
    upper: np.ndarray


@dataclass
class RelaxationResult:
    """What the LP/MILP/SDP methods return: ``lower``/``upper`` (B, k) bound ``C y - d``;
    ``intermediate`` {pre-activation node name: LayerBounds} holds the pre-activation bounds
    used (tightened by LP-All); ``stats`` counts solver calls and time."""

    lower: np.ndarray
    upper: np.ndarray
    intermediate: dict
    stats: dict


def as_batch_box(net, lower, upper) -> tuple[np.ndarray, np.ndarray]:
    """The input box as (B, n_0) arrays; one unbatched box is a batch of one."""
    lo = np.asarray(lower, dtype=np.float64)
    hi = np.asarray(upper, dtype=np.float64)
    n = net.n_inputs
    if lo.shape != hi.shape:
        raise ValueError(f"lower {lo.shape} and upper {hi.shape} differ in shape")
    if lo.size == n:
        return lo.reshape(1, n), hi.reshape(1, n)
    if lo.size % n:
        raise ValueError(f"an input box of shape {lo.shape} does not fit {net.input_shape}")
    lo, hi = lo.reshape(-1, n), hi.reshape(-1, n)
    if np.any(lo > hi) or np.any(np.isnan(lo)) or np.any(np.isnan(hi)):
        raise ValueError("the input box is empty or has NaN bounds")
    return lo, hi


def spec_rows(net, C, d) -> tuple[np.ndarray, np.ndarray]:
    """``C`` (k, m) and ``d`` (k,), defaulting to the identity and zero (bounds of the output)."""
    m = net.n_outputs
    C = np.eye(m) if C is None else np.asarray(C, dtype=np.float64).reshape(-1, m)
    d = np.zeros(C.shape[0]) if d is None else np.asarray(d, dtype=np.float64).reshape(-1)
    if d.shape[0] != C.shape[0]:
        raise ValueError(f"C has {C.shape[0]} rows but d has {d.shape[0]}")
    return C, d


def core_intermediate(net, lo, hi):
    """Pre-activation bounds of every node from the bound core's CROWN
    (``verifier.bounds.compute``) over the boxes ``lo``, ``hi`` (B, n_0)."""
    from . import compute  # noqa: PLC0415 (the package imports this module)
    res = compute(net, lo.reshape((-1,) + net.input_shape), hi.reshape((-1,) + net.input_shape),
                  method="crown", intermediate=True)
    return getattr(res, "intermediate", None)
