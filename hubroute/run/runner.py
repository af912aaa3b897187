"""`Runner`: route a request to a model whose task takes its inputs, run that model, fall back within those tasks.

Example:
    ```python
    >>> from hubroute import HubRouter
    >>> from hubroute.run import Runner
    >>> runner = Runner(HubRouter.from_pretrained("collagelab/hubroute-cmrbench"))
    >>> result = runner.run("What is said in this recording?", audio="memo.wav")
    >>> result.model, result.task, result.text
    ('openai/whisper-large-v3', 'automatic-speech-recognition', 'Remember to buy milk.')
    ```
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
import weakref
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidInputError, InvalidPromptError, ModelCallError, TaskNotAvailableError
from ..routing.options import RouteFilter, as_route_filter
from ..routing.registry import DerivedRegistry, Registry
from ..routing.results import RouteResult
from ..routing.router import HubRouter
from .attempts import Attempt, AttemptsFailed, Candidate, candidate_ladder, first_answer
from .backend import Backend, call_task, check_parameters
from .inputs import MediaPolicy, RunInputs, load_audio, load_image
from .render import render_text, to_json
from .tasks import TASKS, expand_tasks, task_spec

__all__ = [
    "RunConfig",
    "RunResult",
    "TaskPlan",
    "Runner",
    "plan_tasks",
    "registry_tasks",
    "routing_text",
    "task_of",
    "merge_filter",
    "DEFAULT_PROMPTS",
]

DEFAULT_PROMPTS = {
    "audio": "Transcribe this audio recording.",
    "image": "Describe this image.",
    "table": "Answer a question about this table.",
}
"""What the router reads when a request carries an image, audio or a table and no prompt."""


@dataclass
class RunConfig:
    """Settings of :class:`Runner` (``hubroute serve`` and ``hubroute mcp`` take the same ones).

    Attributes:
        provider: The Inference Provider (``"auto"``) when no URL is given.
        inference_url_template: Each model's own endpoint, a URL with ``{model_id}`` in it, in the Hugging Face
            Inference API layout (task calls to the URL, chat to ``URL/v1/chat/completions``).
        inference_base_url: An OpenAI-compatible server: chat models only.
        inference_api_key: The key sent to those URLs (default: ``HUBROUTE_INFERENCE_API_KEY``; the Hub token is
            never sent to a non-Hugging Face URL).
        tasks: Run only models of these tasks (pipeline tags; ``"chat"`` is every chat task).
        domains: Run only models of these domains.
        deadline: Seconds a request may take in all, across every fallback.
        attempt_timeout: Seconds one model call may take before the next candidate is tried (``None``: what is
            left of ``deadline``).
        max_attempts: Models tried per request.
        fallback_candidates: Model-level candidates routed per request before the family and domain backoff.
        max_image_bytes: Largest image input.
        max_audio_bytes: Largest audio input.
        allow_input_urls: Fetch ``http(s)`` image and audio URLs given as inputs.
        fetch_timeout: Seconds such a fetch may take.
    """

    provider: str = "auto"
    inference_url_template: str | None = None
    inference_base_url: str | None = None
    inference_api_key: str | None = None
    tasks: list[str] | None = None
    domains: list[str] | None = None
    deadline: float = 60.0
    attempt_timeout: float | None = 30.0
    max_attempts: int = 4
    fallback_candidates: int = 3
    max_image_bytes: int = 20 * 1024 * 1024
    max_audio_bytes: int = 25 * 1024 * 1024
    allow_input_urls: bool = False
    fetch_timeout: float = 10.0

    def __post_init__(self) -> None:
        for name in ("deadline", "max_attempts", "fallback_candidates", "max_image_bytes", "max_audio_bytes",
                     "fetch_timeout"):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"RunConfig.{name} must be a positive number, got {value!r}.")
        if self.attempt_timeout is not None and not 0 < self.attempt_timeout < math.inf:
            raise ValueError(
                f"RunConfig.attempt_timeout must be positive or None, got {self.attempt_timeout!r}."
            )
        if self.tasks is not None:
            self.tasks = list(expand_tasks(self.tasks))
        Backend(self.provider, self.inference_url_template, self.inference_base_url)  # checks the URLs

    def backend(self, hub_token: str | None = None) -> Backend:
        """The :class:`Backend` these settings describe."""
        return Backend(self.provider, self.inference_url_template, self.inference_base_url,
                       self.inference_api_key, hub_token)  # fmt: skip

    def media_policy(self, allow_paths: bool = True) -> MediaPolicy:
        """The :class:`MediaPolicy` of these settings (servers pass ``allow_paths=False``)."""
        return MediaPolicy(self.max_image_bytes, self.max_audio_bytes, self.allow_input_urls, self.fetch_timeout,
                           allow_paths)  # fmt: skip


@dataclass(frozen=True)
class RunResult:
    """What a run answered.

    Attributes:
        model: The model that answered.
        task: Its task (pipeline tag).
        output: What ``InferenceClient`` returned (a ``ChatCompletionOutput``, a ``PIL`` image, audio bytes,
            a list of labels, ...).
        attempts: Every model call made, in order.
        score: The answering model's routing score (``None`` when named directly).
        fallback: ``"none"`` when the router's choice answered, else the kind of candidate that did
            (``"candidate"``, ``"family"``, ``"domain"``).
        routed_model: The router's first choice.
        tasks: The tasks the route could choose from.
    """

    model: str
    task: str
    output: Any = field(repr=False)
    attempts: tuple[Attempt, ...] = ()
    score: float | None = None
    fallback: str = "none"
    routed_model: str | None = None
    tasks: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        """The output as text a person reads (see :func:`hubroute.run.render.render_text`)."""
        return render_text(TASKS[self.task], self.output)

    def to_json(self) -> Any:
        """The output as JSON (images and audio as base64 objects)."""
        return to_json(self.output)

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready."""
        return {
            "model": self.model, "task": self.task, "text": self.text, "output": self.to_json(),
            "score": self.score, "fallback": self.fallback, "routed_model": self.routed_model,
            "tasks": list(self.tasks), "attempts": [a.to_dict() for a in self.attempts],
        }  # fmt: skip


