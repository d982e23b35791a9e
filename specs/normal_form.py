"""From the atoms and ``and``/``or`` tree of a property to a ``Spec``: disjunctive normal form.

Both readers (VNN-LIB 1.0 and 2.0) hand over the same thing: a table of *atoms*, each a linear
inequality ``sum_k a_k v_k <= r`` (or ``< r``, *strict*) over either the inputs or the outputs
(never both), and a formula tree of ``and``/``or`` nodes over them. The conjunction of all
asserts is put in disjunctive normal form (DNF)

    and(F_1, ..., F_k) = or over (t_1, ..., t_k) in DNF(F_1) x ... x DNF(F_k) of t_1 + ... + t_k

without multiplying out naively: the pure conjunctions among the ``F_i`` (one DNF term each)
are factored out and shared as one *chunk* of atoms by every term, so 1568 box atoms next to an
``or`` of 9 output terms give 9 terms that share one chunk (not 9 copies of 1568 atoms). A
product with more than ``max_terms`` terms is refused with a ``SpecError``.

Each DNF term splits into an input part (a box ``l <= x <= u`` plus rows ``A x <= b``) and an
output part (rows ``C y <= d``, one ``Conjunction``). Terms with the same input set form one
``Case``; cases keep the order in which their input set first appears, conjunctions the order
of their terms.

Exactness. Numbers are float64; every linear form is folded in exact rational arithmetic, each
atom's right-hand side is rounded *up* (the set can only grow, never shrink), and a coefficient
that float64 cannot hold exactly is refused. An input atom with a single nonzero coefficient,
``a x_i <= r``, becomes a box bound ``x_i <= r/a`` (``a > 0``) or ``x_i >= r/a`` (``a < 0``)
rounded outward; when the quotient is not exact the row itself is kept in ``A`` as well, so the
input set is exactly the written one.

Strictness. A strict atom gives a row flagged ``strict`` (``Conjunction.strict``,
``InputSet.strict``) with the same data as the non-strict one, right-hand side rounded up as
above; ``=`` gives two non-strict rows. A non-strict atom whose right-hand side ``r`` had to be
rounded up to ``f > r`` is flagged strict too: ``sum <= r`` implies ``sum < f``, and a float64
value ``s`` of the sum has ``s <= r`` iff ``s < f`` (no float lies in ``(r, f)``), so a
counterexample check never accepts a point with ``s == f`` that the written atom excludes;
proofs, which refute the closed row, are unaffected. A strict input atom on one variable also
bounds the (closed) box as above, and is always kept as a row of ``A`` as well, so
``InputSet.contains`` excludes the boundary. ``normalize`` applies the same rules to a ``Spec``.
"""
from __future__ import annotations

import itertools
import math
import sys
from fractions import Fraction

import numpy as np

from .errors import SpecError
from .spec import Case, Conjunction, InputSet, Spec

#: Atom ids of the constant formulas (real atoms have ids >= 0).
TRUE = -1
FALSE = -2
#: Default limit on the number of DNF terms (see ``DnfBuilder``).
DEFAULT_MAX_TERMS = 100_000

INPUT, OUTPUT = 0, 1


class Source:
    """Text of a property with its name, for ``NAME:LINE:COL:`` messages.

    A position is a character offset, or whatever ``resolve`` maps to one (the 1.0 reader uses
    token numbers and finds their offsets only when a message needs them).
    """

    def __init__(self, name: str, text: str, resolve=None):
        self.name = name
        self.text = text
        self.resolve = resolve

    def line_col(self, pos: int) -> tuple[int, int]:
        """1-based line and column of a position."""
        offset = self.resolve(pos) if self.resolve is not None else pos
        offset = max(0, min(offset, len(self.text)))
        line = self.text.count("\n", 0, offset) + 1
        col = offset - (self.text.rfind("\n", 0, offset) + 1) + 1
        return line, col

    def where(self, pos: int) -> str:
        line, col = self.line_col(pos)
        return f"{self.name}:{line}:{col}"

    def error(self, pos: int, message: str) -> SpecError:
        return SpecError(f"{self.where(pos)}: {message}")


def round_up(r: Fraction) -> float:
    """The least float64 ``>= r`` (``inf`` above the range)."""
    try:
        f = float(r)
    except OverflowError:  # |r| beyond the largest float64
        return math.inf if r > 0 else -sys.float_info.max
    if math.isfinite(f) and Fraction(f) < r:
        f = math.nextafter(f, math.inf)
    return f


def round_down(r: Fraction) -> float:
    """The greatest float64 ``<= r`` (``-inf`` below the range)."""
    return -round_up(-r)


