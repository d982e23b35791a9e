"""The generator's parts: synthetic points, architectures, PGD and the battery, the planting
training, and determinism of a whole (very small) generation."""
import dataclasses
import filecmp
import json

import numpy as np
import pytest

from verifier import load_onnx, save_onnx
from verifier.network import Network, Node
from verifier.network import ops as O
from verifier.network.runtime import OnnxRunner
from verifier.soundness.config import GenerateOptions, tiny
from verifier.soundness.data import make_points
from verifier.soundness.generate import battery_seeds, boxes, generate
from verifier.soundness.models import ModelSpec, build_model, dense_equivalent
from verifier.soundness.pgd import battery, margins, pgd
from verifier.soundness.plant import PlantOptions, counter_margins, plant_counterexamples


@pytest.mark.parametrize("shape,eps", [((10,), 0.02), ((1, 5, 5), 0.05), ((3, 5, 5), 0.02)])
def test_points_are_disjoint_float32_and_planted_strictly_inside(shape, eps):
    p = make_points(shape, 6, 4, eps, seed=3)
    assert p.x.shape == (10,) + shape and p.planted.sum() == 6
    flat = p.x.reshape(10, -1)
    for i in range(10):
        for j in range(i):
            assert np.max(np.abs(flat[i] - flat[j])) > 2 * eps
    specs_, lo, hi = boxes(p, eps, 0.1)
    for i in np.flatnonzero(p.planted):
        x = p.x_cex[i].reshape(-1)
        assert np.array_equal(x, x.astype(np.float32).astype(np.float64))
        assert np.all(x > lo[i]) and np.all(x < hi[i])
        assert min(np.min(x - lo[i]), np.min(hi[i] - x)) >= 0.005 * eps
        assert specs_[i].cases[0].input.contains(x[None])[0]
        # near a face of the box, so not at its centre
        assert np.max(np.abs(x - flat[i])) > 0.9 * eps
    assert np.isnan(p.x_cex[~p.planted]).all()
    assert np.all(np.abs(flat) <= 0.1)


def test_points_are_deterministic_for_a_seed():
    a, b = make_points((10,), 3, 2, 0.02, seed=7), make_points((10,), 3, 2, 0.02, seed=7)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.x_cex, b.x_cex, equal_nan=True)
    assert not np.array_equal(a.x, make_points((10,), 3, 2, 0.02, seed=8).x)


