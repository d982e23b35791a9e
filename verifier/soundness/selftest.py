"""The self-test: inject known bugs into our own bound methods and show the benchmark catches each.

Each bug is a patch applied inside the self-test's verifier worker processes only (the bound
methods' files are untouched): a rule replaced in a method's rule table, a module function
wrapped, or every reference to ``verifier.bounds.compute`` (or ``verifier.verify.verify``)
wrapped. The verifier runs on the benchmark through the harness (``tools.VerifierTool`` with
the bug's name: the worker applies the patch around its run); the bug is *caught* when some
method answers ``unsat`` on an instance with a planted counterexample (a false proof), or, short
of that, claims a counterexample that does not replay (an invalid counterexample; the report
says which).
The unmodified verifier runs first, with every method: it must make no false proof.

The bugs (``BUGS``), each realistic in kind and strong enough to show on instances whose bounds
are as loose as these (see the README of benchmarks/soundness for what is not caught):

- ``ibp-no-abs-w``: IBP's affine rules (Linear, Conv, ConvTranspose, AvgPool) drop the radius
  term ``|W| r`` of ``r' = |W| r``: every affine layer maps the box's centre only.
- ``relu-upper-slope``: CROWN's upper line of an unstable ReLU takes the slope of its lower line
  (0 or 1, through the origin) instead of ``s = u / (u - l)`` through ``(l, 0)``.
- ``relu-upper-intercept``: that upper line keeps its slope ``s`` but loses its intercept
  ``-s l``: ``y <= s z``, below the ReLU on ``(l, 0)`` and above nothing.
- ``clipped-box``: the bound methods see the input box clipped to a tenth of its radius
  about its centre (an eps scaled twice, say; at a quarter the bounds of the small benchmark's
  sharp networks are still too loose to prove anything, and the bug goes unseen).
- ``input-rows-off-by-one``: the verifier reads the bounds of input ``i`` from row ``i + 1`` of
  the property (rolled by one), everywhere: attack, bounds and branch and bound.
- ``dual-norm-sign``: the concretisation of a linear bound over the input box (the dual norm
  term of CROWN's and IBP's final bound) adds ``|A| r`` instead of subtracting it:
  ``A mu + |A| r``, a maximum where a minimum is due.
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _set_items(table: dict, items: dict):
    """Replace entries of a dict (a rule table) for the duration."""
    old = {k: table[k] for k in items}
    table.update(items)
    try:
        yield
    finally:
        table.update(old)


@contextlib.contextmanager
def _set_attr(obj, name: str, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


@contextlib.contextmanager
def _wrap_compute(transform: Callable):
    """Wrap ``verifier.bounds.compute`` wherever it is referenced (the package attribute and
    every loaded module that imported the name): ``transform(lower, upper) -> (lower, upper)``
    is applied to the boxes before the real computation."""
    from .. import bounds  # noqa: PLC0415

    real = bounds.compute

    def compute(net, lower, upper, *args, **kwargs):
        lo, hi = transform(np.asarray(lower, dtype=np.float64),
                           np.asarray(upper, dtype=np.float64))
        return real(net, lo, hi, *args, **kwargs)

    holders = [m for m in list(sys.modules.values())
               if m is not None and getattr(m, "compute", None) is real]
    for m in holders:
        m.compute = compute
    try:
        yield
    finally:
        for m in holders:
            m.compute = real


# --------------------------------------------------------------------------------------------
# the bugs
# --------------------------------------------------------------------------------------------
def _ibp_no_abs_w():
    from ..bounds import interval  # noqa: PLC0415
    from ..network import ops as O  # noqa: PLC0415

    def centre_only(orig):
        def rule(st, pn):
            x = pn.inputs[0]
            lo, hi = st.lo[x], st.hi[x]
            mu = 0.5 * (lo + hi)
            st.lo[x], st.hi[x] = mu, mu
            try:
                return orig(st, pn)
            finally:
                st.lo[x], st.hi[x] = lo, hi
        return rule

    kinds = [k for k in (O.Linear, O.Conv, O.ConvTranspose, O.AvgPool) if k in interval.IBP_RULES]
    return _set_items(interval.IBP_RULES, {k: centre_only(interval.IBP_RULES[k]) for k in kinds})


def _relu_upper(kind: str):
    from ..bounds import relax  # noqa: PLC0415
    from ..network import ops as O  # noqa: PLC0415

    orig = relax.RELAX_RULES[O.Relu]

    def rule(st, pn):
        lines = orig(st, pn)
        unstable = (lines.up_k > 0) & (lines.up_k < 1)
        if kind == "slope":
            lines.up_k = np.where(unstable, lines.lo_k[:, 0], lines.up_k)
        lines.up_t = np.where(unstable, 0.0, lines.up_t)
        return lines

    return _set_items(relax.RELAX_RULES, {O.Relu: rule})


def _clipped_box():
    def tenth(lo, hi):
        mu, r = 0.5 * (lo + hi), 0.5 * (hi - lo)
        return mu - 0.1 * r, mu + 0.1 * r
    return _wrap_compute(tenth)


@contextlib.contextmanager
def _wrap_verify(transform: Callable):
    """Wrap ``verifier.verify.verify`` (read at call time by the harness's workers) so that the
    verifier works on ``transform(spec)`` instead of the property it was given."""
    module = importlib.import_module("verifier.verify")
    real = module.verify

    def verify(net, spec, *args, **kwargs):
        return real(net, transform(spec), *args, **kwargs)

    module.verify = verify
    try:
        yield
    finally:
        module.verify = real


def _input_rows_off_by_one():
    from specs import Case, InputSet, Spec  # noqa: PLC0415

    def roll(spec):
        cases = tuple(Case(InputSet(np.roll(c.input.lower, -1), np.roll(c.input.upper, -1),
                                    c.input.A, c.input.b), c.unsafe) for c in spec.cases)
        return Spec(cases, spec.n_inputs, spec.n_outputs, spec.source)
    return _wrap_verify(roll)


def _dual_norm_sign():
    from ..bounds import backward  # noqa: PLC0415

    orig = backward.concretize

    def concretize(st, name, A):
        val, mag = orig(st, name, -A)  # min (-A) v = -(max A v) = -(A mu + |A| r)
        return -val, mag

    return _set_attr(backward, "concretize", concretize)


@dataclass(frozen=True)
class Bug:
    """An injectable bug: ``name``, what it does, the methods through which it can show, and
    ``patch()``, a context manager that applies it."""

    name: str
    description: str
    methods: tuple[str, ...]
    patch: Callable


_ALL = ("ibp", "crown", "alpha-crown")
BUGS = {b.name: b for b in (
    Bug("ibp-no-abs-w", "IBP affine rules drop |W| r: only the box centre is propagated",
        _ALL, _ibp_no_abs_w),
    Bug("relu-upper-slope", "CROWN's upper line of an unstable ReLU takes its lower line's "
        "slope", ("crown", "alpha-crown"), lambda: _relu_upper("slope")),
    Bug("relu-upper-intercept", "CROWN's upper line of an unstable ReLU loses its intercept",
        ("crown", "alpha-crown"), lambda: _relu_upper("intercept")),
    Bug("clipped-box", "the bound methods see the input box clipped to a tenth of its radius",
        _ALL, _clipped_box),
    Bug("input-rows-off-by-one", "the verifier reads input i's bounds from row i+1 of the "
        "property", ("auto",), _input_rows_off_by_one),
    Bug("dual-norm-sign", "concretisation over the input box adds |A| r instead of "
        "subtracting it", _ALL, _dual_norm_sign),
)}


def clean_methods() -> tuple[str, ...]:
    """Every method of the verifier (``verifier.verify.METHODS``)."""
    from ..verify import METHODS  # noqa: PLC0415

    return tuple(METHODS)


def selftest(bench=None, out_dir="soundness_selftest", timeout: float = 10.0,
             bugs=None, workers: int = 2, clean: bool = True,
             progress: Callable | None = None) -> dict:
    """Run the unmodified verifier (every method) and then each bug of ``bugs`` (names; default
    all) on the benchmark ``bench`` (default: the tiny configuration, generated into
    ``out_dir/bench`` unless already there). Returns the report: ``clean`` (per method, the
    harness summary), ``bugs`` (per bug: description, caught, false proofs by method), and
    ``passed`` (every bug caught and no false proof from the unmodified verifier). ``clean``
    False skips the unmodified run (a test that runs it on its own)."""
    from .harness import HarnessOptions, run_harness  # noqa: PLC0415
    from .tools import VerifierTool  # noqa: PLC0415

    out = Path(out_dir)
    say = progress or (lambda line: None)
    if bench is None:
        bench = out / "bench"
        if not (bench / "answers" / "manifest.json").is_file():
            from .config import tiny  # noqa: PLC0415
            from .generate import generate  # noqa: PLC0415

            say(f"generating the tiny benchmark into {bench}")
            generate(bench, tiny())
    t0 = time.perf_counter()
    opt = HarnessOptions(timeout=timeout, workers=workers)
    report = {"benchmark": str(bench), "timeout": timeout, "clean": {}, "bugs": {}}
    if clean:
        say("unmodified verifier, every method")
        run = run_harness(bench, [VerifierTool(m) for m in clean_methods()], out / "clean", opt)
        report["clean"] = {n: t["summary"] for n, t in run["tools"].items()}
    stop = HarnessOptions(timeout=timeout, workers=workers, stop_at_false_proof=True)
    for name in bugs or list(BUGS):
        bug = BUGS[name]
        say(f"bug {name}: {bug.description}")
        run = run_harness(bench, [VerifierTool(m, bug=name) for m in bug.methods], out / name,
                          stop)
        found = {m: t["summary"]["false_proof_instances"] for m, t in run["tools"].items()}
        invalid = {m: t["summary"]["invalid_counterexample_instances"]
                   for m, t in run["tools"].items()}
        how = ("false proof" if any(found.values()) else
               "invalid counterexample" if any(invalid.values()) else "")
        report["bugs"][name] = {"description": bug.description, "caught": bool(how),
                                "caught_by": how, "false_proofs": found,
                                "invalid_counterexamples": invalid}
        say(f"bug {name}: {'caught by a ' + how if how else 'NOT caught'}")
    clean_ok = clean and all(s["false_proofs"] == 0 for s in report["clean"].values())
    report["clean_sound"] = clean_ok
    report["passed"] = clean_ok and all(b["caught"] for b in report["bugs"].values())
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report


def format_selftest(report: dict) -> str:
    """The self-test report as text: the clean run per method, then each bug."""
    lines = ["unmodified verifier:"]
    for m, s in report["clean"].items():
        lines.append(f"  {m:<14} false proofs {s['false_proofs']}, invalid CE "
                     f"{s['invalid_counterexamples']}, sat {s['sat_planted']}/{s['planted']} "
                     f"planted, unsat {s['unsat_clean']}/{s['clean']} clean")
    lines.append("injected bugs:")
    for name, b in report["bugs"].items():
        kind = "false_proofs" if b["caught_by"] == "false proof" else "invalid_counterexamples"
        where = "; ".join(f"{m}: {', '.join(v[:2])}" for m, v in b[kind].items() if v)
        verdict = f"CAUGHT ({b['caught_by']})" if b["caught"] else "NOT CAUGHT"
        lines.append(f"  {name:<22} {verdict:<33} {b['description']}"
                     + (f"  [{where}]" if where else ""))
    lines.append(f"self-test {'passed' if report['passed'] else 'FAILED'} "
                 f"({report['seconds']:.0f} s)")
    return "\n".join(lines)
