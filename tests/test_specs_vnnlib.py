"""The VNN-LIB 1.0 reader: the shared benchmark files, exact semantics, normal form, errors."""
import csv
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import specs
from specs import SpecError, parse_vnnlib, read_vnnlib

DATA = Path(__file__).parent / "data" / "specs"
HEAD2 = "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n" \
        "(declare-const Y_1 Real)\n"
BOX2 = "(assert (>= X_0 0.0))\n(assert (<= X_0 1.0))\n(assert (>= X_1 -1.0))\n" \
       "(assert (<= X_1 1.0))\n"


def shared_files(vnncomp):
    files = sorted(vnncomp.glob("*/vnnlib/*.vnnlib")) + sorted(vnncomp.glob("test/*.vnnlib"))
    assert files, f"no vnnlib files under {vnncomp}"
    return files


def test_every_shared_file_reads_with_finite_boxes(vnncomp):
    for path in shared_files(vnncomp):
        spec = read_vnnlib(path)
        assert spec.cases, path
        for case in spec.cases:
            assert np.all(np.isfinite(case.input.lower)) and np.all(np.isfinite(case.input.upper))
            assert np.all(case.input.lower <= case.input.upper), path
            assert case.unsafe


def test_every_instance_of_every_benchmark_names_a_readable_property(vnncomp):
    """All instances.csv rows (186 + 90 + 5 = 281 in the shared data) name a readable file."""
    paths = []
    for bench in ("acasxu", "mnist_fc", "test"):
        with open(vnncomp / bench / "instances.csv") as f:
            paths += [vnncomp / bench / row[1].strip() for row in csv.reader(f) if row]
    assert len(paths) >= 281
    for path in sorted(set(paths)):  # each file once
        assert read_vnnlib(path).cases, path


def test_acasxu_prop_6_has_two_boxes_with_four_conjunctions_each(vnncomp):
    spec = read_vnnlib(vnncomp / "acasxu/vnnlib/prop_6.vnnlib")
    assert (spec.n_inputs, spec.n_outputs, len(spec.cases)) == (5, 5, 2)
    first, second = spec.cases
    np.testing.assert_array_equal(first.input.lower,
                                  [-0.129289109, 0.11140846, -0.499999896, -0.5, -0.5])
    np.testing.assert_array_equal(first.input.upper,
                                  [0.700434925, 0.499999896, -0.499204121, 0.5, 0.5])
    np.testing.assert_array_equal(second.input.lower[1], -0.499999896)
    np.testing.assert_array_equal(second.input.upper[1], -0.11140846)
    for case in spec.cases:
        assert case.input.A is None
        assert len(case.unsafe) == 4
        for j, conj in enumerate(case.unsafe, start=1):  # (<= Y_j Y_0): y_j - y_0 <= 0
            expected = np.zeros((1, 5))
            expected[0, j], expected[0, 0] = 1.0, -1.0
            np.testing.assert_array_equal(conj.C, expected)
            np.testing.assert_array_equal(conj.d, [0.0])


def test_acasxu_prop_2_is_one_conjunction_of_four_rows_and_prop_1_one_row(vnncomp):
    spec = read_vnnlib(vnncomp / "acasxu/vnnlib/prop_2.vnnlib")
    (case,) = spec.cases
    (conj,) = case.unsafe
    assert conj.C.shape == (4, 5)
    spec = read_vnnlib(vnncomp / "acasxu/vnnlib/prop_1.vnnlib")
    (conj,) = spec.cases[0].unsafe
    np.testing.assert_array_equal(conj.C, [[-1.0, 0, 0, 0, 0]])  # Y_0 >= 3.99...
    np.testing.assert_array_equal(conj.d, [-3.991125645861615])


@pytest.mark.parametrize("name,eps", [("prop_0_0.03", 0.029999999329447746),
                                      ("prop_7_0.05", None)])
