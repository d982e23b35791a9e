"""The pipeline's decisions: sat only with a replayed counterexample, unsat only when every
(case, conjunction) pair has a row whose proven lower bound is strictly positive, an error is
``error`` (never unsat), and an expired deadline is ``timeout``.

Where the decision logic is under test, ``verifier.bounds`` is replaced by a stand-in that
returns chosen numbers, or the exact bounds of an affine network; branch and bound likewise."""
import importlib
import importlib.machinery
import sys
import types

import numpy as np
import pytest

import verifier
import verifier.search
from specs import Case, Conjunction, InputSet, Spec
from verifier.errors import ModelError, UnsupportedOpError, VerifierError
from verifier.network import Network, Node
from verifier.network.ops import Linear
from verifier.verify import VerifyOptions, verify

from test_attack import mlp, spec_of  # tests/ is on sys.path (pytest prepend mode)

# the modules themselves (the attribute verifier.verify is the function)
verify_module = importlib.import_module("verifier.verify")
real_bab = importlib.import_module("verifier.search.bab")


def affine_net(W, b):
    return Network("x", (np.shape(W)[1],), (Node("fc", Linear(W, b), ("x",), (np.shape(W)[0],)),),
                   "fc")


class StandInBounds(types.ModuleType):
    """``compute`` returns ``lower_fn(C, d)`` as the lower bounds (or the exact bounds of an
    affine one-layer network when ``lower_fn`` is None); records every call."""

    def __init__(self, lower_fn=None, fail=None):
        super().__init__("verifier.bounds")
        self.lower_fn, self.fail, self.calls = lower_fn, fail, []

    def compute(self, net, lower, upper, C=None, d=None, method="crown", options=None,
                intermediate=False):
        self.calls.append(method)
        if self.fail is not None and method in self.fail:
            raise self.fail[method]
        if self.lower_fn is not None:
            lb = np.asarray(self.lower_fn(C, d), dtype=float)
        else:  # exact for y = W x + b: min over the box of (C W) x + C b - d
            op = net.nodes[0].op
            A, c = C @ op.W, C @ op.b - d
            mid, rad = (lower + upper) / 2, (upper - lower) / 2
            lb = mid @ A.T + c - rad @ np.abs(A).T
        return types.SimpleNamespace(lower=lb.reshape(1, -1), upper=np.full((1, lb.size), np.inf))


@pytest.fixture
def bounds_stand_in(monkeypatch):
    def install(module):
        monkeypatch.setattr(verifier, "bounds", module, raising=False)
        monkeypatch.setitem(sys.modules, "verifier.bounds", module)
        return module
    return install


NO_BAB = VerifyOptions(branch_and_bound=False, final_attack_rounds=1)


def test_a_reachable_violation_is_sat_with_a_counterexample_that_replays():
    net = mlp([(np.array([[1.0, -1.0], [0.5, 2.0]]), np.zeros(2)),
               (np.array([[1.0, 0.0], [0.0, 1.0]]), np.zeros(2))])
    spec = spec_of([-1, -1], [1, 1], [[1.0, -1.0]], [0.0])  # unsafe: y0 <= y1
    res = verify(net, spec, timeout=20, method="attack")
    assert res.status == "sat" and res.method == "attack"
    x, y = res.counterexample
    assert spec.violated_by(x, net(x))[0]
    assert np.array_equal(y, net(x).ravel())


def test_unsat_needs_every_pair_strictly_refuted(bounds_stand_in):
    net = affine_net(np.array([[1.0, 0.0]]), np.array([0.0]))
    spec = spec_of([0, 0], [1, 1], [[1.0]], [-0.5])  # unsafe: y <= -0.5 (never)
    bounds_stand_in(StandInBounds(lambda C, d: np.zeros(len(d))))  # lower bound exactly 0
    res = verify(net, spec, timeout=20, options=NO_BAB)
    assert res.status == "unknown" and res.margin == 0.0
    bounds_stand_in(StandInBounds(lambda C, d: np.full(len(d), 1e-300)))
    res = verify(net, spec, timeout=20, options=NO_BAB)
    assert res.status == "unsat" and res.margin == 1e-300 and res.method == "ibp"


