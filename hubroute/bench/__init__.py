"""Benchmarks: CMRBench loading and publishing, metrics, baselines, the benchmark runner and reports.

The names below are imported on first use, so that the light modules of this package (:mod:`.names`) load
without ``datasets`` and torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._utils.lazy import lazy_attributes

if TYPE_CHECKING:
    from .cmrbench import CMRBench, Experience, load_cmrbench

_LAZY = {"CMRBench": ".cmrbench", "Experience": ".cmrbench", "load_cmrbench": ".cmrbench"}
__getattr__ = lazy_attributes(__name__, _LAZY, globals())

__all__ = ["CMRBench", "Experience", "load_cmrbench"]
