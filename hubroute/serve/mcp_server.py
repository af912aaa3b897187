"""``hubroute mcp``: the router's route and run as tools of a Model Context Protocol server.

Built on the official ``mcp`` SDK (:class:`mcp.server.mcpserver.MCPServer`), over stdio (an agent starts
``hubroute mcp --router R`` as a subprocess) or streamable HTTP (``--transport http``, path ``/mcp``). Three
tools:

- ``route``: the best Hub models for a prompt (optionally of one task), with their task and score;
- ``run``: route to a model whose task takes the inputs (a prompt, an image, an audio clip, a table, ...), run
  it, fall back within those tasks; the answer is the output as text (plus the image or audio it made) and
  as structured JSON (model, task, output, attempts);
- ``tasks``: the tasks the router has models of, what each takes, and whether the backend runs it.

Images and audio come as base64 (or ``data:`` URLs); ``http(s)`` URLs only with ``allow_input_urls``; files
only from inside ``files_root``.
"""

from __future__ import annotations

import hmac
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import AudioContent, CallToolResult, ImageContent, TextContent

from .._utils.version import __version__
from ..errors import HubRouteError
from ..routing.router import HubRouter
from ..run.render import binary_mime, image_bytes
from ..run.runner import Runner, RunResult, registry_tasks, task_of
from ..run.tasks import TASKS

__all__ = ["create_mcp_server", "require_api_key"]

_INSTRUCTIONS = (
    "hubroute picks the right Hugging Face Hub model for a request out of thousands, across ~35 tasks "
    "(speech recognition, translation, image generation, object detection, chat, ...), and runs it. Use `run` to "
    "get an answer (pass the image or audio as base64), `route` to see which models fit, `tasks` to list what "
    "this server can run."
)


def _media(value: str | None, files_root: Path | None, kind: str) -> Any:
    """An image or audio argument: base64 / data URL / http(s) URL as given; a file path read from
    ``files_root`` only."""
    if value is None:
        return None
    if value.startswith(("data:", "http://", "https://")):
        return value
    if value.startswith(("/", "./", "~", "file://")):
        if files_root is None:
            raise HubRouteError(
                f"The {kind} is a file path, and this server reads no files: send it as base64, or start it with "
                "--files-root DIR."
            )
        path = (files_root / value.removeprefix("file://").lstrip("/")).resolve()
        if not path.is_relative_to(files_root) or not path.is_file():
            raise HubRouteError(f"The {kind} file {value!r} is not a file inside --files-root {files_root}.")
        return path.read_bytes()
    return value


def _result(result: RunResult) -> CallToolResult:
    content: list[Any] = [TextContent(type="text", text=f"{result.model} ({result.task}): {result.text}")]
    output = result.output
    if TASKS[result.task].output == "image":
        data, mime = image_bytes(output)
        content.append(ImageContent(type="image", data=_b64(data), mime_type=mime))
    elif TASKS[result.task].output == "audio":
        data = bytes(output)
        content.append(AudioContent(type="audio", data=_b64(data), mime_type=binary_mime(data, "audio/wav")))
    return CallToolResult(content=content, structured_content=result.to_dict())


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def create_mcp_server(runner: Runner, files_root: str | Path | None = None) -> MCPServer:
    """The MCP server of a :class:`~hubroute.run.Runner` (see the module docstring).

    Args:
        runner: Routes and runs (its router, backend and media limits; local paths are not read through it).
        files_root: A folder the ``run`` tool may read image and audio files from (``None``: no files).

    Returns:
        The server: ``server.run("stdio")``, or ``server.streamable_http_app()`` for HTTP.
    """
    root = Path(files_root).resolve() if files_root is not None else None
    server: MCPServer = MCPServer(
        "hubroute", instructions=_INSTRUCTIONS, version=__version__, log_level="WARNING"
    )
    router: HubRouter = runner.router

    @server.tool(
        description="The best Hugging Face Hub models for a prompt, best first, with each model's task (pipeline "
        "tag) and routing score. `task` keeps to one task (e.g. 'automatic-speech-recognition')."
    )
    def route(prompt: str, top_k: int = 5, task: str | None = None) -> list[dict[str, Any]]:
        filters = {"pipeline_tags": [task]} if task else None
        try:
            results = router.route(prompt, top_k=max(1, min(int(top_k), 50)), filters=filters)
        except (HubRouteError, ValueError) as err:  # the message says what is wrong and what to send
            raise ToolError(str(err)) from None
        return [
            {"model_id": r.model_id, "task": task_of(router.registry, r.model_id), "score": round(r.score, 6),
             "family": r.family, "domain": r.domain}
            for r in results
        ]  # fmt: skip

    @server.tool(
        description="Answer a request with the right Hub model: routes among the models whose task takes the "
        "inputs, runs the chosen one (falling back to the next on failure) and returns its output as text, the "
        "image or audio it made, and JSON (model, task, output, attempts). `image` / `audio`: base64 or a data "
        "URL. `task`: keep to one task ('chat' for chat models). `table`: {column: [cells]}; `context`: a passage "
        "for question answering; `labels`: candidate labels for zero-shot classification; `parameters`: options "
        "of the task's call (e.g. {'tgt_lang': 'fr'})."
    )
    async def run(
        prompt: str | None = None,
        image: str | None = None,
        audio: str | None = None,
        task: str | None = None,
        model: str | None = None,
        table: dict[str, list[Any]] | None = None,
        context: str | None = None,
        labels: list[str] | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> CallToolResult:
        try:
            result = await runner.arun(
                prompt, image=_media(image, root, "image"), audio=_media(audio, root, "audio"), task=task,
                model=model, table=table, context=context, labels=labels, parameters=parameters,
            )  # fmt: skip
        except (
            HubRouteError,
            ValueError,
            KeyError,
        ) as err:  # the message says what is wrong and what to send
            raise ToolError(str(err.args[0] if isinstance(err, KeyError) and err.args else err)) from None
        return _result(result)

    @server.tool(description="The tasks this server can run: each task's inputs, its number of models, and "
                 "whether the backend runs it.")  # fmt: skip
    def tasks() -> list[dict[str, Any]]:
        present = registry_tasks(router.registry)
        counts = (
            Counter(task_of(router.registry, m) for m in router.registry.model_ids)
            if len(router.registry) < 200_000
            else Counter()
        )
        return [
            {"task": name, "inputs": spec.describe_inputs(), "models": counts.get(name), "runs": runner.backend.supports(name)}
            for name, spec in TASKS.items()
            if name in present
        ]  # fmt: skip

    return server


Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


def require_api_key(app: ASGIApp, api_key: str | None) -> ASGIApp:
    """Wrap an ASGI app so that every HTTP request needs ``Authorization: Bearer <api_key>`` (compared in
    constant time); ``None``: no check."""
    if not api_key:
        return app
    expected = f"Bearer {api_key}".encode()

    async def guarded(
        scope: Scope, receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]
    ) -> None:
        if scope["type"] == "http" and not hmac.compare_digest(
            dict(scope.get("headers") or ()).get(b"authorization", b""), expected
        ):
            body = b'{"error": "Invalid or missing API key: send \'Authorization: Bearer <key>\'."}'
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})  # fmt: skip
            await send({"type": "http.response.body", "body": body})
            return
        await app(scope, receive, send)

    return guarded
