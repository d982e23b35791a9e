"""ONNX in: ``load_onnx(path) -> Network``.

The batch convention. The model's one variable input has an ONNX shape; its first dimension is
the batch axis if it is symbolic, or if it is 1 and the rank is >= 2. The ``Network``'s
``input_shape`` drops that axis; a rank-1 input such as ``[1]`` or ``[5]`` has no batch axis and
keeps its full shape. Every op is then imported per sample: ONNX shapes are computed with batch
size 1 (the "full" shape of a value) and each value is held in the ``Network`` in its *sample
view*, the full shape without its leading 1 when the model has a batch axis. An op that acts on
that size-1 axis is imported on the full view instead (a size-1 axis moves no data), so the
``Network`` computes, per sample, exactly what the ONNX model computes at batch size 1 — the
VNN-COMP semantics.

Values whose inputs are all constants are folded at import with ONNX's reference evaluator
(``onnx.reference``), so any op may appear in constant subgraphs; ``Shape`` of a variable is a
constant since shapes are static. Weights may be initializers, ``Constant`` nodes, or graph
inputs that have an initializer (the ACAS Xu files): the model's input is the one graph input
without an initializer. The op handlers live in ``onnx_handlers.py``, one row per ONNX op type.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelError, UnsupportedOpError
from .graph import Network, Node
from .ops import Op, Reshape, Select

log = logging.getLogger(__name__)

#: onnx.TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16 (onnx itself is imported when used)
FLOAT_TYPES = {1, 10, 11, 16}


def read_model(path) -> onnx.ModelProto:
    """The parsed ONNX model at ``path``; ``ModelError`` naming the file if it cannot be read."""
    import onnx  # noqa: PLC0415 (import cost only when used)
    from google.protobuf.message import DecodeError  # noqa: PLC0415

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    try:
        return onnx.load(str(path))
    except (DecodeError, OSError, ValueError, onnx.checker.ValidationError) as e:
        raise ModelError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from e


def load_onnx(path, normalize: bool = True) -> Network:
    """Import the ONNX model at ``path`` as a float64 ``Network`` (see the module docstring for
    the batch convention). ``normalize`` runs the passes of ``normalize.py`` (fusions that keep
    the function). Raises ``ModelError`` (unreadable file, several variable inputs or outputs)
    or ``UnsupportedOpError`` (naming the op type, node and a hint)."""
    model = read_model(path)
    try:
        net = import_model(model)
    except ModelError as e:
        raise type(e)(f"{path}: {e}") from e
    if normalize:
        from .normalize import normalize_network
        net = normalize_network(net)
    return net


def import_model(model: onnx.ModelProto) -> Network:
    """The ``Network`` of a parsed ONNX model (no normalisation)."""
    return _Importer(model).run()


def model_opset(model: onnx.ModelProto) -> int:
    """The model's version of the default ONNX domain."""
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    raise ModelError("the model imports no version of the default ONNX op set")


def input_dims(value_info) -> list:
    """The declared dims of a graph input/output: ints, or the symbol (str) / None if unknown."""
    t = value_info.type
    if not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in t.tensor_type.shape.dim]


def has_batch_axis(dims: list) -> bool:
    """The batch convention: the first dim is the batch axis if it is symbolic, or if it is 1 and
    the rank is >= 2."""
    return len(dims) >= 1 and (not isinstance(dims[0], int) or (dims[0] == 1 and len(dims) >= 2))


@dataclass(frozen=True)
class Var:
    """A variable ONNX value: the ``Network`` value ``net`` holds it in its sample view of the
    ONNX shape ``full`` (computed at batch size 1)."""

    net: str
    full: tuple


def run_node(node: onnx.NodeProto, inputs: list, opset: int) -> list[np.ndarray]:
    """Evaluate one ONNX node with the reference evaluator. ``inputs`` lines up with
    ``node.input`` (None for an omitted optional input)."""
    import onnx  # noqa: PLC0415
    from onnx import helper  # noqa: PLC0415
    from onnx.reference import ReferenceEvaluator  # noqa: PLC0415

    feeds = {name: np.asarray(value) for name, value in zip(node.input, inputs) if name}
    try:
        graph = helper.make_graph(
            [node], "fold",
            [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
             for k, v in feeds.items()],
            [onnx.ValueInfoProto(name=o) for o in node.output if o])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        return ReferenceEvaluator(model).run(None, feeds)
    except (ModelError, MemoryError):
        raise
    except Exception as e:  # any failure of the evaluator is reported as a model error
        raise ModelError(f"{describe(node)} could not be evaluated "
                         f"({type(e).__name__}: {e})") from e


