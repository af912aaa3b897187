"""Request and response models of the task endpoints: ``/v1/run`` and the OpenAI-shaped audio, image and
embedding endpoints.

The OpenAI-shaped requests ignore the OpenAI options they do not use (``voice``, ``quality``, ...), so an
``openai`` client of any version works unchanged; ``/v1/run`` is hubroute's own and refuses unknown fields.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .config import AUTO_MODEL
from .schemas import Filters

__all__ = [
    "RunInputsBody",
    "RunRequest",
    "RunResponse",
    "SpeechRequest",
    "ImageRequest",
    "EmbeddingRequest",
]

_MODEL = Field(
    default=AUTO_MODEL, description=f"'{AUTO_MODEL}' to route, or a registry model id to call it directly."
)


class _OpenAIShaped(BaseModel):
    model_config = ConfigDict(extra="ignore")


class RunInputsBody(BaseModel):
    """The inputs of ``POST /v1/run`` besides the prompt."""

    model_config = ConfigDict(extra="forbid")

    image: str | None = Field(default=None, description="A base64 data URL or base64 (an http(s) URL when the "
                              "server allows fetching).")  # fmt: skip
    audio: str | None = Field(
        default=None, description="A base64 data URL or base64 (an http(s) URL when allowed)."
    )
    table: dict[str, list[Any]] | None = Field(default=None, description="A table: column -> list of cells.")
    context: str | None = Field(default=None, description="A passage to answer the prompt from.")
    labels: list[str] | None = Field(default=None, description="Candidate labels (zero-shot classification).")
    sentences: list[str] | None = Field(default=None, description="Sentences to compare the prompt with.")


class RunRequest(BaseModel):
    """``POST /v1/run``: route a request to a model whose task takes its inputs, and run it."""

    model_config = ConfigDict(extra="forbid")

    prompt: str | None = Field(
        default=None, description="The prompt: what the router reads, and the text input."
    )
    inputs: RunInputsBody | None = None
    task: str | list[str] | None = Field(
        default=None, description="Only this task (pipeline tag) or one of these; 'chat': any chat task."
    )
    model: str = _MODEL
    parameters: dict[str, Any] | None = Field(
        default=None,
        description="Keyword parameters of the task's InferenceClient method (tgt_lang, width, ...).",
    )
    filters: Filters | None = None
    min_score: float | Literal["calibrated"] | None = None


class AttemptItem(BaseModel):
    model_id: str
    kind: str
    outcome: str
    detail: str = ""
    seconds: float = 0.0
    task: str | None = None


class RunResponse(BaseModel):
    """What ``POST /v1/run`` answered: the model, its task, its output as text and as JSON, and the decision."""

    object: Literal["hubroute.run"] = "hubroute.run"
    model: str
    task: str | None
    text: str = Field(..., description="The output as text a person reads.")
    output: Any = Field(..., description="The output as JSON (images and audio as base64 objects).")
    score: float | None
    fallback: str
    routed_model: str | None
    alternatives: list[str]
    attempts: list[AttemptItem]
    revision: str
    tasks: list[str] = Field(..., description="The tasks the route could choose from.")


class SpeechRequest(_OpenAIShaped):
    """``POST /v1/audio/speech`` (OpenAI's shape): routes among text-to-speech models."""

    input: str = Field(..., min_length=1, max_length=4096)
    model: str = _MODEL
    voice: Any = None
    response_format: str | None = None
    speed: float | None = None
    instructions: str | None = None


class ImageRequest(_OpenAIShaped):
    """``POST /v1/images/generations`` (OpenAI's shape): routes among text-to-image models; answers ``b64_json``."""

    prompt: str = Field(..., min_length=1)
    model: str | None = None
    n: int | None = Field(default=1, ge=1, le=4)
    size: str | None = None
    response_format: Literal["url", "b64_json"] | None = None
    negative_prompt: str | None = None


class EmbeddingRequest(_OpenAIShaped):
    """``POST /v1/embeddings`` (OpenAI's shape): routes among feature-extraction models."""

    input: str | list[str] | list[int] | list[list[int]]
    model: str = _MODEL
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(default=None, ge=1)
