"""``hubroute mcp``: route and run as Model Context Protocol tools, driven by the ``mcp`` SDK's own client over
stdio (``hubroute mcp`` as a subprocess) and streamable HTTP, against the local fake of the Inference API."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client, StdioServerParameters

from hubroute import EncoderConfig, HubRouter, RouterConfig
from hubroute.run import TASKS, RunConfig, Runner
from hubroute.serve.mcp_server import create_mcp_server, require_api_key
from hubroute.testing.fake_inference import FakeInferenceAPI, demo_records, png_bytes, wav_bytes
from hubroute.testing.server import BackgroundServer

pytestmark = pytest.mark.timeout(240)

SPEECH = [r.model_id for r in demo_records() if r.pipeline_tag == "automatic-speech-recognition"]


@pytest.fixture(scope="module")
def router_dir(tiny_encoder_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    router = HubRouter(RouterConfig(encoder=EncoderConfig(str(tiny_encoder_path), max_length=64)))
    router.add_models(demo_records())
    folder = tmp_path_factory.mktemp("mcp") / "router"
    router.eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def fake_api(router_dir: Path) -> Iterator[tuple[FakeInferenceAPI, BackgroundServer]]:
    fake = FakeInferenceAPI.from_registry(HubRouter.from_pretrained(router_dir).registry)
    with fake.serve() as server:
        yield fake, server


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def everyday_flows(client: Client, fake: FakeInferenceAPI) -> dict[str, Any]:
    """The must-show flows through MCP tool calls; returns each result's structured content."""
    names = {tool.name for tool in (await client.list_tools()).tools}
    assert names == {"route", "run", "tasks"}
    done: dict[str, Any] = {}

    async def run(name: str, **arguments: Any) -> Any:
        result = await client.call_tool("run", arguments)
        assert not result.is_error, result.content
        done[name] = result
        return result.structured_content

    heard = await run("transcription", prompt="Transcribe this voice memo", audio=b64(wav_bytes()),
                      task="automatic-speech-recognition")  # fmt: skip
    assert heard["model"] in SPEECH and heard["text"].startswith("transcript by")
    fake.down.add(heard["model"].lower())
    fallback = await run("fallback", prompt="Transcribe this voice memo", audio=b64(wav_bytes()),
                         task="automatic-speech-recognition")  # fmt: skip
    assert fallback["model"] != heard["model"] and fallback["fallback"] == "candidate"
    assert [a["outcome"] for a in fallback["attempts"]] == ["http_503", "ok"]
    fake.down.clear()
    seen = await run(
        "chat with an image", prompt="What is in this photo?", image=b64(png_bytes()), task="chat"
    )
    assert seen["task"] == "image-text-to-text" and "(with an image)" in seen["text"]
    listened = await run("chat with audio", prompt="What is said?", audio=b64(wav_bytes()), task="chat")
    assert listened["task"] == "audio-text-to-text" and "(with audio)" in listened["text"]
    french = await run("translation", prompt="Translate 'good morning' into French", task="translation")
    assert french["output"] == {"translation_text": french["text"]}
    summary = await run(
        "summary", prompt="Summarize: the council met and agreed the budget.", task="summarization"
    )
    assert summary["text"].startswith("summary by")
    poem = await run("poem", prompt="Write a short poem about the sea", task="chat")
    assert TASKS[poem["task"]].chat
    fox = await run("image generation", prompt="Draw a red fox in the snow", task="text-to-image")
    assert fox["output"]["mime_type"] == "image/png"
    images = [c for c in done["image generation"].content if c.type == "image"]
    from PIL import Image

    assert len(images) == 1 and Image.open(io.BytesIO(base64.b64decode(images[0].data))).size == (32, 24)
    any_audio = await run("audio, any task", prompt="What is this recording?", audio=b64(wav_bytes()))
    assert "audio" in TASKS[any_audio["task"]].takes
    routed = await client.call_tool("route", {"prompt": "transcribe my memo", "top_k": 3,
                                              "task": "automatic-speech-recognition"})  # fmt: skip
    ranked = routed.structured_content["result"]
    assert {r["task"] for r in ranked} == {"automatic-speech-recognition"} and len(ranked) == 2
    listed = (await client.call_tool("tasks", {})).structured_content["result"]
    assert {"task": "text-to-image", "inputs": "text", "models": 2, "runs": True} in listed
    refused = await client.call_tool("run", {"prompt": "what is this", "image": b64(b"not an image")})
    assert refused.is_error and "not an image" in refused.content[0].text
    missing = await client.call_tool("run", {"prompt": "a video of a fox", "task": "text-to-video"})
    assert missing.is_error and "text-to-video" in missing.content[0].text
    assert fake.refused() == []
    return {name: result.structured_content for name, result in done.items()}


