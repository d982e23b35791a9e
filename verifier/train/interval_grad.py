"""Differentiable interval bound propagation (IBP) over a ``Network`` (Gowal et al. 2018).

Each node maps an input box to an output box that contains the node's value for every input
in the input box. The rules, keyed by op class (one row per op):

- affine ops (Linear, Conv, ConvTranspose), centre/radius form: ``mu' = W mu + b``,
  ``r' = |W| r`` (``|W|`` elementwise, the op applied to ``r`` without its bias);
- Scale ``a x + c``: ``mu' = a mu + c``, ``r' = |a| r``;
- Sum ``sum_i w_i x_i``: ``mu' = sum_i w_i mu_i``, ``r' = sum_i |w_i| r_i``;
- AvgPool (non-negative weights): the op applied to ``mu`` and to ``r``;
- monotone non-decreasing maps (Relu, LeakyRelu, Sigmoid, Tanh, Softplus, MaxPool):
  ``l' = f(l)``, ``u' = f(u)``;
- Reshape, Select, Concat (pick/copy elements): applied to ``l`` and ``u``.

Every rule is built from tape primitives (``train.autodiff``), so the bounds are differentiable
almost everywhere with respect to the parameters and the input box. These bounds carry no
rounding margins: they drive training only. Certification uses ``verifier.bounds``.

The margin bound ``ibp_margin_lower`` folds the specification rows ``C`` (B, K, m) into the last
affine layer when the output node is a Linear on a vector: ``lb = (C W) mu + C b - |C W| r``,
which is never looser than bounding ``y`` first and applying ``C`` afterwards.
"""
from __future__ import annotations

import numpy as np

from ..errors import UnsupportedOpError
from ..network import Network
from ..network import ops as O
from . import autodiff as ad
from .autodiff import Var
from .params import node_params


class Box:
    """A differentiable box, kept in whichever of the forms lower/upper or centre/radius was
    given; the other form is derived on demand (``mu = (l+u)/2``, ``r = (u-l)/2``,
    ``l = mu - r``, ``u = mu + r``) and cached."""

    __slots__ = ("_l", "_u", "_mu", "_r")

    def __init__(self, lower=None, upper=None, centre=None, radius=None):
        self._l, self._u, self._mu, self._r = lower, upper, centre, radius

    @property
    def lower(self) -> Var:
        if self._l is None:
            self._l = self._mu - self._r
        return self._l

    @property
    def upper(self) -> Var:
        if self._u is None:
            self._u = self._mu + self._r
        return self._u

    @property
    def centre(self) -> Var:
        if self._mu is None:
            self._mu = (self._l + self._u) * 0.5
        return self._mu

    @property
    def radius(self) -> Var:
        if self._r is None:
            self._r = (self._u - self._l) * 0.5
        return self._r

    @property
    def has_centre(self) -> bool:
        return self._mu is not None


def _affine(op, params, boxes):
    (box,) = boxes
    mu = ad.apply_op(op, params, [box.centre])
    absW = ad.absolute(params["W"])
    r = ad.apply_op(op, {"W": absW, "b": Var(np.zeros_like(op.b))}, [box.radius])
    return Box(centre=mu, radius=r)


def _scale(op, params, boxes):
    (box,) = boxes
    mu = box.centre * params["a"] + params["c"]
    return Box(centre=mu, radius=box.radius * ad.absolute(params["a"]))


def _sum(op, params, boxes):
    mu = sum((b.centre * w for w, b in zip(op.weights, boxes[1:])), boxes[0].centre * op.weights[0])
    r = sum((b.radius * abs(w) for w, b in zip(op.weights, boxes[1:])),
            boxes[0].radius * abs(op.weights[0]))
    return Box(centre=mu, radius=r)


def _positive_linear(op, params, boxes):
    (box,) = boxes
    return Box(centre=ad.apply_op(op, params, [box.centre]),
               radius=ad.apply_op(op, params, [box.radius]))


def _monotone(op, params, boxes):
    (box,) = boxes
    if isinstance(op, O.LeakyRelu) and op.alpha < 0:
        raise UnsupportedOpError(f"IBP training needs a non-decreasing LeakyRelu, got alpha "
                                 f"{op.alpha}")
    return Box(lower=ad.apply_op(op, params, [box.lower]),
               upper=ad.apply_op(op, params, [box.upper]))


def _relu(op, params, boxes):
    (box,) = boxes
    return Box(lower=ad.relu(box.lower), upper=ad.relu(box.upper))


