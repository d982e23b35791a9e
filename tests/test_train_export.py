"""A trained model saves to ONNX and loads back unchanged, agrees with onnxruntime, and the
exported file verifies with the verifier's pipeline (consistent with ``evaluate``)."""
import numpy as np
import onnxruntime as ort
import pytest

import specs
from verifier import load_onnx, save_onnx
from verifier.train import cnn, fit, get_params, mlp
from verifier.verify import verify


def _trained(kind):
    rng = np.random.default_rng(0)
    if kind == "mlp":
        X = rng.uniform(0, 1, size=(60, 6))
        y = (X[:, :3].sum(1) > X[:, 3:].sum(1)).astype(int)
        net0 = mlp([6, 12, 12, 2], seed=0)
    else:
        X = rng.uniform(0, 1, size=(40, 1, 6, 6))
        y = (X[:, 0, :, :3].mean((1, 2)) > X[:, 0, :, 3:].mean((1, 2))).astype(int)
        net0 = cnn((1, 6, 6), [(3, 3, 1, 1), (4, 3, 2, 0)], [8], n_classes=2)
    net, _ = fit(net0, X, y, eps=0.02, method="ibp", epochs=4, batch_size=20, ramp_epochs=2,
                 lr=0.01, domain=(0.0, 1.0))
    return net, X, y


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_trained_model_round_trips_through_onnx(tmp_path, kind):
    net, X, _ = _trained(kind)
    p64, p32 = tmp_path / "m64.onnx", tmp_path / "m32.onnx"
    save_onnx(net, p64, dtype=np.float64)
    back = load_onnx(p64)
    assert back.input_shape == net.input_shape and back.output_shape == net.output_shape
    np.testing.assert_array_equal(back(X), net(X))  # float64 export: the same function
    assert sorted(a.size for a in get_params(back).values()) == \
        sorted(a.size for a in get_params(net).values())
    save_onnx(net, p32)
    sess = ort.InferenceSession(str(p32), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    out = sess.run(None, {name: X.astype(np.float32)})[0]
    np.testing.assert_allclose(out, net(X), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(load_onnx(p32)(X), out, rtol=1e-5, atol=1e-6)


def test_exported_model_verifies_consistently_with_evaluate(tmp_path):
    from verifier.train import evaluate
    net, X, y = _trained("mlp")
    path = tmp_path / "m.onnx"
    save_onnx(net, path)
    loaded = load_onnx(path)
    eps = 0.02
    ev = evaluate(loaded, X[:10], y[:10], eps, method="ibp", domain=(0.0, 1.0), pgd_steps=0)
    assert ev["certified"] > 0
    from verifier.train.evaluate import certified_mask
    cert = certified_mask(loaded, X[:10], y[:10], eps, "ibp", (0.0, 1.0))
    for i in np.flatnonzero(cert)[:3]:
        spec = specs.robustness(X[i], eps, int(y[i]), 2, clip=(0.0, 1.0))
        res = verify(loaded, spec, timeout=30, onnx_path=path)
        assert res.status == "unsat", res


@pytest.mark.slow
def test_exported_model_verifies_from_the_command_line(tmp_path):
    """``verifier verify model.onnx prop.vnnlib`` on a trained, exported model: a property the
    sound IBP certifies is unsat, and a point PGD breaks gives sat."""
    import subprocess
    import sys

    from verifier.train.evaluate import certified_mask
    from verifier.train.losses import pgd_attack
    net, X, y = _trained("mlp")
    path = tmp_path / "m.onnx"
    save_onnx(net, path)
    loaded = load_onnx(path)
    cert = certified_mask(loaded, X, y, 0.02, "ibp", (0.0, 1.0))
    i = int(np.flatnonzero(cert)[0])
    cases = [(i, 0.02, "unsat")]
    big = 0.5  # large enough for PGD to flip some label
    xa = pgd_attack(loaded, X, y, big, 20, domain=(0.0, 1.0))
    broken = np.flatnonzero(loaded(xa).argmax(1) != y)
    assert broken.size
    cases.append((int(broken[0]), big, "sat"))
    for j, eps, want in cases:
        prop = tmp_path / f"p{j}.vnnlib"
        specs.write_vnnlib(specs.robustness(X[j], eps, int(y[j]), 2, clip=(0.0, 1.0)), prop)
        out = subprocess.run([sys.executable, "-m", "verifier.cli", "verify", str(path),
                              str(prop), "--timeout", "60"], capture_output=True, text=True,
                             timeout=300)
        assert out.stdout.split()[0] == want, (out.stdout, out.stderr)
