"""The prepared network: per-node tables that every bound method shares, built once per
``Network`` (cached weakly) -- topological order, consumers, ancestors, which values need
relaxation bounds, index tables of pooling and concatenation, and the term count N of the
rounding margin."""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import numpy as np

from verifier.errors import UnsupportedOpError
from verifier.network import ops as O

from .rounding import gamma

#: ops that are affine maps applied through their own ``forward`` / ``vjp`` (no dense matrix)
LINEAR_MAPS = (O.Conv, O.ConvTranspose, O.AvgPool)
#: ops with a single-input affine map
AFFINE_1 = (O.Linear, O.Scale) + LINEAR_MAPS
#: ops whose CROWN rule needs bounds of their input (a relaxation)
RELAX_OPS = (O.Relu, O.LeakyRelu, O.Sigmoid, O.Tanh, O.Softplus, O.MaxPool)
#: elementwise relaxed ops
ELEMENTWISE = (O.Relu, O.LeakyRelu, O.Sigmoid, O.Tanh, O.Softplus)
#: elementwise ops whose relaxation only matters for neurons with l < 0 < u
KINKED = (O.Relu, O.LeakyRelu)


@dataclass(eq=False)
class PlanNode:
    """One node with flat sizes; ``cache`` holds per-rule precomputations."""

    name: str
    op: O.Op
    inputs: tuple[str, ...]
    shape: tuple[int, ...]
    size: int
    in_shapes: tuple[tuple[int, ...], ...]
    in_sizes: tuple[int, ...]
    cache: dict = field(default_factory=dict)


class Plan:
    """Tables of one network. ``nodes`` in topological order; ``preact`` maps the name of each
    value that feeds a relaxation to the set of op classes relaxing it; ``ibp_exact`` holds the
    values whose IBP bounds are exact up to rounding (one affine map of the input), for which
    CROWN is skipped; ``n_terms`` is N of the margin ``gamma_N`` (rounding.py)."""

    def __init__(self, net):
        self.net = net
        self.input_name = net.input_name
        self.input_shape = tuple(net.input_shape)
        self.n0 = int(np.prod(self.input_shape, dtype=np.int64))
        self.output_name = net.output_name
        self.nodes: list[PlanNode] = []
        self.index: dict[str, int] = {}
        for node in net.nodes:
            in_shapes = tuple(net.shape_of(i) for i in node.inputs)
            pn = PlanNode(node.name, node.op, tuple(node.inputs), tuple(node.shape),
                          int(np.prod(node.shape, dtype=np.int64)), in_shapes,
                          tuple(int(np.prod(s, dtype=np.int64)) for s in in_shapes))
            self.index[pn.name] = len(self.nodes)
            self.nodes.append(pn)
        self.consumers: dict[str, list[str]] = {self.input_name: []}
        for pn in self.nodes:
            self.consumers.setdefault(pn.name, [])
            for i in pn.inputs:
                self.consumers[i].append(pn.name)
        self.preact: dict[str, set] = {}
        for pn in self.nodes:
            if isinstance(pn.op, RELAX_OPS):
                self.preact.setdefault(pn.inputs[0], set()).add(type(pn.op))
        self.ibp_exact = self._ibp_exact()
        #: activation node -> the 1-d Linear that only feeds it: fused in the backward pass
        self.fuse: dict[str, str] = {}
        for pn in self.nodes:
            x = pn.inputs[0] if pn.inputs else None
            if (isinstance(pn.op, ELEMENTWISE) and x != self.input_name
                    and self.consumers[x] == [pn.name] and x != self.output_name):
                xn = self.node(x)
                if isinstance(xn.op, O.Linear) and xn.size == xn.op.W.shape[0]:
                    self.fuse[pn.name] = x
        self.fused_into = {lin: act for act, lin in self.fuse.items()}
        big = max([self.n0] + [pn.size for pn in self.nodes]
                  + [s for pn in self.nodes for s in pn.in_sizes]
                  + [int(getattr(pn.op, "W").size) for pn in self.nodes
                     if isinstance(pn.op, (O.Conv, O.ConvTranspose))])
        self.n_terms = 2 * big + len(self.nodes) + 16
        self.gamma = gamma(self.n_terms)
        self._orders: dict = {}

    def node(self, name: str) -> PlanNode:
        return self.nodes[self.index[name]]

    def _ibp_exact(self) -> set:
        raw = {self.input_name}
        exact = set(raw)
        for pn in self.nodes:
            if isinstance(pn.op, O.Reshape) and pn.inputs[0] in raw:
                raw.add(pn.name)
                exact.add(pn.name)
            elif isinstance(pn.op, O.Select) and pn.inputs[0] in raw:
                idx = pn.op.index.ravel()
                kept = idx[idx >= 0]
                if np.unique(kept).size == kept.size:
                    raw.add(pn.name)
                    exact.add(pn.name)
            elif isinstance(pn.op, AFFINE_1) and pn.inputs[0] in raw:
                exact.add(pn.name)
        return exact

    def ancestors(self, name: str) -> set:
        """Names of the nodes (not the input) that ``name`` depends on, itself included."""
        key = ("anc", name)
        if key not in self._orders:
            seen = set()
            stack = [name]
            while stack:
                v = stack.pop()
                if v in seen or v == self.input_name:
                    continue
                seen.add(v)
                stack.extend(self.node(v).inputs)
            self._orders[key] = seen
        return self._orders[key]

    def backward_order(self, name: str) -> list[PlanNode]:
        """Ancestors of ``name`` (itself included) in reverse topological order."""
        key = ("bwd", name)
        if key not in self._orders:
            anc = self.ancestors(name)
            self._orders[key] = [pn for pn in reversed(self.nodes) if pn.name in anc]
        return self._orders[key]

    def forward_order(self, name: str) -> list[PlanNode]:
        """Ancestors of ``name`` (itself included) in topological order."""
        return self.backward_order(name)[::-1]