def test_mnist_prop_is_one_box_with_nine_conjunctions(vnncomp, name, eps):
    spec = read_vnnlib(vnncomp / f"mnist_fc/vnnlib/{name}.vnnlib")
    assert (spec.n_inputs, spec.n_outputs, len(spec.cases)) == (784, 10, 1)
    (case,) = spec.cases
    assert len(case.unsafe) == 9
    assert np.all(case.input.lower >= 0) and np.all(case.input.upper <= 1)
    if eps is not None:
        assert case.input.lower[0] == 0.0 and case.input.upper[0] == eps
    label = int(re.search(r"label: (\d+)", (vnncomp / f"mnist_fc/vnnlib/{name}.vnnlib")
                          .read_text()).group(1))
    others = [j for j in range(10) if j != label]
    for j, conj in zip(others, case.unsafe):  # (>= Y_j Y_label): y_label - y_j <= 0
        expected = np.zeros((1, 10))
        expected[0, label], expected[0, j] = 1.0, -1.0
        np.testing.assert_array_equal(conj.C, expected)


def test_test_benchmark_files(vnncomp):
    nano = read_vnnlib(vnncomp / "test/test_nano.vnnlib")
    (case,) = nano.cases
    np.testing.assert_array_equal(case.input.lower, [-1.0])
    np.testing.assert_array_equal(case.input.upper, [1.0])
    np.testing.assert_array_equal(case.unsafe[0].C, [[1.0]])
    np.testing.assert_array_equal(case.unsafe[0].d, [-1.0])
    small = read_vnnlib(vnncomp / "test/test_small.vnnlib")  # X and Y atoms in one `and`
    (case,) = small.cases
    np.testing.assert_array_equal(case.unsafe[0].C, [[-1.0]])
    np.testing.assert_array_equal(case.unsafe[0].d, [-100.0])
    prop = read_vnnlib(vnncomp / "test/test_prop.vnnlib")
    assert prop.cases[0].input.upper[2] == 0.49999999998567607


def test_shape_mismatch_with_the_model_is_an_error(vnncomp):
    path = vnncomp / "acasxu/vnnlib/prop_1.vnnlib"
    assert read_vnnlib(path, n_inputs=5, n_outputs=5).n_inputs == 5
    with pytest.raises(SpecError, match=r"prop_1.vnnlib:1:1: .*declares 5 inputs but the model "
                                        r"has 784"):
        read_vnnlib(path, n_inputs=784)
    with pytest.raises(SpecError, match="declares 5 outputs but the model has 10"):
        read_vnnlib(path, n_outputs=10)


def test_strict_and_equal_comparisons_and_reversed_operands():
    spec = parse_vnnlib(HEAD2 + "(assert (< X_0 1.0))\n(assert (> 0.5 (- X_0)))\n"
                        "(assert (= X_1 0.25))\n(assert (< Y_0 Y_1))")
    (case,) = spec.cases
    np.testing.assert_array_equal(case.input.lower, [-0.5, 0.25])
    np.testing.assert_array_equal(case.input.upper, [1.0, 0.25])
    np.testing.assert_array_equal(case.input.A, [[1.0, 0.0], [-1.0, 0.0]])  # the strict bounds
    np.testing.assert_array_equal(case.input.b, [1.0, 0.5])
    np.testing.assert_array_equal(case.input.strict, [True, True])
    np.testing.assert_array_equal(case.unsafe[0].C, [[1.0, -1.0]])
    np.testing.assert_array_equal(case.unsafe[0].strict, [True])


@pytest.mark.parametrize("op,on_boundary", [("<", False), ("<=", True), (">", False),
                                            (">=", True)])
def test_output_exactly_on_a_strict_boundary_is_not_a_violation(op, on_boundary):
    # a ReLU output exactly 0 against (assert (< Y_0 0)): not in the written unsafe set
    spec = parse_vnnlib(HEAD2 + BOX2 + f"(assert ({op} Y_0 0))")
    x = np.zeros(2)
    assert spec.violated_by(x, [0.0, 0.0])[0] == on_boundary
    inside = -1e-300 if op in ("<", "<=") else 1e-300
    assert spec.violated_by(x, [inside, 0.0])[0]
    assert spec.cases[0].unsafe[0].strict.tolist() == [op in ("<", ">")]


