"""Property objects: what a VNN-LIB file says, in normal form.

A ``Spec`` is a disjunction of ``Case``s. Each case is an input set (a box ``lower <= x <=
upper`` over the flattened network input, plus optional linear constraints ``A x <= b``) with an
unsafe output set, itself a disjunction of ``Conjunction``s ``C y <= d`` over the flattened
network output. The property is violated (``sat``) iff for some case there is an ``x`` in its
input set whose output ``y = f(x)`` satisfies every row of at least one of its conjunctions.

Strict rows. A row of ``C`` or ``A`` may be flagged ``strict``: it then reads ``C_k y < d_k``
(``A_k x < b_k``). Bounding code may ignore the flags (a closed set is larger, so a proof over
it still holds); the membership tests ``Conjunction.holds`` and ``InputSet.contains``, which
decide whether a candidate counterexample counts, apply them. The box is always closed.

All arrays are float64 (the flags bool). Objects are immutable and compare by value
(``np.array_equal``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _frozen(a, ndim: int) -> np.ndarray:
    a = np.array(a, dtype=np.float64, copy=True)
    if a.ndim != ndim:
        raise ValueError(f"expected a {ndim}-d array, got shape {a.shape}")
    a.flags.writeable = False
    return a


def _flags(strict, k: int) -> np.ndarray:
    """The read-only bool array (k,) of strict flags (all False when ``strict`` is None)."""
    f = np.zeros(k, dtype=bool) if strict is None else np.array(strict, dtype=bool, copy=True)
    if f.shape != (k,):
        raise ValueError(f"strict has shape {f.shape}, expected ({k},)")
    f.flags.writeable = False
    return f


def _rows_hold(lhs: np.ndarray, rhs: np.ndarray, strict: np.ndarray) -> np.ndarray:
    """(B,) True where every row holds: ``lhs < rhs`` on strict rows, ``lhs <= rhs`` elsewhere."""
    return np.all(np.where(strict, lhs < rhs, lhs <= rhs), axis=1)


@dataclass(frozen=True, eq=False)
class Conjunction:
    """The output set ``{y : C y <= d}`` (every row must hold). ``C``: (k, m), ``d``: (k,).

    ``strict`` (k,) bool, default all False: row ``r`` reads ``C_r y < d_r`` where it is True.
    """

    C: np.ndarray
    d: np.ndarray
    strict: np.ndarray | None = None

    def __post_init__(self):
        object.__setattr__(self, "C", _frozen(self.C, 2))
        object.__setattr__(self, "d", _frozen(self.d, 1))
        if self.C.shape[0] != self.d.shape[0]:
            raise ValueError(f"C has {self.C.shape[0]} rows but d has {self.d.shape[0]}")
        object.__setattr__(self, "strict", _flags(self.strict, self.d.shape[0]))

    def holds(self, y: np.ndarray) -> np.ndarray:
        """True where the output batch ``y`` (B, m) lies in the set, with no tolerance:
        ``(C y)_r < d_r`` on strict rows, ``(C y)_r <= d_r`` on the others."""
        y = np.asarray(y, dtype=np.float64).reshape(-1, self.C.shape[1])
        return _rows_hold(y @ self.C.T, self.d, self.strict)

    def __eq__(self, other):
        return (isinstance(other, Conjunction) and np.array_equal(self.C, other.C)
                and np.array_equal(self.d, other.d) and np.array_equal(self.strict, other.strict))

    __hash__ = None


@dataclass(frozen=True, eq=False)
class InputSet:
    """``{x : lower <= x <= upper, A x <= b}`` over the flattened input. ``A``: (k, n) or None.

    ``strict`` (k,) bool, given only with ``A`` (default all False): row ``r`` of ``A`` reads
    ``A_r x < b_r`` where it is True. It is None exactly when ``A`` is. The box is closed.
    """

    lower: np.ndarray
    upper: np.ndarray
    A: np.ndarray | None = None
    b: np.ndarray | None = None
    strict: np.ndarray | None = None

    def __post_init__(self):
        object.__setattr__(self, "lower", _frozen(self.lower, 1))
        object.__setattr__(self, "upper", _frozen(self.upper, 1))
        if self.lower.shape != self.upper.shape:
            raise ValueError("lower and upper differ in shape")
        if (self.A is None) != (self.b is None):
            raise ValueError("A and b must be given together")
        if self.A is None and self.strict is not None:
            raise ValueError("strict flags the rows of A: it needs A and b")
        if self.A is not None:
            object.__setattr__(self, "A", _frozen(self.A, 2))
            object.__setattr__(self, "b", _frozen(self.b, 1))
            if self.A.shape != (self.b.shape[0], self.lower.shape[0]):
                raise ValueError(f"A has shape {self.A.shape}, expected ({self.b.shape[0]}, "
                                 f"{self.lower.shape[0]})")
            object.__setattr__(self, "strict", _flags(self.strict, self.b.shape[0]))
            if self.A.shape[0] == 0:
                object.__setattr__(self, "A", None)
                object.__setattr__(self, "b", None)
                object.__setattr__(self, "strict", None)

    @property
    def n(self) -> int:
        return self.lower.shape[0]

    def contains(self, x: np.ndarray) -> np.ndarray:
        """True where the batch ``x`` (B, n) lies in the set, with no tolerance (strict rows of
        ``A`` with ``<``)."""
        x = np.asarray(x, dtype=np.float64).reshape(-1, self.n)
        ok = np.all((x >= self.lower) & (x <= self.upper), axis=1)
        if self.A is not None:
            ok &= _rows_hold(x @ self.A.T, self.b, self.strict)
        return ok

    def __eq__(self, other):
        if not isinstance(other, InputSet):
            return False
        same_lin = (self.A is None and other.A is None) or (
            self.A is not None and other.A is not None and np.array_equal(self.A, other.A)
            and np.array_equal(self.b, other.b) and np.array_equal(self.strict, other.strict))
        return (np.array_equal(self.lower, other.lower) and np.array_equal(self.upper, other.upper)
                and same_lin)

    __hash__ = None


@dataclass(frozen=True)
class Case:
    """One input set with the disjunction of unsafe output conjunctions that goes with it."""

    input: InputSet
    unsafe: tuple[Conjunction, ...]

    def __post_init__(self):
        object.__setattr__(self, "unsafe", tuple(self.unsafe))

    def violated_by(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """True where ``x`` (B, n) is in the input set and ``y`` (B, m) in some unsafe conjunction."""
        x = np.asarray(x, dtype=np.float64).reshape(-1, self.input.n)
        ok = self.input.contains(x)
        hit = np.zeros(ok.shape, dtype=bool)
        for conj in self.unsafe:
            hit |= conj.holds(y)
        return ok & hit

    __hash__ = None


@dataclass(frozen=True)
class Spec:
    """A property: violated iff some case is violated. ``n_inputs``/``n_outputs`` are flat sizes."""

    cases: tuple[Case, ...]
    n_inputs: int
    n_outputs: int
    source: str = field(default="", compare=False)

    def __post_init__(self):
        object.__setattr__(self, "cases", tuple(self.cases))
        for case in self.cases:
            if case.input.n != self.n_inputs:
                raise ValueError(f"a case has {case.input.n} inputs, the spec {self.n_inputs}")
            for conj in case.unsafe:
                if conj.C.shape[1] != self.n_outputs:
                    raise ValueError(f"a conjunction has {conj.C.shape[1]} outputs, "
                                     f"the spec {self.n_outputs}")

    def violated_by(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """True where the pair (x, y) is a counterexample to some case (no tolerance)."""
        x = np.asarray(x, dtype=np.float64).reshape(-1, self.n_inputs)
        y = np.asarray(y, dtype=np.float64).reshape(-1, self.n_outputs)
        hit = np.zeros(x.shape[0], dtype=bool)
        for case in self.cases:
            hit |= case.violated_by(x, y)
        return hit

    __hash__ = None
