"""`ServeConfig`: every setting of the router server in one dataclass."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..routing.runtime import check_backend

__all__ = ["AUTO_MODEL", "ServeConfig"]

AUTO_MODEL = "hubroute/auto"
"""The chat ``model`` name that asks the server to route the conversation."""


@dataclass
class ServeConfig:
    """Settings of ``hubroute serve`` / :func:`hubroute.serve.create_app`.

    Attributes:
        router: The router folder or Hub repo id to serve (and to watch with ``watch``); may be ``None``
            when a loaded :class:`~hubroute.HubRouter` is passed to ``create_app`` and nothing is watched.
        revision: Hub revision (branch, tag or commit) of ``router``.
        api_key: When set, every ``/v1`` request needs ``Authorization: Bearer <api_key>`` (else 401).
        inference_base_url: An OpenAI-compatible server the chosen models are called on; ``None`` calls
            Hugging Face Inference Providers (``provider="auto"``) with the ``HF_TOKEN`` of the environment.
        inference_provider: The Inference Provider when ``inference_base_url`` is ``None`` (``"auto"``).
        servable_only: Route only to models an Inference Provider serves (Hub inference provider mapping).
        servable_ttl: Seconds a model's servability is cached.
        watch: Poll the router's folder or repo every this many seconds and swap in a new revision
            (``None``: never).
        feedback: JSONL file ``POST /v1/feedback`` appends to (``None``: feedback is disabled).
        deadline: Seconds a chat completion may take in all, across every fallback attempt.
        attempt_timeout: Seconds one model call may take (to its first chunk when streaming) before the next
            candidate is tried; ``None``: whatever is left of ``deadline``.
        max_attempts: Models tried per chat completion (the chosen one, then the fallbacks).
        fallback_candidates: Model-level candidates routed per chat completion before the family and
            domain backoff.
        batch_wait_ms: Longest wait for more requests before a routing batch runs (only under load: an
            idle server routes a lone request at once).
        max_batch: Most prompts per routing batch (one encoder pass).
        max_body_bytes: Largest accepted request body (else 413).
        max_prompts: Most prompts in one ``/v1/route`` request.
        torch_threads: ``torch.set_num_threads`` for the routing thread (``None``: leave torch's default).
        backend: Inference backend of the router's encoder and re-ranker: ``"torch"``, ``"onnx"`` (ONNX
            Runtime on a graph exported here, cached by the weights' hash) or ``"onnx-int8"``; ``None``: torch
            for a folder or repo, a loaded router's own backend. Reloaded revisions get it too.
    """

    router: str | None = None
    revision: str | None = None
    api_key: str | None = None
    inference_base_url: str | None = None
    inference_provider: str = "auto"
    servable_only: bool = False
    servable_ttl: float = 600.0
    watch: float | None = None
    feedback: str | None = None
    deadline: float = 30.0
    attempt_timeout: float | None = 10.0
    max_attempts: int = 4
    fallback_candidates: int = 3
    batch_wait_ms: float = 2.0
    max_batch: int = 64
    max_body_bytes: int = 1_000_000
    max_prompts: int = 256
    torch_threads: int | None = None
    backend: str | None = None

    def __post_init__(self) -> None:
        positive = {
            "deadline": self.deadline, "servable_ttl": self.servable_ttl, "max_attempts": self.max_attempts,
            "fallback_candidates": self.fallback_candidates, "max_batch": self.max_batch,
            "max_body_bytes": self.max_body_bytes, "max_prompts": self.max_prompts,
        }  # fmt: skip
        for name, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
                raise ValueError(f"ServeConfig.{name} must be a positive number, got {value!r}.")
        if self.watch is not None and not (0 < self.watch < math.inf):
            raise ValueError(
                f"ServeConfig.watch must be a positive number of seconds or None, got {self.watch!r}."
            )
        if self.attempt_timeout is not None and not (0 < self.attempt_timeout < math.inf):
            raise ValueError(
                f"ServeConfig.attempt_timeout must be positive or None, got {self.attempt_timeout!r}."
            )
        if not (0 <= self.batch_wait_ms < math.inf):
            raise ValueError(f"ServeConfig.batch_wait_ms must be >= 0, got {self.batch_wait_ms!r}.")
        if self.backend is not None:
            check_backend(self.backend)
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ValueError(
                f"ServeConfig.torch_threads must be a positive integer, got {self.torch_threads!r}."
            )
