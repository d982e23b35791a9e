"""The project's own tests stand on a hidden-counterexample benchmark: every method of our
verifier runs on the committed benchmark (tests/data/soundness, made by
``verifier soundness generate --ci --seed 0``), and any false proof or invalid counterexample
fails the build. Every planted counterexample replays on onnxruntime first."""
import json
from pathlib import Path

import pytest

from specs import read_vnnlib
from verifier.network.runtime import OnnxRunner
from verifier.soundness.harness import HarnessOptions, format_report, run_harness
from verifier.soundness.judge import read_results_file, replay_point
from verifier.soundness.tools import VerifierTool
from verifier.verify import METHODS

BENCH = Path(__file__).resolve().parent / "data" / "soundness"


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((BENCH / "answers" / "manifest.json").read_text())


def test_the_committed_benchmark_is_what_the_generator_made(manifest):
    assert manifest["generator"] == "verifier.soundness" and manifest["seed"] == 0
    assert [m["name"] for m in manifest["models"]] == ["ci_mlp_relu", "ci_mlp_relu_res"]
    rows = (BENCH / "benchmark" / "instances.csv").read_text().split()
    assert len(rows) == len(manifest["instances"])
    assert sum(i["planted"] for i in manifest["instances"]) >= 4


def test_every_planted_counterexample_replays(manifest):
    for rec in manifest["instances"]:
        if not rec["planted"]:
            continue
        runner = OnnxRunner(BENCH / "benchmark" / rec["onnx"])
        spec = read_vnnlib(BENCH / "benchmark" / rec["vnnlib"], n_inputs=runner.n_inputs)
        ans = read_results_file(BENCH / "answers" / rec["answer"], spec.n_inputs)
        rep = replay_point(runner, spec, ans.xs[0])
        assert rep.valid, (rec["vnnlib"], rep.reason)
        assert rep.y[1 - rec["label"]] - rep.y[rec["label"]] >= 0.01
        assert rep.outside == 0.0


def test_no_method_of_the_verifier_makes_a_false_proof(tmp_path):
    tools = [VerifierTool(m) for m in METHODS]
    # one second per instance (and one of grace before a kill) keeps the ten methods' runs on
    # the committed benchmark to about a minute; the slow self-test and benchmarks/soundness
    # give them longer
    report = run_harness(BENCH, tools, tmp_path,
                         HarnessOptions(timeout=1.0, grace=1.0, workers=2))
    text = format_report(report)
    for name, t in report["tools"].items():
        s = t["summary"]
        assert s["false_proofs"] == 0, f"{name} made a false proof:\n{text}"
        assert s["invalid_counterexamples"] == 0, f"{name} claimed an invalid CE:\n{text}"
        assert s["unparsable"] == 0 and s["no_answer"] == 0, text
