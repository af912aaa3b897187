"""The images and audio of a chat request: OpenAI content parts read into :class:`~hubroute.run.RunInputs`.

``image_url`` parts take base64 ``data:`` URLs, or ``http(s)`` URLs when the operator allows fetching
(``--allow-input-urls``, with a size and a time limit); ``input_audio`` parts take base64 ``data`` and a
``format``. Every image is opened with Pillow and every clip checked for a known audio container before any
model is called; a fetched image is passed on to chat models as a data URL, so the model's provider never
fetches what a client named.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import InvalidInputError
from ..run.inputs import Media, MediaPolicy, RunInputs, load_audio, load_image
from .schemas import ChatMessage

__all__ = ["chat_inputs", "last_user_text"]


def last_user_text(messages: list[ChatMessage]) -> str:
    """The text of the last user message that has any (what a non-chat task is given)."""
    for message in reversed(messages):
        if message.role != "user":
            continue
        content = message.content
        text = (
            content
            if isinstance(content, str)
            else "\n".join(
                str(p.get("text", ""))
                for p in content or []
                if isinstance(p, Mapping) and p.get("type") == "text"
            )
        )
        if text.strip():
            return text
    return ""


async def chat_inputs(
    messages: list[ChatMessage], policy: MediaPolicy
) -> tuple[RunInputs, list[dict[str, Any]]]:
    """Read and check the image and audio parts of a conversation.

    Args:
        messages: The conversation.
        policy: Size limits, and whether URLs may be fetched.

    Returns:
        ``(inputs, messages)``: the inputs (the last user text, the last image, the last audio clip) and the
        messages as chat models get them (fetched images as data URLs).

    Raises:
        InvalidInputError: a part that is not an image or audio, too large, of an unknown type, or a URL the
            policy does not fetch.
    """
    out: list[dict[str, Any]] = []
    image: Media | None = None
    audio: Media | None = None
    for m, message in enumerate(messages):
        dumped = message.model_dump(exclude_none=True)
        content = message.content
        if isinstance(content, list):
            parts: list[Any] = []
            for p, part in enumerate(content):
                where = f"messages[{m}].content[{p}]"
                kind = part.get("type") if isinstance(part, Mapping) else None
                if kind == "image_url":
                    spec = part.get("image_url")
                    url = spec.get("url") if isinstance(spec, Mapping) else spec
                    if not isinstance(url, str):
                        raise InvalidInputError(
                            f"{where}: an image_url part needs image_url.url.", param=where
                        )
                    image = await load_image(url, policy, where)
                    parts.append({**part, "image_url": {**(spec if isinstance(spec, Mapping) else {}),
                                                        "url": image.data_url()}})  # fmt: skip
                elif kind == "input_audio":
                    spec = part.get("input_audio")
                    if not isinstance(spec, Mapping) or not isinstance(spec.get("data"), str):
                        raise InvalidInputError(f"{where}: an input_audio part needs input_audio.data (base64).",
                                                param=where)  # fmt: skip
                    audio = await load_audio(spec["data"], policy, where, spec.get("format"))
                    parts.append(part)
                elif kind == "text":
                    parts.append(part)
                else:
                    raise InvalidInputError(
                        f"{where}: unknown content part type {kind!r} (this server takes text, image_url and "
                        "input_audio).",
                        param=where,
                    )
            dumped["content"] = parts
        out.append(dumped)
    return RunInputs(
        text=last_user_text(messages) or None, image=image, audio=audio, messages=tuple(out)
    ), out
