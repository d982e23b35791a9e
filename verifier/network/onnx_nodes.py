"""Small readers of ONNX nodes shared by the op handlers: attributes, inputs and outputs by
position, the one variable input of a node, outputs that must stay unused."""
from __future__ import annotations

import numpy as np
from onnx import helper

from ..errors import UnsupportedOpError
from .onnx_import import Var, describe

ONE = np.ones(())
ZERO = np.zeros(())


def attrs(node) -> dict:
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _in(node, k) -> str:
    return node.input[k] if len(node.input) > k else ""


def _out(node, k=0) -> str:
    return node.output[k] if len(node.output) > k else ""


def _only_var(imp, node, position=0) -> Var:
    """The variable input at ``position``; every other present input must be a constant."""
    for k, name in enumerate(node.input):
        if name and k != position and not imp.is_const(name):
            raise UnsupportedOpError(f"{describe(node)}: input {k} ({name!r}) must be a constant")
    if imp.is_const(node.input[position]):
        raise UnsupportedOpError(f"{describe(node)}: a constant data input with variable "
                                 f"indices or parameters is not supported")
    return imp.var(node.input[position])


def _unused(imp, node, first: int) -> None:
    for name in node.output[first:]:
        if name and name in imp.consumed:
            raise UnsupportedOpError(f"{describe(node)}: its output {name!r} (training or index "
                                     f"output) is not supported")
