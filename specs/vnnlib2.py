"""Reading VNN-LIB 2.0 properties of a single network, via the reference parser (PyPI ``vnnlib``).

A 2.0 query starts with ``(vnnlib-version <2.0>)``, declares its network and tensors, e.g.
``(declare-network N (declare-input X float32 [1,5]) (declare-output Y float32 [1,5]))``, and
asserts over tensor elements ``X[0,3]``. The reference parser checks syntax, scopes, indices
and types; this module walks its syntax tree into the same atoms and ``and``/``or`` formula as
the 1.0 reader (``specs.normal_form``), with each tensor flattened row-major
(``X[i,j]`` of shape ``[p,q]`` is flat input ``i*q + j``). Semantics as in ``specs.vnnlib``:
``==`` is two inequalities, ``<``/``>`` give strict rows (closed for bounding, ``<`` when a
counterexample is confirmed), literals are their nearest float64, linear forms are folded exactly.

Not supported yet (each raises a ``SpecError`` that names it): several networks (and so
``equal-to``/``isomorphic-to``), hidden-node definitions (``declare-hidden``), several input
or output tensors in one network, integer/boolean element types, and ``!=``.
"""
from __future__ import annotations

import json
import logging
import math
import re
from fractions import Fraction

import numpy as np

from .errors import SpecError
from .normal_form import (INPUT, OUTPUT, Atoms, DnfBuilder, Source, build_spec, linear_scale,
                          linear_sum)
from .spec import Spec

log = logging.getLogger(__name__)

_VERSION = re.compile(r"((?:\s|;[^\n]*)*)\(\s*vnnlib-version\s*<(\d+)\.(\d+)>\s*\)")
_LOCATION = re.compile(r"line (\d+), column (\d+)")


def parse_vnnlib2(text: str, name: str, max_terms: int) -> Spec:
    """Parse a VNN-LIB 2.x single-network query into a ``Spec`` (see the module docstring)."""
    src = Source(name, text)
    m = _VERSION.match(text)
    if not m:
        raise src.error(text.find("(vnnlib-version"), "malformed version: expected "
                                                        "(vnnlib-version <2.0>)")
    major, minor = int(m.group(2)), int(m.group(3))
    if major != 2:
        raise src.error(m.start(2) - 1, f"VNN-LIB version <{major}.{minor}> is not supported "
                                        "(1.0 and 2.x are)")
    if minor != 0:  # read as 2.0 (the reference parser would warn on stderr)
        log.info("%s: reading VNN-LIB <%d.%d> as <2.0>", src.where(m.start(2)), major, minor)
        text = text[:m.start(3)] + "0" * (m.end(3) - m.start(3)) + text[m.end(3):]
    try:
        import vnnlib
    except ImportError as e:
        raise SpecError(f"{name}:1:1: reading VNN-LIB 2.0 needs the package vnnlib "
                        f"(pip install vnnlib): {e}") from e
    try:
        query = vnnlib.parse_query_string(text)
    except vnnlib.VNNLibException as e:
        raise _package_error(src, str(e)) from e
    return _Walker(src, vnnlib, query, max_terms).spec()


