"""Bounds on the shared VNN-COMP networks: the Numba path equals the dense numpy reference
(same algorithm, so tightness equals the reference CROWN's, up to rounding margins), alpha-CROWN
is never looser than CROWN, and sampled outputs stay inside every bound."""
import numpy as np
import pytest

import verifier
from specs import read_vnnlib
from verifier import bounds
from verifier.bounds import reference


def _rows(spec):
    case = spec.cases[0]
    C = np.concatenate([c.C for c in case.unsafe])
    d = np.concatenate([c.d for c in case.unsafe])
    return case.input.lower[None], case.input.upper[None], C, d


@pytest.mark.parametrize("name", ["256x2", pytest.param("256x4", marks=pytest.mark.slow),
                                  pytest.param("256x6", marks=pytest.mark.slow)])
@pytest.mark.parametrize("eps", ["0.03", "0.05"])
def test_mnist_fc_matches_reference_and_is_sound(vnncomp, name, eps):
    root = vnncomp / "mnist_fc"
    net = verifier.load_onnx(root / "onnx" / f"mnist-net_{name}.onnx")
    spec = read_vnnlib(root / "vnnlib" / f"prop_0_{eps}.vnnlib", net.n_inputs, net.n_outputs)
    lo, hi, C, d = _rows(spec)
    rng = np.random.default_rng(0)
    x = lo + rng.random((300, lo.size)) * (hi - lo)
    x = np.concatenate([x, np.where(rng.random((100, lo.size)) < 0.5, lo, hi)])
    v = net(x).reshape(len(x), -1) @ C.T - d
    res = {}
    for method, ref in (("ibp", reference.ibp), ("crown", reference.crown),
                        ("alpha-crown", reference.alpha_crown)):
        r = res[method] = bounds.compute(net, lo, hi, C, d, method)
        rl, ru = ref(net, lo, hi, C, d)
        scale = 1.0 + np.abs(rl)
        assert np.all(np.abs(r.lower - rl) <= 1e-9 * scale), method
        assert np.all(np.abs(r.upper - ru) <= 1e-9 * (1.0 + np.abs(ru))), method
        assert np.all(v >= r.lower) and np.all(v <= r.upper), method
    assert np.all(res["alpha-crown"].lower >= res["crown"].lower)
    assert np.all(res["crown"].lower >= res["ibp"].lower)


def test_acasxu_batch_of_boxes(vnncomp):
    root = vnncomp / "acasxu"
    net = verifier.load_onnx(root / "onnx" / "ACASXU_run2a_1_2_batch_2000.onnx")
    spec = read_vnnlib(root / "vnnlib" / "prop_2.vnnlib", net.n_inputs, net.n_outputs)
    lo, hi, C, d = _rows(spec)
    rng = np.random.default_rng(0)
    B = 64
    a = lo + rng.random((B, lo.size)) * (hi - lo)
    b = lo + rng.random((B, lo.size)) * (hi - lo)
    blo, bhi = np.minimum(a, b), np.maximum(a, b)
    for method in bounds.METHODS:
        r = bounds.compute(net, blo, bhi, C, d, method)
        assert r.lower.shape == (B, C.shape[0])
        for i in range(0, B, 16):
            x = blo[i] + rng.random((200, lo.size)) * (bhi[i] - blo[i])
            v = net(x).reshape(len(x), -1) @ C.T - d
            assert np.all(v >= r.lower[i]) and np.all(v <= r.upper[i]), method
    assert np.all(np.isfinite(r.lower))
