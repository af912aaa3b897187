"""Prometheus metrics of one server, in a registry of its own (two apps in one process never clash)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["ServeMetrics", "METRICS_CONTENT_TYPE"]

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_ENDPOINTS = {
    "/v1/route", "/v1/chat/completions", "/v1/feedback", "/v1/models", "/healthz", "/metrics",
}  # fmt: skip

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class ServeMetrics:
    """The server's counters and histograms.

    Attributes:
        registry: The app's own :class:`prometheus_client.CollectorRegistry`.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("hubroute_requests", "HTTP requests.", ["endpoint", "status"], registry=r)
        self.latency = Histogram(
            "hubroute_request_latency_seconds", "HTTP request latency (until the response starts).", ["endpoint"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.routed = Counter("hubroute_routed", "Prompts routed, by chosen model.", ["model_id"], registry=r)
        self.abstentions = Counter("hubroute_abstentions", "Prompts the router abstained on.", registry=r)
        self.fallbacks = Counter(
            "hubroute_fallbacks", "Chat completions answered by a fallback model.", ["kind"], registry=r
        )
        self.attempts = Counter(
            "hubroute_inference_attempts", "Model calls, by outcome.", ["outcome"], registry=r
        )
        self.batch_size = Histogram(
            "hubroute_route_batch_prompts", "Prompts per routing batch (one encoder pass).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r,
        )  # fmt: skip
        self.batch_latency = Histogram(
            "hubroute_route_batch_seconds", "Time of one routing batch.", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.feedback = Counter("hubroute_feedback", "Feedback rows written.", registry=r)
        self.reloads = Counter("hubroute_reloads", "Router reloads, by outcome.", ["outcome"], registry=r)
        self.models = Gauge("hubroute_registry_models", "Models in the served router's registry.", registry=r)
        self.revision = Gauge(
            "hubroute_router_revision_info", "The served revision (commit or folder fingerprint) and the ref it "
            "follows (1).", ["revision", "ref"], registry=r,
        )  # fmt: skip
        self.reload_failed = Gauge(
            "hubroute_reload_failed_revision_info", "A newer revision that failed to load (1); the previous one "
            "still serves.", ["revision"], registry=r,
        )  # fmt: skip
        self.feedback_refused = Counter(
            "hubroute_feedback_refused", "Feedback rows refused, by reason.", ["reason"], registry=r
        )
        self.feedback_pending = Gauge(
            "hubroute_feedback_pending_rows",
            "Feedback rows written locally, not yet committed to the Hub.",
            registry=r,
        )
        self.feedback_commits = Gauge(
            "hubroute_feedback_commits",
            "Commits of feedback rows to the Hub, by outcome.",
            ["outcome"],
            registry=r,
        )

    def serve_revision(self, revision: str, ref: str | None) -> None:
        """Report ``revision`` (following ``ref``) as the served one."""
        self.revision.clear()
        self.revision.labels(revision, ref or "").set(1)

    def observe_batch(self, requests: int, prompts: int, seconds: float) -> None:
        """Record one routing batch."""
        self.batch_size.observe(prompts)
        self.batch_latency.observe(seconds)

    def observe_routes(self, results: list[list[Any]]) -> None:
        """Record the chosen model (or an abstention) of each routed prompt."""
        for ranked in results:
            if ranked:
                self.routed.labels(ranked[0].model_id).inc()
            else:
                self.abstentions.inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

    def middleware(
        self, app: Callable[[Scope, Receive, Send], Awaitable[None]]
    ) -> Callable[..., Awaitable[None]]:
        """Wrap an ASGI ``app`` so every HTTP request is counted and timed (a pure ASGI middleware)."""

        async def measured(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            path = scope.get("path", "")
            endpoint = path if path in _ENDPOINTS else "other"
            started = time.perf_counter()
            status = [500]

            async def send_measured(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status[0] = int(message["status"])
                    self.latency.labels(endpoint).observe(time.perf_counter() - started)
                await send(message)

            try:
                await app(scope, receive, send_measured)
            finally:
                self.requests.labels(endpoint, str(status[0])).inc()

        return measured
