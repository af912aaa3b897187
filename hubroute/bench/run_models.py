"""``hubroute bench run-models``: everyday requests routed and run end to end, through every surface.

The router serves a local fake of the Hugging Face Inference API (:class:`~hubroute.testing.fake_inference.
FakeInferenceAPI`, one endpoint per model, ``--inference-url-template``) that answers each task in its
documented shape and refuses (400) any input a model's task cannot take. The same requests go through the
``openai`` client against ``hubroute serve``, through the Python :class:`~hubroute.run.Runner`, and through the
``mcp`` client against ``hubroute mcp`` (streamable HTTP): a transcription, a fallback when the chosen speech
model is down, a chat with an image, a chat with audio, a translation, a summary, a poem, an image generation.

For each request it reports who answered, the task, whether that task takes the request's input, whether
it is the task a person would expect, and how many calls the fake refused; plus wall time and peak memory.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..routing.router import HubRouter
from ..run.runner import RunConfig, Runner, task_of
from ..run.tasks import TASKS
from ..testing.fake_inference import FakeInferenceAPI, png_bytes, wav_bytes
from ..testing.server import BackgroundServer
from .process import peak_rss_mb, rss_mb, stderr_log

__all__ = ["Flow", "FLOWS", "FlowResult", "run_model_flows", "format_flows_table"]


@dataclass(frozen=True)
class Flow:
    """One everyday request.

    Attributes:
        name: What it is.
        prompt: The user's text.
        media: ``"audio"``, ``"image"`` or ``None``: what comes with the prompt.
        endpoint: The OpenAI endpoint it goes to: ``"chat"``, ``"transcriptions"`` or ``"images"``.
        expected: The tasks a person would expect to answer it.
    """

    name: str
    prompt: str
    media: str | None
    endpoint: str
    expected: tuple[str, ...]

    @property
    def task(self) -> str | None:
        """The task the endpoint fixes (``None``: the router picks among every task that takes the input)."""
        return {"transcriptions": "automatic-speech-recognition", "images": "text-to-image"}.get(
            self.endpoint
        )


_CHAT = ("text-generation", "conversational", "image-text-to-text", "audio-text-to-text", "any-to-any")
FLOWS: tuple[Flow, ...] = (
    Flow("transcription", "Transcribe this voice memo.", "audio", "transcriptions", ("automatic-speech-recognition",)),
    Flow("fallback (chosen speech model down)", "Transcribe this voice memo.", "audio", "transcriptions",
         ("automatic-speech-recognition",)),
    Flow("chat with an image", "What is in this photo?", "image", "chat",
         ("image-text-to-text", "image-to-text", "visual-question-answering", "image-classification",
          "object-detection")),
    Flow("chat with audio", "What is said in this recording?", "audio", "chat",
         ("automatic-speech-recognition", "audio-text-to-text")),
    Flow("translation", "Translate 'Where is the train station?' into French.", None, "chat",
         ("translation", "text2text-generation", *_CHAT)),
    Flow("summary", "Summarize this article in two sentences: The city council met on Tuesday and, after a long "
         "debate, approved the budget for next year, with more money for parks, libraries and buses.", None, "chat",
         ("summarization", "text2text-generation", *_CHAT)),
    Flow("poem", "Write a short poem about the sea.", None, "chat", _CHAT + ("text2text-generation",)),
    Flow("image generation", "A red fox in the snow, watercolour.", None, "images", ("text-to-image",)),
)  # fmt: skip
"""The requests of the issue's "must show" list."""


@dataclass
class FlowResult:
    """What one request got on one surface."""

    surface: str
    flow: str
    ok: bool
    model: str | None = None
    task: str | None = None
    fallback: str | None = None
    takes_input: bool = False
    expected_task: bool = False
    seconds: float = 0.0
    error: str | None = None


def _kinds(flow: Flow) -> set[str]:
    return {"text"} | ({flow.media} if flow.media else set())


def _media(flow: Flow) -> tuple[bytes | None, bytes | None]:
    return (
        png_bytes(64, 48) if flow.media == "image" else None,
        wav_bytes(1.0) if flow.media == "audio" else None,
    )


