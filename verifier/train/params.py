"""Trainable parameters of a ``Network`` as plain arrays, and rebuilding a network from them.

Networks are immutable: training reads the parameters out once (``get_params``), updates the
arrays, and builds a new ``Network`` with ``set_params`` (``Network.replace_ops`` with copies of
the ops whose parameter fields are replaced). A parameter is keyed by ``(node name, field)``,
e.g. ``("fc1", "W")``.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..network import Network
from .autodiff import Var, leaf

ParamKey = tuple[str, str]


def get_params(net: Network, frozen: frozenset | set = frozenset()) -> dict[ParamKey, np.ndarray]:
    """Copies of every trainable parameter: ``{(node, field): array}`` for every node whose
    op lists parameter fields (``op.params``), except the nodes named in ``frozen``."""
    out = {}
    for node in net.nodes:
        if node.name in frozen:
            continue
        for f in type(node.op).params:
            out[(node.name, f)] = np.array(getattr(node.op, f), dtype=np.float64, copy=True)
    return out


def set_params(net: Network, params: dict[ParamKey, np.ndarray]) -> Network:
    """A new network with the parameters ``params`` (shapes must match the current ones)."""
    by_node: dict[str, dict] = {}
    for (name, f), value in params.items():
        old = getattr(net.node(name).op, f)
        value = np.asarray(value, dtype=np.float64)
        if value.shape != np.shape(old):
            raise ValueError(f"parameter {name}.{f} has shape {value.shape}, expected "
                             f"{np.shape(old)}")
        by_node.setdefault(name, {})[f] = value.copy()
    ops = {name: dataclasses.replace(net.node(name).op, **fields)
           for name, fields in by_node.items()}
    return net.replace_ops(ops)


def param_vars(params: dict[ParamKey, np.ndarray]) -> dict[ParamKey, Var]:
    """Trainable tape leaves for the arrays ``params`` (same keys)."""
    return {k: leaf(v) for k, v in params.items()}


def node_params(node, pvars: dict[ParamKey, Var]) -> dict[str, Var]:
    """The parameter ``Var``s of ``node``: trainable leaves where given, constants otherwise."""
    out = {}
    for f in type(node.op).params:
        v = pvars.get((node.name, f))
        out[f] = v if v is not None else Var(np.asarray(getattr(node.op, f), dtype=np.float64))
    return out