def single_bound(a: float, r: float) -> tuple[bool, float, bool]:
    """The box bound implied by ``a x <= r`` (``a != 0``): ``(is_upper, value, exact)``.

    ``x <= r/a`` for ``a > 0`` and ``x >= r/a`` for ``a < 0``, with ``r/a`` rounded outward;
    ``exact`` says the bound is the row itself (no rounding happened).
    """
    if a == 1.0:
        return True, r, True
    if a == -1.0:
        return False, -r, True
    if not math.isfinite(r):
        return a > 0, (r / a), True
    q = Fraction(r) / Fraction(a)
    value = round_up(q) if a > 0 else round_down(q)
    return a > 0, value, math.isfinite(value) and Fraction(value) == q


def linear_sum(terms) -> tuple[dict, Fraction]:
    """The sum of linear forms ``({var: coefficient}, constant)``, exactly."""
    coefs: dict = {}
    const = Fraction(0)
    for lin, c in terms:
        for var, a in lin.items():
            coefs[var] = coefs.get(var, 0) + a
        const += c
    return coefs, const


def linear_scale(term, k) -> tuple[dict, Fraction]:
    """``k`` times a linear form ``({var: coefficient}, constant)``, exactly."""
    lin, c = term
    return {var: a * k for var, a in lin.items()}, c * k


class Atoms:
    """The table of atoms ``sum_k coefs[k] * v[vars[k]] <= rhs`` (``< rhs`` when strict).

    ``data[a]`` is ``(kind, vars, coefs, rhs, pos, box_var, box_upper, box_val, in_row,
    strict)``: ``kind`` is ``INPUT`` or ``OUTPUT`` (``vars`` index the flat input or output); an
    input atom that bounds one variable has ``box_var >= 0`` and says whether it is also a row
    of ``A`` (``in_row``, always for a strict atom).
    """

    def __init__(self, source: Source):
        self.source = source
        self.data: list[tuple] = []

    def _push(self, kind, vars_, coefs, rhs, pos, box=(-1, False, 0.0), row=True,
              strict=False) -> int:
        self.data.append((kind, vars_, coefs, rhs, pos, box[0], box[1], box[2], row, strict))
        return len(self.data) - 1

    def bound(self, i: int, upper: bool, value: float, pos: int, strict: bool = False) -> int:
        """The input atom ``x_i <= value`` (``upper``) or ``x_i >= value`` (``<``/``>`` when
        ``strict``); exact."""
        data = self.data
        if upper:
            data.append((INPUT, (i,), (1.0,), value, pos, i, True, value, strict, strict))
        else:
            data.append((INPUT, (i,), (-1.0,), -value, pos, i, False, value, strict, strict))
        return len(data) - 1

    def row(self, kind: int, vars_: tuple[int, ...], coefs: tuple[float, ...], rhs: float,
            pos: int, strict: bool = False) -> int:
        """The atom ``coefs . v[vars] <= rhs`` (``<`` when ``strict``) with float64 data (exact
        as given)."""
        if kind == INPUT:
            nz = [k for k, a in enumerate(coefs) if a != 0.0]
            if len(nz) == 1:
                k = nz[0]
                upper, value, exact = single_bound(coefs[k], rhs)
                return self._push(INPUT, vars_, coefs, rhs, pos, (vars_[k], upper, value),
                                  strict or not exact, strict)
        return self._push(kind, vars_, coefs, rhs, pos, strict=strict)

    def linear(self, coefs: dict[tuple[int, int], Fraction], rhs: Fraction, pos: int,
               name=str, strict: bool = False) -> int:
        """The atom ``sum coefs[v] v <= rhs`` (``< rhs`` when ``strict``) with exact rational
        data; returns an atom id.

        Keys of ``coefs`` are ``(kind, index)``. A form with no variable is evaluated (``TRUE``
        or ``FALSE``); one that mixes inputs and outputs is a ``SpecError``; ``rhs`` is rounded
        up (the flag kept); a coefficient that is not a float64 is a ``SpecError``.
        """
        kinds = {k for k, _ in coefs}
        if not kinds:
            return TRUE if (0 < rhs if strict else 0 <= rhs) else FALSE
        if len(kinds) == 2:
            x = next(name(v) for v in coefs if v[0] == INPUT)
            y = next(name(v) for v in coefs if v[0] == OUTPUT)
            raise self.source.error(pos, f"this constraint mixes input {x} and output {y}; "
                                         "a constraint may relate inputs or outputs, not both")
        fcoefs = []
        for v, a in coefs.items():
            try:
                f = float(a)
            except OverflowError:
                f = math.inf
            if not math.isfinite(f) or Fraction(f) != a:
                raise self.source.error(pos, f"the coefficient of {name(v)} folds to {a} "
                                             f"(about {f!r}), which is not a float64; write it "
                                             "as one number")
            fcoefs.append(f)
        kind = kinds.pop()
        f = round_up(rhs)
        # rounded up (f > rhs): every point of the written set has sum <= rhs < f, so the row
        # reads sum < f, which keeps a point with sum == f (outside the set) from counting as
        # a violation or as inside the input set
        rounded = math.isfinite(f) and Fraction(f) != rhs
        return self.row(kind, tuple(i for _, i in coefs), tuple(fcoefs), f, pos,
                        strict or rounded)