def test_exact_affine_bounds_decide_per_case_and_per_conjunction(bounds_stand_in):
    # y = (x0 + x1, x0 - x1) over [0, 1]^2: y0 in [0, 2], y1 in [-1, 1]
    net = affine_net(np.array([[1.0, 1.0], [1.0, -1.0]]), np.zeros(2))
    far = Conjunction(np.array([[-1.0, 0.0]]), np.array([-3.0]))           # y0 >= 3: never
    both = Conjunction(np.array([[0.0, 1.0], [-1.0, 0.0]]), np.array([-2.0, 0.0]))  # y1<=-2: never
    box = InputSet(np.zeros(2), np.ones(2))
    spec = Spec((Case(box, (far, both)),), 2, 2)
    stand_in = bounds_stand_in(StandInBounds())
    res = verify(net, spec, timeout=20, options=NO_BAB)
    assert res.status == "unsat" and res.margin == pytest.approx(1.0)  # min(3 - 2, -1 + 2)
    assert stand_in.calls == ["ibp"]
    reachable = Conjunction(np.array([[-1.0, 0.0]]), np.array([-1.5]))     # y0 >= 1.5: yes
    spec2 = Spec((Case(box, (far,)), Case(box, (reachable,))), 2, 2)
    res = verify(net, spec2, timeout=20, options=NO_BAB)
    assert res.status == "sat"
    assert spec2.cases[1].violated_by(*res.counterexample)[0]


def test_auto_moves_on_when_a_method_lacks_an_op_and_forced_methods_report_it(bounds_stand_in):
    net = affine_net(np.eye(1), np.zeros(1))
    spec = spec_of([0], [1], [[-1.0]], [-2.0])  # y >= 2: never
    stand_in = bounds_stand_in(StandInBounds(fail={"ibp": UnsupportedOpError("no rule")}))
    res = verify(net, spec, timeout=20, options=NO_BAB)
    assert res.status == "unsat" and res.method == "crown"
    assert stand_in.calls == ["ibp", "crown"]
    res = verify(net, spec, timeout=20, method="ibp", options=NO_BAB)
    assert res.status == "error" and "no rule" in res.message


@pytest.mark.parametrize("failure", [RuntimeError("boom"), MemoryError(), FloatingPointError()])
def test_an_exception_in_the_pipeline_is_an_error_never_unsat(bounds_stand_in, failure):
    net = affine_net(np.eye(1), np.zeros(1))
    spec = spec_of([0], [1], [[-1.0]], [-2.0])
    bounds_stand_in(StandInBounds(fail={m: failure for m in ("ibp", "crown", "alpha-crown")}))
    res = verify(net, spec, timeout=20, options=NO_BAB)
    assert res.status == "error" and type(failure).__name__ in res.message


def test_nan_bounds_are_an_error(bounds_stand_in):
    net = affine_net(np.eye(1), np.zeros(1))
    spec = spec_of([0], [1], [[-1.0]], [-2.0])
    bounds_stand_in(StandInBounds(lambda C, d: np.full(len(d), np.nan)))
    assert verify(net, spec, timeout=20, options=NO_BAB).status == "error"


def test_shapes_that_do_not_fit_are_bad_input():
    net = affine_net(np.ones((2, 3)), np.zeros(2))
    with pytest.raises(ModelError, match="2 inputs but the model has 3"):
        verify(net, spec_of([0, 0], [1, 1], [[1.0, 0.0]], [0.0]))
    with pytest.raises(ModelError, match="1 outputs but the model has 2"):
        verify(net, spec_of([0, 0, 0], [1, 1, 1], [[1.0]], [0.0]))
    with pytest.raises(VerifierError, match="unknown method"):
        verify(net, spec_of([0, 0, 0], [1, 1, 1], [[1.0, 0.0]], [0.0]), method="magic")


def test_an_expired_deadline_is_timeout_not_unknown():
    net = mlp([(np.eye(2), np.zeros(2)), (np.ones((1, 2)), np.zeros(1))])
    spec = spec_of([-1, -1], [1, 1], [[1.0]], [-0.1])  # y <= -0.1: never
    res = verify(net, spec, timeout=0.0)
    assert res.status == "timeout" and res.counterexample is None