def _package_error(src: Source, message: str) -> SpecError:
    """A ``SpecError`` at the place the reference parser names (its columns are 0-based)."""
    m = _LOCATION.search(message)
    if m:
        line, col = int(m.group(1)), int(m.group(2)) + 1
        found = message[m.end():].lstrip(": ")
        return SpecError(f"{src.name}:{line}:{col}: syntax error at {found or 'end of file'}"
                         + (" (truncated or unbalanced parentheses?)" if not found.strip("'")
                            or found == "''" else ""))
    try:
        report = json.loads(message)
        first = report["errors"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        return SpecError(f"{src.name}:1:1: {message.strip()}")
    line = int(first.get("line", 1))
    symbol = str(first.get("offendingSymbol", ""))
    col = _column(src.text.split("\n"), line, symbol.split("[")[0]) if symbol else 1
    more = len(report["errors"]) - 1
    text = f"{first.get('message', 'error')}: {first.get('hint', '')} ('{symbol}')"
    if more:
        text += f" and {more} more error{'s' if more > 1 else ''}"
    return SpecError(f"{src.name}:{line}:{col}: {text}")


def _column(lines: list[str], line: int, needle: str) -> int:
    """1-based column of the token ``needle`` on ``line`` (1 when absent)."""
    if not 1 <= line <= len(lines) or not needle:
        return 1
    m = re.search(r"(?:^|(?<=[\s(]))" + re.escape(needle) + r"(?=[\s()\[]|$)", lines[line - 1])
    return m.start() + 1 if m else 1


def _offset(src: Source, pattern: str, k: int = 0) -> int:
    """Offset of the k-th match of ``pattern`` (0 when absent): to locate declarations."""
    found = [m.start() for m in re.finditer(pattern, src.text)]
    return found[k] if k < len(found) else 0


class _Walker:
    """Turns the reference parser's syntax tree into atoms, a formula and a ``Spec``."""

    def __init__(self, src: Source, vnnlib, query, max_terms: int):
        self.src = src
        self.v = vnnlib
        self.query = query
        self.atoms = Atoms(src)
        self.dnf = DnfBuilder(src, max_terms)
        self.lines = src.text.split("\n")
        self.line_start = [0] + [m.end() for m in re.finditer("\n", src.text)]

    def spec(self) -> Spec:
        net = self._network()
        x, y = net.inputs[0], net.outputs[0]
        self.names = {INPUT: x.name, OUTPUT: y.name}
        self.shapes = {INPUT: tuple(x.shape), OUTPUT: tuple(y.shape)}
        n_in = int(np.prod(self.shapes[INPUT], dtype=np.int64))
        n_out = int(np.prod(self.shapes[OUTPUT], dtype=np.int64))
        asserts = [self._bool(a.expr) for a in self.query.assertions]
        terms = self.dnf.terms(("and", 0, asserts))
        return build_spec(self.atoms, self.dnf, terms, n_in, n_out, self._name, 0, self.src.name)

    def _network(self):
        nets = self.query.networks
        if len(nets) != 1:
            raise self.src.error(_offset(self.src, r"\(\s*declare-network", 1),
                                 f"several networks ({', '.join(n.name for n in nets)}) are not "
                                 "supported yet: only single-network VNN-LIB 2.0 properties")
        net = nets[0]
        if net.hidden:
            raise self.src.error(_offset(self.src, r"\(\s*declare-hidden"),
                                 "hidden-node definitions (declare-hidden "
                                 f"{net.hidden[0].name} ...) are not supported yet")
        if net.equal_to or net.isometric_to:
            raise self.src.error(_offset(self.src, r"\(\s*declare-network"),
                                 "network equivalence (equal-to/isomorphic-to) is not supported "
                                 "yet")
        for what, defs, pattern in (("input", net.inputs, r"\(\s*declare-input"),
                                    ("output", net.outputs, r"\(\s*declare-output")):
            if len(defs) != 1:
                raise self.src.error(_offset(self.src, pattern, 1),
                                     f"several {what} tensors ({', '.join(d.name for d in defs)})"
                                     " are not supported yet: one input and one output tensor")
            dtype = str(defs[0]).split()[2]
            if dtype != "Real" and not re.fullmatch(r"b?float\w*", dtype):
                raise self.src.error(_offset(self.src, pattern),
                                     f"the {what} {defs[0].name} has element type {dtype}; only "
                                     "Real and floating-point types are supported")
        return net

    def _name(self, var) -> str:
        kind, i = var
        shape = self.shapes[kind]
        idx = np.unravel_index(i, shape) if shape else ()
        return f"{self.names[kind]}[{','.join(str(int(k)) for k in idx)}]"

    def _pos(self, expr) -> int:
        """Offset of the first variable or literal of ``expr`` (its line; column searched)."""
        v = self.v
        stack = [expr]
        while stack:
            e = stack.pop()
            if isinstance(e, v.Var) or isinstance(e, v.Literal):
                line = e.line
                needle = e.name if isinstance(e, v.Var) else e.lexeme
                start = self.line_start[min(max(line, 1), len(self.line_start)) - 1]
                return start + _column(self.lines, line, needle) - 1
            if isinstance(e, v.Comparison):
                stack += [e.rhs, e.lhs]
            else:
                stack.extend(reversed(e.children()))
        return 0

    def _bool(self, e):
        v = self.v
        if isinstance(e, v.And):
            return ("and", self._pos(e), [self._bool(a) for a in e.args])
        if isinstance(e, v.Or):
            return ("or", self._pos(e), [self._bool(a) for a in e.args])
        lhs, rhs = e.lhs, e.rhs
        pos = self._pos(lhs)
        if isinstance(e, v.LessEqual):
            return self._le(lhs, rhs, pos)
        if isinstance(e, v.LessThan):
            return self._le(lhs, rhs, pos, strict=True)
        if isinstance(e, v.GreaterEqual):
            return self._le(rhs, lhs, pos)
        if isinstance(e, v.GreaterThan):
            return self._le(rhs, lhs, pos, strict=True)
        if isinstance(e, v.Equal):
            return ("and", pos, [self._le(lhs, rhs, pos), self._le(rhs, lhs, pos)])
        if isinstance(e, v.NotEqual):
            raise self.src.error(pos, "'!=' is not supported (it is a disjunction of strict "
                                      "inequalities); write it as (or (< a b) (> a b))")
        raise self.src.error(pos, f"unsupported formula {str(e).strip()}")

    def _le(self, lhs, rhs, pos: int, strict: bool = False) -> int:
        """The atom ``lhs <= rhs`` (``lhs < rhs`` when ``strict``)."""
        v = self.v
        if isinstance(lhs, v.Var) and isinstance(rhs, v.Literal):  # fast path: x <= c
            kind, i = self._var(lhs, pos)
            value = self._literal(rhs, pos)
            if kind == INPUT:
                return self.atoms.bound(i, True, value, pos, strict)
            return self.atoms.row(OUTPUT, (i,), (1.0,), value, pos, strict)
        if isinstance(lhs, v.Literal) and isinstance(rhs, v.Var):  # fast path: c <= x
            kind, i = self._var(rhs, pos)
            value = self._literal(lhs, pos)
            if kind == INPUT:
                return self.atoms.bound(i, False, value, pos, strict)
            return self.atoms.row(OUTPUT, (i,), (-1.0,), -value, pos, strict)
        la, ca = self._linear(lhs, pos)
        lb, cb = self._linear(rhs, pos)
        coefs = dict(la)
        for var, c in lb.items():
            coefs[var] = coefs.get(var, 0) - c
        return self.atoms.linear(coefs, cb - ca, pos, self._name, strict)

    def _var(self, e, pos: int) -> tuple[int, int]:
        """``(kind, flat row-major index)`` of a tensor element."""
        kind = e.kind
        if kind == self.v.SymbolKind.Input:
            k = INPUT
        elif kind == self.v.SymbolKind.Output:
            k = OUTPUT
        else:
            raise self.src.error(pos, f"variable {e.name} is not a network input or output")
        flat = 0
        for i, n in zip(e.indices, self.shapes[k]):
            flat = flat * n + i
        return k, flat

    def _literal(self, e, pos: int) -> float:
        value = float(e.lexeme)
        if not math.isfinite(value):
            raise self.src.error(pos, f"the number {e.lexeme} is out of the float64 range")
        return value

    def _linear(self, e, pos: int) -> tuple[dict, Fraction]:
        """A term as ({(kind, flat index): coefficient}, constant), exactly."""
        v = self.v
        if isinstance(e, v.Var):
            return {self._var(e, pos): Fraction(1)}, Fraction(0)
        if isinstance(e, v.Literal):
            return {}, Fraction(self._literal(e, pos))
        if isinstance(e, v.Negate):
            return linear_scale(self._linear(e.expr, pos), -1)
        if isinstance(e, v.Plus):
            return linear_sum([self._linear(a, pos) for a in e.args])
        if isinstance(e, v.Minus):
            head = self._linear(e.head, pos)
            rest = [linear_scale(self._linear(a, pos), -1) for a in e.rest]
            return linear_sum([head] + rest)
        if isinstance(e, v.Multiply):
            factor, term = Fraction(1), None
            for a in e.args:
                lin, c = self._linear(a, pos)
                if lin:
                    if term is not None:
                        raise self.src.error(pos, "non-linear term: a product of variables")
                    term = (lin, c)
                else:
                    factor *= c
            return linear_scale(term, factor) if term is not None else ({}, factor)
        raise self.src.error(pos, f"unsupported term {str(e).strip()}")

