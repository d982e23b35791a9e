"""The ``verifier`` command: answers and their results files, exit statuses, and one clear line
for each kind of bad input (truncated ONNX, unknown op, undeclared variable, unbalanced
parentheses, a model and property that do not fit)."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from specs import read_vnnlib
from verifier import cli
from verifier.network.runtime import OnnxRunner

EXAMPLES = Path(cli.__file__).resolve().parent / "examples"
MODEL = str(EXAMPLES / "example.onnx")
ROBUST = str(EXAMPLES / "robust.vnnlib")
BOUNDARY = str(EXAMPLES / "boundary.vnnlib")


def parse_results(text: str):
    """(status, {name: value}) from a VNN-COMP results file."""
    status, _, rest = text.partition("\n")
    values = {m[0]: float(m[1]) for m in re.findall(r"\((\w+_\d+) ([^()\s]+)\)", rest)}
    return status, values


def run_main(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_unsat_example_writes_unsat(tmp_path, capsys):
    res = tmp_path / "out.txt"
    code, out, err = run_main(["verify", MODEL, ROBUST, "--results", str(res)], capsys)
    assert code == 0
    assert out.startswith("unsat")
    assert res.read_text() == "unsat\n"


def test_sat_results_file_holds_a_counterexample_that_onnxruntime_confirms(tmp_path, capsys):
    res = tmp_path / "out.txt"
    code, out, _ = run_main(["verify", MODEL, BOUNDARY, "--results", str(res)], capsys)
    assert code == 0 and out.startswith("sat")
    text = res.read_text()
    assert re.fullmatch(r"sat\n\(\(X_0 \S+\)\n \(X_1 \S+\)\n \(Y_0 \S+\)\n \(Y_1 \S+\)\)\n", text)
    status, v = parse_results(text)
    x = np.array([[v["X_0"], v["X_1"]]])
    y = np.array([[v["Y_0"], v["Y_1"]]])
    spec = read_vnnlib(BOUNDARY)
    assert spec.cases[0].input.contains(x)[0]
    assert np.array_equal(OnnxRunner(MODEL)(x), y)  # the written outputs are onnxruntime's
    assert spec.violated_by(x, y)[0]


@pytest.mark.parametrize("method", ["ibp", "crown", "alpha-crown", "attack"])
def test_every_method_answers_with_exit_status_zero(tmp_path, capsys, method):
    code, out, _ = run_main(["verify", MODEL, ROBUST, "--method", method, "--timeout", "30"],
                            capsys)
    assert code == 0
    assert out.split()[0] == ("unknown" if method == "attack" else "unsat")


# --------------------------------------------------------------------------------------------
# bad input: exit status 2 and one line on stderr
# --------------------------------------------------------------------------------------------
def truncated_model(tmp_path):
    p = tmp_path / "truncated.onnx"
    data = Path(MODEL).read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return str(p)


def unknown_op_model(tmp_path):
    p = tmp_path / "unknown_op.onnx"
    node = helper.make_node("Hardmax", ["x"], ["y"], name="the_hardmax", axis=1)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                          [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(p))
    return str(p)


def bad_property(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


HEADER = "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n" \
         "(declare-const Y_1 Real)\n(assert (>= X_0 0))\n(assert (<= X_0 1))\n" \
         "(assert (>= X_1 0))\n(assert (<= X_1 1))\n"


@pytest.mark.parametrize("case", ["truncated onnx", "unknown op", "undeclared variable",
                                  "unbalanced parentheses", "shape mismatch", "missing file"])
def test_bad_input_gives_one_error_line_and_exit_status_two(tmp_path, capsys, case):
    model, prop, needle = MODEL, ROBUST, None
    if case == "truncated onnx":
        model, needle = truncated_model(tmp_path), "truncated.onnx"
    elif case == "unknown op":
        model, needle = unknown_op_model(tmp_path), "Hardmax"
    elif case == "undeclared variable":
        prop, needle = bad_property(tmp_path, "undeclared.vnnlib",
                                    HEADER + "(assert (>= Y_7 Y_0))\n"), "Y_7"
    elif case == "unbalanced parentheses":
        prop, needle = bad_property(tmp_path, "unbalanced.vnnlib",
                                    HEADER + "(assert (>= Y_1 Y_0)\n"), "unbalanced.vnnlib"
    elif case == "shape mismatch":
        prop, needle = bad_property(tmp_path, "three.vnnlib",
                                    HEADER + "(declare-const X_2 Real)\n(assert (>= X_2 0))\n"
                                    "(assert (<= X_2 1))\n(assert (>= Y_1 Y_0))\n"), "3"
    elif case == "missing file":
        model, needle = str(tmp_path / "nowhere.onnx"), "nowhere.onnx"
    res = tmp_path / "res.txt"
    code, out, err = run_main(["verify", model, prop, "--results", str(res)], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("verifier: error: "), err
    assert needle in lines[0]
    assert "Traceback" not in err and out == ""
    assert res.read_text() == "error\n"


def test_the_console_script_prints_no_traceback_for_bad_input(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "verifier.cli", "verify",
                           truncated_model(tmp_path), ROBUST], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_bad_options_are_bad_input(capsys):
    code, _, err = run_main(["verify", MODEL, ROBUST, "--method", "magic"], capsys)
    assert code == 2 and "invalid choice" in err
    code, _, _ = run_main(["bounds", MODEL, ROBUST, "--method", "ibp", "--repeat", "0"], capsys)
    assert code == 2
    code, _, err = run_main(["verify", MODEL, ROBUST, "--processes", "0"], capsys)
    assert code == 2 and "positive integer" in err


@pytest.mark.parametrize("argv, expected", [([], (len(os.sched_getaffinity(0)), True)),
                                            (["--processes", "3"], (3, True)),
                                            (["--no-work-sharing"],
                                             (len(os.sched_getaffinity(0)), False))])
def test_verify_gives_branch_and_bound_the_cores_or_the_processes_asked(capsys, monkeypatch,
                                                                         argv, expected):
    import importlib

    verify_module = importlib.import_module("verifier.verify")  # verifier.verify: the function
    seen = []
    real = verify_module.verify

    def spy(*args, options=None, **kw):
        seen.append((options.bab_options.processes, options.bab_options.share_work))
        return real(*args, options=options, **kw)
    monkeypatch.setattr(verify_module, "verify", spy)
    code, out, _ = run_main(["verify", MODEL, ROBUST] + argv, capsys)
    assert code == 0 and out.startswith("unsat") and seen == [expected]


def test_ctrl_c_in_verify_exits_130_with_one_line_and_an_unknown_results_file(
        tmp_path, capsys, monkeypatch):
    import importlib

    def interrupted(*args, **kw):
        raise KeyboardInterrupt
    monkeypatch.setattr(importlib.import_module("verifier.verify"), "verify", interrupted)
    res = tmp_path / "out.txt"
    code, out, err = run_main(["verify", MODEL, ROBUST, "--results", str(res)], capsys)
    assert code == 130 and out == ""
    assert err.strip() == "verifier: interrupted"  # no traceback
    assert res.read_text().split() == ["unknown"]


def test_an_unexpected_failure_is_answered_error_with_exit_status_one(tmp_path, capsys,
                                                                       monkeypatch):
    import importlib

    def broken(*a, **k):
        raise KeyError("a bug")

    monkeypatch.setattr(importlib.import_module("verifier.verify"), "verify", broken)
    res = tmp_path / "res.txt"
    code, out, _ = run_main(["verify", MODEL, ROBUST, "--results", str(res)], capsys)
    assert code == 1
    assert out.startswith("error") and "a bug" in out
    assert res.read_text() == "error\n"


def test_verify_runs_one_blas_thread_unless_told_otherwise(capsys, monkeypatch):
    # a second BLAS thread made an ACAS Xu instance 6x slower on a busy 2-core machine
    import importlib

    from verifier import run
    if run.blas_threads() is None:
        pytest.skip("numpy is not linked against OpenBLAS here")
    seen = []
    module = importlib.import_module("verifier.verify")
    real = module.verify

    def spy(*a, **k):
        seen.append(run.blas_threads())
        return real(*a, **k)

    monkeypatch.setattr(module, "verify", spy)
    try:
        run.limit_blas_threads(2)
        assert run_main(["verify", MODEL, ROBUST], capsys)[0] == 0
        run.limit_blas_threads(2)
        two = run.blas_threads()  # 1 where the library allows only one
        assert run_main(["verify", MODEL, ROBUST, "--threads", "0"], capsys)[0] == 0
    finally:
        run.limit_blas_threads(1)
    assert seen == [1, two]


# --------------------------------------------------------------------------------------------
# check, bounds, run
# --------------------------------------------------------------------------------------------
def test_check_prints_the_ops_and_the_agreement(capsys):
    code, out, _ = run_main(["check", MODEL, ROBUST, "--samples", "10"], capsys)
    assert code == 0
    assert "Gemm x3" in out and "Relu x2" in out and "OK" in out


def test_check_exits_1_when_the_model_disagrees_with_onnxruntime(capsys):
    # the float64 network and the float32 model differ in the last bits: no error is below 0
    code, out, err = run_main(["check", MODEL, "--samples", "10", "--tolerance", "0"], capsys)
    assert code == 1
    assert "DISAGREES" in out and "disagrees with onnxruntime" in err


def test_bounds_json_has_every_row_and_output(capsys):
    code, out, _ = run_main(["bounds", MODEL, ROBUST, "--method", "crown", "--json",
                             "--repeat", "2"], capsys)
    assert code == 0
    obj = json.loads(out)
    assert obj["method"] == "crown" and obj["seconds"] > 0
    assert len(obj["disjuncts"]) == 1 and len(obj["disjuncts"][0]["rows"]) == 1
    assert obj["disjuncts"][0]["rows"][0]["lower"] > 0  # the example's property is proven
    assert len(obj["outputs"]) == 2
    for r in obj["outputs"]:
        assert r["lower"] <= r["upper"]


def test_bounds_with_hull_cuts_are_never_looser_than_the_triangle_lp(capsys):
    rows = {}
    for extra in ([], ["--cut-rounds", "3"]):
        code, out, _ = run_main(["bounds", MODEL, ROBUST, "--method", "lp", "--json"] + extra,
                                capsys)
        assert code == 0
        obj = json.loads(out)
        rows[len(extra)] = [r for d in obj["disjuncts"] for r in d["rows"]] + obj["outputs"]
    for tri, cut in zip(rows[0], rows[2]):
        assert cut["lower"] >= tri["lower"] - 1e-9 and cut["upper"] <= tri["upper"] + 1e-9


def test_cut_rounds_with_a_method_that_has_no_lp_is_an_input_error(capsys):
    code, _, err = run_main(["bounds", MODEL, ROBUST, "--method", "crown", "--cut-rounds", "2"],
                            capsys)
    assert code == 2 and "--cut-rounds" in err


def make_example_bench(tmp_path: Path) -> Path:
    bench = tmp_path / "bench"
    bench.mkdir()
    for name in ("example.onnx", "robust.vnnlib", "boundary.vnnlib"):
        (bench / name).write_bytes((EXAMPLES / name).read_bytes())
    (bench / "instances.csv").write_text("example.onnx,robust.vnnlib,30\n"
                                         "example.onnx,boundary.vnnlib,30\n")
    (bench / "ground_truth.csv").write_text(
        "onnx,vnnlib,expected,certainty\nexample.onnx,robust.vnnlib,unsat,certain(exact)\n"
        "example.onnx,boundary.vnnlib,sat,certain(CE)\n")
    return bench


def test_run_writes_results_and_a_summary_against_the_ground_truth(tmp_path, capsys):
    bench = make_example_bench(tmp_path)
    out_csv = tmp_path / "results.csv"
    code, out, _ = run_main(["run", str(bench), "--results", str(out_csv), "--workers", "2"],
                            capsys)
    assert code == 0
    assert "solved 2 (sat 1, unsat 1)" in out and "correct 2, wrong 0" in out
    lines = out_csv.read_text().splitlines()
    assert lines[0] == "onnx,vnnlib,timeout,result,seconds,method,message" and len(lines) == 3
    ce = tmp_path / "results_ce" / "example+boundary.txt"
    assert parse_results(ce.read_text())[0] == "sat"


def test_run_on_a_folder_without_instances_is_bad_input(tmp_path, capsys):
    code, _, err = run_main(["run", str(tmp_path)], capsys)
    assert code == 2 and "instances.csv" in err


def test_run_interrupted_by_ctrl_c_resumes_without_redoing_rows(tmp_path):
    import os
    import signal
    import time

    bench = make_example_bench(tmp_path)
    n = 24  # enough that the interrupt comes before the last row, whatever the load
    names = []
    for i in range(n):  # copies of the example model under other names
        name = f"net{i}.onnx"
        (bench / name).write_bytes((EXAMPLES / "example.onnx").read_bytes())
        names.append(f"{name},{'robust' if i % 2 else 'boundary'}.vnnlib,30")
    (bench / "instances.csv").write_text("\n".join(names) + "\n")
    out_csv = tmp_path / "results.csv"
    cmd = [sys.executable, "-m", "verifier.cli", "run", str(bench), "--results", str(out_csv)]
    # Python keeps SIGINT ignored when it starts with it ignored (a suite launched in the
    # background by a non-interactive shell): give the run the default disposition
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if out_csv.is_file() and len(out_csv.read_text().splitlines()) >= 3:  # header + 2 rows
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "resume" in err
    before = out_csv.read_text()
    assert before.endswith("\n")
    n_before = len(before.splitlines()) - 1
    assert 2 <= n_before < n
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0
    after = out_csv.read_text()
    assert after.startswith(before)  # finished rows kept as they were
    keys = [tuple(line.split(",")[:2]) for line in after.splitlines()[1:]]
    assert len(keys) == n and len(set(keys)) == n  # and none done twice
    assert f"{n} instances, solved {n}" in proc.stdout


def test_the_vnncomp_scripts_prepare_and_run_an_instance(tmp_path):
    scripts = Path(cli.__file__).resolve().parent.parent / "vnncomp"
    env = dict(__import__("os").environ, VERIFIER=f"{sys.executable} -m verifier.cli")
    prep = subprocess.run(["bash", str(scripts / "prepare_instance.sh"), "v1", "example", MODEL,
                           BOUNDARY], capture_output=True, text=True, env=env, timeout=300)
    assert prep.returncode == 0, prep.stderr
    res = tmp_path / "out.txt"
    run = subprocess.run(["bash", str(scripts / "run_instance.sh"), "v1", "example", MODEL,
                          BOUNDARY, str(res), "30"], capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert parse_results(res.read_text())[0] == "sat"
    bad = subprocess.run(["bash", str(scripts / "run_instance.sh"), "v2", "example", MODEL,
                          BOUNDARY, str(res), "30"], capture_output=True, text=True, env=env)
    assert bad.returncode != 0 and "v1" in bad.stderr
