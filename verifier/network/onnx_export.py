"""ONNX out: ``save_onnx(net, path)`` writes any ``Network`` as an ONNX model (opset 13).

The model's input is ``[N, *net.input_shape]`` with a symbolic batch axis ``N`` (so that
``load_onnx`` gives back the same ``input_shape``), its output ``[N, *net.output_shape]``.

Precision: by default weights, input and output are float32, the type every ONNX runtime
supports; the exported model then computes the network with its parameters rounded to float32
(``load_onnx(save_onnx(net))`` agrees with ``net`` up to that rounding, about 1e-7 relative per
layer). ``dtype=np.float64`` keeps every parameter exactly, so that ``load_onnx`` gives back the
same function bit for bit in its parameters; note that onnxruntime's CPU provider lacks float64
kernels for some ops (Conv, ConvTranspose, AveragePool, Gemm among them), so such a file is for
exchange and for this package, not for onnxruntime.

Each op becomes: Linear -> Gemm (1-D samples) or MatMul + Add; Scale -> Mul + Add; Sum ->
Mul/Add/Sub; Conv, ConvTranspose, AvgPool (AveragePool), MaxPool, Relu, LeakyRelu, Sigmoid, Tanh,
Softplus, Softmax, Concat -> the ONNX op of that name; Reshape -> Reshape ``[-1, *shape]``;
Select -> Reshape to ``(N, n)``, a constant Pad by the fill value when some index is -1, and
Gather along axis 1.
"""
from __future__ import annotations

import numpy as np

from ..errors import ModelError
from .graph import Network
from .ops import (AvgPool, Concat, Conv, ConvTranspose, LeakyRelu, Linear, MaxPool, Relu,
                  Reshape, Scale, Select, Sigmoid, Softmax, Softplus, Sum, Tanh)

OPSET = 13


def save_onnx(net: Network, path, dtype=np.float32, opset: int = OPSET) -> None:
    """Write ``net`` to ``path`` as ONNX (see the module docstring for ``dtype``)."""
    import onnx  # noqa: PLC0415

    onnx.save(to_onnx(net, dtype=dtype, opset=opset), str(path))


def to_onnx(net: Network, dtype=np.float32, opset: int = OPSET):
    """The ``onnx.ModelProto`` of ``net`` (opset >= 13)."""
    from onnx import checker, helper  # noqa: PLC0415

    if opset < 13:
        raise ValueError("export writes opset 13 or later")
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError("dtype must be float32 or float64")
    w = _Writer(net, dtype)
    for node in net.nodes:
        w.node(node)
    out = net.output_name
    if out == net.input_name:
        out = w.add("Identity", [out], "output")
    elem = helper.np_dtype_to_tensor_dtype(dtype)
    graph = helper.make_graph(
        w.nodes, "verifier_network",
        [helper.make_tensor_value_info(net.input_name, elem, ["N", *net.input_shape])],
        [helper.make_tensor_value_info(out, elem, ["N", *net.output_shape])],
        initializer=w.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="verifier")
    model.ir_version = 8
    checker.check_model(model)
    return model


