"""Reading a tool's VNN-COMP results file, and judging its answer against what was planted.

A results file holds the answer on its first non-empty line, one of exactly ``sat``, ``unsat``,
``unknown``, ``timeout``, ``error`` (compared as exact strings after stripping the line's
surrounding white space; anything else is *unparsable*). After ``sat`` comes the counterexample,
``((X_0 v0) (X_1 v1) ... (Y_0 w0) ...)``; the ``Y`` values are the tool's claim and are only
reported, never trusted.

A claimed counterexample is *valid* when the point onnxruntime evaluates (the ``X`` values cast
to the model's input precision, float32 for the generated models) lies in the input set of the
property and the output onnxruntime computes there lies in its unsafe set, both with no
tolerance (``input_tol`` > 0 admits points outside the input box by at most that much, reported
as such). Indices must run over every input exactly once; a file that repeats the ``X`` indices
lists several candidate points, and one valid point suffices.

Verdicts (``judge``), per instance:

- ``false proof``: ``unsat`` on an instance with a planted counterexample: a soundness bug;
- ``invalid counterexample``: ``sat`` with a point that does not replay;
- ``sat``: ``sat`` with a point that replays (on a planted or a clean instance);
- ``unsat (clean)``: ``unsat`` where nothing was planted: not judged (no ground truth);
- ``unknown``, ``timeout``, ``error``: as answered; ``no answer``: no or an empty results file;
  ``unparsable``: a first line that is none of the five words.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

STATUSES = ("sat", "unsat", "unknown", "timeout", "error")
VERDICTS = ("false proof", "invalid counterexample", "sat", "unsat (clean)", "unknown", "timeout",
            "error", "no answer", "unparsable")

_ITEM = re.compile(r"\(\s*([XY])_(\d+)\s+([^\s()]+)\s*\)")


@dataclass
class Answer:
    """A parsed results file: ``status`` (one of ``STATUSES``, or "no answer" / "unparsable"),
    the candidate points ``xs`` (each (n,) float64) and claimed outputs ``ys`` of a ``sat``, and
    ``problem``: why the counterexample part could not be read (empty when it could)."""

    status: str
    xs: list = field(default_factory=list)
    ys: list = field(default_factory=list)
    problem: str = ""
    first_line: str = ""


def parse_results(text: str | None, n_inputs: int) -> Answer:
    """Parse the text of a results file (None: the file does not exist)."""
    if text is None:
        return Answer("no answer", problem="no results file")
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        return Answer("no answer", problem="empty results file")
    first = lines[0]
    if first not in STATUSES:
        return Answer("unparsable", problem=f"first line {first[:80]!r} is not one of "
                      f"{', '.join(STATUSES)}", first_line=first)
    ans = Answer(first, first_line=first)
    if first != "sat":
        return ans
    body = "\n".join(lines[1:])
    xs: list[dict] = [{}]
    ys: list[dict] = [{}]
    for letter, index, value in _ITEM.findall(body):
        i = int(index)
        try:
            v = float(value)
        except ValueError:
            ans.problem = f"{letter}_{i} has the value {value!r}, not a number"
            return ans
        if letter == "X":
            if i in xs[-1]:
                xs.append({})
                ys.append({})
            xs[-1][i] = v
        else:
            ys[-1][i] = v
    for k, cand in enumerate(xs):
        missing = sorted(set(range(n_inputs)) - set(cand))
        extra = sorted(set(cand) - set(range(n_inputs)))
        if missing or extra:
            what = (f"{len(missing)} inputs missing (first X_{missing[0]})" if missing
                    else f"an input X_{extra[0]} beyond the model's {n_inputs}")
            ans.problem = f"counterexample {k}: {what}"
            ans.xs, ans.ys = [], []
            return ans
        ans.xs.append(np.array([cand[i] for i in range(n_inputs)], dtype=np.float64))
        yk = ys[k]
        ans.ys.append(np.array([yk[i] for i in sorted(yk)], dtype=np.float64) if yk else None)
    return ans


def read_results_file(path, n_inputs: int) -> Answer:
    """``parse_results`` of the file at ``path`` (missing file: "no answer")."""
    p = Path(path)
    if not p.is_file():
        return parse_results(None, n_inputs)
    return parse_results(p.read_text(errors="replace"), n_inputs)


@dataclass
class Replayed:
    """The check of one claimed point: ``valid``, why not (``reason``), the point evaluated
    ``x`` (model precision), onnxruntime's output ``y``, and ``outside``: how far the point lies
    outside the input box (0 inside)."""

    valid: bool
    reason: str
    x: np.ndarray | None = None
    y: np.ndarray | None = None
    outside: float = 0.0


def replay_point(runner, spec, x: np.ndarray, input_tol: float = 0.0) -> Replayed:
    """Check one claimed counterexample ``x`` (n,) on ``runner`` (an ``OnnxRunner``) against
    ``spec`` (see module)."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(x)):
        return Replayed(False, "the point has a non-finite value")
    xm = x.astype(runner.dtype).astype(np.float64)
    y = np.asarray(runner(xm[None, :]), dtype=np.float64).reshape(-1)
    outside = min(_outside(case.input, xm) for case in spec.cases)
    if outside > input_tol:
        return Replayed(False, f"the point lies outside the input set by {outside:.3g}", xm, y,
                        outside)
    for case in spec.cases:
        if _outside(case.input, xm) > input_tol:
            continue
        if any(bool(conj.holds(y[None, :])[0]) for conj in case.unsafe):
            return Replayed(True, "", xm, y, outside)
    return Replayed(False, "onnxruntime's output at the point is not in the unsafe set", xm, y,
                    outside)


def _outside(inp, x: np.ndarray) -> float:
    """How far ``x`` lies outside the box (and linear constraints) of the input set ``inp``."""
    d = max(float(np.max(inp.lower - x, initial=0.0)), float(np.max(x - inp.upper, initial=0.0)))
    if inp.A is not None:
        d = max(d, float(np.max(inp.A @ x - inp.b, initial=0.0)))
    return d


@dataclass
class Verdict:
    """The judgement of one answer: ``verdict`` (one of ``VERDICTS``), a ``detail`` line, and
    the replay of the counterexample when there was one."""

    verdict: str
    detail: str = ""
    replay: Replayed | None = None


def judge(answer: Answer, planted: bool, runner=None, spec=None,
          input_tol: float = 0.0) -> Verdict:
    """The verdict on ``answer`` for an instance with (``planted``) or without a planted
    counterexample; ``runner`` and ``spec`` replay the counterexample of a ``sat``."""
    st = answer.status
    if st == "unsat":
        if planted:
            return Verdict("false proof", "unsat, but a counterexample was planted and confirmed")
        return Verdict("unsat (clean)", "no counterexample planted: not judged")
    if st in ("unknown", "timeout", "error", "no answer", "unparsable"):
        return Verdict(st, answer.problem)
    # sat: every claimed point is replayed; one valid point suffices
    if answer.problem or not answer.xs:
        return Verdict("invalid counterexample", answer.problem or "sat without a counterexample")
    last = None
    for x in answer.xs:
        last = replay_point(runner, spec, x, input_tol)
        if last.valid:
            note = "" if last.outside == 0 else f"outside the box by {last.outside:.3g} (tolerated)"
            return Verdict("sat", note, last)
    return Verdict("invalid counterexample", last.reason, last)