def _copy(op, params, boxes):
    if isinstance(op, O.Reshape) and boxes[0].has_centre:
        return Box(centre=ad.apply_op(op, params, [boxes[0].centre]),
                   radius=ad.apply_op(op, params, [boxes[0].radius]))
    return Box(lower=ad.apply_op(op, params, [b.lower for b in boxes]),
               upper=ad.apply_op(op, params, [b.upper for b in boxes]))


#: The IBP rule of each op class: ``rule(op, params: {field: Var}, boxes: [Box]) -> Box``.
RULES = {
    O.Linear: _affine, O.Conv: _affine, O.ConvTranspose: _affine,
    O.Scale: _scale, O.Sum: _sum, O.AvgPool: _positive_linear,
    O.Relu: _relu, O.LeakyRelu: _monotone, O.Sigmoid: _monotone, O.Tanh: _monotone,
    O.Softplus: _monotone, O.MaxPool: _monotone,
    O.Reshape: _copy, O.Select: _copy, O.Concat: _copy,
}


def check_supported(net: Network, rules=RULES, what: str = "IBP training") -> None:
    """Raise ``UnsupportedOpError`` naming the first node whose op has no rule in ``rules``."""
    for node in net.nodes:
        if type(node.op) not in rules:
            raise UnsupportedOpError(f"{what} does not support op {type(node.op).__name__} "
                                     f"(node {node.name!r}); supported: "
                                     f"{', '.join(sorted(c.__name__ for c in rules))}")


def interval_forward(net: Network, pvars: dict, lower, upper, stop: str | None = None) -> dict:
    """Boxes of every value of ``net`` for inputs in ``[lower, upper]`` (B, *input_shape):
    ``{name: Box}``. ``pvars`` maps ``(node, field)`` to parameter ``Var``s (others are taken
    from the ops as constants). ``stop`` ends the pass before computing that node."""
    check_supported(net)
    boxes = {net.input_name: Box(lower=as_input(net, lower), upper=as_input(net, upper))}
    for node in net.nodes:
        if node.name == stop:
            break
        rule = RULES[type(node.op)]
        boxes[node.name] = rule(node.op, node_params(node, pvars), [boxes[i] for i in node.inputs])
    return boxes


def as_input(net: Network, x) -> Var:
    """``x`` as a tape value of shape (B, *input_shape) (a constant unless it is a ``Var``)."""
    if isinstance(x, Var):
        shape = (x.shape[0],) + net.input_shape
        return x if x.shape == shape else ad.reshape(x, shape)
    return Var(net._as_batch(x))


def foldable_output(net: Network):
    """The output node if it is a Linear on a vector (so ``C`` can be folded into it), else None."""
    node = net.node(net.output_name)
    if (isinstance(node.op, O.Linear) and len(node.shape) == 1
            and len(net.shape_of(node.inputs[0])) == 1):
        return node
    return None


def fold_spec(node, params: dict, C: np.ndarray) -> tuple[Var, Var]:
    """``(C W, C b)``: the spec rows folded into the Linear ``node``; C (B, K, m) ->
    ``CW`` (B, K, n) and ``Cb`` (B, K)."""
    CW = ad.matmul(C, params["W"])
    Cb = ad.reshape(ad.matmul(C, ad.reshape(params["b"], (-1, 1))), C.shape[:2])
    return CW, Cb


def ibp_margin_lower(net: Network, pvars: dict, lower, upper, C: np.ndarray,
                     boxes: dict | None = None) -> tuple[Var, dict]:
    """Differentiable IBP lower bound of ``C y`` over the box: (B, K) ``Var``, and the boxes of
    the values it used. ``C``: (B, K, m) constant over the flattened output ``y``."""
    node = foldable_output(net)
    if boxes is None:
        boxes = interval_forward(net, pvars, lower, upper,
                                 stop=node.name if node is not None else None)
    C = np.asarray(C, dtype=np.float64)
    if node is not None:
        CW, Cb = fold_spec(node, node_params(node, pvars), C)
        box = boxes[node.inputs[0]]
        B = C.shape[0]
        mu = ad.reshape(box.centre, (B, -1, 1))
        r = ad.reshape(box.radius, (B, -1, 1))
        lb = ad.matmul(CW, mu) - ad.matmul(ad.absolute(CW), r)
        return ad.reshape(lb, C.shape[:2]) + Cb, boxes
    out = boxes[net.output_name]
    B = C.shape[0]
    mu = ad.reshape(out.centre, (B, -1, 1))
    r = ad.reshape(out.radius, (B, -1, 1))
    lb = ad.matmul(C, mu) - ad.matmul(np.abs(C), r)
    return ad.reshape(lb, C.shape[:2]), boxes
