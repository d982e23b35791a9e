"""Our answers against ground_truth.csv on the three shared VNN-COMP benchmarks: zero wrong
answers and zero errors; unknown and timeout are allowed here. Each instance gets a short
timeout (``VERIFIER_TEST_TIMEOUT`` seconds, default 5) and two worker processes run them."""
import os

import pytest

from verifier.run import RunOptions, format_summary, read_ground_truth, run_benchmark, summarize

TIMEOUT = float(os.environ.get("VERIFIER_TEST_TIMEOUT", "5"))


@pytest.mark.slow
@pytest.mark.parametrize("bench", ["test", "acasxu", "mnist_fc"])
def test_no_wrong_answer_on_the_shared_benchmarks(vnncomp, tmp_path, bench):
    folder = vnncomp / bench
    rows = run_benchmark(folder, tmp_path / "results.csv",
                         RunOptions(timeout=TIMEOUT, workers=2, grace=5.0))
    summary = summarize(rows, read_ground_truth(folder))
    print("\n" + format_summary(summary, bench))
    assert summary.total == len(rows) > 0
    assert summary.wrong == []
    assert summary.error == 0, summary.errors
    if bench == "test":  # the five small instances are all decided, and correctly
        assert summary.correct == 5
