"""The names of the inference backends, importable without torch (the CLI's ``--backend`` choices)."""

from __future__ import annotations

__all__ = ["BACKENDS", "DEFAULT_BACKEND"]

BACKENDS: tuple[str, ...] = ("torch", "onnx", "onnx-int8")
"""Inference backends: torch (the default), ONNX Runtime fp32, ONNX Runtime with int8 weights."""
DEFAULT_BACKEND = "torch"
