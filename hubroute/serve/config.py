"""`ServeConfig`: every setting of the router server in one dataclass."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from .._utils.repo_ids import is_repo_id
from ..routing.runtime import check_backend
from ..run.runner import RunConfig

__all__ = ["AUTO_MODEL", "ServeConfig"]

AUTO_MODEL = "hubroute/auto"
"""The chat ``model`` name that asks the server to route the conversation."""

_REPLICA = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


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
        metrics_key: When set, ``GET /metrics`` needs ``Authorization: Bearer <metrics_key>``; when ``None``,
            ``/metrics`` needs ``api_key`` if one is set (it names the models prompts go to), else nothing.
        feedback_max_row_bytes: Largest feedback row (its JSON line, in bytes); a larger one is refused (413).
        feedback_max_bytes: Cap of the ``feedback`` file, and of the rows a ``feedback_repo`` replica holds
            locally before they are committed; a row that would pass it is refused (507) and nothing is
            written (learn the file and move it aside, or raise the cap).
        feedback_repo: A Hub dataset repo (``ORG/NAME``) every replica appends its feedback rows to, each to
            its own ``feedback/<replica>/part-NNNNN.jsonl`` (:mod:`hubroute.serve.feedback_hub`); exclusive
            with ``feedback``.
        feedback_replica: This replica's name in ``feedback_repo`` (stable across restarts: a restart resumes
            its file); default: the host name.
        feedback_dir: Local folder of the rows before they are committed (default: under ``HF_HOME``).
        feedback_every: Seconds between two commits of the rows to ``feedback_repo``.
        feedback_part_bytes: A replica's part file is rotated (a new ``part-NNNNN.jsonl``) past this size.
        shadow_revision: A candidate revision (tag, branch or commit of the served Hub repo, or a router
            folder) that routes a sampled share of live prompts too, off the request path
            (:mod:`hubroute.serve.shadow`); followed like the served one with ``watch``.
        shadow_sample: Share of live prompts routed by the shadow revision too (0 to 1).
        shadow_queue: Most prompts waiting for the shadow revision; more are dropped (and counted).
        shadow_batch: Most prompts per shadow routing call (a live request waits at most one such call).
        shadow_wait: Longest wait, in seconds, for a shadow batch to fill (the candidate runs once per
            ``shadow_batch`` prompts at low load, rather than between every two requests).
        shadow_memory: Shadowed prompts remembered, so that later feedback on them scores both revisions.
        inference_url_template: Each model's own endpoint, a URL with ``{model_id}`` in it, in the Hugging Face
            Inference API layout (dedicated Inference Endpoints, a local server): task calls go to the URL,
            chat to ``URL/v1/chat/completions``. Exclusive with ``inference_base_url``.
        inference_api_key: The key sent to ``inference_url_template`` / ``inference_base_url`` (default: the
            ``HUBROUTE_INFERENCE_API_KEY`` environment variable; none: no ``Authorization`` header). The Hub
            token (``HF_TOKEN``) goes only to Hugging Face endpoints.
        tasks: Route and run only models of these tasks (pipeline tags; ``"chat"`` is every chat task), on
            every endpoint.
        domains: Route and run only models of these domains, on every endpoint.
        allow_input_urls: Fetch ``http(s)`` image and audio URLs given in requests (off: only data URLs and
            base64 are read).
        fetch_timeout: Seconds such a fetch may take in all.
        max_image_bytes: Largest image a request may carry (else 413).
        max_audio_bytes: Largest audio clip a request may carry (else 413).
        max_media_body_bytes: Largest body of the endpoints that take images and audio
            (``/v1/chat/completions``, ``/v1/run``, ``/v1/audio/*``, ``/v1/images/*``, ``/v1/embeddings``);
            other endpoints keep ``max_body_bytes``.
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
    metrics_key: str | None = None
    feedback_max_row_bytes: int = 64_000
    feedback_max_bytes: int = 1 << 30
    feedback_repo: str | None = None
    feedback_replica: str | None = None
    feedback_dir: str | None = None
    feedback_every: float = 60.0
    feedback_part_bytes: int = 16 << 20
    shadow_revision: str | None = None
    shadow_sample: float = 1.0
    shadow_queue: int = 1024
    shadow_batch: int = 8
    shadow_wait: float = 1.0
    shadow_memory: int = 10_000
    inference_url_template: str | None = None
    inference_api_key: str | None = None
    tasks: list[str] | None = None
    domains: list[str] | None = None
    allow_input_urls: bool = False
    fetch_timeout: float = 10.0
    max_image_bytes: int = 20 * 1024 * 1024
    max_audio_bytes: int = 25 * 1024 * 1024
    max_media_body_bytes: int = 40 * 1024 * 1024

    def run_config(self) -> RunConfig:
        """The :class:`~hubroute.run.RunConfig` of these settings (how the chosen models are run).

        Raises:
            ValueError: a bad inference URL, task or limit.
        """
        return RunConfig(
            provider=self.inference_provider, inference_url_template=self.inference_url_template,
            inference_base_url=self.inference_base_url, inference_api_key=self.inference_api_key,
            tasks=self.tasks, domains=self.domains, deadline=self.deadline, attempt_timeout=self.attempt_timeout,
            max_attempts=self.max_attempts, fallback_candidates=self.fallback_candidates,
            max_image_bytes=self.max_image_bytes, max_audio_bytes=self.max_audio_bytes,
            allow_input_urls=self.allow_input_urls, fetch_timeout=self.fetch_timeout,
        )  # fmt: skip

    def __post_init__(self) -> None:
        positive = {
            "deadline": self.deadline, "servable_ttl": self.servable_ttl, "max_attempts": self.max_attempts,
            "fallback_candidates": self.fallback_candidates, "max_batch": self.max_batch,
            "max_body_bytes": self.max_body_bytes, "max_prompts": self.max_prompts,
            "feedback_max_row_bytes": self.feedback_max_row_bytes, "feedback_max_bytes": self.feedback_max_bytes,
            "feedback_every": self.feedback_every, "feedback_part_bytes": self.feedback_part_bytes,
            "shadow_queue": self.shadow_queue, "shadow_batch": self.shadow_batch, "shadow_memory": self.shadow_memory,
            "max_media_body_bytes": self.max_media_body_bytes,
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
        self.run_config()  # checks the inference URLs, the tasks and the media limits
        self._check_fleet()

    def _check_fleet(self) -> None:
        """Check the feedback and shadow settings (before anything is loaded)."""
        if self.feedback is not None and Path(self.feedback).is_dir():
            raise ValueError(
                f"--feedback {self.feedback} is a folder; it must be a JSONL file (created if missing), e.g. "
                f"{Path(self.feedback) / 'feedback.jsonl'}."
            )
        if self.feedback is not None and self.feedback_repo is not None:
            raise ValueError(
                "Pass either feedback (--feedback FILE: one local file) or feedback_repo (--feedback-repo "
                "ORG/NAME: every replica's rows in one Hub dataset), not both."
            )
        if self.feedback_repo is not None and not is_repo_id(self.feedback_repo):
            raise ValueError(
                f"--feedback-repo must be a Hub dataset repo id ORG/NAME, got {self.feedback_repo!r}."
            )
        if self.feedback_replica is not None and not _REPLICA.fullmatch(self.feedback_replica):
            raise ValueError(
                f"--feedback-replica must be 1-64 letters, digits, '.', '_' or '-', got {self.feedback_replica!r}."
            )
        if not (0 <= self.shadow_wait < math.inf):
            raise ValueError(f"ServeConfig.shadow_wait must be >= 0 seconds, got {self.shadow_wait!r}.")
        if not (0 < self.shadow_sample <= 1):
            raise ValueError(f"ServeConfig.shadow_sample must be in (0, 1], got {self.shadow_sample!r}.")