class DnfBuilder:
    """Disjunctive normal form of a formula tree, with pure conjunctions factored out.

    A formula is an atom id (``>= 0``), ``TRUE``, ``FALSE``, or a node ``(op, pos, children)``
    with ``op`` in ``"and"``, ``"or"``. A DNF is a list of terms; a term is a tuple of chunk ids,
    a chunk a tuple of atom ids that the terms share. The empty ``and`` is ``TRUE`` (one empty
    term), the empty ``or`` is ``FALSE`` (no term).
    """

    def __init__(self, source: Source, max_terms: int = DEFAULT_MAX_TERMS):
        self.source = source
        self.max_terms = max_terms
        self.chunks: list[tuple[int, ...]] = []

    def _chunk(self, atom_ids) -> int:
        self.chunks.append(tuple(atom_ids))
        return len(self.chunks) - 1

    def _too_many(self, pos: int, count: int):
        return self.source.error(
            pos, f"the disjunctive normal form of this formula has {count} terms, more than the "
                 f"limit of {self.max_terms} (max_terms): it multiplies out several `or`s; "
                 "split the property into several files or raise max_terms")

    def terms(self, node) -> list[tuple[int, ...]]:
        if isinstance(node, int):
            if node == TRUE:
                return [()]
            if node == FALSE:
                return []
            return [(self._chunk((node,)),)]
        op, pos, children = node
        if op == "or":
            out = []
            for child in children:
                out.extend(self.terms(child))
                if len(out) > self.max_terms:
                    raise self._too_many(pos, len(out))
            return out
        return self._and_terms(pos, children)

    def _and_terms(self, pos: int, children) -> list[tuple[int, ...]]:
        # factors: a sequence of alternatives lists; runs of atoms become one shared chunk
        factors: list[list[tuple[int, ...]]] = []
        run: list[int] = []
        fixed: list[int] = []

        def flush():
            if run:
                fixed.append(self._chunk(run))
                run.clear()

        def visit(nodes) -> bool:  # False when the conjunction is FALSE
            for child in nodes:
                if isinstance(child, int):
                    if child == FALSE:
                        return False
                    if child != TRUE:
                        run.append(child)
                elif child[0] == "and":
                    if not visit(child[2]):
                        return False
                else:
                    sub = self.terms(child)
                    if not sub:
                        return False
                    flush()
                    if len(sub) == 1:
                        fixed.extend(sub[0])
                    else:
                        if fixed:
                            factors.append([tuple(fixed)])
                            fixed.clear()
                        factors.append(sub)
            return True

        if not visit(children):
            return []
        flush()
        if fixed:
            factors.append([tuple(fixed)])
        count = math.prod(len(f) for f in factors)
        if count > self.max_terms:
            raise self._too_many(pos, count)
        if len(factors) == 1:
            return factors[0]
        return [tuple(itertools.chain.from_iterable(combo)) for combo in itertools.product(*factors)]


def _key(*arrays) -> bytes:
    """Bytes that identify arrays up to the sign of zero (``np.array_equal`` semantics)."""
    return b"|".join(b"-" if a is None else (a + 0.0).tobytes() for a in arrays)


def build_spec(atoms: Atoms, dnf: DnfBuilder, terms, n_inputs: int, n_outputs: int,
               name, default_pos: int, source_name: str) -> Spec:
    """Group DNF ``terms`` by input set into ``Case``s (see the module docstring).

    ``name((kind, index))`` names a variable for messages; ``default_pos`` locates errors of
    terms with no atom. Every input needs a finite lower and upper bound in every case.
    """
    cols = list(zip(*atoms.data)) or [()] * 10
    kind = np.asarray(cols[0], dtype=np.int8)
    box_var = np.asarray(cols[5], dtype=np.int64)
    box_upper = np.asarray(cols[6], dtype=bool)
    box_val = np.asarray(cols[7], dtype=np.float64)
    in_row = np.asarray(cols[8], dtype=bool)
    split: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {}

    def parts(c):
        if c not in split:
            ids = dnf.chunks[c]
            split[c] = (tuple(a for a in ids if kind[a] == INPUT),
                        tuple(a for a in ids if kind[a] == OUTPUT))
        return split[c]

    groups: dict[tuple[int, ...], list] = {}
    for term in terms:
        key = tuple(c for c in term if parts(c)[0])
        out = tuple(itertools.chain.from_iterable(parts(c)[1] for c in term))
        first = next((dnf.chunks[c][0] for c in term if dnf.chunks[c]), None)
        groups.setdefault(key, [first, []])[1].append(out)

    cases: dict[bytes, tuple[InputSet, list[Conjunction]]] = {}
    conj_cache: dict[tuple[int, ...], Conjunction] = {}
    for key, (first, outs) in groups.items():
        ids = np.fromiter(itertools.chain.from_iterable(parts(c)[0] for c in key), dtype=np.int64)
        pos = atoms.data[first][4] if first is not None else default_pos
        inp = _input_set(atoms, ids, box_var, box_upper, box_val, in_row, n_inputs, name, pos)
        k = _key(inp.lower, inp.upper, inp.A, inp.b, inp.strict)
        if k not in cases:
            cases[k] = (inp, [])
        for out in outs:
            if out not in conj_cache:
                conj_cache[out] = _conjunction(atoms, out, n_outputs)
            cases[k][1].append(conj_cache[out])
    return Spec(tuple(Case(inp, tuple(conjs)) for inp, conjs in cases.values()),
                n_inputs, n_outputs, source=source_name)


