"""Where the chosen models run, with which credentials, and the one call per task.

Three backends, each an ``huggingface_hub.AsyncInferenceClient``:

- **Inference Providers** (default): ``provider="auto"`` (or a named provider), the model id in the call, the
  Hub token (``HF_TOKEN`` or the stored login) sent to Hugging Face's router;
- **a URL template** with ``{model_id}`` in it: each model's own endpoint in the Hugging Face Inference API
  layout (dedicated Inference Endpoints, a local server): task calls go to the URL, chat to
  ``URL/v1/chat/completions``; every task the ``hf-inference`` layout has runs there;
- **an OpenAI-compatible base URL**: chat completions only, the model id in the body; other tasks are not
  sent there.

Credentials: the Hub token goes only to Hugging Face hosts (Inference Providers, and URLs on
``huggingface.cloud`` / ``huggingface.co`` / ``hf.co``). Any other URL gets the key given for it
(``api_key``: ``--inference-api-key`` or ``HUBROUTE_INFERENCE_API_KEY``) or no ``Authorization`` header at all;
``huggingface_hub`` would otherwise add the stored Hub token to every call.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any
from urllib.parse import quote, urlparse

from huggingface_hub import AsyncInferenceClient
from huggingface_hub.inference._providers import PROVIDERS

from ..errors import InvalidInputError
from .inputs import Media, RunInputs
from .tasks import TASKS, TaskSpec

__all__ = ["API_KEY_ENV", "HF_HOST_SUFFIXES", "Backend", "call_task", "check_parameters", "method_parameters"]

API_KEY_ENV = "HUBROUTE_INFERENCE_API_KEY"
"""The environment variable holding the key of a custom inference URL (``--inference-api-key``)."""

HF_HOST_SUFFIXES = ("huggingface.co", "huggingface.cloud", "hf.co", "hf.space")
"""Hosts that may receive the Hub token."""

_URL_LAYOUT_TASKS = frozenset(PROVIDERS["hf-inference"])


def _is_hf_host(url: str) -> bool:
    host = (urlparse(url).hostname or "").lower()
    return any(host == suffix or host.endswith("." + suffix) for suffix in HF_HOST_SUFFIXES)


class Backend:
    """Builds the inference client of each call, and knows which tasks it can run.

    Args:
        provider: The Inference Provider (``"auto"``) when no URL is given.
        url_template: A URL with ``{model_id}`` in it, in the Hugging Face Inference API layout.
        base_url: An OpenAI-compatible server (chat models only).
        api_key: The key sent to ``url_template`` / ``base_url`` (default: ``HUBROUTE_INFERENCE_API_KEY``;
            none: no ``Authorization`` header). Ignored by Inference Providers.
        hub_token: The Hub token for Inference Providers and Hugging Face URLs (default: ``HF_TOKEN`` or the
            stored login, read by ``huggingface_hub``). Never sent to other hosts.
        client_factory: Builds a client from ``(model, timeout, token, headers)`` (tests); default
            :class:`huggingface_hub.AsyncInferenceClient`.

    Raises:
        ValueError: both URLs given, or a template without ``{model_id}``.
    """

    def __init__(
        self,
        provider: str = "auto",
        url_template: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        hub_token: str | None = None,
        client_factory: Callable[..., AsyncInferenceClient] | None = None,
    ) -> None:
        if url_template and base_url:
            raise ValueError(
                "Give either an inference URL template (each model's own endpoint) or an OpenAI-compatible base "
                "URL, not both."
            )
        if url_template is not None and "{model_id}" not in url_template:
            raise ValueError(
                f"The inference URL template {url_template!r} has no '{{model_id}}': e.g. "
                "'https://{model_id}.example.com' or 'http://127.0.0.1:8080/models/{model_id}'."
            )
        for url in (url_template, base_url):
            if url is not None and not url.startswith(("http://", "https://")):
                raise ValueError(f"The inference URL {url!r} must start with http:// or https://.")
        self.provider = provider
        self.url_template = url_template
        self.base_url = base_url.rstrip("/") if base_url else None
        self._api_key = api_key if api_key is not None else (os.environ.get(API_KEY_ENV) or None)
        self._hub_token = hub_token
        self._factory = client_factory

    @property
    def kind(self) -> str:
        """``"providers"``, ``"url_template"`` or ``"base_url"``."""
        if self.url_template:
            return "url_template"
        return "base_url" if self.base_url else "providers"

    @property
    def secrets(self) -> tuple[str, ...]:
        """The credentials this backend may send (to redact from error details)."""
        return tuple(s for s in (self._api_key, self._hub_token) if s)

    def describe(self) -> str:
        """The backend in words, for messages."""
        if self.kind == "url_template":
            return f"the inference URL template {self.url_template}"
        if self.kind == "base_url":
            return f"the OpenAI-compatible server {self.base_url} (chat models only)"
        return f"Inference Providers (provider={self.provider!r})"

    def supports(self, task: str) -> bool:
        """Whether this backend can run ``task``."""
        spec = TASKS.get(task)
        if spec is None:
            return False
        if self.kind == "base_url":
            return spec.chat
        if self.kind == "url_template":
            return spec.provider_task in _URL_LAYOUT_TASKS
        return True

    def supported_tasks(self) -> tuple[str, ...]:
        """Every task this backend can run."""
        return tuple(task for task in TASKS if self.supports(task))

    def _custom_credentials(self, url: str) -> tuple[str | None, dict[str, str | None]]:
        if self._api_key:
            return self._api_key, {}
        if _is_hf_host(url):
            return self._hub_token, {}
        # huggingface_hub adds the stored Hub token when none is given; a None header drops it.
        return None, {"authorization": None}

    def client(self, model_id: str, timeout: float) -> tuple[AsyncInferenceClient, str | None]:
        """A client for one call to ``model_id`` and the ``model`` argument to call it with.

        Args:
            model_id: The Hub model to call.
            timeout: Seconds the call may take.

        Returns:
            ``(client, model)``: ``model`` is ``None`` when the client already points at the model's URL.
        """
        if self.url_template:
            url = self.url_template.replace("{model_id}", quote(model_id, safe="/"))
            token, headers = self._custom_credentials(url)
            return self._make(url, timeout, token, headers), None
        if self.base_url:
            token, headers = self._custom_credentials(self.base_url)
            return self._make(self.base_url, timeout, token, headers), model_id
        if self._factory is not None:
            return self._factory(None, timeout, self._hub_token, {}), model_id
        client = AsyncInferenceClient(provider=self.provider, token=self._hub_token, timeout=timeout)  # type: ignore[arg-type]
        return client, model_id

    def _make(
        self, url: str, timeout: float, token: str | None, headers: dict[str, str | None]
    ) -> AsyncInferenceClient:
        if self._factory is not None:
            return self._factory(url, timeout, token, headers)
        return AsyncInferenceClient(model=url, token=token, timeout=timeout, headers=headers)  # type: ignore[arg-type]


def _chat_messages(spec: TaskSpec, inputs: RunInputs) -> list[dict[str, Any]]:
    if inputs.messages:
        return [dict(message) for message in inputs.messages]
    parts: list[dict[str, Any]] = []
    if inputs.text:
        parts.append({"type": "text", "text": inputs.text})
    if inputs.image is not None and "image" in spec.takes:
        parts.append({"type": "image_url", "image_url": {"url": inputs.image.data_url()}})
    if inputs.audio is not None and "audio" in spec.takes:
        parts.append(
            {
                "type": "input_audio",
                "input_audio": {"data": inputs.audio.b64(), "format": inputs.audio.audio_format},
            }
        )
    content: Any = parts if len(parts) > 1 else (inputs.text or "")
    return [{"role": "user", "content": content}]


def _text(inputs: RunInputs) -> str:
    return inputs.text or ""


def _image(inputs: RunInputs) -> bytes:
    assert inputs.image is not None
    return inputs.image.data


def _audio(inputs: RunInputs) -> bytes:
    assert inputs.audio is not None
    return inputs.audio.data


# The positional inputs of each InferenceClient method, from the request's inputs.
_ARGUMENTS: dict[str, Callable[[TaskSpec, RunInputs], dict[str, Any]]] = {
    "chat_completion": lambda spec, i: {"messages": _chat_messages(spec, i)},
    "text_generation": lambda spec, i: {"prompt": _text(i)},
    "summarization": lambda spec, i: {"text": _text(i)},
    "translation": lambda spec, i: {"text": _text(i)},
    "text_classification": lambda spec, i: {"text": _text(i)},
    "token_classification": lambda spec, i: {"text": _text(i)},
    "zero_shot_classification": lambda spec, i: {"text": _text(i), "candidate_labels": list(i.labels or ())},
    "question_answering": lambda spec, i: {"question": _text(i), "context": i.context or ""},
    "fill_mask": lambda spec, i: {"text": _text(i)},
    "sentence_similarity": lambda spec, i: {"sentence": _text(i), "other_sentences": list(i.sentences or ())},
    "feature_extraction": lambda spec, i: {"text": _text(i)},
    "text_to_image": lambda spec, i: {"prompt": _text(i)},
    "text_to_speech": lambda spec, i: {"text": _text(i)},
    "text_to_video": lambda spec, i: {"prompt": _text(i)},
    "image_classification": lambda spec, i: {"image": _image(i)},
    "object_detection": lambda spec, i: {"image": _image(i)},
    "image_segmentation": lambda spec, i: {"image": _image(i)},
    "image_to_text": lambda spec, i: {"image": _image(i)},
    "image_to_image": lambda spec, i: {"image": _image(i), "prompt": i.text or None},
    "image_to_video": lambda spec, i: {"image": _image(i), "prompt": i.text or None},
    "zero_shot_image_classification": lambda spec, i: {
        "image": _image(i),
        "candidate_labels": list(i.labels or ()),
    },
    "visual_question_answering": lambda spec, i: {"image": _image(i), "question": _text(i)},
    "document_question_answering": lambda spec, i: {"image": _image(i), "question": _text(i)},
    "automatic_speech_recognition": lambda spec, i: {"audio": _audio(i)},
    "audio_classification": lambda spec, i: {"audio": _audio(i)},
    "audio_to_audio": lambda spec, i: {"audio": _audio(i)},
    "table_question_answering": lambda spec, i: {"table": dict(i.table or {}), "query": _text(i)},
    "tabular_classification": lambda spec, i: {"table": dict(i.table or {})},
    "tabular_regression": lambda spec, i: {"table": dict(i.table or {})},
}


@cache
def method_parameters(spec: TaskSpec) -> tuple[str, ...]:
    """The optional keyword parameters of ``spec``'s ``InferenceClient`` method (``src_lang``, ``width``, ...)."""
    signature = inspect.signature(getattr(AsyncInferenceClient, spec.method))
    dummy = Media(b"", "application/octet-stream")
    every = RunInputs(
        text="x", image=dummy, audio=dummy, table={}, context="x", labels=("x",), sentences=("x",)
    )
    fixed = set(_ARGUMENTS[spec.method](spec, every)) | {"self", "model", "stream"}
    return tuple(
        name
        for name, parameter in signature.parameters.items()
        if name not in fixed and parameter.kind in (parameter.KEYWORD_ONLY, parameter.POSITIONAL_OR_KEYWORD)
    )


