"""What each Hub task takes and which ``huggingface_hub.InferenceClient`` method runs it.

One :class:`TaskSpec` per Hub pipeline tag that ``InferenceClient`` can run. A request's inputs are described by
their *kinds*:

| kind | what it is |
| --- | --- |
| ``"text"`` | the prompt (also what the router reads) |
| ``"masked_text"`` | a prompt holding a mask token (``[MASK]`` or ``<mask>``) |
| ``"image"``, ``"audio"`` | one image, one audio clip (bytes) |
| ``"table"`` | a table, ``{column: [cells]}`` |
| ``"context"`` | a passage to answer a question from |
| ``"labels"`` | candidate labels for zero-shot classification |
| ``"sentences"`` | sentences to compare the prompt with |

A task *accepts* a request when the request carries every kind the task needs, and the task takes every kind
the request carries besides the prompt (the prompt is what the router reads, so a task that takes no text,
such as speech recognition, still runs on a request with a prompt). So an audio clip never goes to a
text-to-image model, and an image never goes to a translation model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "INPUT_KINDS",
    "TaskSpec",
    "TASKS",
    "CHAT_TASKS",
    "MASK_TOKENS",
    "task_spec",
    "tasks_accepting",
    "expand_tasks",
]

INPUT_KINDS = ("text", "masked_text", "image", "audio", "table", "context", "labels", "sentences")
"""Every input kind a request can carry."""

MASK_TOKENS = ("[MASK]", "<mask>")
"""Mask tokens that make a prompt a fill-mask input."""

_PROMPT_KINDS = frozenset({"text", "masked_text"})


@dataclass(frozen=True)
class TaskSpec:
    """How one Hub task runs.

    Attributes:
        task: The Hub pipeline tag (``"automatic-speech-recognition"``).
        method: The ``InferenceClient`` method that runs it (``"automatic_speech_recognition"``).
        needs: Input kinds the task cannot run without.
        takes: Input kinds it uses (``needs`` and the optional ones).
        output: What it returns: ``"chat"``, ``"text"``, ``"labels"``, ``"entities"``, ``"boxes"``,
            ``"masks"``, ``"answers"``, ``"fill"``, ``"scores"``, ``"embedding"``, ``"image"``, ``"audio"``,
            ``"audios"``, ``"video"``, ``"predictions"``.
        provider_task: The task name Inference Providers list the model under (its provider mapping), which is
            the task the client calls: ``"conversational"`` for every chat model.
    """

    task: str
    method: str
    needs: frozenset[str]
    takes: frozenset[str]
    output: str
    provider_task: str

    @property
    def chat(self) -> bool:
        """Whether the model answers chat completions (messages in, an assistant message out)."""
        return self.method == "chat_completion"

    def accepts(self, kinds: Iterable[str]) -> bool:
        """Whether a request carrying ``kinds`` can run on this task (see the module docstring)."""
        given = frozenset(kinds)
        return self.needs <= given and (given - _PROMPT_KINDS) <= self.takes

    def describe_inputs(self) -> str:
        """The inputs in words: ``"image + text"``, ``"audio"``."""
        needed = " + ".join(sorted(self.needs)) or "text"
        optional = sorted(self.takes - self.needs - _PROMPT_KINDS)
        return needed + (f" (optionally {', '.join(optional)})" if optional else "")


def _spec(
    task: str, method: str, needs: str, output: str, takes: str = "", provider_task: str | None = None
) -> TaskSpec:
    needed = frozenset(needs.split())
    return TaskSpec(task, method, needed, needed | frozenset(takes.split()), output, provider_task or task)


_CHAT = "chat_completion"
TASKS: Mapping[str, TaskSpec] = {
    spec.task: spec
    for spec in (
        # chat models: messages in, an assistant message out
        _spec("text-generation", _CHAT, "text", "chat", provider_task="conversational"),
        _spec("conversational", _CHAT, "text", "chat", provider_task="conversational"),
        _spec("image-text-to-text", _CHAT, "text", "chat", "image", provider_task="conversational"),
        _spec("audio-text-to-text", _CHAT, "text", "chat", "audio", provider_task="conversational"),
        _spec("video-text-to-text", _CHAT, "text", "chat", provider_task="conversational"),
        _spec("any-to-any", _CHAT, "text", "chat", "image audio", provider_task="conversational"),
        # text in
        _spec("text2text-generation", "text_generation", "text", "text", provider_task="text-generation"),
        _spec("summarization", "summarization", "text", "text"),
        _spec("translation", "translation", "text", "text"),
        _spec("text-classification", "text_classification", "text", "labels"),
        _spec("token-classification", "token_classification", "text", "entities"),
        _spec("zero-shot-classification", "zero_shot_classification", "text labels", "labels"),
        _spec("question-answering", "question_answering", "text context", "answers"),
        _spec("fill-mask", "fill_mask", "masked_text", "fill"),
        _spec("sentence-similarity", "sentence_similarity", "text sentences", "scores"),
        _spec("feature-extraction", "feature_extraction", "text", "embedding"),
        _spec("text-to-image", "text_to_image", "text", "image"),
        _spec("text-to-speech", "text_to_speech", "text", "audio"),
        _spec("text-to-audio", "text_to_speech", "text", "audio", provider_task="text-to-speech"),
        _spec("text-to-video", "text_to_video", "text", "video"),
        # images in
        _spec("image-classification", "image_classification", "image", "labels"),
        _spec("object-detection", "object_detection", "image", "boxes"),
        _spec("image-segmentation", "image_segmentation", "image", "masks"),
        _spec("image-to-text", "image_to_text", "image", "text"),
        _spec("image-to-image", "image_to_image", "image", "image", "text"),
        _spec("image-to-video", "image_to_video", "image", "video", "text"),
        _spec("zero-shot-image-classification", "zero_shot_image_classification", "image labels", "labels"),
        _spec("visual-question-answering", "visual_question_answering", "image text", "answers"),
        _spec("document-question-answering", "document_question_answering", "image text", "answers"),
        # audio in
        _spec("automatic-speech-recognition", "automatic_speech_recognition", "audio", "text"),
        _spec("audio-classification", "audio_classification", "audio", "labels"),
        _spec("audio-to-audio", "audio_to_audio", "audio", "audios"),
        # tables in
        _spec("table-question-answering", "table_question_answering", "table text", "answers"),
        _spec("tabular-classification", "tabular_classification", "table", "predictions"),
        _spec("tabular-regression", "tabular_regression", "table", "predictions"),
    )
}
"""Every Hub task ``InferenceClient`` runs, by pipeline tag."""

CHAT_TASKS: tuple[str, ...] = tuple(name for name, spec in TASKS.items() if spec.chat)
"""The tasks answered through chat completions."""

_ALIASES = {"chat": CHAT_TASKS}


def task_spec(task: str) -> TaskSpec:
    """The :class:`TaskSpec` of a pipeline tag.

    Raises:
        ValueError: ``task`` is not a task ``InferenceClient`` runs (the message lists those it runs).
    """
    spec = TASKS.get(str(task).strip().lower())
    if spec is None:
        raise ValueError(f"Unknown or unrunnable task {task!r}: hubroute runs {', '.join(sorted(TASKS))}.")
    return spec


def expand_tasks(tasks: str | Iterable[str]) -> tuple[str, ...]:
    """Pipeline tags of ``tasks`` (``"chat"`` stands for every chat task), de-duplicated, in order.

    Raises:
        ValueError: an unknown task.
    """
    names = [tasks] if isinstance(tasks, str) else list(tasks)
    out: list[str] = []
    for name in names:
        key = str(name).strip().lower()
        for tag in _ALIASES.get(key, (key,)):
            tag = task_spec(tag).task
            if tag not in out:
                out.append(tag)
    return tuple(out)


def tasks_accepting(kinds: Iterable[str], tasks: Iterable[str] | None = None) -> tuple[str, ...]:
    """The tasks (of ``tasks``, default every task) that accept a request carrying ``kinds``."""
    given = frozenset(kinds)
    return tuple(name for name in (TASKS if tasks is None else tasks) if TASKS[name].accepts(given))
