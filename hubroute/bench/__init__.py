"""Benchmarks: CMRBench loading and publishing, metrics, baselines, the benchmark runner and reports."""

from .cmrbench import CMRBench, Experience, load_cmrbench

__all__ = ["CMRBench", "Experience", "load_cmrbench"]