def install_bab(monkeypatch, fn):
    mod = types.ModuleType("verifier.search.bab")
    mod.__spec__ = importlib.machinery.ModuleSpec("verifier.search.bab", None)
    mod.branch_and_bound = fn
    mod.split_kind = real_bab.split_kind
    monkeypatch.setitem(sys.modules, "verifier.search.bab", mod)
    monkeypatch.setattr(verifier.search, "bab", mod, raising=False)


def test_branch_and_bound_gets_the_open_pairs_and_its_counterexample_is_replayed(
        bounds_stand_in, monkeypatch):
    net = affine_net(np.array([[1.0, 0.0]]), np.array([0.0]))
    spec = spec_of([0, 0], [1, 1], [[-1.0]], [-0.5])  # y >= 0.5: reachable, but say PGD missed
    bounds_stand_in(StandInBounds(lambda C, d: np.full(len(d), -1.0)))
    seen = {}

    def bab(net_, spec_, open_pairs, *, deadline, replay, method, options, progress):
        seen["open"] = open_pairs
        return verifier.Result("sat", counterexample=(np.array([0.1, 0.1]), np.array([9.0])))

    install_bab(monkeypatch, bab)
    monkeypatch.setattr(verify_module, "attack",
                        lambda *a, **k: types.SimpleNamespace(counterexample=None, best_margin=None,
                                                              evaluations=0, seconds=0.0))
    res = verify(net, spec, timeout=20)
    assert seen["open"] == [(0, 0)]
    assert res.status == "error" and "does not replay" in res.message  # x0 = 0.1 < 0.5

    def bab_unsat(net_, spec_, open_pairs, **kw):
        return verifier.Result("unsat", margin=0.25)

    install_bab(monkeypatch, bab_unsat)
    res = verify(net, spec, timeout=20)
    assert res.status == "unsat" and res.method == "bab"


@pytest.mark.parametrize("n_inputs, rounds", [(20, [1, 20]), (2, [1])])
def test_a_close_miss_gets_a_second_attack_unless_the_input_is_split_next(
        bounds_stand_in, monkeypatch, n_inputs, rounds):
    net = affine_net(np.ones((1, n_inputs)), np.zeros(1))
    spec = spec_of(np.zeros(n_inputs), np.ones(n_inputs), [[-1.0]], [-n_inputs - 1.0])
    bounds_stand_in(StandInBounds(lambda C, d: np.full(len(d), -1000.0)))  # loose bounds
    seen = []

    def attack(net_, spec_, replay, options, deadline, probe):
        seen.append(options.rounds)  # a miss by 1.0: close next to a bound of -1000
        return types.SimpleNamespace(counterexample=None, best_margin=1.0, evaluations=1,
                                     seconds=0.0)

    monkeypatch.setattr(verify_module, "attack", attack)
    install_bab(monkeypatch, lambda *a, **k: verifier.Result("unsat", margin=0.5))
    res = verify(net, spec, timeout=20)
    assert res.status == "unsat" and seen == rounds  # input split (2 values) checks points itself


def test_progress_is_reported_between_stages():
    net = mlp([(np.eye(2), np.zeros(2)), (np.ones((1, 2)), np.zeros(1))])
    spec = spec_of([-1, -1], [1, 1], [[-1.0]], [-1.5])  # y >= 1.5: reachable at (1, 1)
    stages = []
    res = verify(net, spec, timeout=20, progress=lambda s, f: stages.append((s, f)))
    assert res.status == "sat" and stages and stages[0][0] == "attack"
    assert all(0.0 <= f <= 1.0 for _, f in stages)


def test_relu_net_counterexample_is_exact_on_the_network():
    net = mlp([(np.array([[2.0, -1.0]]), np.array([-0.5])), (np.array([[1.0]]), np.zeros(1))])
    spec = spec_of([0, 0], [1, 1], [[-1.0]], [-1.4])  # relu(2 x0 - x1 - 0.5) >= 1.4
    res = verify(net, spec, timeout=20, method="attack")
    assert res.status == "sat"
    x, y = res.counterexample
    assert net(x)[0, 0] >= 1.4  # replayed on the network itself (no ONNX file)