def check_parameters(spec: TaskSpec, parameters: Mapping[str, Any]) -> None:
    """Refuse parameters ``spec``'s method does not take.

    Raises:
        InvalidInputError: an unknown parameter (the message lists the known ones).
    """
    known = method_parameters(spec)
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        raise InvalidInputError(
            f"The task {spec.task} ({spec.method}) takes no parameter {', '.join(map(repr, unknown))}; it takes: "
            f"{', '.join(known) or 'none'}.",
            param="parameters",
        )


async def call_task(
    client: AsyncInferenceClient,
    spec: TaskSpec,
    inputs: RunInputs,
    parameters: Mapping[str, Any] | None = None,
    model: str | None = None,
) -> Any:
    """Run ``spec``'s ``InferenceClient`` method on ``inputs``.

    Args:
        client: The client (see :meth:`Backend.client`).
        spec: The task.
        inputs: The request's inputs (images and audio as bytes).
        parameters: Keyword parameters of the method (``src_lang``, ``max_tokens``, ...); those the method does
            not take are dropped (check them first with :func:`check_parameters`).
        model: The ``model`` argument (``None`` when the client points at the model's URL).

    Returns:
        What the client returns.
    """
    known = set(method_parameters(spec))
    kwargs = {k: v for k, v in (parameters or {}).items() if k in known and v is not None}
    arguments = {k: v for k, v in _ARGUMENTS[spec.method](spec, inputs).items() if v is not None}
    method = getattr(client, spec.method)
    if model is not None:
        kwargs["model"] = model
    if spec.chat:
        kwargs["stream"] = False
    return await method(**arguments, **kwargs)