@dataclass(frozen=True)
class TaskPlan:
    """The tasks a request may run on and the route filter that keeps the router to them.

    Attributes:
        tasks: The tasks the router may choose (each takes the request's inputs, runs on the backend and has
            models in the registry).
        filters: The route filter (``None``: every model of the registry qualifies).
    """

    tasks: tuple[str, ...]
    filters: RouteFilter | None


_TASK_CACHE: weakref.WeakKeyDictionary[Registry, tuple[int, frozenset[str | None]]] = (
    weakref.WeakKeyDictionary()
)


def registry_tasks(registry: Registry) -> frozenset[str | None]:
    """The pipeline tags of a registry's models (``None`` for models of unknown task), cached per size."""
    cached = _TASK_CACHE.get(registry)
    if cached is None or cached[0] != len(registry):
        records: Iterable[Any] = (
            (registry[i] for i in range(registry.base_size))
            if isinstance(registry, DerivedRegistry)
            else registry
        )
        cached = (len(registry), frozenset((r.pipeline_tag or "").strip().lower() or None for r in records))
        _TASK_CACHE[registry] = cached
    return cached[1]


def task_of(registry: Registry, model_id: str) -> str | None:
    """The pipeline tag of a registry model (``None``: unknown)."""
    record = registry.get(model_id)
    return (record.pipeline_tag or "").strip().lower() or None if record is not None else None


def merge_filter(base: RouteFilter | None, **fields: tuple[str, ...] | None) -> RouteFilter | None:
    """``base`` with the given string fields (``pipeline_tags``, ``domains``, ...) intersected in.

    Args:
        base: A route filter, or ``None``.
        fields: Allowed values per field (``None``: unchanged).
    """
    updates: dict[str, Any] = {}
    for name, values in fields.items():
        if values is None:
            continue
        existing = getattr(base, name) if base is not None else None
        if existing is not None:
            wanted = {v.lower() for v in values}
            values = tuple(v for v in existing if v.lower() in wanted)
        updates[name] = values
    if not updates:
        return base
    return dataclasses.replace(base, **updates) if base is not None else RouteFilter(**updates)


