"""The verification pipeline: attack -> incomplete bounds -> branch and bound -> ``Result``.

A property (``specs.Spec``) is violated iff some case has an input ``x`` in its set whose output
``y = f(x)`` satisfies every row of some unsafe conjunction ``C y <= d``. So:

* ``sat`` needs one confirmed point: the attack's candidates are replayed on the original ONNX
  file with onnxruntime (or on the ``Network`` itself when no file is given) and checked against
  the spec with no tolerance (``verifier.search.replay``).
* ``unsat`` needs every (case, conjunction) pair *refuted*: some row ``k`` with a proven lower
  bound ``lb_k > 0`` of ``(C y - d)_k`` over the case's input box (the box contains the input
  set, so the bound holds there too). The bound methods run cheapest first (IBP, CROWN,
  alpha-CROWN), each only on the pairs still open, and the best bound of every pair is kept.
  The proven *margin* is ``min over pairs of max_k lb_k``; it is positive iff every pair is
  refuted.
* Pairs left open go to branch and bound (``verifier.search.bab``, when present), then to a
  longer attack; what is still undecided is ``unknown``, or ``timeout`` once the deadline passed.

Every exception raised inside the pipeline becomes an ``error`` result carrying its message;
an error never becomes ``unsat``. Input that does not fit (model and property shapes, an
unknown method, a model onnxruntime cannot open) raises ``VerifierError`` before the pipeline
starts, so that the command line can report it as bad input.

Timing: stages are not started after the deadline and each is given what is left; a single
bound computation is not interrupted, so an answer may arrive a little after ``timeout``
seconds. A decision reached is reported as such (``Result.seconds`` says when); an undecided run
whose deadline passed is ``timeout``.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from .errors import ModelError, UnsupportedOpError, VerifierError
from .result import Result
from .search.attack import AttackOptions, attack
from .search.replay import Replay

log = logging.getLogger(__name__)

#: incomplete bound methods in the order "auto" tries them (cheapest first)
AUTO_METHODS = ("ibp", "crown", "alpha-crown")
#: the LP/SDP relaxations (``verifier.bounds.RELAXATION_METHODS``), only when forced
RELAXATION_METHODS = ("lp", "lp-all", "milp", "sdp", "sdp-lowrank")
#: values of ``method``: "auto", "attack" (counterexample search only) or one bound method
METHODS = ("auto", "attack") + AUTO_METHODS + RELAXATION_METHODS

Progress = Callable[[str, float], None]


@dataclass
class VerifyOptions:
    """Knobs of the pipeline, with their defaults."""

    #: the first, cheap attack (probe + one PGD round): before any bound is computed
    attack: AttackOptions = field(default_factory=lambda: AttackOptions(rounds=1))
    #: most of the timeout the first attack may take
    attack_share: float = 0.2
    #: PGD rounds of a second attack, run before branch and bound (within ``attack_share`` of
    #: the time left) when the first attack came close: its best margin is below
    #: ``second_attack_ratio`` times the size of the best proven lower bound (a near-boundary
    #: counterexample needs more starts than the first attack's; elsewhere the rounds would
    #: only cost time); not when branch and bound splits the input, which checks points itself
    second_attack_rounds: int = 20
    second_attack_ratio: float = 0.01
    #: PGD rounds of the last attack, run when bounds and branch and bound left the question open
    final_attack_rounds: int = 20
    #: options objects passed to ``verifier.bounds.compute`` per method (None: its defaults)
    bound_options: dict = field(default_factory=dict)
    #: run branch and bound when the incomplete bounds leave pairs open (if the module exists)
    branch_and_bound: bool = True
    #: options passed through to ``verifier.search.bab.branch_and_bound``
    bab_options: object = None


def validate(net, spec, method: str = "auto") -> None:
    """Raise ``ModelError`` when the property's input/output sizes differ from the model's, and
    ``VerifierError`` for an unknown method."""
    if spec.n_inputs != net.n_inputs:
        raise ModelError(f"the property has {spec.n_inputs} inputs but the model has "
                         f"{net.n_inputs} (input shape {net.input_shape})")
    if spec.n_outputs != net.n_outputs:
        raise ModelError(f"the property has {spec.n_outputs} outputs but the model has "
                         f"{net.n_outputs} (output shape {net.output_shape})")
    if method not in METHODS:
        raise VerifierError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


def verify(net, spec, timeout: float | None = 60, method: str = "auto", onnx_path=None,
           options: VerifyOptions | None = None, progress: Progress | None = None) -> Result:
    """Decide whether ``spec`` holds on ``net`` within ``timeout`` seconds (None: no limit).

    ``method``: "auto" (attack, then IBP, CROWN, alpha-CROWN, then branch and bound), "attack",
    or one bound method used alone (also inside branch and bound). A forced LP/SDP relaxation
    ("lp", "lp-all", "milp", "sdp", "sdp-lowrank") bounds the spec rows with solver time
    limits from the time left (``verifier.bounds.relaxations.budget_options``) unless
    ``options.bound_options`` gives its options; "milp" decides only from the sound bound it
    returns beside its exact value (``stats["certified_lower"]``); branch and bound then
    runs on its own (CROWN-based) bounds. ``onnx_path``: the original
    ONNX file on which onnxruntime replays every counterexample; when None the ``Network``
    itself (float64) is the checking model (the command line always passes the file).
    ``progress(stage, fraction_of_timeout_used)`` is called between stages.

    Returns a ``Result``: ``sat`` with ``counterexample=(x, y)`` (flat input, and the output the
    checking model computed), ``unsat`` with a positive proven ``margin``, or ``unknown``,
    ``timeout``, ``error`` (with ``message``). Raises ``VerifierError`` for input that does not
    fit (see ``validate``)."""
    t0 = time.monotonic()
    validate(net, spec, method)
    opts = options or VerifyOptions()
    if onnx_path is not None:
        from .network.runtime import OnnxRunner  # noqa: PLC0415 (import cost only when used)
        replay = Replay(spec, runner=OnnxRunner(str(onnx_path)))
    else:
        replay = Replay(spec, net=net)
    deadline = math.inf if timeout is None else t0 + float(timeout)
    run = _Pipeline(net, spec, method, opts, replay, t0, deadline, timeout, progress)
    try:
        result = run.run()
    except Exception as exc:  # every failure inside the pipeline is an answer of its own: error
        log.error("verification failed: %s: %s", type(exc).__name__, exc)
        log.debug("traceback of the failure", exc_info=True)
        result = Result("error", message=f"{type(exc).__name__}: {exc}")
    result.seconds = time.monotonic() - t0
    result.stats.update(run.stats)
    result.stats["replay_calls"] = replay.calls
    result.stats["replayed_candidates"] = replay.candidates
    log.info("verify: %s (%s) in %.3f s", result.status, result.method or "-", result.seconds)
    return result


class _Pipeline:
    """One run of the pipeline; ``stats`` collects what it did."""

    def __init__(self, net, spec, method, opts, replay, t0, deadline, timeout, progress):
        self.net, self.spec, self.method, self.opts = net, spec, method, opts
        self.replay, self.t0, self.deadline, self.timeout = replay, t0, deadline, timeout
        self.progress = progress
        # best proven max_k lb_k of every (case, conjunction) pair; -inf until bounded
        self.best = {(ci, j): -math.inf for ci, c in enumerate(spec.cases)
                     for j in range(len(c.unsafe))}
        self.stats = {"bound_calls": 0, "bound_seconds": {}, "attack_seconds": 0.0,
                      "attack_evaluations": 0}

    # -- helpers ------------------------------------------------------------------------------
    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def _progress(self, stage: str) -> None:
        if self.progress is not None:
            used = 0.0 if self.timeout in (None, 0) else (time.monotonic() - self.t0) / self.timeout
            self.progress(stage, min(1.0, used))

    def open_pairs(self) -> list[tuple[int, int]]:
        return [p for p, m in self.best.items() if not m > 0]

    def margin(self) -> float | None:
        vals = list(self.best.values())
        return None if not vals or all(v == -math.inf for v in vals) else float(min(vals))

    def _sat(self, ce, method: str) -> Result:
        return Result("sat", counterexample=(ce.x, ce.y), method=method,
                      message=f"counterexample confirmed on "
                              f"{'onnxruntime' if self.replay.uses_onnx else 'the network'}")

    def _undecided(self, why: str) -> Result:
        status = "timeout" if self.expired() else "unknown"
        return Result(status, margin=self.margin(), method=self.method, message=why)

    def _attack(self, options: AttackOptions, deadline: float, probe: bool):
        self._progress("attack")
        res = attack(self.net, self.spec, self.replay, options, deadline=deadline, probe=probe)
        self.stats["attack_seconds"] += res.seconds
        self.stats["attack_evaluations"] += res.evaluations
        if res.best_margin is not None:
            prev = self.stats.get("attack_margin")
            self.stats["attack_margin"] = res.best_margin if prev is None else min(
                prev, res.best_margin)
        return res.counterexample

    # -- stages -------------------------------------------------------------------------------
    def run(self) -> Result:
        if len(self.spec.cases) == 0 or all(len(c.unsafe) == 0 for c in self.spec.cases):
            return Result("unsat", method="spec", message="the property has no unsafe set")
        budget = self.opts.attack_share * (self.deadline - self.t0)
        ce = self._attack(self.opts.attack, min(self.deadline, self.t0 + budget), probe=True)
        if ce is not None:
            return self._sat(ce, "attack")
        if self.method == "attack":
            return self._undecided("no counterexample found (attack only)")
        methods = AUTO_METHODS if self.method == "auto" else (self.method,)
        for m in methods:
            if self.expired():
                return self._undecided(f"deadline passed before {m}")
            self._progress(m)
            if self._bound(m) and not self.open_pairs():
                return Result("unsat", margin=self.margin(), method=m)
        if self._came_close() and not self._input_split_follows() and not self.expired():
            opt = replace(self.opts.attack, rounds=self.opts.second_attack_rounds,
                          seed=self.opts.attack.seed + 2)
            now = time.monotonic()
            ce = self._attack(opt, min(self.deadline,
                                       now + self.opts.attack_share * (self.deadline - now)),
                              probe=False)
            if ce is not None:
                return self._sat(ce, "attack")
        result = self._branch_and_bound()
        if result is not None and result.status in ("sat", "unsat"):
            return result
        if not self.expired() and self.opts.final_attack_rounds > 0:
            opt = replace(self.opts.attack, rounds=self.opts.final_attack_rounds,
                          seed=self.opts.attack.seed + 1)
            ce = self._attack(opt, self.deadline, probe=False)
            if ce is not None:
                return self._sat(ce, "attack")
        open_ = self.open_pairs()
        why = f"{len(open_)} of {len(self.best)} unsafe conjunctions not refuted"
        if result is not None and result.message:
            why += f"; branch and bound: {result.message}"
        return self._undecided(why)

    def _came_close(self) -> bool:
        """Whether the first attack's best margin is small next to the bounds' gap (see
        ``VerifyOptions.second_attack_ratio``)."""
        best, lb = self.stats.get("attack_margin"), self.margin()
        if self.opts.second_attack_rounds <= 0 or best is None or lb is None or lb >= 0:
            return False
        return best <= self.opts.second_attack_ratio * abs(lb)

    def _input_split_follows(self) -> bool:
        """Whether branch and bound will split the input box: a complete search that checks
        the points its boxes pin down, so a second attack before it only costs time (ACAS Xu,
        one core: 57.0 s with it, 38.8 s without, the same answers)."""
        if not self.opts.branch_and_bound:
            return False
        from .search.bab import split_kind  # noqa: PLC0415  (Numba kernels: only when needed)

        return split_kind(self.net.n_inputs, self.opts.bab_options) == "input"

    def _bound(self, method: str) -> bool:
        """Bound the open pairs with ``method``; False if the model has an op it cannot handle
        (auto mode moves on to the next method; a forced method reports the error)."""
        from . import bounds  # noqa: PLC0415 (imported lazily: the bound core loads Numba kernels)

        t = time.monotonic()
        try:
            for ci, case in enumerate(self.spec.cases):
                js = [j for (c, j) in self.open_pairs() if c == ci]
                if not js:
                    continue
                C = np.concatenate([case.unsafe[j].C for j in js], axis=0)
                d = np.concatenate([case.unsafe[j].d for j in js], axis=0)
                options = self.opts.bound_options.get(method)
                if options is None and method in RELAXATION_METHODS:
                    from .bounds.relaxations import budget_options  # noqa: PLC0415
                    left = self.deadline - time.monotonic()
                    options = budget_options(method, min(left, 1e6), C.shape[0])
                res = bounds.compute(self.net, case.input.lower[None, :],
                                     case.input.upper[None, :], C=C, d=d, method=method,
                                     options=options)
                self.stats["bound_calls"] += 1
                # a method whose values are not certificates (MILP) gives a sound bound beside
                stats = getattr(res, "stats", None)
                lb = stats.get("certified_lower", res.lower) if isinstance(
                    stats, dict) else res.lower
                lb = np.asarray(lb, dtype=np.float64).reshape(-1)
                if lb.shape[0] != C.shape[0]:
                    raise ValueError(f"{method} returned {lb.shape[0]} bounds for "
                                     f"{C.shape[0]} rows")
                start = 0
                for j in js:
                    k = case.unsafe[j].C.shape[0]
                    block = lb[start:start + k]
                    start += k
                    if np.isnan(block).any():
                        raise ValueError(f"{method} returned NaN bounds")
                    # an empty conjunction holds everywhere: it cannot be refuted
                    top = float(block.max()) if k else -math.inf
                    self.best[(ci, j)] = max(self.best[(ci, j)], top)
        except UnsupportedOpError as exc:
            if self.method != "auto":
                raise
            log.info("%s skipped: %s", method, exc)
            self.stats.setdefault("skipped", []).append(f"{method}: {exc}")
            return False
        finally:
            s = self.stats["bound_seconds"]
            s[method] = s.get(method, 0.0) + time.monotonic() - t
        log.info("%s: %d of %d conjunctions open, margin %s", method, len(self.open_pairs()),
                 len(self.best), self.margin())
        return True

    def _branch_and_bound(self) -> Result | None:
        """The hook for complete search. ``verifier.search.bab`` (a separate module) provides

            branch_and_bound(net, spec, open_pairs, *, deadline, replay, method, options,
                             progress) -> Result

        where ``open_pairs`` lists the (case index, conjunction index) pairs the incomplete
        bounds did not refute, ``deadline`` is a ``time.monotonic()`` value, ``replay`` confirms
        candidate points (``Replay.__call__(X) -> Counterexample | None``), ``method`` is "auto"
        or the forced bound method, and the result's status is "sat" (with the replayed
        counterexample), "unsat" (every open pair refuted), "unknown" or "timeout". Returns None
        when branch and bound is off or the deadline has passed."""
        if not self.opts.branch_and_bound or self.expired():
            return None
        from .search import bab  # noqa: PLC0415  (imports Numba kernels: only when needed)

        self._progress("branch and bound")
        result = bab.branch_and_bound(self.net, self.spec, self.open_pairs(),
                                      deadline=self.deadline, replay=self.replay,
                                      method=self.method, options=self.opts.bab_options,
                                      progress=self.progress)
        self.stats["bab"] = dict(result.stats)
        if result.status == "sat":
            x, _ = result.counterexample
            ce = self.replay(np.asarray(x)[None, :])  # trust nothing: replay it once more
            if ce is None:
                raise VerifierError("branch and bound returned a counterexample that does not "
                                    "replay on the checking model")
            return self._sat(ce, result.method or "bab")
        if result.status == "unsat" and not result.method:
            result.method = "bab"
        return result
