"""Benchmarks: CMRBench loading, metrics, baselines and the benchmark runner."""
