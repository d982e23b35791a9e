"""Builders: local robustness in an L-infinity ball."""
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from specs import SpecError, format_vnnlib, parse_vnnlib, robustness


def test_untargeted_robustness_has_one_conjunction_per_other_class():
    x0 = np.array([[0.2, 0.5], [0.9, 0.0]])  # any shape: flattened row-major
    spec = robustness(x0, 0.1, label=2, n_classes=4)
    assert (spec.n_inputs, spec.n_outputs, len(spec.cases)) == (4, 4, 1)
    (case,) = spec.cases
    np.testing.assert_allclose(case.input.lower, [0.1, 0.4, 0.8, -0.1])
    np.testing.assert_allclose(case.input.upper, [0.3, 0.6, 1.0, 0.1])
    assert len(case.unsafe) == 3
    for j, conj in zip([0, 1, 3], case.unsafe):  # y_2 - y_j <= 0
        expected = np.zeros((1, 4))
        expected[0, 2], expected[0, j] = 1.0, -1.0
        np.testing.assert_array_equal(conj.C, expected)
        np.testing.assert_array_equal(conj.d, [0.0])


def test_targeted_robustness_only_the_target():
    spec = robustness([0.0, 0.0], 0.5, label=0, n_classes=3, target=2)
    (conj,) = spec.cases[0].unsafe
    np.testing.assert_array_equal(conj.C, [[1.0, 0.0, -1.0]])
    y_attack = np.array([[1.0, 0.0, 1.0]])  # y_target >= y_label: unsafe
    y_safe = np.array([[1.0, 5.0, 0.5]])    # another class wins, but it is not the target
    assert spec.violated_by(np.zeros((1, 2)), y_attack)[0]
    assert not spec.violated_by(np.zeros((1, 2)), y_safe)[0]


def test_clipping_to_the_valid_range():
    spec = robustness([0.01, 0.5, 0.99], 0.03, label=0, n_classes=2, clip=(0.0, 1.0))
    inp = spec.cases[0].input
    assert inp.lower[0] == 0.0 and inp.upper[2] == 1.0
    arrays = robustness([0.01, 0.5], 0.03, 0, 2, clip=([0.0, 0.49], [1.0, 0.51])).cases[0].input
    assert arrays.lower[1] == 0.49 and arrays.upper[1] == 0.51


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=5), st.floats(0, 1e3))
def test_the_box_contains_the_exact_ball_and_is_tight(x0, eps):
    inp = robustness(x0, eps, 0, 2).cases[0].input
    for x, lo, hi in zip(x0, inp.lower, inp.upper):
        exact_lo, exact_hi = Fraction(x) - Fraction(eps), Fraction(x) + Fraction(eps)
        assert Fraction(lo) <= exact_lo and Fraction(np.nextafter(lo, np.inf)) > exact_lo
        assert Fraction(hi) >= exact_hi and Fraction(np.nextafter(hi, -np.inf)) < exact_hi


def test_a_robustness_spec_round_trips_through_vnnlib():
    spec = robustness(np.linspace(0, 1, 7), 1 / 30, label=3, n_classes=5, clip=(0, 1))
    assert parse_vnnlib(format_vnnlib(spec)) == spec


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(eps=-0.1), "eps must be finite and >= 0"),
    (dict(eps=np.inf), "eps must be finite"),
    (dict(label=5), "label 5 is not a class"),
    (dict(target=1), "target 1 must be a class .* other than the label"),
    (dict(target=9), "target 9 must be a class"),
    (dict(clip=(0.6, 1.0)), "empty after clipping at input 0"),
])
def test_bad_arguments_are_spec_errors(kwargs, pattern):
    args = dict(x0=[0.5, 0.5], eps=0.05, label=1, n_classes=3) | kwargs
    with pytest.raises(SpecError, match=pattern):
        robustness(**args)
