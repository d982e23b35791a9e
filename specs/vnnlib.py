"""Reading VNN-LIB properties: version 1.0 (here, by hand) and 2.0 (via ``specs.vnnlib2``).

VNN-LIB 1.0 is the SMT-LIB subset used in VNN-COMP: ``(declare-const X_i Real)`` for the flat
inputs, ``(declare-const Y_j Real)`` for the flat outputs, and ``(assert F)`` where ``F`` nests
``and``/``or`` over comparisons ``<=``, ``>=``, ``<``, ``>``, ``=`` of linear terms (numbers,
variables, ``+``, ``-``, ``*`` by constants, nested). The property holds iff no input
satisfying every assert reaches an output satisfying them too; see ``specs.normal_form`` for how
the asserts become ``Case``s.

Semantics chosen, and why they are safe for proofs:

* ``=`` is two inequalities ``<=`` and ``>=``.
* Strict ``<`` and ``>`` give rows flagged ``strict`` (``spec.Conjunction.strict``,
  ``spec.InputSet.strict``): bounding code may read them as ``<=`` (a larger set: ``unsat``
  still proves the written property), while the membership tests that confirm a counterexample
  apply ``<``, so a point exactly on a strict boundary is not reported as a violation.
* A numeric literal is the float64 nearest to it; linear forms are folded exactly and their
  right-hand sides rounded outward (``normal_form``).

Errors (unbalanced parentheses, a truncated file, an undeclared variable, an unknown symbol, a
bad number, a constraint mixing inputs and outputs, an input without a finite lower or upper
bound) raise ``SpecError("FILE:LINE:COL: message")``.
"""
from __future__ import annotations

import gzip
import logging
import math
import os
import re
import sys
import zlib
from fractions import Fraction

from .errors import SpecError
from .normal_form import (DEFAULT_MAX_TERMS, FALSE, INPUT, OUTPUT, TRUE, Atoms, DnfBuilder,
                          Source, build_spec, linear_scale, linear_sum)
from .spec import Spec

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"(?:\s|;[^\n]*)*([()]|[^\s();]+)")
_COMMENT = re.compile(r";[^\n]*")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_VAR = re.compile(r"([XY])_(0|[1-9]\d*)")
_VERSION = re.compile(r"(?:\s|;[^\n]*)*\(\s*vnnlib-version\b")
_IGNORED = {"check-sat", "get-model", "exit", "set-logic", "set-info", "set-option"}
_COMPARE = {"<=", ">=", "<", ">", "="}