def test_strict_linear_rows_inputs_and_constant_atoms():
    spec = parse_vnnlib(HEAD2 + BOX2 + "(assert (< (* 3.0 X_1) 1.0))\n(assert (< 0 1))\n"
                        "(assert (< (- Y_0 Y_1) 0.5))\n(assert (> (+ Y_0 Y_1) 0.1))")
    (case,) = spec.cases
    assert Fraction(case.input.upper[1]) > Fraction(1, 3)  # closed box, rounded outward
    np.testing.assert_array_equal(case.input.strict, [True])
    third = 1 / 3  # in the box, and 3 * third rounds to exactly 1.0: on the strict boundary
    assert third <= case.input.upper[1] and 3.0 * third == 1.0
    assert not case.input.contains([0.0, third])[0]
    assert case.input.contains([0.0, 0.25])[0]
    (conj,) = case.unsafe
    np.testing.assert_array_equal(conj.C, [[1.0, -1.0], [-1.0, -1.0]])
    np.testing.assert_array_equal(conj.strict, [True, True])
    assert not conj.holds([0.5, 0.0])[0] and not conj.holds([0.05, 0.05])[0]
    assert conj.holds([0.3, 0.0])[0]
    assert parse_vnnlib(HEAD2 + BOX2 + "(assert (< 0 0))\n(assert (>= Y_0 0))").cases == ()


def test_linear_terms_fold_exactly_and_round_outward():
    # x0 + 0.1 <= 0.3: x0 <= fl(0.3) - fl(0.1) exactly, rounded up
    spec = parse_vnnlib(HEAD2 + "(assert (<= (+ X_0 0.1) 0.3))\n(assert (>= (- X_0 0.1) -1))\n"
                        + "(assert (>= X_1 -1))\n(assert (<= (* 2 X_1) 1))\n(assert (>= Y_0 0))")
    (case,) = spec.cases
    exact_hi = Fraction(0.3) - Fraction(0.1)
    hi = case.input.upper[0]
    assert Fraction(hi) >= exact_hi and Fraction(np.nextafter(hi, -1)) < exact_hi
    exact_lo = Fraction(-1) + Fraction(0.1)
    lo = case.input.lower[0]
    assert Fraction(lo) <= exact_lo and Fraction(np.nextafter(lo, 1)) > exact_lo
    assert case.input.upper[1] == 0.5  # 2 x1 <= 1 is exact
    # the rounded lower bound of x0 is kept as a strict row (x0 > lo): lo itself is outside
    np.testing.assert_array_equal(case.input.A, [[-1.0, 0.0]])
    assert case.input.strict.tolist() == [True]


def test_single_variable_row_with_inexact_quotient_keeps_the_row():
    spec = parse_vnnlib(HEAD2 + BOX2 + "(assert (<= (* 3.0 X_1) 1.0))\n(assert (>= Y_0 0))")
    (case,) = spec.cases
    assert Fraction(case.input.upper[1]) > Fraction(1, 3)  # outward
    np.testing.assert_array_equal(case.input.A, [[0.0, 3.0]])
    np.testing.assert_array_equal(case.input.b, [1.0])


def test_input_constraints_beyond_a_box_become_rows_of_A():
    spec = parse_vnnlib(HEAD2 + BOX2 + "(assert (<= (+ X_0 (* -2 X_1) 1) 0.5))\n"
                        "(assert (>= (- X_0 X_1) 0))\n(assert (>= Y_0 0))")
    (case,) = spec.cases
    np.testing.assert_array_equal(case.input.A, [[1.0, -2.0], [-1.0, 1.0]])
    np.testing.assert_array_equal(case.input.b, [-0.5, 0.0])


def test_non_float64_coefficient_is_refused():
    with pytest.raises(SpecError, match=r"<string>:5:9: the coefficient of X_0 .*not a float64"):
        parse_vnnlib(HEAD2 + "(assert (<= (+ (* 0.1 X_0) (* 0.2 X_0)) 0.3))")


