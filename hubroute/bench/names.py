"""The names the benchmarks are run by: CMRBench's experiences, the compared methods, and where the data lives.

Kept free of heavy imports, so that ``hubroute bench --help`` can list them without loading the training stack.
"""

from __future__ import annotations

__all__ = ["EXPERIENCES", "METHODS", "RERANK_METHOD", "ALL_METHODS", "CMRBENCH_REPO"]

EXPERIENCES: tuple[str, ...] = ("apibench-hf", "mllm", "hugging-bench-1", "hugging-bench-2")
"""CMRBench's experiences, in arrival order."""

METHODS: tuple[str, ...] = ("carve", "zero_shot", "bm25", "seq_ft", "replay", "joint")
"""The methods a run compares by default."""
RERANK_METHOD = "carve+rerank"
"""The re-ranked method (asked for by name: it is not in :data:`METHODS`); when ``carve`` runs too, they
share each seed's training."""
ALL_METHODS: tuple[str, ...] = (*METHODS, RERANK_METHOD)
"""Every method a run accepts."""

CMRBENCH_REPO = "collagelab/cmrbench"
"""The Hub dataset repo CMRBench is published to (``hubroute bench publish``), and what ``--data`` reads by
default: the public files of COLLAGE Lab's benchmark (MIT licence), one ``datasets`` config per experience."""