def _data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _openai_call(client: Any, flow: Flow) -> tuple[str, str, str]:
    """``(model, task, fallback)`` of one request through the ``openai`` client."""
    image, audio = _media(flow)
    if flow.endpoint == "transcriptions":
        raw = client.audio.transcriptions.with_raw_response.create(
            model="hubroute/auto", file=("memo.wav", audio), prompt=flow.prompt
        )
        raw.parse()
    elif flow.endpoint == "images":
        raw = client.images.with_raw_response.generate(model="hubroute/auto", prompt=flow.prompt,
                                                       response_format="b64_json")  # fmt: skip
        raw.parse()
    else:
        content: Any = flow.prompt
        if image is not None:
            content = [{"type": "text", "text": flow.prompt},
                       {"type": "image_url", "image_url": {"url": _data_url(image, "image/png")}}]  # fmt: skip
        elif audio is not None:
            content = [{"type": "text", "text": flow.prompt},
                       {"type": "input_audio", "input_audio": {"data": base64.b64encode(audio).decode(), "format": "wav"}}]  # fmt: skip
        raw = client.chat.completions.with_raw_response.create(model="hubroute/auto",
                                                               messages=[{"role": "user", "content": content}])  # fmt: skip
        raw.parse()
    return raw.headers["x-hubroute-model"], raw.headers["x-hubroute-task"], raw.headers["x-hubroute-fallback"]


def _python_call(runner: Runner, flow: Flow) -> tuple[str, str, str]:
    image, audio = _media(flow)
    result = runner.run(flow.prompt, image=image, audio=audio, task=flow.task)
    return result.model, result.task, result.fallback


async def _mcp_calls(
    url: str, flows: Sequence[Flow], between: Callable[[Flow, str | None], None]
) -> list[Any]:
    from mcp import Client

    out: list[Any] = []
    async with Client(url) as client:
        for flow in flows:
            image, audio = _media(flow)
            arguments: dict[str, Any] = {"prompt": flow.prompt}
            if image is not None:
                arguments["image"] = base64.b64encode(image).decode()
            if audio is not None:
                arguments["audio"] = base64.b64encode(audio).decode()
            if flow.task:
                arguments["task"] = flow.task
            started = time.perf_counter()
            result = await client.call_tool("run", arguments)
            seconds = time.perf_counter() - started
            data = result.structured_content if not result.is_error else None
            text = getattr(result.content[0], "text", "") if result.content else ""
            out.append((data, text if result.is_error else None, seconds))
            between(flow, data["model"] if data else None)
    return out


def run_model_flows(
    router: HubRouter,
    surfaces: Sequence[str] = ("openai", "python", "mcp"),
    log: Callable[[str], None] = stderr_log,
) -> dict[str, Any]:
    """Run :data:`FLOWS` through each surface against a fake Inference API serving ``router``'s models.

    Args:
        router: The router (its registry's models are the fake's).
        surfaces: ``"openai"`` (``hubroute serve``), ``"python"`` (:class:`Runner`), ``"mcp"`` (``hubroute mcp``).
        log: Progress lines.

    Returns:
        ``{"results": [FlowResult as dict], "surfaces": {surface: summary}, "peak_rss_mb", ...}``.
    """
    import openai

    from ..serve import ServeConfig, create_app
    from ..serve.mcp_server import create_mcp_server

    fake = FakeInferenceAPI.from_registry(router.registry)
    results: list[FlowResult] = []
    summaries: dict[str, Any] = {}
    with fake.serve() as upstream:
        template = fake.url_template(upstream)
        config = RunConfig(inference_url_template=template)
        runner = Runner(router, config, policy=config.media_policy(allow_paths=False))

        def between(flow: Flow, answered: str | None) -> None:
            """After the transcription: its model goes down (for the fallback flow); after the fallback: back up."""
            if flow.name == "transcription" and answered:
                fake.down.add(answered.lower())
            elif flow.name.startswith("fallback"):
                fake.down.clear()

        for surface in surfaces:
            fake.clear()
            started = time.perf_counter()
            if surface == "mcp":
                with BackgroundServer(create_mcp_server(runner).streamable_http_app()) as server:
                    outcomes = asyncio.run(_mcp_calls(f"{server.url}/mcp", FLOWS, between))
                rows = [
                    _row(
                        surface,
                        flow,
                        data and (data["model"], data["task"], data["fallback"]),
                        error,
                        seconds,
                    )
                    for flow, (data, error, seconds) in zip(FLOWS, outcomes)
                ]
            elif surface == "openai":
                app = create_app(router, ServeConfig(inference_url_template=template))
                with BackgroundServer(app) as server:
                    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
                    rows = _sequential(surface, functools.partial(_openai_call, client), between)
            else:
                rows = _sequential(surface, functools.partial(_python_call, runner), between)
            refused = fake.refused()
            wall = time.perf_counter() - started
            summaries[surface] = {
                "requests": len(rows), "succeeded": sum(r.ok for r in rows),
                "answered_by_a_task_that_takes_the_input": sum(r.takes_input for r in rows),
                "answered_by_the_expected_task": sum(r.expected_task for r in rows),
                "calls_refused_by_the_fake": len(refused), "model_calls": len(fake.calls), "wall_s": wall,
            }  # fmt: skip
            results.extend(rows)
            log(f"{surface}: {summaries[surface]}")
    registry_tasks = {task_of(router.registry, m) for m in router.registry.model_ids[:200_000]}
    return {
        "models": router.num_models, "tasks_in_registry": len(registry_tasks - {None}),
        "results": [asdict(r) for r in results], "surfaces": summaries, "peak_rss_mb": peak_rss_mb(),
        "rss_mb": rss_mb(),
    }  # fmt: skip


