"""The bound API: shapes and validation, agreement with the dense numpy reference, exactness
where the answer is known, split constraints and known bounds, alpha-CROWN's gradient, and the
spec helpers (``spec_bounds``, ``spec_report``)."""
import numpy as np
import pytest

from verifier import bounds
from verifier.bounds import reference
from verifier.bounds.alpha import primal
from verifier.bounds.crown import final_crown, spec_rows, sweep
from verifier.bounds.plan import get_plan
from verifier.bounds.relax import relaxation
from verifier.network import Network, Node
from verifier.network import ops as O


def mlp(sizes, seed=0, scale=1.0):
    """A Linear/ReLU chain with the given layer sizes (first = input size)."""
    rng = np.random.default_rng(seed)
    nodes, cur = [], "x"
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        W = rng.standard_normal((b, a)) * scale / np.sqrt(a)
        nodes.append(Node(f"l{i}", O.Linear(W, rng.standard_normal(b) * 0.3), (cur,), (b,)))
        cur = f"l{i}"
        if i < len(sizes) - 2:
            nodes.append(Node(f"r{i}", O.Relu(), (cur,), (b,)))
            cur = f"r{i}"
    return Network("x", (sizes[0],), nodes, cur)


def box(n, B=1, seed=1, eps=0.3):
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((B, n))
    return c - eps, c + eps


def sample(lo, hi, rng, k=2000):
    return lo + rng.random((k, lo.size)) * (hi - lo)


# ---------------------------------------------------------------------------------------------
# API
# ---------------------------------------------------------------------------------------------
def test_shapes_batched_unbatched_and_per_box_rows():
    net = mlp([4, 8, 3])
    lo, hi = box(4, B=5)
    r = bounds.compute(net, lo, hi)
    assert r.lower.shape == (5, 3) and r.method == "crown"
    r1 = bounds.compute(net, lo[0], hi[0], method="ibp")
    assert r1.lower.shape == (1, 3)
    C = np.random.default_rng(0).standard_normal((5, 2, 3))
    r2 = bounds.compute(net, lo, hi, C, np.zeros((5, 2)), intermediate=True)
    assert r2.lower.shape == (5, 2)
    assert r2.intermediate["l0"].lower.shape == (5, 8)
    for b in range(5):
        one = bounds.compute(net, lo[b], hi[b], C[b])
        np.testing.assert_allclose(one.lower[0], r2.lower[b], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bad", [
    dict(lower=np.zeros(3), upper=np.ones(3)),
    dict(lower=np.ones(4), upper=np.zeros(4)),
    dict(lower=np.full(4, -np.inf), upper=np.zeros(4)),
    dict(C=np.ones((2, 5))),
    dict(C=np.ones((2, 3)), d=np.ones(3)),
    dict(method="lp-magic"),
    dict(options=bounds.AlphaOptions()),
])
def test_invalid_arguments_are_errors(bad):
    net = mlp([4, 8, 3])
    args = dict(lower=np.zeros(4), upper=np.ones(4), C=None, d=None, method="crown", options=None)
    args.update(bad)
    with pytest.raises((ValueError, TypeError)):
        bounds.compute(net, **args)


def test_input_shape_boxes_and_image_shapes():
    net = Network("x", (1, 2, 2), (Node("f", O.Reshape((4,)), ("x",), (4,)),
                                  Node("l", O.Linear(np.eye(4), np.zeros(4)), ("f",), (4,))), "l")
    lo = np.zeros((3, 1, 2, 2))
    r = bounds.compute(net, lo, lo + 1, method="ibp")
    assert r.lower.shape == (3, 4)
    assert np.all(r.lower <= 0) and np.all(r.lower > -1e-12) and np.all(r.upper >= 1)


