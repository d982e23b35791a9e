"""Writing a ``Spec`` as VNN-LIB 1.0, in the forms VNN-COMP tools read.

Layout. One case: one assert per box bound (``(<= X_i u)``, ``(>= X_i l)``), one per row of
``A``, and the unsafe outputs as ``(assert (or (and ROWS) ...))``. Several cases: a single
``(assert (or (and BOX_i A_i ROWS_ij) ...))`` with one ``and`` per (case, conjunction), the
form of ACAS Xu's property 6. Numbers are written with ``repr``, so every float64 reads back
exactly; ``read_vnnlib(write_vnnlib(spec)) == normalize(spec)`` for every spec with finite data
(``normal_form.normalize``: merges cases with the same input set, drops cases that can never be
violated, turns single-variable rows of ``A`` into box bounds), and ``== spec`` for a spec
already in that form.

A row ``c . v <= r`` is written as ``(<= Y_a Y_b)`` when it is ``y_a - y_b <= 0``, as
``(<= Y_j r)``/``(>= Y_j -r)`` for ``c = +-e_j``, and as ``(<= (+ (* c_k V_k) ...) r)`` otherwise
(zero coefficients left out; an all-zero row as ``(* 0.0 V_0)``); a strict row is written the
same way with ``<``/``>``. A conjunction with no rows
(every output is unsafe) is written as ``(and)``, and a spec with no case as ``(assert false)``;
other tools may not read those two degenerate forms.
"""
from __future__ import annotations

import io
import os

import numpy as np

from .errors import SpecError
from .spec import InputSet, Spec


def format_vnnlib(spec: Spec) -> str:
    """The VNN-LIB 1.0 text of ``spec`` (see the module docstring for the layout)."""
    _check_finite(spec)
    out = io.StringIO()
    w = out.write
    source = " ".join(str(spec.source).split())
    w("; VNN-LIB 1.0 property written by specs.write_vnnlib")
    w(f" (source: {source})\n" if source else "\n")
    w(f"; {spec.n_inputs} inputs, {spec.n_outputs} outputs, {len(spec.cases)} case(s)\n\n")
    for i in range(spec.n_inputs):
        w(f"(declare-const X_{i} Real)\n")
    w("\n")
    for j in range(spec.n_outputs):
        w(f"(declare-const Y_{j} Real)\n")
    w("\n")
    cases = [c for c in spec.cases if c.unsafe]
    if not cases:
        w("; no case: the property can never be violated\n(assert false)\n")
    elif len(cases) == 1:
        case = cases[0]
        for atom in _input_atoms(case.input):
            w(f"(assert {atom})\n")
        if not (len(case.unsafe) == 1 and case.unsafe[0].C.shape[0] == 0):
            w("\n(assert (or\n")
            for conj in case.unsafe:
                w(f"    (and {' '.join(_rows(conj.C, conj.d, 'Y', conj.strict))})\n")
            w("))\n")
    else:
        w("(assert (or\n")
        for case in cases:
            box = " ".join(_input_atoms(case.input))
            for conj in case.unsafe:
                w(f"    (and {' '.join([box] + _rows(conj.C, conj.d, 'Y', conj.strict))})\n")
        w("))\n")
    return out.getvalue()


def write_vnnlib(spec: Spec, path_or_file) -> None:
    """Write ``format_vnnlib(spec)`` to a path or an open text file."""
    text = format_vnnlib(spec)
    if hasattr(path_or_file, "write"):
        path_or_file.write(text)
        return
    with open(os.fspath(path_or_file), "w", encoding="utf-8") as f:
        f.write(text)


def _check_finite(spec: Spec):
    for k, case in enumerate(spec.cases):
        arrays = [("input lower bound", case.input.lower), ("input upper bound", case.input.upper)]
        if case.input.A is not None:
            arrays += [("A", case.input.A), ("b", case.input.b)]
        for conj in case.unsafe:
            arrays += [("C", conj.C), ("d", conj.d)]
        for what, a in arrays:
            if not np.all(np.isfinite(a)):
                raise SpecError(f"case {k}: the {what} has a non-finite value; VNN-LIB can only "
                                "state finite numbers (every input needs finite bounds)")


def _num(x) -> str:
    return repr(float(x))


def _input_atoms(inp: InputSet) -> list[str]:
    atoms = []
    for i, (lo, hi) in enumerate(zip(inp.lower.tolist(), inp.upper.tolist())):
        atoms.append(f"(>= X_{i} {_num(lo)})")
        atoms.append(f"(<= X_{i} {_num(hi)})")
    if inp.A is not None:
        atoms += _rows(inp.A, inp.b, "X", inp.strict)
    return atoms


def _rows(M: np.ndarray, r: np.ndarray, letter: str, strict: np.ndarray) -> list[str]:
    """Atoms ``M[k] . v <= r[k]`` (``<`` where ``strict[k]``) over variables ``{letter}_i``."""
    atoms = []
    for row, rhs, s in zip(M, r.tolist(), strict.tolist()):
        le, ge = ("<", ">") if s else ("<=", ">=")
        nz = np.flatnonzero(row)
        vals = row[nz].tolist()
        if len(nz) == 2 and rhs == 0.0 and sorted(vals) == [-1.0, 1.0]:
            a, b = (nz[0], nz[1]) if vals[0] == 1.0 else (nz[1], nz[0])
            atoms.append(f"({le} {letter}_{a} {letter}_{b})")
        elif len(nz) == 1 and vals[0] == 1.0:
            atoms.append(f"({le} {letter}_{nz[0]} {_num(rhs)})")
        elif len(nz) == 1 and vals[0] == -1.0:
            atoms.append(f"({ge} {letter}_{nz[0]} {_num(-rhs)})")
        elif len(nz) == 0:
            atoms.append(f"({le} (* 0.0 {letter}_0) {_num(rhs)})")
        else:
            terms = [f"(* {_num(c)} {letter}_{i})" for i, c in zip(nz, vals)]
            lhs = terms[0] if len(terms) == 1 else f"(+ {' '.join(terms)})"
            atoms.append(f"({le} {lhs} {_num(rhs)})")
    return atoms