def read_vnnlib(path, n_inputs: int | None = None, n_outputs: int | None = None,
                max_terms: int = DEFAULT_MAX_TERMS) -> Spec:
    """Read a VNN-LIB 1.0 or 2.0 file (``.gz`` too) into a ``Spec``.

    ``n_inputs``/``n_outputs``: the flat sizes of the model's input and output, when known; a
    property that declares other sizes raises ``SpecError`` (model/property shape mismatch).
    ``max_terms`` bounds the disjunctive normal form (see ``normal_form.DnfBuilder``).
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            data = f.read()
        if name.endswith(".gz"):
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise SpecError(f"{name}: cannot read the property: {e}") from e
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise SpecError(f"{name}:{line}:{col}: not UTF-8 text ({e.reason})") from e
    return parse_vnnlib(text, name, n_inputs, n_outputs, max_terms)


def parse_vnnlib(text: str, name: str = "<string>", n_inputs: int | None = None,
                 n_outputs: int | None = None, max_terms: int = DEFAULT_MAX_TERMS) -> Spec:
    """Parse VNN-LIB text (version detected from a leading ``(vnnlib-version <M.m>)``)."""
    try:
        if _VERSION.match(text):
            from .vnnlib2 import parse_vnnlib2
            spec = parse_vnnlib2(text, name, max_terms)
        else:
            spec = _Reader1(Source(name, text), max_terms).read()
    except RecursionError as e:
        raise SpecError(f"{name}:1:1: formulas nested too deeply to read "
                        f"(deeper than Python's recursion limit {sys.getrecursionlimit()})") from e
    _check_sizes(spec, name, n_inputs, n_outputs)
    return spec


def _check_sizes(spec: Spec, name: str, n_inputs, n_outputs):
    for what, want, have in (("inputs", n_inputs, spec.n_inputs),
                             ("outputs", n_outputs, spec.n_outputs)):
        if want is not None and want != have:
            raise SpecError(f"{name}:1:1: the property declares {have} {what} but the model has "
                            f"{want} (flat sizes): property and model do not match")


class _Reader1:
    """The VNN-LIB 1.0 reader: tokens -> s-expressions -> atoms and formula -> ``Spec``."""

    def __init__(self, source: Source, max_terms: int):
        self.src = source
        # the tokens of _TOKEN, found faster (offsets come from _TOKEN when a message needs them)
        self.toks = _COMMENT.sub("", source.text).replace("(", " ( ").replace(")", " ) ").split()
        self._offsets = None
        source.resolve = self._offset
        self.atoms = Atoms(source)
        self.dnf = DnfBuilder(source, max_terms)
        self.declared: dict[str, tuple[int, int]] = {}  # name -> (kind, index)
        self.numbers: dict[str, float] = {}  # token -> value, for the numbers seen
        self.decl_pos: dict[tuple[int, int], int] = {}

    # -- s-expressions: a list is [k, child, ...] with k the number of its '(' token; a leaf is
    # the number of its token (self.toks[k]); positions are token numbers (see Source.resolve)
    def _offset(self, k: int) -> int:
        if self._offsets is None:
            self._offsets = [m.start(1) for m in _TOKEN.finditer(self.src.text)]
        if k < 0:
            return 0
        return self._offsets[k] if k < len(self._offsets) else len(self.src.text)

    def _sexpr(self, i: int) -> tuple[list, int]:
        """The s-expression whose '(' is token ``i``, and the number of the token after it."""
        toks = self.toks
        top: list = [-1]
        cur = top
        stack = []
        for k in range(i, len(toks)):
            tok = toks[k]
            if tok == "(":
                node = [k]
                cur.append(node)
                stack.append(cur)
                cur = node
            elif tok == ")":
                cur = stack.pop()
                if not stack:
                    return top[1], k + 1
            else:
                cur.append(k)
        line, _ = self.src.line_col(len(toks))
        raise self.src.error(i, "unbalanced parentheses: this '(' is never closed "
                                f"(the file ends at line {line}; truncated?)")

    def read(self) -> Spec:
        asserts = []
        toks = self.toks
        n = len(toks)
        i = 0
        while i < n:
            tok = toks[i]
            if tok != "(":
                if tok == ")":
                    raise self.src.error(i, "unbalanced parentheses: this ')' closes nothing")
                raise self.src.error(i, f"expected '(' at top level, found '{tok}'")
            # fast paths for the bulk of VNN-COMP files: (assert (OP A B)), (declare-const V S)
            if (i + 7 < n and toks[i + 1] == "assert" and toks[i + 2] == "("
                    and toks[i + 6] == ")" and toks[i + 7] == ")" and toks[i + 3] in _COMPARE
                    and toks[i + 4] not in "()" and toks[i + 5] not in "()"):
                asserts.append(self._compare(toks[i + 3], i + 4, i + 5, i + 2))
                i += 8
                continue
            if (i + 4 < n and toks[i + 1] == "declare-const" and toks[i + 4] == ")"
                    and toks[i + 2] not in "()" and toks[i + 3] not in "()"):
                self._declare(i, [i + 2, i + 3])
                i += 5
                continue
            form, i = self._sexpr(i)
            if len(form) < 2 or isinstance(form[1], list):
                raise self.src.error(form[0], "expected a command such as (assert ...) or "
                                              "(declare-const ...)")
            cmd = toks[form[1]]
            if cmd == "declare-const":
                self._declare(form[0], form[2:])
            elif cmd == "declare-fun":
                if len(form) != 5 or not isinstance(form[3], list) or len(form[3]) != 1:
                    raise self.src.error(form[0], "only (declare-fun NAME () Real) is supported")
                self._declare(form[0], [form[2], form[4]])
            elif cmd == "assert":
                if len(form) != 3:
                    raise self.src.error(form[0], "(assert F) takes exactly one formula")
                asserts.append(self._bool(form[2]))
            elif cmd in _IGNORED:
                log.debug("%s: ignoring (%s ...)", self.src.where(form[0]), cmd)
            else:
                raise self.src.error(form[1], f"unknown command '{cmd}'")
        n_in = self._count(INPUT)
        n_out = self._count(OUTPUT)
        if not n_in or not n_out:
            raise self.src.error(-1, "the property declares no "
                                 f"{'inputs (X_0 ...)' if not n_in else 'outputs (Y_0 ...)'}; "
                                 "empty or truncated file?")
        terms = self.dnf.terms(("and", 0, asserts))
        return build_spec(self.atoms, self.dnf, terms, n_in, n_out, self._name, 0, self.src.name)

    def _declare(self, at: int, args):
        if len(args) != 2 or isinstance(args[0], list) or isinstance(args[1], list):
            raise self.src.error(at, "expected (declare-const NAME Real)")
        pos, spos = args
        name, sort = self.toks[pos], self.toks[spos]
        m = _VAR.fullmatch(name)
        if not m:
            raise self.src.error(pos, f"unsupported variable name '{name}': VNN-LIB 1.0 "
                                      "properties name the flat inputs X_i and outputs Y_i")
        if sort != "Real":
            raise self.src.error(spos, f"'{name}' has sort '{sort}'; only Real is supported")
        if name in self.declared:
            raise self.src.error(pos, f"'{name}' is declared twice")
        var = (INPUT if m.group(1) == "X" else OUTPUT, int(m.group(2)))
        self.declared[name] = var
        self.decl_pos[var] = pos

    def _count(self, kind: int) -> int:
        idx = sorted(i for k, i in self.declared.values() if k == kind)
        for expect, i in enumerate(idx):
            if i != expect:
                letter = "X" if kind == INPUT else "Y"
                raise self.src.error(self.decl_pos[(kind, i)],
                                     f"{letter}_{i} is declared but {letter}_{expect} is not: "
                                     f"the {letter} variables must be {letter}_0 .. {letter}_n-1")
        return len(idx)

    @staticmethod
    def _name(var) -> str:
        return f"{'X' if var[0] == INPUT else 'Y'}_{var[1]}"

    # -- formulas
    def _bool(self, node):
        if type(node) is int:
            tok = self.toks[node]
            if tok == "true":
                return TRUE
            if tok == "false":
                return FALSE
            raise self.src.error(node, f"expected a formula ((and ...), (or ...), (<= ...)), "
                                       f"found '{tok}'")
        if len(node) < 2 or type(node[1]) is list:
            raise self.src.error(node[0], "expected a formula: (and ...), (or ...), (<= a b), ...")
        op = self.toks[node[1]]
        if op in _COMPARE:
            if len(node) == 4:
                return self._compare(op, node[2], node[3], node[0])
            if len(node) < 4:
                raise self.src.error(node[0], f"({op} ...) needs at least two arguments")
            return ("and", node[0], [self._compare(op, a, b, node[0])
                                     for a, b in zip(node[2:], node[3:])])
        if op == "and" or op == "or":
            return (op, node[0], [self._bool(child) for child in node[2:]])
        raise self.src.error(node[1], f"unknown symbol '{op}' (expected and, or, <=, >=, <, "
                                      ">, =)")

    def _number(self, k: int) -> float:
        """The leaf ``k`` as a finite float64, or the ``SpecError`` that says what it is."""
        tok = self.toks[k]
        value = self.numbers.get(tok)
        if value is not None:
            return value
        if _NUMBER.fullmatch(tok):
            value = float(tok)
            if not math.isfinite(value):
                raise self.src.error(k, f"the number {tok} is out of the float64 range")
            self.numbers[tok] = value
            return value
        if _VAR.fullmatch(tok):
            raise self.src.error(k, f"undeclared variable '{tok}'")
        if tok[0].isdigit() or tok[0] in "+-.":
            raise self.src.error(k, f"bad number '{tok}'")
        raise self.src.error(k, f"unknown symbol '{tok}'")

    def _compare(self, op: str, a, b, pos: int):
        """The formula ``a op b``: one atom id (``=``: an ``and`` of two)."""
        if op == "=":
            return ("and", pos, [self._compare("<=", a, b, pos), self._compare(">=", a, b, pos)])
        strict = op == "<" or op == ">"
        if op == ">=" or op == ">":
            a, b = b, a  # a >= b  <=>  b <= a
        if type(a) is int and type(b) is int:  # fast path: a variable and a number
            va = self.declared.get(self.toks[a])
            vb = self.declared.get(self.toks[b])
            if va is not None and vb is None:  # v <= c
                if va[0] == INPUT:
                    return self.atoms.bound(va[1], True, self._number(b), pos, strict)
                return self.atoms.row(OUTPUT, (va[1],), (1.0,), self._number(b), pos, strict)
            if va is None and vb is not None:  # c <= v  <=>  -v <= -c
                if vb[0] == INPUT:
                    return self.atoms.bound(vb[1], False, self._number(a), pos, strict)
                return self.atoms.row(OUTPUT, (vb[1],), (-1.0,), -self._number(a), pos, strict)
        la, ca = self._linear(a)
        lb, cb = self._linear(b)
        coefs = dict(la)
        for v, c in lb.items():
            coefs[v] = coefs.get(v, 0) - c
        return self.atoms.linear(coefs, cb - ca, pos, self._name, strict)

    def _linear(self, node) -> tuple[dict, Fraction]:
        """A linear term as ({(kind, index): coefficient}, constant), exactly (rationals)."""
        if type(node) is int:
            var = self.declared.get(self.toks[node])
            if var is not None:
                return {var: Fraction(1)}, Fraction(0)
            return {}, Fraction(self._number(node))
        if len(node) < 3 or isinstance(node[1], list):
            raise self.src.error(node[0], "expected a term: a number, a variable, (+ ...), "
                                          "(- ...) or (* ...) with at least one argument")
        op = self.toks[node[1]]
        args = [self._linear(child) for child in node[2:]]
        if op == "+":
            return linear_sum(args)
        if op == "-":
            if len(args) == 1:
                return linear_scale(args[0], -1)
            return linear_sum([args[0]] + [linear_scale(t, -1) for t in args[1:]])
        if op == "*":
            factor = Fraction(1)
            term = None
            for lin, const in args:
                if lin:
                    if term is not None:
                        raise self.src.error(node[0], "non-linear term: a product of variables")
                    term = (lin, const)
                else:
                    factor *= const
            return linear_scale(term, factor) if term is not None else ({}, factor)
        raise self.src.error(node[1], f"unknown symbol '{op}' in a term (expected +, -, *)")