def _sequential(
    surface: str, call: Callable[[Flow], tuple[str, str, str]], between: Callable[[Flow, str | None], None]
) -> list[FlowResult]:
    rows = []
    for flow in FLOWS:
        started, answer, error = time.perf_counter(), None, None
        try:
            answer = call(flow)
        except Exception as err:  # noqa: BLE001 - a failed request is a result to report
            error = f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"
        rows.append(_row(surface, flow, answer, error, time.perf_counter() - started))
        between(flow, answer[0] if answer else None)
    return rows


def _row(
    surface: str, flow: Flow, answer: tuple[str, str, str] | None, error: str | None, seconds: float
) -> FlowResult:
    if answer is None:
        return FlowResult(surface, flow.name, False, error=error, seconds=seconds)
    model, task, fallback = answer
    spec = TASKS.get(task)
    return FlowResult(surface, flow.name, True, model, task, fallback, bool(spec and spec.accepts(_kinds(flow))),
                      task in flow.expected, seconds)  # fmt: skip


def format_flows_table(report: dict[str, Any]) -> str:
    """The report as Markdown: one row per request, one column per surface, then the totals."""
    surfaces = list(report["surfaces"])
    lines = ["| request | " + " | ".join(surfaces) + " |", "| --- |" + " --- |" * len(surfaces)]
    by = {(r["surface"], r["flow"]): r for r in report["results"]}
    for flow in FLOWS:
        cells = []
        for surface in surfaces:
            r = by.get((surface, flow.name))
            if r is None or not r["ok"]:
                cells.append(f"failed: {r['error'] if r else 'not run'}")
            else:
                fallback = "" if r["fallback"] in ("none", None) else f", fallback: {r['fallback']}"
                cells.append(f"`{r['model']}` ({r['task']}{fallback})")
        lines.append(f"| {flow.name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("| surface | succeeded | task takes the input | expected task | calls refused by the fake | "
                 "model calls | wall s |")  # fmt: skip
    lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for surface, s in report["surfaces"].items():
        n = s["requests"]
        lines.append(f"| {surface} | {s['succeeded']}/{n} | {s['answered_by_a_task_that_takes_the_input']}/{n} | "
                     f"{s['answered_by_the_expected_task']}/{n} | {s['calls_refused_by_the_fake']} | {s['model_calls']} | "
                     f"{s['wall_s']:.1f} |")  # fmt: skip
    lines.append("")
    lines.append(f"{report['models']} models ({report['tasks_in_registry']} tasks); peak RSS "
                 f"{report['peak_rss_mb']:.0f} MiB.")  # fmt: skip
    return "\n".join(lines)
