"""The soundness harness: results files read by exact string, every claimed counterexample
replayed, false proofs named; external tools through the competition interface.

The benchmark here is made by hand (no training): ``y0 = x0``, ``y1 = 0.02`` on two inputs, and
the property "class 0 wins" on two boxes. On ``x0 in [0, 0.1]`` it fails (``x0 = 0.005`` is a
counterexample, marked planted in the manifest); on ``x0 in [0.05, 0.1]`` it holds (clean)."""
import json
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from specs import robustness, write_vnnlib
from verifier import save_onnx
from verifier.network import Network, Node
from verifier.network import ops as O
from verifier.network.runtime import OnnxRunner
from verifier.soundness.harness import HarnessOptions, format_report, run_harness
from verifier.soundness.judge import judge, parse_results, replay_point
from verifier.soundness.tools import CompetitionTool, VerifierTool


def tiny_net() -> Network:
    W = np.array([[1.0, 0.0], [0.0, 0.0]])
    b = np.array([0.0, 0.02])
    return Network("x", (2,), (Node("y", O.Linear(W, b), ("x",), (2,)),), "y")


def make_bench(root: Path) -> Path:
    """benchmark/ (net.onnx, planted.vnnlib, clean.vnnlib) and answers/manifest.json."""
    b = root / "benchmark"
    (b / "onnx").mkdir(parents=True)
    (b / "vnnlib").mkdir()
    save_onnx(tiny_net(), b / "onnx" / "net.onnx")
    write_vnnlib(robustness([0.05, 0.0], 0.05, 0, 2), b / "vnnlib" / "planted.vnnlib")
    write_vnnlib(robustness([0.075, 0.0], 0.025, 0, 2), b / "vnnlib" / "clean.vnnlib")
    (b / "instances.csv").write_text("onnx/net.onnx,vnnlib/planted.vnnlib,5\n"
                                     "onnx/net.onnx,vnnlib/clean.vnnlib,5\n")
    (root / "answers").mkdir()
    manifest = {"instances": [
        {"onnx": "onnx/net.onnx", "vnnlib": "vnnlib/planted.vnnlib", "planted": True},
        {"onnx": "onnx/net.onnx", "vnnlib": "vnnlib/clean.vnnlib", "planted": False}]}
    (root / "answers" / "manifest.json").write_text(json.dumps(manifest))
    return root


def make_tool(root: Path, name: str, body: str) -> Path:
    """A VNN-COMP tool folder whose run_instance.sh runs the Python ``body`` with the script's
    arguments in ``args`` (v1, category, onnx, vnnlib, results, timeout)."""
    d = root / name
    d.mkdir()
    (d / "tool.py").write_text("import sys\nargs = sys.argv[1:]\n" + body)
    sh = d / "run_instance.sh"
    sh.write_text(f'#!/usr/bin/env bash\nexec "{sys.executable}" "$(dirname "$0")/tool.py" "$@"\n')
    sh.chmod(sh.stat().st_mode | stat.S_IEXEC)
    return d


ALWAYS_UNSAT = "open(args[4], 'w').write('unsat\\n')\n"
# sat with the centre of the box: inside the input set, but the property holds there
WRONG_SAT = """
import re
text = open(args[3]).read()
lo = {int(i): float(v) for i, v in re.findall(r'\\(>= X_(\\d+) ([-0-9.e]+)\\)', text)}
hi = {int(i): float(v) for i, v in re.findall(r'\\(<= X_(\\d+) ([-0-9.e]+)\\)', text)}
pts = ' '.join(f'(X_{i} {(lo[i] + hi[i]) / 2!r})' for i in sorted(lo))
open(args[4], 'w').write(f'sat\\n({pts} (Y_0 0.0) (Y_1 1.0))\\n')
"""
RIGHT_SAT = ("open(args[4], 'w').write('sat\\n((X_0 0.005) (X_1 0.0) (Y_0 0.005) (Y_1 0.02))\\n'"
             " if 'planted' in args[3] else 'unknown\\n')\n")
GARBLED = "open(args[4], 'w').write('holds\\n')\n"
SLEEPER = "import time\ntime.sleep(60)\n"


def test_exact_status_words():
    assert parse_results("unsat\n", 2).status == "unsat"
    assert parse_results("  timeout  \n\n", 2).status == "timeout"
    for text in ("UNSAT\n", "unsat.\n", "holds\n", "violated\n", "result: sat\n"):
        assert parse_results(text, 2).status == "unparsable", text
    assert parse_results("", 2).status == "no answer"
    assert parse_results(None, 2).status == "no answer"


def test_counterexample_parsing():
    a = parse_results("sat\n((X_0 0.5)\n (X_1 -1e-3)\n (Y_0 1)\n (Y_1 2))\n", 2)
    assert a.status == "sat" and a.problem == ""
    np.testing.assert_array_equal(a.xs[0], [0.5, -1e-3])
    np.testing.assert_array_equal(a.ys[0], [1.0, 2.0])
    missing = parse_results("sat\n((X_0 0.5) (Y_0 1))\n", 2)
    assert missing.problem and not missing.xs
    two = parse_results("sat\n((X_0 1) (X_1 2) (X_0 3) (X_1 4))\n", 2)
    assert [list(x) for x in two.xs] == [[1, 2], [3, 4]]
    assert "not a number" in parse_results("sat\n((X_0 abc) (X_1 1))", 2).problem


