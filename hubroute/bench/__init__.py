"""Benchmarks: CMRBench loading and publishing, metrics, baselines, the benchmark runner and reports.

The names below are imported on first use, so that the light modules of this package (:mod:`.names`) load
without ``datasets`` and torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cmrbench import CMRBench, Experience, load_cmrbench

_LAZY = {"CMRBench": "cmrbench", "Experience": "cmrbench", "load_cmrbench": "cmrbench"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["CMRBench", "Experience", "load_cmrbench"]
