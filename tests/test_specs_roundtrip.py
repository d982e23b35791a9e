"""The writer: read(write(spec)) == spec, on every shared file and on generated specs."""
import io

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from specs import (Case, Conjunction, InputSet, Spec, SpecError, format_vnnlib, normalize,
                   parse_vnnlib, read_vnnlib, write_vnnlib)


def test_every_shared_file_round_trips(vnncomp, tmp_path):
    files = sorted(vnncomp.glob("*/vnnlib/*.vnnlib")) + sorted(vnncomp.glob("test/*.vnnlib"))
    assert files
    for path in files:
        spec = read_vnnlib(path)
        out = tmp_path / path.name
        write_vnnlib(spec, out)
        assert read_vnnlib(out) == spec, path


def test_write_to_an_open_file_and_format_agree():
    spec = Spec((Case(InputSet([0.0], [1.0]), (Conjunction([[1.0]], [0.5]),)),), 1, 1)
    buf = io.StringIO()
    write_vnnlib(spec, buf)
    assert buf.getvalue() == format_vnnlib(spec)
    assert "(assert (<= X_0 1.0))" in buf.getvalue()


def test_floats_are_written_exactly():
    values = [0.1, 1 / 3, 5e-324, 1.7976931348623157e308, -2.5e-17, 0.029999999329447746]
    n = len(values)
    lower = np.array(values) - np.abs(values)
    spec = Spec((Case(InputSet(lower, np.array(values)),
                      (Conjunction(np.eye(n)[:1] * values[1], [values[2]]),)),), n, n)
    assert parse_vnnlib(format_vnnlib(spec)) == spec


def test_non_finite_values_cannot_be_written():
    spec = Spec((Case(InputSet([0.0], [np.inf]), (Conjunction([[1.0]], [0.5]),)),), 1, 1)
    with pytest.raises(SpecError, match="non-finite"):
        format_vnnlib(spec)


def test_degenerate_specs_round_trip():
    everything = Spec((Case(InputSet([0.0], [1.0]), (Conjunction(np.zeros((0, 2)),
                                                                 np.zeros(0)),)),), 1, 2)
    assert parse_vnnlib(format_vnnlib(everything)) == everything
    nothing = Spec((), 1, 2)
    assert parse_vnnlib(format_vnnlib(nothing)) == nothing


def test_strict_rows_round_trip_and_are_part_of_equality():
    inp = InputSet([0.0, -1.0], [1.0, 1.0], [[1.0, 0.0], [1.0, -2.0], [0.0, 3.0]],
                   [0.5, 0.25, 1.0], [True, True, False])
    conj = Conjunction([[1.0, -1.0], [0.0, -1.0], [2.0, 3.0], [0.0, 0.0]], [0.0, 0.5, 1.0, 1.0],
                       [True, True, True, False])
    spec = normalize(Spec((Case(inp, (conj,)),), 2, 2))
    assert spec.cases[0].input.strict.tolist() == [True, True, False]  # strict bounds stay rows
    assert spec.cases[0].input.upper[0] == 0.5
    text = format_vnnlib(spec)
    assert "(< X_0 0.5)" in text and "(< Y_0 Y_1)" in text and "(> Y_1 -0.5)" in text
    assert parse_vnnlib(text) == spec
    assert Conjunction(conj.C, conj.d) != conj
    assert Conjunction(conj.C, conj.d) == Conjunction(conj.C, conj.d, [False] * 4)
    assert InputSet(inp.lower, inp.upper, inp.A, inp.b) != inp
    with pytest.raises(ValueError, match="strict"):
        Conjunction(conj.C, conj.d, [True])
    with pytest.raises(ValueError, match="strict"):
        InputSet([0.0], [1.0], strict=[True])
    assert not conj.strict.flags.writeable


finite = st.floats(allow_nan=False, allow_infinity=False)
coef = st.one_of(st.sampled_from([0.0, 1.0, -1.0, 2.0, -0.5]), finite)


@st.composite
def specs_(draw):
    n = draw(st.integers(1, 4))
    m = draw(st.integers(1, 3))
    cases = []
    for _ in range(draw(st.integers(0, 3))):
        lower = draw(st.lists(finite, min_size=n, max_size=n))
        upper = draw(st.lists(finite, min_size=n, max_size=n))
        k = draw(st.integers(0, 2))
        A = b = strict = None
        if k:
            A = [draw(st.lists(coef, min_size=n, max_size=n)) for _ in range(k)]
            b = draw(st.lists(finite, min_size=k, max_size=k))
            strict = draw(st.lists(st.booleans(), min_size=k, max_size=k))
        conjs = []
        for _ in range(draw(st.integers(0, 3))):
            rows = draw(st.integers(0, 3))
            C = np.array([draw(st.lists(coef, min_size=m, max_size=m)) for _ in range(rows)])
            d = draw(st.lists(finite, min_size=rows, max_size=rows))
            flags = draw(st.lists(st.booleans(), min_size=rows, max_size=rows))
            conjs.append(Conjunction(C.reshape(rows, m), d, flags))
        cases.append(Case(InputSet(lower, upper, A, b, strict), tuple(conjs)))
    if cases and draw(st.booleans()):
        cases.append(cases[0])  # a repeated input set: merged by the normal form
    return Spec(tuple(cases), n, m)


@given(specs_())
def test_read_of_write_is_the_normal_form_of_every_spec(spec):
    text = format_vnnlib(spec)
    back = parse_vnnlib(text)
    assert back == normalize(spec), text
    assert normalize(back) == back


@given(specs_(), st.data())
@np.errstate(over="ignore", invalid="ignore")  # huge generated entries overflow the products
def test_the_normal_form_has_the_same_counterexamples(spec, data):
    norm = normalize(spec)
    pts = st.lists(st.sampled_from([-1.0, 0.0, 0.5, 1.0, 3.0]), min_size=spec.n_inputs,
                   max_size=spec.n_inputs)
    for case in spec.cases:  # points on the boxes' corners, where rounding would show
        x = np.where(np.array(data.draw(st.lists(st.booleans(), min_size=spec.n_inputs,
                                                 max_size=spec.n_inputs))),
                     case.input.lower, case.input.upper)
        y = np.array(data.draw(st.lists(st.sampled_from([-1.0, 0.0, 1.0]),
                                        min_size=spec.n_outputs, max_size=spec.n_outputs)))
        assert spec.violated_by(x, y) == norm.violated_by(x, y)
    x = np.array(data.draw(pts))
    y = np.zeros(spec.n_outputs)
    assert spec.violated_by(x, y) == norm.violated_by(x, y)