SPECS = [ModelSpec("m", "mlp", (10,), 3, 16, "relu", 0.02, residual=True),
         ModelSpec("t", "mlp", (10,), 2, 8, "tanh", 0.02),
         ModelSpec("c", "cnn", (3, 5, 5), 3, 4, "sigmoid", 0.05, residual=True, pool=True,
                   dense=8),
         ModelSpec("d", "cnn", (1, 5, 5), 2, 4, "relu", 0.05, dense=8)]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_architectures_export_and_agree_with_onnxruntime(spec, tmp_path):
    net = build_model(spec, seed=1)
    assert net.input_shape == spec.input_shape and net.n_outputs == 2
    kinds = {type(n.op) for n in net.nodes}
    assert (O.Sum in kinds) == spec.residual and (O.AvgPool in kinds) == spec.pool
    save_onnx(net, tmp_path / "m.onnx")
    x = np.random.default_rng(0).uniform(-0.1, 0.1, size=(5, net.n_inputs))
    y_ort = OnnxRunner(tmp_path / "m.onnx")(x)
    np.testing.assert_allclose(y_ort, net(x).reshape(5, -1), rtol=1e-4, atol=1e-4)
    assert load_onnx(tmp_path / "m.onnx").n_inputs == net.n_inputs


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_the_dense_equivalent_computes_the_same_function(spec):
    net = build_model(spec, seed=2)
    dense = dense_equivalent(net)
    assert dense.input_shape == (net.n_inputs,)
    assert not any(isinstance(n.op, (O.Conv, O.AvgPool, O.Reshape)) for n in dense.nodes)
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.1, 0.1, size=(7, net.n_inputs))
    g = rng.normal(size=(7, 2))
    np.testing.assert_allclose(dense(x), net(x).reshape(7, -1), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(dense.vjp(x, g), net.vjp(x, g).reshape(7, -1), rtol=1e-12,
                               atol=1e-13)


def test_bad_model_specs_are_refused():
    with pytest.raises(ValueError):
        ModelSpec("x", "mlp", (1, 5, 5), 2, 8, "relu", 0.02)
    with pytest.raises(ValueError):
        ModelSpec("x", "mlp", (10,), 2, 8, "relu", 0.02, residual=True)
    with pytest.raises(ValueError):
        ModelSpec("x", "mlp", (10,), 2, 8, "gelu", 0.02)


def linear_net(w, b) -> Network:
    return Network("x", (len(w[0]),), (Node("y", O.Linear(np.array(w), np.array(b)), ("x",),
                                            (len(w),)),), "y")


def test_pgd_finds_the_corner_of_a_linear_margin():
    # margin of label 0: x0 + x1 - 0.15; minimum at the lower corner of the box
    net = linear_net([[1.0, 1.0], [0.0, 0.0]], [0.0, 0.15])
    lo, hi = np.array([[0.0, 0.0], [0.1, 0.1]]), np.array([[0.1, 0.1], [0.2, 0.2]])
    x, m = pgd(net, lo, hi, np.array([0, 0]), 0.02, 20, 4, np.random.default_rng(0))
    np.testing.assert_allclose(x, lo, atol=1e-12)
    np.testing.assert_allclose(m, [-0.15, 0.05], atol=1e-12)
    np.testing.assert_allclose(margins(net(x), np.array([0, 0])), m)
    res = battery(net, lo, hi, np.array([0, 0]), 0.05, ((0.25, 0, 10), (0.1, 20, 4)))
    assert list(res.found) == [True, False]
    assert res.found_by[0] in (0, 1) and res.found_by[1] == -1


def test_planting_puts_the_counterexample_past_the_threshold():
    spec = ModelSpec("m", "mlp", (10,), 2, 32, "relu", 0.05)
    pts = make_points((10,), 2, 1, 0.05, seed=0)
    _, lo, hi = boxes(pts, 0.05, 0.1)
    opt = PlantOptions(rounds=60, check_every=30, window=10)
    net, hist = plant_counterexamples(build_model(spec, 0), pts, lo, hi, 0.05, 0.01, opt,
                                      ((0.25, 0, 20),), seed=0)
    assert [h["round"] for h in hist] == [30, 60]
    pl = np.flatnonzero(pts.planted)
    assert np.all(counter_margins(net, pts.x_cex[pl], pts.labels[pl]) >= 0.01)
    # the weights are float32 values (the exported model)
    W = net.nodes[0].op.W
    assert np.array_equal(W, W.astype(np.float32).astype(np.float64))


def micro(seed=0):
    spec = ModelSpec("micro", "mlp", (10,), 2, 16, "relu", 0.05)
    return tiny(seed=seed, models=(spec,), planted=2, clean=1,
                plant=PlantOptions(rounds=40, check_every=20, window=8),
                battery=((0.25, 0, 50), (0.1, 20, 10)))


def test_generation_layout_and_answers(tmp_path):
    m = generate(tmp_path / "g", micro())
    b, a = tmp_path / "g" / "benchmark", tmp_path / "g" / "answers"
    rows = (b / "instances.csv").read_text().splitlines()
    assert len(rows) == m["summary"]["instances"] == len(m["instances"])
    assert m["summary"]["planted"] + m["summary"]["dropped"] == 2
    for rec in m["instances"]:
        assert (b / rec["vnnlib"]).is_file() and (b / rec["onnx"]).is_file()
        if rec["planted"]:
            assert (a / rec["answer"]).read_text().startswith("sat\n")
            assert rec["counterexample_margin"] >= 0.01 and not rec["attack_found"]
        else:
            assert rec["status"] == "clean: no counterexample planted" and "answer" not in rec
    assert not list(b.rglob("*.counterexample")) and not (b / "manifest.json").exists()
    assert json.loads((a / "manifest.json").read_text())["seed"] == 0


def test_generation_is_deterministic_for_a_seed(tmp_path):
    m1 = generate(tmp_path / "a", micro(seed=5))
    m2 = generate(tmp_path / "b", dataclasses.replace(micro(seed=5), workers=2))
    strip = lambda m: [{k: v for k, v in i.items()} for i in m["instances"]]  # noqa: E731
    assert strip(m1) == strip(m2)
    cmp = filecmp.dircmp(tmp_path / "a" / "benchmark", tmp_path / "b" / "benchmark")
    assert not cmp.diff_files and not cmp.left_only and not cmp.right_only
    for sub in ("onnx", "vnnlib"):
        c = filecmp.dircmp(tmp_path / "a" / "benchmark" / sub, tmp_path / "b" / "benchmark" / sub)
        assert not c.diff_files and c.common_files
        _, mismatch, errors = filecmp.cmpfiles(tmp_path / "a" / "benchmark" / sub,
                                               tmp_path / "b" / "benchmark" / sub,
                                               c.common_files, shallow=False)
        assert not mismatch and not errors


def test_default_configuration_meets_the_size_asked():
    opts = GenerateOptions()
    assert len(opts.models) >= 10
    candidates = sum(opts.planted if m.planted is None else m.planted for m in opts.models)
    assert candidates >= 110  # at least 100 kept needs a margin for the ones dropped
    kinds = {(m.kind, m.activation, m.residual, m.pool, m.input_shape) for m in opts.models}
    assert {m.activation for m in opts.models} == {"relu", "tanh", "sigmoid"}
    assert any(k[2] for k in kinds) and any(k[3] for k in kinds)
    assert {m.input_shape for m in opts.models} == {(10,), (1, 5, 5), (3, 5, 5)}
    assert len({m.eps for m in opts.models}) >= 2


def test_a_kept_counterexample_survives_every_battery_run(tmp_path):
    # three independent runs of the battery: each is recorded per instance, and a planted point
    # that any of them finds is dropped (one run kept the points it missed by luck)
    m = generate(tmp_path / "g", dataclasses.replace(micro(), battery_runs=3))
    for rec in m["instances"] + m["dropped"]:
        assert len(rec["attack_runs"]) == 3
        assert rec["attack_found"] == any(r["found"] for r in rec["attack_runs"])
    for rec in m["instances"]:
        if rec["planted"]:
            assert not any(r["found"] for r in rec["attack_runs"])
    for rec in m["dropped"]:
        if any(r["found"] for r in rec["attack_runs"]) and rec["counterexample_margin"] >= 0.01:
            assert rec["reason"].startswith("found by attack")
    seeds = battery_seeds(0, 0, 7, 3)
    assert seeds[0] == 7 and len(set(seeds)) == 3 and seeds == battery_seeds(0, 0, 7, 3)
    assert battery_seeds(0, 1, 7, 3)[1:] != seeds[1:]
    assert GenerateOptions().battery_runs >= 2