# ---------------------------------------------------------------------------------------------
# exactness and agreement with the reference
# ---------------------------------------------------------------------------------------------
def test_affine_network_bounds_are_exact_up_to_rounding():
    rng = np.random.default_rng(3)
    W = rng.standard_normal((3, 5))
    net = Network("x", (5,), (Node("l", O.Linear(W, np.ones(3)), ("x",), (3,)),), "l")
    lo, hi = box(5)
    exact_lo = np.where(W > 0, W * lo, W * hi).sum(1) + 1
    for method in bounds.METHODS:
        r = bounds.compute(net, lo, hi, method=method)
        assert np.all(r.lower[0] <= exact_lo) and np.all(r.lower[0] > exact_lo - 1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_matches_the_dense_numpy_reference(seed):
    net = mlp([6, 20, 20, 20, 4], seed=seed, scale=1.5)
    lo, hi = box(6, B=3, seed=seed, eps=0.4)
    rng = np.random.default_rng(seed)
    C = rng.standard_normal((3, 4))
    d = rng.standard_normal(3)
    for method, ref in (("ibp", reference.ibp), ("crown", reference.crown),
                        ("alpha-crown", reference.alpha_crown)):
        r = bounds.compute(net, lo, hi, C, d, method)
        rl, ru = ref(net, lo, hi, C, d)
        np.testing.assert_allclose(r.lower, rl, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(r.upper, ru, rtol=1e-9, atol=1e-9)


def test_alpha_crown_improves_on_crown_and_stays_sound():
    net = mlp([5, 30, 30, 2], seed=7, scale=2.0)
    lo, hi = box(5, seed=7, eps=0.5)
    c = bounds.compute(net, lo, hi, method="crown")
    a = bounds.compute(net, lo, hi, method="alpha-crown")
    assert np.all(a.lower >= c.lower) and np.all(a.upper <= c.upper)
    assert np.any(a.lower > c.lower + 1e-6)
    y = net(sample(lo[0], hi[0], np.random.default_rng(0)))
    assert np.all(y >= a.lower) and np.all(y <= a.upper)


def test_alpha_gradient_matches_finite_differences():
    net = mlp([4, 10, 10, 2], seed=11, scale=2.0)
    lo, hi = box(4, seed=11, eps=0.6)
    plan = get_plan(net)
    st = sweep(plan, lo, hi, bounds.CrownOptions())
    A0, const, mag = spec_rows(np.eye(2)[None], np.zeros((1, 2)))
    rng = np.random.default_rng(0)
    for pn in plan.nodes:
        if isinstance(pn.op, O.Relu):
            r = relaxation(st, pn)
            st.alpha[pn.name] = np.ascontiguousarray(
                np.broadcast_to(r.lo_k, (1, 4, r.lo_k.shape[2])))
            unst = (st.lo[pn.inputs[0]] < 0) & (st.hi[pn.inputs[0]] > 0)
            st.alpha[pn.name][:, :, unst[0]] = rng.uniform(0.1, 0.9, (1, 4, unst.sum()))
    st.record = {}
    base = final_crown(st, A0, const, mag)
    grads = primal(st)
    checked = 0
    for name, alpha in st.alpha.items():
        unst = np.flatnonzero((st.lo[plan.node(name).inputs[0]] < 0)
                              & (st.hi[plan.node(name).inputs[0]] > 0))
        for j in unst[:4]:
            for row in range(4):
                h = 1e-6
                alpha[0, row, j] += h
                st.record = {}
                up = final_crown(st, A0, const, mag)
                alpha[0, row, j] -= h
                fd = (up[0, row] - base[0, row]) / h
                assert abs(fd - grads[name][0, row, j]) < 1e-5 * (1 + abs(fd))
                checked += 1
    assert checked > 4


# ---------------------------------------------------------------------------------------------
# branch and bound inputs: split constraints and known bounds
# ---------------------------------------------------------------------------------------------
def test_split_constraints_bound_the_subdomain():
    net = mlp([3, 12, 12, 2], seed=5, scale=2.0)
    lo, hi = box(3, seed=5, eps=0.8)
    full = bounds.compute(net, lo, hi, intermediate=True)
    pre = full.intermediate["l0"]
    j = int(np.flatnonzero((pre.lower[0] < 0) & (pre.upper[0] > 0))[0])
    rng = np.random.default_rng(1)
    x = sample(lo[0], hi[0], rng, 20000)
    z = net.forward_all(x)["l0"][:, j]
    for sign in (1, -1):
        s = np.zeros((1, 12), dtype=np.int8)
        s[0, j] = sign
        for method in bounds.METHODS:
            r = bounds.compute(net, lo, hi, method=method, splits={"r0": s})
            y = net(x[(z >= 0) if sign > 0 else (z <= 0)])
            assert np.all(y >= r.lower) and np.all(y <= r.upper)


def test_contradictory_splits_give_an_empty_result():
    net = mlp([2, 4, 1], seed=2)
    lo, hi = np.array([[0.0, 0.0]]), np.array([[1.0, 1.0]])
    pre = bounds.compute(net, lo, hi, intermediate=True).intermediate["l0"]
    stable = np.flatnonzero(pre.upper[0] < 0)
    if stable.size == 0:
        stable = np.flatnonzero(pre.lower[0] > 0)
        sign = -1
    else:
        sign = 1
    assert stable.size
    s = np.zeros((1, 4))
    s[0, stable[0]] = sign
    r = bounds.compute(net, lo, hi, splits={"r0": s})
    assert np.all(r.lower == np.inf) and np.all(r.upper == -np.inf)
    assert r.stats["empty_boxes"] == 1


def test_known_bounds_are_intersected():
    net = mlp([3, 10, 10, 2], seed=9, scale=2.0)
    lo, hi = box(3, seed=9, eps=0.5)
    full = bounds.compute(net, lo, hi, intermediate=True)
    b = full.intermediate["l1"]
    mid = 0.5 * (b.lower + b.upper)
    tighter = bounds.Bounds(np.minimum(mid, b.lower + 0.1), b.upper)
    r = bounds.compute(net, lo, hi, intermediate=True, known={"l1": tighter})
    assert np.all(r.intermediate["l1"].lower >= tighter.lower)


# ---------------------------------------------------------------------------------------------
# specs
# ---------------------------------------------------------------------------------------------
def _spec(net):
    from specs import Case, Conjunction, InputSet, Spec
    lo, hi = box(net.n_inputs)
    conjs = (Conjunction(np.array([[1.0, -1.0, 0.0]]), np.zeros(1)),
             Conjunction(np.array([[0.0, 1.0, -1.0], [1.0, 0.0, 0.0]]), np.array([0.0, 2.0])))
    return Spec((Case(InputSet(lo[0], hi[0]), conjs),
                 Case(InputSet(lo[0] + 0.1, hi[0] + 0.1), conjs[:1])), net.n_inputs, 3)


def test_spec_bounds_and_report_follow_the_file_order():
    net = mlp([4, 8, 3])
    spec = _spec(net)
    res = bounds.spec_bounds(net, spec, "crown")
    assert [len(c) for c in res] == [2, 1]
    assert res[0][1].lower.shape == (1, 2)
    conj = spec.cases[0].unsafe[1]
    one = bounds.compute(net, spec.cases[0].input.lower, spec.cases[0].input.upper, conj.C,
                         conj.d)
    np.testing.assert_allclose(res[0][1].lower, one.lower, rtol=1e-12)
    rep = bounds.spec_report(net, spec, "alpha-crown")
    assert rep["method"] == "alpha-crown" and rep["seconds"] > 0
    assert [len(d["rows"]) for d in rep["disjuncts"]] == [1, 2, 1]
    assert len(rep["outputs"]) == 3
    for row in rep["disjuncts"][1]["rows"]:
        assert row["lower"] <= row["upper"]
    out = bounds.compute(net, spec.cases[0].input.lower, spec.cases[0].input.upper,
                         method="alpha-crown")
    assert rep["outputs"][0]["lower"] <= out.lower[0, 0] + 1e-12
    js = bounds.bounds_json(res, "crown", 0.5)
    assert js["seconds"] == 0.5 and js["outputs"] == [] and len(js["disjuncts"]) == 3


def test_bounding_every_neuron_matches_the_reference_and_is_never_looser_on_it():
    net = mlp([5, 80, 80, 80, 3], seed=21, scale=1.7)
    lo, hi = box(5, B=2, seed=21, eps=0.5)
    dense = bounds.CrownOptions(dense_fraction=0.0, dense_below=0)
    r = bounds.compute(net, lo, hi, method="crown", options=dense)
    rl, ru = reference.crown(net, lo, hi, np.eye(3), np.zeros(3), dense_fraction=0.0)
    np.testing.assert_allclose(r.lower, rl, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(r.upper, ru, rtol=1e-9, atol=1e-9)


def test_bad_split_and_known_names_are_errors():
    net = mlp([3, 4, 2])
    lo, hi = box(3)
    with pytest.raises(ValueError):
        bounds.compute(net, lo, hi, splits={"l0": np.zeros(4)})
    with pytest.raises(ValueError):
        bounds.compute(net, lo, hi, known={"x": bounds.Bounds(lo, hi)})


def test_a_value_used_twice_keeps_its_bounds_sound():
    """Concat of a value with itself, then a residual merge: the coefficient of one value is
    accumulated from several consumers."""
    rng = np.random.default_rng(4)
    nodes = (Node("a", O.Linear(rng.standard_normal((3, 2)), rng.standard_normal(3)), ("x",), (3,)),
             Node("r", O.Relu(), ("a",), (3,)),
             Node("c", O.Concat(0), ("r", "r"), (6,)),
             Node("l", O.Linear(rng.standard_normal((3, 6)), rng.standard_normal(3)), ("c",), (3,)),
             Node("s", O.Sum((1.0, -2.0)), ("l", "a"), (3,)),
             Node("t", O.Tanh(), ("s",), (3,)),
             Node("o", O.Linear(rng.standard_normal((2, 3)), rng.standard_normal(2)), ("t",), (2,)))
    net = Network("x", (2,), nodes, "o")
    lo, hi = box(2, B=3, eps=1.0)
    for method in bounds.METHODS:
        r = bounds.compute(net, lo, hi, method=method)
        for b in range(3):
            y = net(sample(lo[b], hi[b], rng))
            assert np.all(y >= r.lower[b]) and np.all(y <= r.upper[b])


def test_reusing_known_bounds_skips_their_crown_pass_and_stays_sound():
    net = mlp([4, 30, 30, 30, 2], seed=13, scale=1.8)
    lo, hi = box(4, seed=13, eps=0.4)
    parent = bounds.compute(net, lo, hi, intermediate=True)
    known = {k: v for k, v in parent.intermediate.items() if k in ("l0", "l1")}
    opts = bounds.CrownOptions(reuse_known=True)
    child = bounds.compute(net, lo, hi, options=opts, known=known, intermediate=True)
    assert child.stats["crown_rows"] < parent.stats["crown_rows"]
    np.testing.assert_allclose(child.lower, parent.lower, rtol=1e-9, atol=1e-9)
    y = net(sample(lo[0], hi[0], np.random.default_rng(2)))
    assert np.all(y >= child.lower) and np.all(y <= child.upper)


def test_warm_up_runs_every_method():
    assert bounds.warm_up() > 0


def test_no_rows_and_no_nodes():
    net = mlp([3, 4, 2])
    lo, hi = box(3)
    ident = Network("x", (3,), (), "x")
    for method in bounds.METHODS:
        r = bounds.compute(net, lo, hi, np.zeros((0, 2)), np.zeros(0), method, intermediate=True)
        assert r.lower.shape == (1, 0) and r.intermediate["l0"].lower.shape == (1, 4)
        r = bounds.compute(ident, lo, hi, method=method)
        assert np.all(r.lower <= lo) and np.all(r.lower > lo - 1e-12)
        assert np.all(r.upper >= hi) and np.all(r.upper < hi + 1e-12)