def _input_set(atoms, ids, box_var, box_upper, box_val, in_row, n, name, pos) -> InputSet:
    lower = np.full(n, -np.inf)
    upper = np.full(n, np.inf)
    if ids.size:
        bv = box_var[ids]
        has = bv >= 0
        up = has & box_upper[ids]
        lo = has & ~box_upper[ids]
        np.minimum.at(upper, bv[up], box_val[ids][up])
        np.maximum.at(lower, bv[lo], box_val[ids][lo])
    bad = ~(np.isfinite(lower) & np.isfinite(upper))
    if bad.any():
        i = int(np.argmax(bad))
        which = "lower" if not np.isfinite(lower[i]) else "upper"
        raise atoms.source.error(pos, f"input {name((INPUT, i))} has no finite {which} bound in "
                                      "the case whose constraints start here; every input needs "
                                      "a finite lower and upper bound")
    rows = [int(a) for a in ids[in_row[ids]]] if ids.size else []
    if not rows:
        return InputSet(lower, upper)
    A = np.zeros((len(rows), n))
    for r, a in enumerate(rows):
        A[r, list(atoms.data[a][1])] = atoms.data[a][2]
    b = np.array([atoms.data[a][3] for a in rows], dtype=np.float64)
    strict = np.array([atoms.data[a][9] for a in rows], dtype=bool)
    return InputSet(lower, upper, A, b, strict)


def _conjunction(atoms: Atoms, out: tuple[int, ...], m: int) -> Conjunction:
    C = np.zeros((len(out), m))
    for r, a in enumerate(out):
        C[r, list(atoms.data[a][1])] = atoms.data[a][2]
    d = np.array([atoms.data[a][3] for a in out], dtype=np.float64)
    strict = np.array([atoms.data[a][9] for a in out], dtype=bool)
    return Conjunction(C, d, strict)


def normalize(spec: Spec) -> Spec:
    """The normal form of ``spec``: what ``read_vnnlib(write_vnnlib(spec))`` returns.

    Same sets, same semantics: a row of ``A`` with a single nonzero coefficient becomes a box
    bound (kept as a row too when the bound had to be rounded, see ``single_bound``, or the row
    is strict); cases
    with the same input set are merged (conjunctions concatenated, first appearance first);
    cases with no unsafe conjunction (never violated) are dropped.
    """
    merged: dict[bytes, tuple[InputSet, list[Conjunction]]] = {}
    for case in spec.cases:
        if not case.unsafe:
            continue
        inp = _normalize_input(case.input)
        k = _key(inp.lower, inp.upper, inp.A, inp.b, inp.strict)
        merged.setdefault(k, (inp, []))[1].extend(case.unsafe)
    return Spec(tuple(Case(inp, tuple(c)) for inp, c in merged.values()), spec.n_inputs,
                spec.n_outputs, source=spec.source)


def _normalize_input(inp: InputSet) -> InputSet:
    if inp.A is None:
        return inp
    lower, upper = inp.lower.copy(), inp.upper.copy()
    keep = []
    for r in range(inp.A.shape[0]):
        nz = np.flatnonzero(inp.A[r])
        if nz.size != 1:
            keep.append(r)
            continue
        i = int(nz[0])
        is_upper, value, exact = single_bound(float(inp.A[r, i]), float(inp.b[r]))
        if is_upper:
            upper[i] = min(upper[i], value)
        else:
            lower[i] = max(lower[i], value)
        if not exact or inp.strict[r]:
            keep.append(r)
    if not keep:
        return InputSet(lower, upper)
    return InputSet(lower, upper, inp.A[keep], inp.b[keep], inp.strict[keep])
