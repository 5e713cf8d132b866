"""Benchmarks: latency harness, OPE accuracy metrics, dataset readers, evaluation and reports."""