def test_dnf_factors_conjunctions_and_multiplies_ors():
    text = HEAD2 + BOX2 + ("(assert (or (and (>= Y_0 1)) (and (>= Y_1 1))))\n"
                           "(assert (or (<= Y_0 5) (and (<= Y_1 5) (<= Y_0 7))))")
    (case,) = parse_vnnlib(text).cases
    rows = [[tuple(r) + (d,) for r, d in zip(c.C.tolist(), c.d.tolist())] for c in case.unsafe]
    assert rows == [[(-1.0, 0.0, -1.0), (1.0, 0.0, 5.0)],
                    [(-1.0, 0.0, -1.0), (0.0, 1.0, 5.0), (1.0, 0.0, 7.0)],
                    [(0.0, -1.0, -1.0), (1.0, 0.0, 5.0)],
                    [(0.0, -1.0, -1.0), (0.0, 1.0, 5.0), (1.0, 0.0, 7.0)]]


def test_terms_with_the_same_input_box_form_one_case():
    text = HEAD2 + ("(assert (or (and (>= X_0 0) (<= X_0 1) (>= X_1 0) (<= X_1 1) (>= Y_0 1))\n"
                    "            (and (>= X_0 0) (<= X_0 2) (>= X_1 0) (<= X_1 1) (>= Y_0 2))\n"
                    "            (and (<= X_0 1) (>= X_0 0) (>= X_1 0) (<= X_1 1) (>= Y_1 3))))")
    spec = parse_vnnlib(text)
    assert [len(c.unsafe) for c in spec.cases] == [2, 1]
    np.testing.assert_array_equal(spec.cases[1].input.upper, [2.0, 1.0])


def test_dnf_semantics_match_direct_evaluation_of_random_formulas():
    """No point is classified differently by the formula and by its normal form."""
    rng = np.random.default_rng(0)
    values = [-1.0, 0.0, 1.0]

    def formula(depth):
        if depth == 0 or rng.random() < 0.3:
            var, op, c = f"Y_{rng.integers(2)}", ["<=", ">="][rng.integers(2)], rng.choice(values)
            return f"({op} {var} {c})", lambda y, v=int(var[2]), op=op, c=c: (
                y[v] <= c if op == "<=" else y[v] >= c)
        op = ["and", "or"][rng.integers(2)]
        kids = [formula(depth - 1) for _ in range(rng.integers(1, 4))]
        text = f"({op} {' '.join(k[0] for k in kids)})"
        if op == "and":
            return text, lambda y, kids=kids: all(k[1](y) for k in kids)
        return text, lambda y, kids=kids: any(k[1](y) for k in kids)

    grid = np.array([[a, b] for a in (-2, -1, -0.5, 0, 0.5, 1, 2) for b in (-2, -1, 0, 1, 2)],
                    dtype=float)
    for _ in range(60):
        text, truth = formula(4)
        spec = parse_vnnlib(HEAD2 + BOX2 + f"(assert {text})")
        x = np.zeros((len(grid), 2))
        got = spec.violated_by(x, grid)
        want = np.array([truth(y) for y in grid])
        np.testing.assert_array_equal(got, want, err_msg=text)


def test_mixed_input_atoms_inside_ors_give_several_cases_with_correct_semantics():
    text = HEAD2 + BOX2 + ("(assert (or (and (<= X_0 0.5) (>= Y_0 1)) (and (>= X_0 0.5) "
                           "(<= X_1 0) (>= Y_1 1))))")
    spec = parse_vnnlib(text)
    assert len(spec.cases) == 2
    x = np.array([[0.2, 0.5], [0.7, -0.5], [0.7, 0.5], [0.5, 0.0]])
    y = np.array([[2.0, 0.0], [0.0, 2.0], [0.0, 2.0], [0.0, 2.0]])
    np.testing.assert_array_equal(spec.violated_by(x, y), [True, True, False, True])


def test_dnf_blow_up_is_refused_with_a_clear_error():
    ors = "".join(f"(assert (or (>= Y_0 {k}) (>= Y_1 {k})))\n" for k in range(20))
    with pytest.raises(SpecError, match=r"<string>:1:1: .*has 1048576 terms, more than the limit of "
                                        r"100000 \(max_terms\)"):
        parse_vnnlib(HEAD2 + BOX2 + ors)
    few = "".join(f"(assert (or (>= Y_0 {k}) (>= Y_1 {k})))\n" for k in range(4))
    assert len(parse_vnnlib(HEAD2 + BOX2 + few).cases[0].unsafe) == 16
    with pytest.raises(SpecError, match="16 terms, more than the limit of 10"):
        parse_vnnlib(HEAD2 + BOX2 + few, max_terms=10)