@pytest.mark.slow
def test_mcp_over_stdio_with_the_sdk_client(router_dir: Path, fake_api: Any) -> None:
    fake, upstream = fake_api
    fake.clear()
    command = StdioServerParameters(
        command=sys.executable,
        args=[
            "-m",
            "hubroute.cli.main",
            "mcp",
            "--router",
            str(router_dir),
            "--inference-url-template",
            fake.url_template(upstream),
        ],  # fmt: skip
        env={**os.environ, "HF_TOKEN": "hf_must_not_leave"},
    )

    async def scenario() -> dict[str, Any]:
        async with Client(command, read_timeout_seconds=120) as client:
            return await everyday_flows(client, fake)

    results = asyncio.run(scenario())
    assert len(results) == 9
    assert all(c.headers.get("authorization") is None for c in fake.calls)  # the Hub token stayed home


def test_mcp_over_streamable_http_with_the_sdk_client(router_dir: Path, fake_api: Any) -> None:
    fake, upstream = fake_api
    fake.clear()
    config = RunConfig(inference_url_template=fake.url_template(upstream))
    runner = Runner(
        HubRouter.from_pretrained(router_dir).eval(), config, policy=config.media_policy(allow_paths=False)
    )
    with BackgroundServer(create_mcp_server(runner).streamable_http_app()) as server:

        async def scenario() -> dict[str, Any]:
            async with Client(f"{server.url}/mcp") as client:
                return await everyday_flows(client, fake)

        assert len(asyncio.run(scenario())) == 9
    keyed = require_api_key(create_mcp_server(runner).streamable_http_app(), "mcp-key")
    with BackgroundServer(keyed) as server:
        assert httpx.post(f"{server.url}/mcp", json={}).status_code == 401
        assert (
            httpx.post(f"{server.url}/mcp", json={}, headers={"authorization": "Bearer wrong"}).status_code
            == 401
        )


def test_files_are_read_only_from_the_files_root(router_dir: Path, fake_api: Any, tmp_path: Path) -> None:
    fake, upstream = fake_api
    fake.clear()
    (tmp_path / "memo.wav").write_bytes(wav_bytes())
    (tmp_path.parent / "secret.wav").write_bytes(wav_bytes())
    config = RunConfig(inference_url_template=fake.url_template(upstream))
    runner = Runner(
        HubRouter.from_pretrained(router_dir).eval(), config, policy=config.media_policy(allow_paths=False)
    )

    async def scenario(server: Any) -> list[Any]:
        async with Client(server) as client:
            return [await client.call_tool("run", {"prompt": "what is said", "audio": path})
                    for path in ("/memo.wav", "../secret.wav", "/etc/passwd")]  # fmt: skip

    inside, outside, system = asyncio.run(scenario(create_mcp_server(runner, files_root=tmp_path)))
    assert not inside.is_error and "audio" in TASKS[inside.structured_content["task"]].takes
    assert outside.is_error and system.is_error and "not a file inside --files-root" in system.content[0].text
    (no_files,) = asyncio.run(scenario(create_mcp_server(runner)))[:1]
    assert no_files.is_error and "reads no files" in no_files.content[0].text
