"""Pydantic request and response models of the server (they also make its OpenAPI page)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..routing.options import RouteFilter
from ..routing.results import RouteResult

__all__ = [
    "Filters",
    "RouteOptions",
    "RouteRequest",
    "RouteItem",
    "RouteResponse",
    "HubrouteOptions",
    "ChatMessage",
    "ChatCompletionRequest",
    "FeedbackRequest",
    "FeedbackResponse",
    "ModelCard",
    "ModelList",
    "Health",
    "ErrorBody",
    "ErrorResponse",
]

StrOrList = str | list[str] | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Filters(_Strict):
    """Route filter (the fields of :class:`hubroute.RouteFilter`): only matching models are ranked."""

    domains: StrOrList = None
    pipeline_tags: StrOrList = None
    libraries: StrOrList = None
    licenses: StrOrList = None
    tags: StrOrList = None
    authors: StrOrList = None
    exclude_authors: StrOrList = None
    model_ids: StrOrList = None
    exclude_model_ids: StrOrList = None
    created_after: int | str | None = Field(default=None, description="ms since the epoch or an ISO date")
    created_before: int | str | None = Field(default=None, description="ms since the epoch or an ISO date")

    def to_route_filter(self) -> RouteFilter | None:
        """Return the :class:`RouteFilter` these fields describe (``None`` when none is set).

        Raises:
            ValueError: a malformed value (e.g. a date that is not ISO).
        """
        given = self.model_dump(exclude_none=True)
        return RouteFilter(**given) if given else None


class RouteOptions(_Strict):
    """The options of :meth:`hubroute.HubRouter.route`."""

    top_k: int = Field(default=1, ge=1, le=1000, description="Results per prompt, best first.")
    level: Literal["model", "family", "domain"] = "model"
    filters: Filters | None = None
    min_score: float | Literal["calibrated"] | None = Field(
        default=None, description="Confidence threshold in [-1, 1], or 'calibrated'."
    )
    on_low_confidence: Literal["abstain", "backoff"] = "abstain"
    explain: bool = False


class RouteRequest(RouteOptions):
    """``POST /v1/route``: one prompt or a list, with every ``route()`` option."""

    prompt: str | list[str] = Field(..., description="A prompt, or a list of prompts.")


class NearestPromptItem(BaseModel):
    prompt: str
    model_id: str
    score: float


class ExplanationItem(BaseModel):
    level_scores: dict[str, float]
    nearest_prompts: list[NearestPromptItem] = []
    card_sentence: str | None = None
    card_sentence_score: float | None = None
    threshold: float | None = None


class RouteItem(BaseModel):
    """One ranked candidate (:class:`hubroute.RouteResult`)."""

    model_id: str
    family: str | None
    domain: str | None
    score: float
    rank: int
    level: str = "model"
    group: str | None = None
    backed_off_from: str | None = None
    explanation: ExplanationItem | None = None

    @classmethod
    def from_result(cls, result: RouteResult) -> RouteItem:
        """Convert a :class:`RouteResult` (with its explanation, if any)."""
        return cls.model_validate(result.to_dict())


class RouteResponse(BaseModel):
    """The answer of ``POST /v1/route``: one list of results per prompt (an empty list: the router abstained)."""

    object: Literal["hubroute.route"] = "hubroute.route"
    revision: str
    results: list[list[RouteItem]]


class HubrouteOptions(_Strict):
    """The ``hubroute`` field of a chat completion request."""

    route_only: bool = Field(
        default=False, description="Return the routing decision without calling a model."
    )
    route_on: Literal["last_user", "all_user", "conversation"] = Field(
        default="last_user",
        description="Text routed: the last user message (default), every user message, or every message.",
    )
    level: Literal["model", "family", "domain"] = "model"
    filters: Filters | None = None
    min_score: float | Literal["calibrated"] | None = None
    on_low_confidence: Literal["abstain", "backoff"] = "abstain"
    task: str | list[str] | None = Field(
        default=None,
        description="Route only to models of this task (pipeline tag), or of one of these; 'chat': chat models.",
    )


class ChatMessage(BaseModel):
    """An OpenAI chat message (extra fields such as ``tool_calls`` are passed through to the model)."""

    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class ChatCompletionRequest(_Strict):
    """``POST /v1/chat/completions`` (OpenAI-compatible), with an optional ``hubroute`` field."""

    model: str = Field(
        ..., description="'hubroute/auto' to route, or a registry model id to call it directly."
    )
    messages: list[ChatMessage] = Field(..., min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    n: int | None = Field(default=None, ge=1, le=1)
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    user: str | None = None
    hubroute: HubrouteOptions | None = None


class FeedbackRequest(_Strict):
    """``POST /v1/feedback``: the model that should have served ``prompt``."""

    prompt: str = Field(..., min_length=1)
    model_id: str = Field(..., min_length=1)


class FeedbackResponse(BaseModel):
    object: Literal["hubroute.feedback"] = "hubroute.feedback"
    model_id: str
    rows: int = Field(..., description="Rows in the feedback file after this one.")


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str
    domain: str | None = None
    family: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    revision: str = Field(..., description="The served revision: a Hub commit sha or a folder fingerprint.")
    models: int
    reloads: int
    ref: str | None = Field(default=None, description="The branch or tag followed (--revision), if any.")
    failed_revision: str | None = Field(
        default=None, description="A newer revision that failed to load (the served one is kept)."
    )
    shadow_revision: str | None = Field(default=None, description="The candidate revision shadowing traffic.")


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI-style error: ``{"error": {"message", "type", "param", "code"}}``."""

    error: ErrorBody