def test_comments_check_sat_and_constants():
    text = ("; header\n" + HEAD2 + "(assert (<= X_0 1.0)) ; trailing comment (with parens\n"
            "(assert (>= X_0 0.0))(assert (>= X_1 -1e0))(assert (<= X_1 +1.5e-1))\n"
            "(assert (or (<= 1 0) (>= Y_0 2)))\n(assert true)\n(check-sat)\n(get-model)\n")
    (case,) = parse_vnnlib(text).cases
    np.testing.assert_array_equal(case.input.upper, [1.0, 0.15])
    assert len(case.unsafe) == 1  # the false atom (<= 1 0) leaves no term


def test_declare_fun_form_and_gzip(tmp_path):
    import gzip
    text = HEAD2.replace("declare-const X_1 Real", "declare-fun X_1 () Real") + BOX2 + \
        "(assert (>= Y_0 0))"
    path = tmp_path / "p.vnnlib.gz"
    path.write_bytes(gzip.compress(text.encode()))
    assert read_vnnlib(path) == parse_vnnlib(text)


# -- malformed input: every error names FILE:LINE:COL


def expect_error(path_or_text, pattern):
    with pytest.raises(SpecError) as info:
        if isinstance(path_or_text, Path):
            read_vnnlib(path_or_text)
        else:
            parse_vnnlib(path_or_text, name="prop.vnnlib")
    message = str(info.value)
    assert re.match(r"^\S+:\d+:\d+: ", message), message
    assert re.search(pattern, message), message
    return message


def test_error_truncated_file():
    expect_error(DATA / "bad_truncated.vnnlib",
                 r"bad_truncated.vnnlib:10:1: unbalanced parentheses: this '\(' is never closed "
                 r"\(the file ends at line 13; truncated\?\)")