_PLANS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def get_plan(net) -> Plan:
    """The cached ``Plan`` of ``net`` (built on first use)."""
    plan = _PLANS.get(net)
    if plan is None:
        plan = Plan(net)
        _PLANS[net] = plan
    return plan


# ----------------------------------------------------------------------------------------------
# index tables
# ----------------------------------------------------------------------------------------------
def pool_windows(in_shape, out_shape, kernel, stride, pads, dilation) -> np.ndarray:
    """Window table (n_out, kh*kw) of a 2-D pooling over a (C, H, W) input: flat input indices,
    -1 for padding. ``out_shape`` is the node's (C, H', W')."""
    if len(in_shape) != 3 or len(out_shape) != 3:
        raise UnsupportedOpError(f"pooling over a {len(in_shape)}-d value: only (C, H, W) is "
                                 "supported by the bound methods")
    C, H, W = in_shape
    _, Ho, Wo = out_shape
    kh, kw = kernel
    sh, sw = stride
    pt, pl = pads[0], pads[1]
    dh, dw = dilation
    oh = np.arange(Ho)[:, None, None, None]
    ow = np.arange(Wo)[None, :, None, None]
    qh = np.arange(kh)[None, None, :, None]
    qw = np.arange(kw)[None, None, None, :]
    ih = oh * sh - pt + qh * dh
    iw = ow * sw - pl + qw * dw
    ok = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
    flat = np.where(ok, ih * W + iw, -1)  # (Ho, Wo, kh, kw)
    flat = flat.reshape(Ho * Wo, kh * kw)
    chans = np.arange(C)[:, None, None] * (H * W)
    win = np.where(flat[None] >= 0, flat[None] + chans, -1)
    return np.ascontiguousarray(win.reshape(C * Ho * Wo, kh * kw), dtype=np.int64)


def concat_positions(out_shape, in_shapes, axis) -> list[np.ndarray]:
    """Flat positions in the output of each input of a Concat along sample axis ``axis``."""
    ax = axis if axis >= 0 else len(out_shape) + axis
    grid = np.arange(int(np.prod(out_shape, dtype=np.int64))).reshape(out_shape)
    pos, off = [], 0
    for s in in_shapes:
        sl = [slice(None)] * len(out_shape)
        sl[ax] = slice(off, off + s[ax])
        pos.append(np.ascontiguousarray(grid[tuple(sl)].ravel()))
        off += s[ax]
    return pos
