"""Benchmarks with hidden counterexamples, and the harness that tests verifiers on them."""