def test_error_truncated_mnist_file(vnncomp, tmp_path):
    text = (vnncomp / "mnist_fc/vnnlib/prop_0_0.03.vnnlib").read_text()
    cut = tmp_path / "cut.vnnlib"
    cut.write_text(text[: len(text) // 2])
    expect_error(cut, r"cut.vnnlib:\d+:1: unbalanced parentheses.*truncated")


def test_error_unbalanced_parentheses():
    expect_error(DATA / "bad_unbalanced.vnnlib",
                 r"bad_unbalanced.vnnlib:3:22: unbalanced parentheses: this '\)' closes nothing")


def test_error_undeclared_variable():
    expect_error(DATA / "bad_undeclared.vnnlib",
                 r"bad_undeclared.vnnlib:5:13: undeclared variable 'Y_1'")


def test_error_missing_bound_names_the_variable():
    expect_error(DATA / "bad_missing_bound.vnnlib",
                 r"bad_missing_bound.vnnlib:4:9: input X_1 has no finite lower bound")


def test_error_mixed_input_output_atom_names_the_line():
    expect_error(DATA / "bad_mixed.vnnlib",
                 r"bad_mixed.vnnlib:7:10: this constraint mixes input X_0 and output Y_0")


@pytest.mark.parametrize("body,pattern", [
    ("(assert (<= X_0 1.2.3))", r"prop.vnnlib:5:17: bad number '1.2.3'"),
    ("(assert (<= X_0 1e999))", r"prop.vnnlib:5:17: the number 1e999 is out of the float64"),
    ("(assert (<= X_0 inf))", r"prop.vnnlib:5:17: unknown symbol 'inf'"),
    ("(assert (=> X_0 1))", r"prop.vnnlib:5:10: unknown symbol '=>'"),
    ("(assert (<= (/ X_0 2) 1))", r"prop.vnnlib:5:14: unknown symbol '/' in a term"),
    ("(assert (<= (* X_0 Y_0) 1))", r"prop.vnnlib:5:13: non-linear term"),
    ("(assert (<= X_0))", r"prop.vnnlib:5:9: \(<= \.\.\.\) needs at least two arguments"),
    ("(assert X_0)", r"prop.vnnlib:5:9: expected a formula"),
    ("(push 1)", r"prop.vnnlib:5:2: unknown command 'push'"),
    ("(declare-const Z Real)", r"prop.vnnlib:5:16: unsupported variable name 'Z'"),
    ("(declare-const X_0 Real)", r"prop.vnnlib:5:16: 'X_0' is declared twice"),
    ("(declare-const X_3 Real)", r"prop.vnnlib:5:16: X_3 is declared but X_2 is not"),
    ("(declare-const X_2 Int)", r"prop.vnnlib:5:20: 'X_2' has sort 'Int'; only Real"),
    ("X_0", r"prop.vnnlib:5:1: expected '\(' at top level, found 'X_0'"),
])
def test_errors_name_line_and_column(body, pattern):
    expect_error(HEAD2 + body + "\n" + BOX2 + "(assert (>= Y_0 0))", pattern)


def test_deep_nesting_reads_and_too_deep_nesting_is_a_spec_error():
    def nested(depth):
        return HEAD2 + BOX2 + "(assert " + "(and " * depth + "(>= Y_0 0)" + ")" * depth + ")"
    assert len(parse_vnnlib(nested(200)).cases) == 1
    expect_error(nested(5000), r"prop.vnnlib:1:1: formulas nested too deeply")


def test_empty_file_is_an_error():
    expect_error("; nothing here\n", r"prop.vnnlib:1:1: the property declares no inputs")


def test_unreadable_file_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="cannot read the property"):
        read_vnnlib(tmp_path / "missing.vnnlib")
    bad = tmp_path / "latin1.vnnlib"
    bad.write_bytes(b"(declare-const X_0 Real)\n; caf\xe9\n")
    with pytest.raises(SpecError, match=r"latin1.vnnlib:2:6: not UTF-8"):
        read_vnnlib(bad)


def test_package_exports():
    for name in ("read_vnnlib", "parse_vnnlib", "write_vnnlib", "format_vnnlib", "robustness",
                 "Spec", "Case", "Conjunction", "InputSet", "SpecError"):
        assert hasattr(specs, name)


def test_single_variable_row_whose_bound_overflows_stays_finite_and_keeps_the_row():
    # regression: the quotient -3.8e8 / 2.1e-300 is below -max float; its upward rounding is
    # -max float (an empty box here), not -inf (which was reported as a missing bound)
    spec = parse_vnnlib(HEAD2 + BOX2 + "(assert (<= (* 2.1e-300 X_1) -3.8e8))\n(assert (>= Y_0 0))")
    (case,) = spec.cases
    assert case.input.upper[1] == -np.finfo(float).max
    np.testing.assert_array_equal(case.input.A, [[0.0, 2.1e-300]])


def test_rounded_right_hand_side_makes_the_row_strict():
    # y0 - 1 <= 0.1: y0 <= r = 1 + fl(0.1), not a float; the row is y0 < f = up(r), so
    # y0 = f (outside the written set) is no violation and the float below it is one
    spec = parse_vnnlib(HEAD2 + BOX2 + "(assert (<= (- Y_0 1) 0.1))\n"
                        "(assert (<= (- X_0 0.5) 0.1))")
    (case,) = spec.cases
    (conj,) = case.unsafe
    r = 1 + Fraction(0.1)
    f = conj.d[0]
    assert Fraction(f) > r and Fraction(np.nextafter(f, -1)) < r
    assert conj.strict.tolist() == [True]
    assert not conj.holds([f, 0.0])[0]
    assert conj.holds([np.nextafter(f, -1), 0.0])[0]
    # the input row alike: x0 = f is outside the written input set
    assert case.input.strict.tolist() == [True]
    assert not case.input.contains([case.input.upper[0], 0.0])[0]
    assert case.input.contains([np.nextafter(case.input.upper[0], -1), 0.0])[0]
    # an exact right-hand side stays non-strict
    exact = parse_vnnlib(HEAD2 + BOX2 + "(assert (<= (+ Y_0 0.5) 1.0))")
    assert exact.cases[0].unsafe[0].strict.tolist() == [False]
