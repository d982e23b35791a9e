"""The training API: schedules, Adam and clipping, model builders and IBP initialisation,
determinism for a seed, fits that improve certified accuracy on a synthetic problem, the MNIST
loader, and the ONNX round trip of a trained model."""
import gzip
import math

import numpy as np
import pytest

from verifier.network import ops as O
from verifier.train import (FitOptions, Schedule, cnn, cnn7, cnn_medium, cnn_small, evaluate,
                            fit, get_params, ibp_init, linear_ramp, load_mnist, mlp, read_idx,
                            smoothed_ramp)
from verifier.train.optim import Adam, clip_by_global_norm, minibatches

# --------------------------------------------------------------------------------------------
# schedules
# --------------------------------------------------------------------------------------------


def test_smoothed_ramp_is_continuous_monotone_and_hits_its_ends():
    vals = [smoothed_ramp(s, 10, 100, 0.0, 0.3) for s in range(0, 130)]
    assert vals[10] == 0.0 and vals[110] == pytest.approx(0.3) and vals[129] == 0.3
    assert all(b >= a for a, b in zip(vals, vals[1:]))
    steps = np.diff(vals)
    assert np.max(np.abs(np.diff(steps[10:110]))) < 1e-3  # no kink where the line takes over
    assert vals[20] < linear_ramp(20, 10, 100, 0.0, 0.3)  # a slow start


def test_schedule_warms_up_then_ramps_eps_kappa_and_beta():
    s = Schedule(eps=0.2, warmup=5, ramp=10, shape="linear", kappa_end=0.5)
    assert (s.eps_at(0), s.kappa_at(0), s.beta_at(0)) == (0.0, 1.0, 1.0)
    assert s.eps_at(10) == pytest.approx(0.1) and s.kappa_at(10) == pytest.approx(0.75)
    assert s.beta_at(10) == pytest.approx(0.5)
    assert (s.eps_at(99), s.kappa_at(99), s.beta_at(99)) == (0.2, 0.5, 0.0)


# --------------------------------------------------------------------------------------------
# optimiser
# --------------------------------------------------------------------------------------------


def test_adam_minimises_a_quadratic():
    p = {"w": np.array([3.0, -2.0])}
    opt = Adam(p, lr=0.1)
    for _ in range(500):
        opt.step({"w": 2 * (p["w"] - np.array([1.0, 0.5]))})
    np.testing.assert_allclose(p["w"], [1.0, 0.5], atol=1e-3)


def test_clipping_scales_to_the_global_norm_and_rejects_nan():
    g = {"a": np.array([3.0]), "b": np.array([4.0])}
    clipped, norm = clip_by_global_norm(g, 1.0)
    assert norm == 5.0
    assert clipped["a"][0] == pytest.approx(0.6) and clipped["b"][0] == pytest.approx(0.8)
    assert clip_by_global_norm(g, 10.0)[0] is g
    with pytest.raises(FloatingPointError):
        clip_by_global_norm({"a": np.array([np.nan])}, 1.0)


def test_minibatches_cover_every_sample_once():
    idx = np.concatenate(list(minibatches(103, 10, np.random.default_rng(0))))
    assert sorted(idx) == list(range(103))


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------


def test_builders_give_the_documented_shapes():
    assert mlp([784, 256, 10], input_shape=(1, 28, 28)).output_shape == (10,)
    small = cnn_small()
    assert [n.shape for n in small.nodes if isinstance(n.op, O.Conv)] == [(16, 13, 13),
                                                                          (32, 10, 10)]
    assert small.node("fc1").op.W.shape == (100, 3200)
    assert cnn_medium().node("fc1").op.W.shape == (512, 1024)
    assert cnn7(width=4, linear=8).node("conv5").shape == (8, 14, 14)
    net = cnn((3, 8, 8), [(4, 3, 1, 1)], [5], n_classes=2, activation="tanh")
    assert net(np.zeros((2, 3, 8, 8))).shape == (2, 2)
    assert isinstance(net.node("tanh1").op, O.Tanh)


def test_builders_are_deterministic_for_a_seed():
    a, b, c = (get_params(mlp([6, 5, 3], seed=s)) for s in (1, 1, 2))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a[("fc1", "W")], c[("fc1", "W")])