def plan_tasks(
    registry: Registry,
    kinds: Iterable[str],
    *,
    task: str | Sequence[str] | None = None,
    backend: Backend | None = None,
    allowed: Sequence[str] | None = None,
    domains: Sequence[str] | None = None,
    filters: RouteFilter | Mapping[str, Any] | None = None,
    describe: str | None = None,
) -> TaskPlan:
    """Which tasks a request may run on, and the route filter for them.

    Args:
        registry: The router's registry.
        kinds: The input kinds of the request (:meth:`RunInputs.kinds`).
        task: The task(s) the caller asked for (``None``: any task that takes the inputs).
        backend: Where models run (its tasks only).
        allowed: The tasks an operator allows (``--tasks``).
        domains: The domains an operator allows (``--domains``).
        filters: The caller's own route filter.
        describe: The inputs in words, for messages.

    Returns:
        The :class:`TaskPlan`.

    Raises:
        InvalidInputError: the asked task cannot take the inputs, or no task takes this mix of inputs.
        TaskNotAvailableError: no model of the registry has a task that can run the request here (the message
            names the tasks looked for).
        ValueError: an unknown task or a bad filter.
    """
    given = frozenset(kinds)
    what = describe or " + ".join(sorted(given - {"masked_text"})) or "nothing"
    requested = expand_tasks(task) if task else None
    if requested is not None:
        fitting = tuple(t for t in requested if TASKS[t].accepts(given))
        if not fitting:
            wants = "; ".join(f"{t} takes {TASKS[t].describe_inputs()}" for t in requested)
            raise InvalidInputError(f"The request carries {what}, but {wants}.", param="task")
    else:
        fitting = tuple(t for t in TASKS if TASKS[t].accepts(given))
        if not fitting:
            raise InvalidInputError(
                f"No task takes {what} together: send one image or one audio clip per request, with a prompt.",
                param="inputs",
            )
    runnable = fitting if backend is None else tuple(t for t in fitting if backend.supports(t))
    if not runnable:
        assert backend is not None
        fix = (
            "the Hugging Face Inference API layout has none of them: use Inference Providers (the default) for them"
            if backend.kind == "url_template"
            else "use Inference Providers (the default) or --inference-url-template for other tasks"
        )
        raise TaskNotAvailableError(
            f"The tasks that take {what} ({', '.join(fitting)}) cannot run on {backend.describe()}: {fix}.",
            fitting,
            "backend",
        )
    if allowed is not None:
        kept = tuple(t for t in runnable if t in set(allowed))
        if not kept:
            raise TaskNotAvailableError(
                f"This server runs only the tasks {', '.join(allowed)} (--tasks); none of them takes {what} "
                f"(tasks that do: {', '.join(runnable)}).",
                runnable,
                "task",
            )
        runnable = kept
    route_filter = as_route_filter(filters)
    if route_filter is not None and route_filter.pipeline_tags is not None:
        wanted = {t.lower() for t in route_filter.pipeline_tags}
        runnable = tuple(t for t in runnable if t in wanted)
        if not runnable:
            raise TaskNotAvailableError(
                f"The filter's pipeline_tags ({', '.join(route_filter.pipeline_tags)}) hold no task that takes "
                f"{what}.",
                tuple(route_filter.pipeline_tags),
                "task",
            )
    present = registry_tasks(registry)
    available = tuple(t for t in runnable if t in present)
    if not available:
        known = sorted(t for t in present if t)
        raise TaskNotAvailableError(
            f"No model in the router's registry has the task {' or '.join(runnable)} (asked for {what}); "
            f"the registry's tasks are: {', '.join(known) or 'none (its models have no pipeline_tag)'}.",
            runnable,
            "task",
        )
    everything = present <= set(available)
    route_filter = merge_filter(
        route_filter,
        pipeline_tags=None if everything else available,
        domains=tuple(domains) if domains else None,
    )
    return TaskPlan(available, route_filter)


def routing_text(text: str | None, inputs: RunInputs) -> str:
    """What the router reads: the prompt, else a sentence naming the input (``DEFAULT_PROMPTS``).

    Raises:
        InvalidPromptError: no prompt and nothing else to route on.
    """
    if text and text.strip():
        return text
    for kind in ("audio", "image", "table"):
        if getattr(inputs, kind):
            return DEFAULT_PROMPTS[kind]
    raise InvalidPromptError("Nothing to route: give a prompt (and optionally an image, audio or a table).")


def _run_sync(coroutine: Any) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="hubroute-run"
    ) as pool:  # inside a running loop
        return pool.submit(asyncio.run, coroutine).result()


