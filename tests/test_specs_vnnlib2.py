"""VNN-LIB 2.0 single-network properties, read through the reference parser (PyPI ``vnnlib``)."""
import re
from pathlib import Path

import numpy as np
import pytest

from specs import SpecError, format_vnnlib, parse_vnnlib, read_vnnlib

pytest.importorskip("vnnlib")
DATA = Path(__file__).parent / "data" / "specs"
NET = ("(vnnlib-version <2.0>)\n(declare-network f (declare-input X float32 [1,2]) "
       "(declare-output Y float32 [2]))\n")
BOX = "(assert (and (>= X[0,0] 0.0) (<= X[0,0] 1.0) (>= X[0,1] -1.0) (<= X[0,1] 1.0)))\n"


def test_acasxu_prop_6_in_2_0_equals_the_1_0_file(vnncomp):
    two = read_vnnlib(DATA / "v2_acasxu_prop_6.vnnlib")
    one = read_vnnlib(vnncomp / "acasxu/vnnlib/prop_6.vnnlib")
    assert two == one
    assert [len(c.unsafe) for c in two.cases] == [4, 4]


def test_tensor_indices_flatten_row_major_with_linear_terms():
    spec = read_vnnlib(DATA / "v2_linear.vnnlib")
    assert (spec.n_inputs, spec.n_outputs) == (4, 3)
    (case,) = spec.cases
    np.testing.assert_array_equal(case.input.lower, [0.0, -1.0, 0.25, -0.5])
    np.testing.assert_array_equal(case.input.upper, [1.0, 1.0, 0.25, 0.5])  # closed box
    # X[1,1] < 0.5 stays a strict row; X[1,1] is flat 3
    np.testing.assert_array_equal(case.input.A, [[0.0, 0.0, 0.0, 1.0], [1.0, 1.0, 0.0, -2.0]])
    np.testing.assert_array_equal(case.input.b, [0.5, 1.5])
    np.testing.assert_array_equal(case.input.strict, [True, False])
    first, second = case.unsafe
    np.testing.assert_array_equal(first.C, [[-1.0, 0.0, 1.0], [0.0, -2.0, 0.0]])
    np.testing.assert_array_equal(first.d, [0.0, 3.0])
    np.testing.assert_array_equal(first.strict, [False, False])
    # Y0 + 0.5 Y1 + (1 - Y2) > 2  <=>  -Y0 - 0.5 Y1 + Y2 < -1
    np.testing.assert_array_equal(second.C, [[-1.0, -0.5, 1.0]])
    np.testing.assert_array_equal(second.d, [-1.0])
    np.testing.assert_array_equal(second.strict, [True])


def test_strict_comparisons_exclude_their_boundary():
    spec = parse_vnnlib(NET + "(assert (and (>= X[0,0] 0.0) (<= X[0,0] 1.0) (> X[0,1] -1.0) "
                              "(<= X[0,1] 1.0)))\n(assert (or (< Y[0] 0.0) (>= Y[1] 0.0)))")
    (case,) = spec.cases
    np.testing.assert_array_equal(case.input.lower, [0.0, -1.0])  # the box stays closed
    np.testing.assert_array_equal(case.input.strict, [True])
    assert [c.strict.tolist() for c in case.unsafe] == [[True], [False]]
    x = np.array([[0.5, 0.0], [0.5, -1.0]])
    np.testing.assert_array_equal(case.input.contains(x), [True, False])
    y = np.array([[0.0, -1.0], [-1e-300, -1.0], [1.0, 0.0]])
    np.testing.assert_array_equal(spec.violated_by(np.repeat(x[:1], 3, 0), y), [False, True, True])
    eq = parse_vnnlib(NET + BOX + "(assert (== Y[0] 0.0))")
    assert eq.cases[0].unsafe[0].strict.tolist() == [False, False]
    assert eq.violated_by(x[0], [0.0, 5.0])[0]


def test_a_2_0_spec_written_as_1_0_reads_back_equal():
    spec = read_vnnlib(DATA / "v2_linear.vnnlib")
    assert parse_vnnlib(format_vnnlib(spec)) == spec


def test_shape_check_applies_to_2_0():
    with pytest.raises(SpecError, match="declares 4 inputs but the model has 5"):
        read_vnnlib(DATA / "v2_linear.vnnlib", n_inputs=5)


@pytest.mark.parametrize("version", ["<2.1>", "<2.10>"])
def test_minor_version_is_read_as_2_0(capfd, version):
    spec = parse_vnnlib(NET.replace("<2.0>", version) + BOX + "(assert (>= Y[1] 0.0))")
    assert spec.n_inputs == 2
    assert capfd.readouterr().err == ""  # the reference parser's warning is not printed


@pytest.mark.parametrize("name,pattern", [
    ("v2_two_networks", r"v2_two_networks.vnnlib:4:1: several networks \(f, g\) are not "
                        r"supported yet"),
    ("v2_hidden", r"v2_hidden.vnnlib:5:5: hidden-node definitions \(declare-hidden H \.\.\.\) "
                  r"are not supported yet"),
    ("v2_two_inputs", r"v2_two_inputs.vnnlib:5:5: several input tensors \(X, Z\) are not "
                      r"supported yet"),
    ("v2_mixed", r"v2_mixed.vnnlib:6:13: this constraint mixes input X\[1\] and output Y\[0\]"),
])
def test_unsupported_2_0_features_say_which(name, pattern):
    with pytest.raises(SpecError, match=pattern):
        read_vnnlib(DATA / f"{name}.vnnlib")


@pytest.mark.parametrize("body,pattern", [
    ("(assert (>= Y[1] 0.0)", r"prop:4:22: syntax error at '' \(truncated"),  # truncated
    ("(assert (>= Y[1] 0.0)))", r"prop:4:23: syntax error at '\)'"),          # unbalanced
    ("(assert (>= Q[1] 0.0))", r"prop:4:13: Undeclared variable.*'Q'"),
    ("(assert (>= Y[7] 0.0))", r"prop:4:13: Index out of bounds"),
    ("(assert (!= Y[1] 0.0))", r"prop:4:13: '!=' is not supported"),
    ("(assert (>= Y[1] 1))", r"prop:4:18: Type mismatch"),
    ("(assert (>= X[0,1] 1.0))", r"prop:\d+:\d+: input X\[0,0\] has no finite lower bound"),
])
def test_2_0_errors_name_line_and_column(body, pattern):
    text = NET + (BOX if "X[0,1] 1.0" not in body else "") + body + "\n"
    with pytest.raises(SpecError) as info:
        parse_vnnlib(text, name="prop")
    message = str(info.value)
    assert re.match(r"^prop:\d+:\d+: ", message), message
    assert re.search(pattern, message), message


def test_integer_element_type_is_refused():
    text = NET.replace("declare-input X float32", "declare-input X int8") + \
        "(assert (and (>= X[0,0] 0) (<= X[0,0] 1)))\n"
    with pytest.raises(SpecError, match=r"prop:2:\d+: the input X has element type int8"):
        parse_vnnlib(text, name="prop")


def test_version_3_is_refused():
    with pytest.raises(SpecError, match=r"prop:1:\d+: VNN-LIB version <3.0> is not supported"):
        parse_vnnlib(NET.replace("<2.0>", "<3.0>"), name="prop")
