"""Benchmark runs on Ray (``verifier run --ray``): the same rows, answers and counterexample
files as local workers, resumable, and a bad instance or an instance over its time costs one row.

One local Ray instance (2 CPUs) serves the whole module. Ray is a test extra: in CI (``CI=true``)
its absence fails, elsewhere it skips."""
import os
import shutil
import socket

import pytest

from verifier.errors import VerifierError
from verifier.run import RunOptions, read_ground_truth, read_results, run_benchmark, summarize

try:
    import ray
except ImportError:
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("ray is not installed (pip install -e '.[test]')", allow_module_level=True)


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture
def bench(vnncomp, tmp_path):
    """The shared ``test`` benchmark (5 instances, ground truth) plus one row whose model is not
    ONNX."""
    dst = tmp_path / "bench"
    shutil.copytree(vnncomp / "test", dst)
    (dst / "broken.onnx").write_bytes(b"not an onnx file")
    with open(dst / "instances.csv", "a") as f:
        f.write("broken.onnx,test_prop.vnnlib,10\n")
    return dst


def test_a_ray_run_answers_every_instance_correctly_and_writes_the_counterexample(
        ray_cluster, bench, tmp_path):
    out = tmp_path / "results.csv"
    seen = []
    rows = run_benchmark(bench, out, RunOptions(workers=2, ray="local"),
                         progress=lambda done, total, row: seen.append((done, total)))
    assert len(rows) == 6 and seen[0] == (0, 6) and seen[-1] == (6, 6)
    assert [r.key for r in read_results(out)] == [r.key for r in rows]
    s = summarize(rows, read_ground_truth(bench))
    assert s.correct == 5 and s.wrong == [] and s.error == 1
    broken = next(r for r in rows if r.onnx == "broken.onnx")
    assert broken.result == "error" and "broken.onnx" in broken.message
    assert "verifier-ray-" not in broken.message  # the worker's temporary folder is not shown
    sat = [r for r in rows if r.result == "sat"]
    assert len(sat) == 1
    ce = (tmp_path / "results_ce" / "test_sat+test_prop.txt").read_text()
    assert ce.startswith("sat\n((X_0 ") and "(Y_0 " in ce


def test_a_second_ray_run_redoes_nothing(ray_cluster, bench, tmp_path):
    out = tmp_path / "results.csv"
    run_benchmark(bench, out, RunOptions(workers=2, ray="local", limit=3))
    first = out.read_text()
    rows = run_benchmark(bench, out, RunOptions(workers=2, ray="local", limit=3))
    assert out.read_text() == first and len(rows) == 3


def test_an_instance_over_its_time_is_a_timeout_row_and_the_run_goes_on(ray_cluster, bench,
                                                                         tmp_path):
    out = tmp_path / "results.csv"
    rows = run_benchmark(bench, out, RunOptions(workers=1, ray="local", timeout=1e-3,
                                                grace=0.0, grace_share=0.0))
    assert len(rows) == 6
    # too little time: never an answer (the broken model is still bad input)
    assert {r.result for r in rows if r.onnx != "broken.onnx"} == {"timeout"}


def test_an_unreachable_cluster_is_a_clear_error_not_a_hang(bench, tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(VerifierError, match="cannot reach the Ray cluster"):
        run_benchmark(bench, tmp_path / "r.csv", RunOptions(ray=f"127.0.0.1:{port}"))
