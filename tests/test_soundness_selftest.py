"""The self-test: each bug injected into our bound methods makes a false proof on the committed
hidden-counterexample benchmark, and the patches leave the process as it was."""
import importlib
from pathlib import Path

import numpy as np
import pytest

from verifier import bounds
from verifier.bounds import backward, interval, relax
from verifier.soundness.selftest import BUGS, format_selftest, selftest

BENCH = Path(__file__).resolve().parent / "data" / "soundness"


@pytest.mark.slow
def test_every_injected_bug_is_caught(tmp_path):
    report = selftest(bench=BENCH, out_dir=tmp_path, timeout=5.0, clean=False)
    text = format_selftest(report)
    assert set(report["bugs"]) == set(BUGS)
    for name, b in report["bugs"].items():
        assert b["caught"], f"bug {name} was not caught:\n{text}"


def test_patches_are_undone():
    verify_module = importlib.import_module("verifier.verify")
    before = (dict(interval.IBP_RULES), dict(relax.RELAX_RULES), backward.concretize,
              bounds.compute, verify_module.verify)
    for bug in BUGS.values():
        with bug.patch():
            pass
    after = (dict(interval.IBP_RULES), dict(relax.RELAX_RULES), backward.concretize,
             bounds.compute, verify_module.verify)
    assert before == after


def test_a_bug_changes_the_bounds_it_claims_to():
    from verifier.network import Network, Node
    from verifier.network import ops as O
    rng = np.random.default_rng(0)
    net = Network("x", (3,), (Node("a", O.Linear(rng.normal(size=(4, 3)), np.zeros(4)), ("x",),
                                   (4,)),
                              Node("r", O.Relu(), ("a",), (4,)),
                              Node("y", O.Linear(rng.normal(size=(2, 4)), np.zeros(2)), ("r",),
                                   (2,))), "y")
    lo, hi = -np.ones((1, 3)), np.ones((1, 3))
    ref = bounds.compute(net, lo, hi, method="ibp")
    with BUGS["ibp-no-abs-w"].patch():
        bad = bounds.compute(net, lo, hi, method="ibp")
    assert np.all(bad.upper - bad.lower < ref.upper - ref.lower)
    with BUGS["dual-norm-sign"].patch():
        bad = bounds.compute(net, lo, hi, method="crown")
    assert np.any(bad.lower > bad.upper)