class _Writer:
    def __init__(self, net: Network, dtype):
        self.net = net
        self.dtype = dtype
        self.nodes = []
        self.inits = []
        self.used = {net.input_name} | {n.name for n in net.nodes}

    def fresh(self, hint: str) -> str:
        name, k = hint, 0
        while name in self.used:
            k += 1
            name = f"{hint}_{k}"
        self.used.add(name)
        return name

    def const(self, value, hint: str, dtype=None) -> str:
        from onnx import numpy_helper  # noqa: PLC0415

        name = self.fresh(hint)
        arr = np.asarray(value, dtype=dtype or self.dtype)
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def add(self, op_type: str, inputs, out: str | None = None, hint: str = "", **attrs) -> str:
        from onnx import helper  # noqa: PLC0415

        out = out or self.fresh(hint or op_type)
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    def node(self, node) -> None:
        op, x, out = node.op, list(node.inputs), node.name
        simple = {Relu: "Relu", Sigmoid: "Sigmoid", Tanh: "Tanh", Softplus: "Softplus"}
        if type(op) in simple:
            self.add(simple[type(op)], x, out)
        elif isinstance(op, LeakyRelu):
            self.add("LeakyRelu", x, out, alpha=float(op.alpha))
        elif isinstance(op, Softmax):
            self.add("Softmax", x, out, axis=int(op.axis + 1 if op.axis >= 0 else op.axis))
        elif isinstance(op, Linear):
            self.linear(node)
        elif isinstance(op, Scale):
            self.scale(node)
        elif isinstance(op, Sum):
            self.sum(node)
        elif isinstance(op, (Conv, ConvTranspose)):
            self.conv(node)
        elif isinstance(op, AvgPool):
            self.add("AveragePool", x, out, kernel_shape=list(op.kernel), strides=list(op.stride),
                     pads=list(op.pads), count_include_pad=int(op.count_include_pad))
        elif isinstance(op, MaxPool):
            self.add("MaxPool", x, out, kernel_shape=list(op.kernel), strides=list(op.stride),
                     pads=list(op.pads), dilations=list(op.dilation))
        elif isinstance(op, Reshape):
            shape = self.const(np.array([-1, *node.shape], dtype=np.int64), out + "_shape",
                               np.int64)
            self.add("Reshape", [x[0], shape], out)
        elif isinstance(op, Select):
            self.select(node)
        elif isinstance(op, Concat):
            self.add("Concat", x, out, axis=int(op.axis + 1 if op.axis >= 0 else op.axis))
        else:
            raise ModelError(f"node {node.name!r}: no ONNX export for {type(op).__name__}")

    def linear(self, node):
        op, x, out = node.op, node.inputs[0], node.name
        if len(self.net.shape_of(x)) == 1:
            self.add("Gemm", [x, self.const(op.W, out + "_W"), self.const(op.b, out + "_b")],
                     out, transB=1)
            return
        m = self.add("MatMul", [x, self.const(op.W.T, out + "_Wt")], hint=out + "_matmul")
        self.add("Add", [m, self.const(op.b, out + "_b")], out)

    def scale(self, node):
        op, x, out = node.op, node.inputs[0], node.name
        y = self.add("Mul", [x, self.const(op.a, out + "_a")], hint=out + "_mul")
        self.add("Add", [y, self.const(op.c, out + "_c")], out)

    def sum(self, node):
        op, xs, out = node.op, node.inputs, node.name
        acc = None
        for k, (wk, xk) in enumerate(zip(op.weights, xs)):
            last = k == len(xs) - 1
            if acc is not None and wk in (1.0, -1.0):
                acc = self.add("Add" if wk == 1.0 else "Sub", [acc, xk], out if last else None,
                               hint=out + "_acc")
                continue
            term = xk if wk == 1.0 else self.add(
                "Mul", [xk, self.const(np.array(wk), out + "_w")], hint=out + "_term")
            if acc is None:
                acc = self.add("Identity", [term], out) if last else term
            else:
                acc = self.add("Add", [acc, term], out if last else None, hint=out + "_acc")

    def conv(self, node):
        op, x, out = node.op, node.inputs[0], node.name
        attrs = dict(kernel_shape=list(op.W.shape[2:]), strides=list(op.stride),
                     pads=list(op.pads), dilations=list(op.dilation), group=int(op.groups))
        kind = "Conv"
        if isinstance(op, ConvTranspose):
            kind = "ConvTranspose"
            attrs["output_padding"] = list(op.output_padding)
        self.add(kind, [x, self.const(op.W, out + "_W"), self.const(op.b, out + "_b")], out,
                 **attrs)

    def select(self, node):
        op, x, out = node.op, node.inputs[0], node.name
        n = int(np.prod(self.net.shape_of(x)))
        flat = self.add("Reshape", [x, self.const(np.array([-1, n], dtype=np.int64),
                                                  out + "_flat", np.int64)], hint=out + "_flat")
        index = op.index
        if np.any(index < 0):
            pads = self.const(np.array([0, 0, 0, 1], dtype=np.int64), out + "_pads", np.int64)
            flat = self.add("Pad", [flat, pads, self.const(np.array(op.fill), out + "_fill")],
                            hint=out + "_pad", mode="constant")
            index = np.where(index < 0, n, index)
        self.add("Gather", [flat, self.const(index, out + "_index", np.int64)], out, axis=1)
