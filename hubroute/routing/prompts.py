"""Prompt checks shared by routing, calibration and explanations: strings, not empty, text a tokenizer takes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import InvalidPromptError

__all__ = ["check_prompt_text", "prompts_of", "validate_prompts"]


def check_prompt_text(prompt: str, where: str = "") -> None:
    """Refuse a prompt the tokenizer cannot take: one with a lone surrogate (from a broken UTF-16 pair, or
    from undecodable bytes kept by ``surrogateescape``). Costs one UTF-8 encode.

    Args:
        prompt: The prompt.
        where: Where it is, for the message (e.g. ``" at position 3"``).

    Raises:
        InvalidPromptError: naming the character's position.
    """
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InvalidPromptError(
            f"The prompt{where} holds an invalid character {prompt[err.start]!r} at position {err.start}: a lone "
            "surrogate, which is not text (it comes from a broken UTF-16 pair or from bytes that are not "
            "UTF-8). Repair it first, e.g. text.encode('utf-8', 'surrogateescape').decode('utf-8', 'replace')."
        ) from None


def validate_prompts(prompts: Sequence[Any]) -> list[str]:
    """Return ``prompts`` as a list after checking each is a non-empty string a tokenizer can take.

    Args:
        prompts: The prompts.

    Returns:
        The prompts, as a list.

    Raises:
        InvalidPromptError: a prompt is not a string, is empty, or holds a lone surrogate (naming its position).
    """
    checked = []
    for position, prompt in enumerate(prompts):
        where = "" if len(prompts) == 1 else f" at position {position}"
        if not isinstance(prompt, str):
            raise InvalidPromptError(f"Prompts must be strings; got {type(prompt).__name__}{where}.")
        if not prompt.strip():
            raise InvalidPromptError(f"The prompt{where} is empty; pass the text to route.")
        check_prompt_text(prompt, where)
        checked.append(prompt)
    return checked


def prompts_of(prompts: Mapping[str, Sequence[str]] | None, model_id: str) -> list[str]:
    """The example prompts ``prompts`` gives ``model_id`` (a list of non-empty strings), checked.

    Args:
        prompts: Model id -> example prompts, or ``None``.
        model_id: The model.

    Returns:
        Its prompts (empty when it has none).

    Raises:
        InvalidPromptError: its entry is not a list of non-empty strings.
    """
    group = (prompts or {}).get(model_id, ())
    if isinstance(group, str) or not isinstance(group, Sequence):
        raise InvalidPromptError(
            f"prompts maps each model id to a list of prompts; got {type(group).__name__} for {model_id!r}."
        )
    return validate_prompts(group)