def test_ibp_initialisation_has_the_shi_et_al_scale():
    net = ibp_init(mlp([400, 300, 300, 10]), seed=0)
    for name, fan_in in (("fc1", 400), ("fc2", 300)):
        W = net.node(name).op.W
        assert W.std() == pytest.approx(math.sqrt(2 * math.pi) / fan_in, rel=0.02)
    assert np.all(net.node("fc1").op.b == 0)
    # the last layer keeps its own initialisation
    assert np.array_equal(net.node("fc3").op.W, mlp([400, 300, 300, 10]).node("fc3").op.W)


# --------------------------------------------------------------------------------------------
# fit
# --------------------------------------------------------------------------------------------


def _two_blobs(n=200, seed=0):
    """Two classes in 2-D at distance ~2 from each other, each a small cluster."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    centres = np.array([[-1.0, 0.0], [1.0, 0.0]])
    X = centres[y] + rng.normal(scale=0.25, size=(n, 2))
    return X, y


FAST = dict(epochs=12, batch_size=50, lr=0.01, warmup_epochs=1, ramp_epochs=5)


@pytest.mark.parametrize("method", ["ibp", "crown-ibp", "pgd"])
def test_fit_improves_certified_accuracy_on_a_synthetic_problem(method):
    X, y = _two_blobs()
    eps = 0.3
    net0 = mlp([2, 16, 16, 2], seed=0)
    before = evaluate(net0, X, y, eps, method="ibp", pgd_steps=0)["certified"]
    natural, _ = fit(net0, X, y, eps=eps, method="natural", **FAST)
    robust, hist = fit(net0, X, y, eps=eps, method=method, **FAST)
    after = evaluate(robust, X, y, eps, method="ibp", pgd_steps=10)
    nat = evaluate(natural, X, y, eps, method="ibp", pgd_steps=0)
    assert len(hist) == FAST["epochs"] and hist[-1]["eps"] == pytest.approx(eps)
    assert after["clean"] > 0.9
    if method != "pgd":
        assert after["certified"] > 0.8 > before
        assert after["certified"] > nat["certified"]
    else:
        assert after["pgd"] > 0.8


def test_fit_is_deterministic_for_a_seed_and_reports_progress():
    X, y = _two_blobs(60)
    seen = []
    kw = dict(eps=0.2, method="crown-ibp", epochs=3, batch_size=20, ramp_epochs=1)
    a, ha = fit(mlp([2, 8, 2]), X, y, seed=3, progress=seen.append, **kw)
    b, hb = fit(mlp([2, 8, 2]), X, y, seed=3, **kw)
    c, _ = fit(mlp([2, 8, 2]), X, y, seed=4, **kw)
    pa, pb, pc = get_params(a), get_params(b), get_params(c)
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)
    assert not all(np.array_equal(pa[k], pc[k]) for k in pa)
    assert [r["epoch"] for r in seen] == [1, 2, 3]
    assert [r["loss"] for r in ha] == [r["loss"] for r in hb]


def test_fit_options_and_overrides():
    X, y = _two_blobs(40)
    opts = FitOptions(epochs=2, batch_size=40, lr_milestones=(0.5,), lr_decay=0.1)
    _, hist = fit(mlp([2, 4, 2]), X, y, eps=0.1, options=opts, lr=0.02)
    assert [r["lr"] for r in hist] == [0.02, pytest.approx(0.002)]
    with pytest.raises(ValueError, match="unknown method"):
        fit(mlp([2, 4, 2]), X, y, method="magic")
    with pytest.raises(TypeError):
        fit(mlp([2, 4, 2]), X, y, no_such_option=1)


def test_frozen_nodes_keep_their_parameters():
    X, y = _two_blobs(40)
    net0 = mlp([2, 4, 2])
    net, _ = fit(net0, X, y, eps=0.1, epochs=1, frozen=("fc1",))
    assert np.array_equal(net.node("fc1").op.W, net0.node("fc1").op.W)
    assert not np.array_equal(net.node("fc2").op.W, net0.node("fc2").op.W)


def test_fit_trains_a_cnn_with_crown_ibp():
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, size=(40, 1, 6, 6))
    y = (X[:, 0, :, :3].mean(axis=(1, 2)) > X[:, 0, :, 3:].mean(axis=(1, 2))).astype(int)
    net0 = cnn((1, 6, 6), [(3, 3, 1, 0)], [8], n_classes=2)
    net, hist = fit(net0, X, y, eps=0.01, method="crown-ibp", epochs=3, batch_size=20,
                    ramp_epochs=2, lr=0.01, domain=(0.0, 1.0))
    assert hist[-1]["loss"] < hist[0]["loss"] + 1.0 and np.isfinite(hist[-1]["loss"])
    assert net.summary() == net0.summary()


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


def test_read_idx_round_trip_and_errors(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = bytes([0, 0, 8, 3]) + np.array([2, 3, 4], ">u4").tobytes() + arr.tobytes()
    (tmp_path / "a.gz").write_bytes(gzip.compress(raw))
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), arr)
    (tmp_path / "b").write_bytes(raw[:-1])
    with pytest.raises(ValueError, match="header says"):
        read_idx(tmp_path / "b")
    (tmp_path / "c").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX"):
        read_idx(tmp_path / "c")


def test_mnist_test_set_loads(shared_data):
    X, y = load_mnist(shared_data / "mnist")
    assert X.shape == (10000, 1, 28, 28) and y.shape == (10000,)
    assert X.dtype == np.float64 and 0.0 == X.min() and X.max() == 1.0
    assert set(np.unique(y)) == set(range(10))


def test_worker_threads_compute_the_same_batch_gradient():
    from concurrent.futures import ThreadPoolExecutor

    from verifier.train.fit import batch_gradients
    X, y = _two_blobs(30)
    net = mlp([2, 8, 8, 2], seed=1)
    params = get_params(net)
    results = []
    for workers in (1, 3):
        opts = FitOptions(workers=workers)
        with ThreadPoolExecutor(workers) as pool:
            results.append(batch_gradients(net, params, X, y, "crown-ibp", 0.2, 0.5, 0.5, opts,
                                           np.random.default_rng(0), pool=pool if workers > 1
                                           else None))
    (g1, s1), (g3, s3) = results
    for k in g1:
        np.testing.assert_allclose(g1[k], g3[k], rtol=1e-10, atol=1e-13)
    assert s1["loss"] == pytest.approx(s3["loss"], rel=1e-12)
    assert s1["verified"] == s3["verified"] and s1["correct"] == s3["correct"]


def test_beta_can_reach_zero_before_the_eps_ramp_ends():
    s = Schedule(eps=0.2, warmup=0, ramp=10, beta_ramp=4)
    assert s.beta_at(2) == pytest.approx(0.5) and s.beta_at(4) == 0.0
    assert s.eps_at(4) < 0.2


def test_evaluate_counts_are_consistent_and_independent_of_workers():
    X, y = _two_blobs(80)
    net, _ = fit(mlp([2, 8, 2]), X, y, eps=0.2, epochs=3, batch_size=20, lr=0.02)
    a = evaluate(net, X, y, 0.2, method="ibp", pgd_steps=5, batch_size=30)
    b = evaluate(net, X, y, 0.2, method="ibp", pgd_steps=5, batch_size=30, workers=2)
    assert a["pgd"] == b["pgd"] and a["certified"] == b["certified"]
    assert a["certified"] <= a["pgd"] <= a["clean"]


def test_evaluate_refuses_a_certificate_that_pgd_breaks(monkeypatch):
    import verifier.bounds
    X, y = _two_blobs(40)
    net = mlp([2, 8, 2])

    class Fake:
        def __init__(self, B, K):
            self.lower = np.ones((B, K))
    monkeypatch.setattr(verifier.bounds, "compute",
                        lambda net, lo, hi, C=None, **kw: Fake(len(lo), C.shape[1]))
    with pytest.raises(RuntimeError, match="unsound"):
        evaluate(net, X, y, 0.5, method="ibp", pgd_steps=5)


def test_the_training_ibp_pass_agrees_with_the_sound_core():
    from verifier.bounds import compute
    from verifier.train.interval_grad import ibp_margin_lower
    from verifier.train.losses import margin_matrix
    net = cnn((1, 8, 8), [(3, 3, 2, 1)], [6], n_classes=3, seed=2)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(4, 1, 8, 8))
    C = margin_matrix(np.array([0, 1, 2, 0]), 3)
    lo, hi = np.clip(x - 0.05, 0, 1), np.clip(x + 0.05, 0, 1)
    ours = ibp_margin_lower(net, {}, lo, hi, C)[0].value
    sound = compute(net, lo.reshape(4, -1), hi.reshape(4, -1), C=C, method="ibp").lower
    assert np.all(sound <= ours)  # the sound bound adds outward rounding margins
    np.testing.assert_allclose(sound, ours, rtol=1e-9, atol=1e-9)


def test_batchnorm_folds_its_running_statistics_into_the_scale():
    from verifier.train.batchnorm import BatchNormStats, fold
    net = mlp([3, 4, 2], batchnorm=True)
    gamma, beta = np.array([1.0, 2.0, -0.5, 3.0]), np.array([0.1, 0.0, -1.0, 0.5])
    stats = {"bn1": BatchNormStats(np.array([0.5, -1.0, 2.0, 0.0]),
                                   np.array([1.0, 4.0, 0.25, 9.0]))}
    p = fold(net, {("bn1", "a"): gamma, ("bn1", "c"): beta}, stats, eps=1e-5)
    z = np.random.default_rng(0).normal(size=(7, 4))
    want = gamma * (z - stats["bn1"].mean) / np.sqrt(stats["bn1"].var + 1e-5) + beta
    np.testing.assert_allclose(z * p[("bn1", "a")] + p[("bn1", "c")], want, rtol=1e-12)


def test_fit_with_batchnorm_returns_an_inference_network_that_certifies():
    X, y = _two_blobs(200)
    eps = 0.3
    net0 = mlp([2, 16, 16, 2], seed=0, batchnorm=True)
    net, hist = fit(net0, X, y, eps=eps, method="ibp", **FAST)
    assert [n.name for n in net.nodes] == [n.name for n in net0.nodes]
    ev = evaluate(net, X, y, eps, method="ibp", pgd_steps=5)
    assert ev["clean"] > 0.9 and ev["certified"] > 0.8
    assert not np.allclose(net.node("bn1").op.a, 1.0)  # running statistics folded in


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_the_training_crown_ibp_pass_agrees_with_the_sound_core(kind):
    """The training bound is CROWN with IBP intermediate bounds and adaptive lower slopes:
    the sound core's CROWN with ``intermediate="ibp"`` computes the same bound, minus its
    rounding margins."""
    from verifier.bounds import CrownOptions, compute
    from verifier.train.crown_ibp import crown_margin_lower
    from verifier.train.losses import margin_matrix
    net = (mlp([6, 8, 8, 3], seed=1) if kind == "mlp"
           else cnn((1, 8, 8), [(3, 3, 2, 1)], [6], n_classes=3, seed=2))
    x = np.random.default_rng(0).uniform(0, 1, size=(4,) + net.input_shape)
    C = margin_matrix(np.array([0, 1, 2, 0]), 3)
    lo, hi = np.clip(x - 0.05, 0, 1), np.clip(x + 0.05, 0, 1)
    ours = crown_margin_lower(net, {}, lo, hi, C).value
    sound = compute(net, lo.reshape(4, -1), hi.reshape(4, -1), C=C, method="crown",
                    options=CrownOptions(intermediate="ibp")).lower
    assert np.all(sound <= ours)
    np.testing.assert_allclose(sound, ours, rtol=1e-9, atol=1e-9)


def test_the_certified_box_contains_the_exact_ball():
    from fractions import Fraction

    from verifier.train.losses import input_box
    x = np.random.default_rng(0).uniform(0, 1, size=200)
    lo, hi = input_box(x, 0.1, None, outward=True)
    for xi, l, h in zip(x, lo, hi):
        assert Fraction(l) <= Fraction(xi) - Fraction(0.1)
        assert Fraction(h) >= Fraction(xi) + Fraction(0.1)
    lo, hi = input_box(x, 0.1, (0.0, 1.0), outward=True)
    assert lo.min() >= 0.0 and hi.max() <= 1.0