def describe(node: onnx.NodeProto) -> str:
    """``op_type 'name'`` of an ONNX node, for messages."""
    return f"{node.op_type} node {node.name or node.output[0]!r}"


class _Importer:
    """Walks the ONNX graph once, folding constants and emitting ``Network`` nodes."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.graph = model.graph
        self.opset = model_opset(model)
        self.consts: dict[str, np.ndarray] = {}
        self.vars: dict[str, Var] = {}
        self.nodes: list[Node] = []
        self.shapes: dict[str, tuple] = {}
        self.batch = False
        self._counter = 0
        self.consumed = {i for n in self.graph.node for i in n.input} | {
            o.name for o in self.graph.output}

    # -- the walk -----------------------------------------------------------------------------
    def run(self) -> Network:
        from onnx import numpy_helper  # noqa: PLC0415

        from .onnx_handlers import HANDLERS, hint_for

        for init in self.graph.initializer:
            self.consts[init.name] = numpy_helper.to_array(init)
        self._add_input()
        for node in self.graph.node:
            if node.domain not in ("", "ai.onnx"):
                raise UnsupportedOpError(f"{describe(node)} is in the op domain {node.domain!r}; "
                                         f"only the default ONNX domain is supported")
            present = [i for i in node.input if i]
            for name in present:
                if name not in self.consts and name not in self.vars:
                    raise ModelError(f"{describe(node)} reads {name!r}, which no earlier node "
                                     f"or initializer defines (a truncated or unsorted graph?)")
            if all(name in self.consts for name in present):
                outs = run_node(node, [self.consts[i] if i else None for i in node.input],
                                self.opset)
                for name, value in zip(node.output, outs):
                    if name:
                        self.consts[name] = np.asarray(value)
                continue
            handler = HANDLERS.get(node.op_type)
            if handler is None:
                raise UnsupportedOpError(f"{describe(node)}: the op {node.op_type} is not "
                                         f"supported on variable inputs; {hint_for(node.op_type)}")
            try:
                handler(self, node)
            except ValueError as e:  # an op's own check of its attributes and shapes
                raise ModelError(f"{describe(node)}: {e}") from e
        return self._finish()

    def _add_input(self):
        inits = {i.name for i in self.graph.initializer}
        inputs = [i for i in self.graph.input if i.name not in inits]
        if len(inputs) != 1:
            raise ModelError(f"the model has {len(inputs)} inputs without an initializer "
                             f"({', '.join(i.name for i in inputs)}); exactly one is supported")
        inp = inputs[0]
        dims = input_dims(inp)
        if dims is None:
            raise ModelError(f"the input {inp.name!r} has no declared tensor shape")
        if inp.type.tensor_type.elem_type not in FLOAT_TYPES:
            raise ModelError(f"the input {inp.name!r} is not a floating-point tensor")
        self.batch = has_batch_axis(dims)
        if any(not isinstance(d, int) for d in dims[1 if self.batch else 0:]):
            raise ModelError(f"the input {inp.name!r} has a symbolic dimension besides the "
                             f"batch axis: {dims}")
        full = tuple(1 if self.batch and k == 0 else int(d) for k, d in enumerate(dims))
        self.input_name = inp.name
        self.input_full = full
        self.shapes[inp.name] = self.sample_of(full)
        self.vars[inp.name] = Var(inp.name, full)

    def _finish(self) -> Network:
        outs = [o for o in self.graph.output if o.name not in self.consts]
        if len(outs) != 1:
            raise ModelError(f"the model has {len(outs)} outputs that are not constants "
                             f"({', '.join(o.name for o in outs)}); exactly one is supported")
        out = outs[0]
        if out.name not in self.vars:
            raise ModelError(f"the output {out.name!r} is not computed by the graph")
        var = self.vars[out.name]
        dims = input_dims(out)
        if dims is not None and len(dims) > 0 and all(isinstance(d, int) for d in dims):
            if int(np.prod(dims)) != int(np.prod(var.full)):
                raise ModelError(f"the output {out.name!r} is declared {dims} but computes "
                                 f"{list(var.full)}")
        used = self._used(var.net)
        nodes = [n for n in self.nodes if n.name in used]
        return Network(self.input_name, self.shapes[self.input_name], nodes, var.net)

    def _used(self, output: str) -> set:
        used = {output}
        for n in reversed(self.nodes):
            if n.name in used:
                used.update(n.inputs)
        return used

    # -- values -------------------------------------------------------------------------------
    def sample_of(self, full: tuple) -> tuple:
        """The sample view of an ONNX shape: without its leading 1 when the model is batched."""
        full = tuple(int(d) for d in full)
        return full[1:] if self.batch and len(full) >= 1 and full[0] == 1 else full

    def is_const(self, name: str) -> bool:
        return name in self.consts

    def const(self, name: str, node=None) -> np.ndarray:
        if name not in self.consts:
            raise UnsupportedOpError(f"{describe(node) if node else name}: input {name!r} must "
                                     f"be a constant here (it depends on the model input)")
        return self.consts[name]

    def var(self, name: str) -> Var:
        return self.vars[name]

    def unique(self, hint: str) -> str:
        base = re.sub(r"\s+", "_", hint) or "v"
        name = base
        while name in self.shapes:
            self._counter += 1
            name = f"{base}#{self._counter}"
        return name

    def emit(self, op: Op, inputs: list[str], hint: str, source: str = "") -> str:
        """Append a node applying ``op`` to the Network values ``inputs``; returns its name."""
        in_shapes = [self.shapes[i] for i in inputs]
        if hasattr(op, "output_shape"):
            shape = tuple(op.output_shape(in_shapes[0]))
        else:
            shape = op.forward(*(np.zeros((1,) + s) for s in in_shapes)).shape[1:]
        name = self.unique(hint)
        self.nodes.append(Node(name, op, tuple(inputs), tuple(int(d) for d in shape), source))
        self.shapes[name] = tuple(int(d) for d in shape)
        return name

    def view(self, net: str, shape: tuple, source: str = "") -> str:
        """The Network value ``net`` reshaped (row-major) to ``shape`` (a Reshape if needed)."""
        shape = tuple(int(d) for d in shape)
        if self.shapes[net] == shape:
            return net
        if int(np.prod(self.shapes[net])) != int(np.prod(shape)):
            raise ModelError(f"internal: cannot view {net!r} of shape {self.shapes[net]} as "
                             f"{shape}")
        return self.emit(Reshape(shape), [net], f"{net}/reshape", source)

    def full_view(self, var: Var, source: str = "") -> str:
        """``var`` viewed in its full ONNX shape (the leading batch 1 kept)."""
        return self.view(var.net, var.full, source)

    def put(self, name: str, net: str, full: tuple, source: str = "") -> None:
        """Register the ONNX value ``name`` as the Network value ``net`` (any view of ``full``),
        re-viewed to its sample view."""
        full = tuple(int(d) for d in full)
        self.vars[name] = Var(self.view(net, self.sample_of(full), source), full)

    def sample_axis(self, var: Var, axis: int, node=None) -> tuple[str, int]:
        """(Network value, axis in it) for the ONNX ``axis`` of ``var``: the sample view, or the
        full view when the axis is the leading batch 1."""
        rank = len(var.full)
        a = axis + rank if axis < 0 else axis
        if not 0 <= a < rank:
            raise ModelError(f"{describe(node) if node else ''}: axis {axis} out of range for "
                             f"rank {rank}")
        offset = rank - len(self.shapes[var.net])
        if a < offset:
            return self.full_view(var), a
        return var.net, a - offset

    def sample_const(self, c: np.ndarray, full: tuple) -> np.ndarray:
        """A constant that broadcasts against the ONNX shape ``full``, laid out against its
        sample view: rank raised to ``len(full)``, the leading batch axis (size 1) dropped."""
        c = np.asarray(c, dtype=np.float64)
        c = c.reshape((1,) * (len(full) - c.ndim) + c.shape)
        if len(self.sample_of(full)) < len(full):
            if c.shape[0] != 1:
                raise UnsupportedOpError(f"a constant of shape {c.shape} broadcasts over the "
                                         f"batch axis")
            c = c[0]
        return c

    def select(self, var: Var, index_full: np.ndarray, hint: str, source: str,
               fill: float = 0.0) -> tuple[str, tuple]:
        """A Select of ``var`` by flat indices into its full shape (equal to flat indices into
        any of its views), laid out as ``index_full``; -1 entries take ``fill``. Returns the
        Network value and the ONNX shape of the result."""
        full = tuple(int(d) for d in index_full.shape)
        index = np.asarray(index_full, dtype=np.int64).reshape(self.sample_of(full))
        return self.emit(Select(index, float(fill)), [var.net], hint, source), full