def test_replay_and_verdicts(tmp_path):
    save_onnx(tiny_net(), tmp_path / "net.onnx")
    runner = OnnxRunner(tmp_path / "net.onnx")
    spec = robustness([0.05, 0.0], 0.05, 0, 2)
    good = replay_point(runner, spec, np.array([0.005, 0.0]))
    assert good.valid and good.y[1] - good.y[0] > 0.01
    assert not replay_point(runner, spec, np.array([0.05, 0.0])).valid  # holds there
    out = replay_point(runner, spec, np.array([-0.01, 0.0]))
    assert not out.valid and "outside" in out.reason
    assert replay_point(runner, spec, np.array([-0.01, 0.0]), input_tol=0.02).valid
    assert not replay_point(runner, spec, np.array([np.nan, 0.0])).valid
    sat = parse_results("sat\n((X_0 0.005) (X_1 0.0))", 2)
    assert judge(sat, True, runner, spec).verdict == "sat"
    assert judge(parse_results("unsat", 2), True).verdict == "false proof"
    assert judge(parse_results("unsat", 2), False).verdict == "unsat (clean)"
    bad = parse_results("sat\n((X_0 0.05) (X_1 0.0))", 2)
    assert judge(bad, True, runner, spec).verdict == "invalid counterexample"
    # one valid point among several suffices
    both = parse_results("sat\n((X_0 0.05) (X_1 0.0) (X_0 0.005) (X_1 0.0))", 2)
    assert judge(both, True, runner, spec).verdict == "sat"


def test_external_tools_through_the_competition_interface(tmp_path):
    bench = make_bench(tmp_path / "b")
    tools = [CompetitionTool(make_tool(tmp_path, n, body)) for n, body in
             (("always_unsat", ALWAYS_UNSAT), ("wrong_sat", WRONG_SAT), ("right_sat", RIGHT_SAT),
              ("garbled", GARBLED))]
    report = run_harness(bench, tools, tmp_path / "out", HarnessOptions(timeout=5))
    s = {name: t["summary"] for name, t in report["tools"].items()}
    assert s["dir:always_unsat"]["false_proofs"] == 1
    assert s["dir:always_unsat"]["false_proof_instances"] == ["net+planted"]
    assert s["dir:always_unsat"]["unsat_clean"] == 1
    assert s["dir:wrong_sat"]["invalid_counterexamples"] == 2
    assert s["dir:wrong_sat"]["false_proofs"] == 0
    assert s["dir:right_sat"]["sat_planted"] == 1 and s["dir:right_sat"]["unknown"] == 1
    assert s["dir:right_sat"]["false_proofs"] == s["dir:right_sat"]["invalid_counterexamples"] == 0
    assert s["dir:garbled"]["unparsable"] == 2
    text = format_report(report)
    assert "FALSE PROOF: dir:always_unsat on net+planted" in text
    assert "INVALID COUNTEREXAMPLE: dir:wrong_sat on net+planted" in text
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["tools"]["dir:always_unsat"]["summary"]["false_proofs"] == 1


def test_tools_never_see_the_answers(tmp_path):
    bench = make_bench(tmp_path / "b")
    spy = make_tool(tmp_path, "spy", "import os\nopen(args[4], 'w').write("
                    "'unknown\\n' if not os.path.exists(os.path.join(os.path.dirname("
                    "os.path.dirname(os.path.dirname(args[2]))), 'answers')) else 'unsat\\n')\n")
    report = run_harness(bench, [CompetitionTool(spy)], tmp_path / "out",
                         HarnessOptions(timeout=5))
    assert report["tools"]["dir:spy"]["summary"]["unknown"] == 2


def test_a_tool_past_its_time_is_killed_and_counted_as_timeout(tmp_path):
    bench = make_bench(tmp_path / "b")
    slow = CompetitionTool(make_tool(tmp_path, "slow", SLEEPER))
    report = run_harness(bench, [slow], tmp_path / "out",
                         HarnessOptions(timeout=0.5, grace=0.5, limit=1))
    row = report["tools"]["dir:slow"]["rows"][0]
    assert row["killed"] and row["verdict"] == "timeout" and row["seconds"] < 10


def test_our_verifier_through_the_harness(tmp_path):
    bench = make_bench(tmp_path / "b")
    report = run_harness(bench, [VerifierTool("crown")], tmp_path / "out",
                         HarnessOptions(timeout=20))
    s = report["tools"]["verifier:crown"]["summary"]
    assert s["false_proofs"] == 0 and s["invalid_counterexamples"] == 0
    assert s["sat_planted"] == 1 and s["unsat_clean"] == 1


def test_unknown_tool_names_are_refused(tmp_path):
    from verifier.soundness.tools import make_tool as tool_from_name
    with pytest.raises(ValueError):
        tool_from_name("verifier:nonsense")
    with pytest.raises(ValueError):
        tool_from_name(str(tmp_path / "no_such_folder"))
    with pytest.raises(FileNotFoundError):
        CompetitionTool(tmp_path)  # a folder without run_instance.sh