class Runner:
    """Route requests to a model whose task takes their inputs, and run it (see the module docstring).

    Args:
        router: The router.
        config: The settings (default :class:`RunConfig()`).
        backend: Where models run (default: ``config.backend()``).
        policy: Limits on images and audio (default: ``config.media_policy()``; local paths are read).
    """

    def __init__(
        self,
        router: HubRouter,
        config: RunConfig | None = None,
        *,
        backend: Backend | None = None,
        policy: MediaPolicy | None = None,
    ) -> None:
        self.router = router
        self.config = config or RunConfig()
        self.backend = backend or self.config.backend()
        self.policy = policy or self.config.media_policy()

    async def prepare(
        self,
        prompt: str | None = None,
        *,
        image: Any = None,
        audio: Any = None,
        table: Mapping[str, Sequence[Any]] | None = None,
        context: str | None = None,
        labels: Sequence[str] | None = None,
        sentences: Sequence[str] | None = None,
    ) -> RunInputs:
        """Read and check the inputs (see :func:`~hubroute.run.inputs.load_image` / ``load_audio``).

        Raises:
            InvalidInputError: an input that is not what it claims, or too large.
        """
        if prompt is not None and not isinstance(prompt, str):
            raise InvalidPromptError(f"The prompt must be a string, not {type(prompt).__name__}.")
        if table is not None and (
            not isinstance(table, Mapping) or not all(isinstance(v, (list, tuple)) for v in table.values())
        ):
            raise InvalidInputError(
                "The table must be a mapping of column name -> list of cells.", param="table"
            )
        return RunInputs(
            text=prompt,
            image=await load_image(image, self.policy) if image is not None else None,
            audio=await load_audio(audio, self.policy) if audio is not None else None,
            table=table,
            context=context,
            labels=tuple(labels) if labels else None,
            sentences=tuple(sentences) if sentences else None,
        )

    def plan(
        self,
        inputs: RunInputs,
        task: str | Sequence[str] | None = None,
        filters: RouteFilter | Mapping[str, Any] | None = None,
    ) -> TaskPlan:
        """The :class:`TaskPlan` of ``inputs`` on this runner (see :func:`plan_tasks`)."""
        return plan_tasks(
            self.router.registry, inputs.kinds(), task=task, backend=self.backend, allowed=self.config.tasks,
            domains=self.config.domains, filters=filters, describe=inputs.describe(),
        )  # fmt: skip

    def _candidates(
        self, text: str, plan: TaskPlan, min_score: float | str | None
    ) -> tuple[list[RouteResult], AsyncIterator[Candidate]]:
        config, registry = self.config, self.router.registry
        results = self.router.route(
            text, top_k=config.fallback_candidates, filters=plan.filters, min_score=min_score
        )
        if not results:
            if min_score is not None:
                raise TaskNotAvailableError(
                    f"The router abstained: no model of the tasks {', '.join(plan.tasks)} reached min_score.",
                    plan.tasks,
                    "abstained",
                )
            raise TaskNotAvailableError(
                f"No model of the tasks {', '.join(plan.tasks)} passes the filters ({plan.filters}).",
                plan.tasks,
                "filters",
            )

        async def backoff(level: str) -> list[RouteResult]:
            return self.router.route(text, top_k=config.max_attempts + 1, level=level, filters=plan.filters)

        return results, candidate_ladder(results, backoff, lambda m: task_of(registry, m))

    async def _direct(self, model: str, inputs: RunInputs) -> tuple[TaskPlan, AsyncIterator[Candidate]]:
        record = self.router.registry[self.router.registry.index(model)]
        task = task_of(self.router.registry, record.model_id)
        if task is None or task not in TASKS:
            raise TaskNotAvailableError(
                f"The model {record.model_id} has no task hubroute can run (pipeline_tag={record.pipeline_tag!r}).",
                (),
                "task",
            )
        spec = TASKS[task]
        if not spec.accepts(inputs.kinds()):
            raise InvalidInputError(
                f"The model {record.model_id} is a {task} model: it takes {spec.describe_inputs()}, and the request "
                f"carries {inputs.describe()}.",
                param="model",
            )
        if not self.backend.supports(task):
            raise TaskNotAvailableError(
                f"The task {task} cannot run on {self.backend.describe()}.", (task,), "backend"
            )

        async def one() -> AsyncIterator[Candidate]:
            yield Candidate(record.model_id, "direct", None, record.family, record.domain, task=task)

        return TaskPlan((task,), None), one()

    async def call(
        self, candidate: Candidate, inputs: RunInputs, parameters: Mapping[str, Any], timeout: float
    ) -> Any:
        """Run ``candidate`` on ``inputs`` with its task's ``InferenceClient`` method.

        Raises:
            ValueError: the candidate's task is unknown.
        """
        spec = task_spec(candidate.task or "")
        client, model = self.backend.client(candidate.model_id, timeout)
        async with client:
            return await call_task(client, spec, inputs, parameters, model)

    async def arun(
        self,
        prompt: str | None = None,
        *,
        image: Any = None,
        audio: Any = None,
        table: Mapping[str, Sequence[Any]] | None = None,
        context: str | None = None,
        labels: Sequence[str] | None = None,
        sentences: Sequence[str] | None = None,
        task: str | Sequence[str] | None = None,
        model: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        filters: RouteFilter | Mapping[str, Any] | None = None,
        min_score: float | str | None = None,
    ) -> RunResult:
        """Route the request among the tasks that take its inputs, run the chosen model, fall back on failure.

        Args:
            prompt: The prompt (what the router reads; the text input of text tasks).
            image: An image: bytes, a ``PIL`` image, a file path, a base64 data URL, or an ``http(s)`` URL (with
                ``allow_input_urls``).
            audio: An audio clip, in the same forms.
            table: A table ``{column: [cells]}`` (table question answering, tabular tasks).
            context: A passage (question answering).
            labels: Candidate labels (zero-shot classification).
            sentences: Sentences to compare with the prompt (sentence similarity).
            task: Run only this task, or one of these (``"chat"``: any chat task).
            model: Run this registry model (no routing).
            parameters: Keyword parameters of the task's ``InferenceClient`` method (``tgt_lang``,
                ``max_tokens``, ``width``, ...); checked against the method when ``task`` names one task,
                else passed to the methods that take them.
            filters: Route filter (:class:`~hubroute.RouteFilter` or a dict).
            min_score: Confidence threshold (see :meth:`HubRouter.route`).

        Returns:
            The :class:`RunResult`.

        Raises:
            InvalidPromptError: no prompt and nothing else to route on.
            InvalidInputError: an input that is not what it claims, too large, or that the asked task or model
                cannot take.
            TaskNotAvailableError: no model of the registry can run the request here (the message names the
                missing task), or the router abstained.
            UnknownModelError: ``model`` is not in the registry.
            ModelCallError: every model tried failed, or the deadline passed (``attempts`` says which).
        """
        deadline = time.monotonic() + self.config.deadline
        inputs = await self.prepare(prompt, image=image, audio=audio, table=table, context=context, labels=labels,
                                    sentences=sentences)  # fmt: skip
        parameters = dict(parameters or {})
        routed: str | None = None
        if model is not None:
            plan, candidates = await self._direct(model, inputs)
            if len(plan.tasks) == 1:
                check_parameters(TASKS[plan.tasks[0]], parameters)
        else:
            plan = self.plan(inputs, task, filters)
            if len(plan.tasks) == 1:
                check_parameters(TASKS[plan.tasks[0]], parameters)
            results, candidates = self._candidates(routing_text(prompt, inputs), plan, min_score)
            routed = results[0].model_id
        try:
            answered, output, attempts = await first_answer(
                candidates, lambda c, timeout: self.call(c, inputs, parameters, timeout), deadline,
                self.config.max_attempts, self.config.attempt_timeout, self.backend.secrets,
            )  # fmt: skip
        except AttemptsFailed as failed:
            what = "the deadline passed" if failed.timed_out else "every model tried failed"
            tried = ", ".join(f"{a.model_id} ({a.outcome})" for a in failed.attempts) or "none"
            raise ModelCallError(f"No model answered: {what}. Tried: {tried}.", failed.attempts,
                                 failed.timed_out) from None  # fmt: skip
        return RunResult(
            answered.model_id, answered.task or "", output, tuple(attempts), answered.score,
            "none" if answered.kind in ("chosen", "direct") else answered.kind, routed or answered.model_id, plan.tasks,
        )  # fmt: skip

    def run(self, prompt: str | None = None, **kwargs: Any) -> RunResult:
        """:meth:`arun`, blocking (it may be called from inside a running event loop too)."""
        return _run_sync(self.arun(prompt, **kwargs))
