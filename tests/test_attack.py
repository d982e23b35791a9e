"""The attack finds counterexamples where they are easy, and never says one exists when the
replay on the checking model refuses it (input set, linear constraints, precision, output)."""
import numpy as np
import pytest

from specs import Case, Conjunction, InputSet, Spec
from verifier.network import Network, Node
from verifier.network.ops import Linear, Relu
from verifier.search import AttackOptions, Replay, attack, snap_to_float32


def mlp(weights):
    """A ReLU MLP from [(W, b), ...] (no ReLU after the last layer)."""
    nodes, prev = [], "x"
    for i, (W, b) in enumerate(weights):
        nodes.append(Node(f"fc{i}", Linear(W, b), (prev,), (np.shape(W)[0],)))
        prev = f"fc{i}"
        if i < len(weights) - 1:
            nodes.append(Node(f"relu{i}", Relu(), (prev,), (np.shape(W)[0],)))
            prev = f"relu{i}"
    return Network("x", (np.shape(weights[0][0])[1],), tuple(nodes), prev)


def spec_of(lower, upper, C, d, A=None, b=None):
    lower, upper = np.asarray(lower, float), np.asarray(upper, float)
    C = np.atleast_2d(np.asarray(C, float))
    return Spec((Case(InputSet(lower, upper, A, b), (Conjunction(C, np.atleast_1d(d)),)),),
                lower.size, C.shape[1])


def test_pgd_finds_a_counterexample_that_sampling_misses():
    # y = sum(x) over [0, 1]^50; unsafe: y >= 49.5 (i.e. -y <= -49.5): only near the top corner
    n = 50
    net = mlp([(np.ones((1, n)), np.zeros(1))])
    spec = spec_of(np.zeros(n), np.ones(n), [[-1.0]], [-49.5])
    res = attack(net, spec, Replay(spec, net=net), AttackOptions(samples=64, corners=0))
    assert res.counterexample is not None
    x, y = res.counterexample.x, res.counterexample.y
    assert spec.violated_by(x, net(x).reshape(1, -1))[0]
    assert y[0] >= 49.5


def test_attack_never_returns_sat_for_a_property_that_holds():
    # y = relu(x0) + relu(x1) >= 0 always; unsafe: y <= -0.1
    net = mlp([(np.eye(2), np.zeros(2)), (np.ones((1, 2)), np.zeros(1))])
    spec = spec_of([-1, -1], [1, 1], [[1.0]], [-0.1])
    res = attack(net, spec, Replay(spec, net=net), AttackOptions(rounds=2))
    assert res.counterexample is None
    assert res.best_margin is not None and res.best_margin >= 0.1


def test_a_candidate_the_checking_model_refuses_is_not_returned():
    net = mlp([(np.ones((1, 2)), np.zeros(1))])
    spec = spec_of([0, 0], [1, 1], [[-1.0]], [-1.5])  # unsafe: x0 + x1 >= 1.5

    class SafeRunner:  # stands for an onnxruntime model that disagrees with the network
        def __call__(self, X):
            return np.zeros((np.shape(X)[0], 1))

    res = attack(net, spec, Replay(spec, runner=SafeRunner()), AttackOptions(rounds=1))
    assert res.counterexample is None
    assert res.best_margin is not None and res.best_margin < 0  # the network alone was fooled


def test_linear_input_constraints_are_checked_not_assumed():
    net = mlp([(np.array([[1.0, 1.0], [1.0, -1.0]]), np.zeros(2))])
    A, b = np.array([[1.0, 1.0]]), np.array([1.0])  # x0 + x1 <= 1
    # unsafe x0 + x1 >= 1.5: reachable in the box, not in the constrained set
    spec = spec_of([0, 0], [1, 1], [[-1.0, 0.0]], [-1.5], A, b)
    assert attack(net, spec, Replay(spec, net=net)).counterexample is None
    # unsafe x0 - x1 >= 0.9: reachable at (1, 0), which satisfies the constraint
    spec = spec_of([0, 0], [1, 1], [[0.0, -1.0]], [-0.9], A, b)
    ce = attack(net, spec, Replay(spec, net=net)).counterexample
    assert ce is not None and spec.cases[0].input.contains(ce.x)[0]


def test_every_row_of_a_conjunction_must_hold():
    # a random 5-16-16-5 net; unsafe: y0 is the largest output (4 rows y_i - y0 <= 0)
    rng = np.random.default_rng(3)
    layers = [(rng.normal(size=(16, 5)), rng.normal(size=16)),
              (rng.normal(size=(16, 16)) / 4, rng.normal(size=16)),
              (rng.normal(size=(5, 16)), rng.normal(size=5))]
    net = mlp(layers)
    C = np.zeros((4, 5))
    C[:, 0] = -1.0
    C[np.arange(4), np.arange(1, 5)] = 1.0
    spec = spec_of(-np.ones(5), np.ones(5), C, np.zeros(4))
    X = rng.uniform(-1, 1, size=(20000, 5))
    reachable = spec.violated_by(X, net(X)).any()
    res = attack(net, spec, Replay(spec, net=net))
    if res.counterexample is not None:
        x = res.counterexample.x
        assert np.argmax(net(x)[0]) == 0
    if reachable:
        assert res.counterexample is not None


def test_an_expired_deadline_stops_the_search_at_once():
    net = mlp([(np.ones((1, 2)), np.zeros(1))])
    spec = spec_of([0, 0], [1, 1], [[-1.0]], [-1.5])
    res = attack(net, spec, Replay(spec, net=net), deadline=0.0)
    assert res.counterexample is None and res.evaluations == 0


@pytest.mark.parametrize("lo,hi", [(0.1, 0.1 + 1e-7), (-0.3, 0.7), (1e-3, 1e-3 + 3e-10),
                                   (0.6, 0.679857769)])
def test_snapping_to_float32_stays_in_the_box(lo, hi):
    rng = np.random.default_rng(0)
    x = rng.uniform(lo, hi, size=(200, 1))
    x = np.concatenate([x, [[lo], [hi]]])
    s = snap_to_float32(x, np.array([lo]), np.array([hi]))
    assert np.array_equal(s.astype(np.float32).astype(np.float64), s)
    inside = (s >= lo) & (s <= hi)
    f32_lo = np.float32(lo)
    has_f32 = np.nextafter(f32_lo, np.float32(np.inf)) <= hi or lo <= f32_lo <= hi
    if has_f32:
        assert inside.all()
