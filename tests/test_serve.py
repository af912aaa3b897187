"""``hubroute serve`` end to end: uvicorn on 127.0.0.1, the real ``openai`` and ``httpx`` clients, the fake
inference provider standing in for Inference Providers (404 not deployed, 503, slow)."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hubroute import EncoderConfig, HubRouter, ModelRecord, RouterConfig
from hubroute.serve import ServeConfig, create_app
from hubroute.serve.batching import MicroBatcher, RouteKey
from hubroute.testing.fake_provider import FakeProvider
from hubroute.testing.server import BackgroundServer

pytestmark = pytest.mark.timeout(120)

# Chat models only: --inference-base-url (an OpenAI-compatible server) runs chat completions and nothing else.
GEN, VLM, CONV = (
    "Natural Language Processing Text Generation",
    "Multimodal Image-Text-to-Text",
    "Natural Language Processing Conversational",
)
DOMAINS = [GEN, VLM, CONV]


def records(prefix: str = "org", count: int = 9) -> list[ModelRecord]:
    return [
        ModelRecord(
            f"{prefix}/model-{i}", f"family-{i % 4}", DOMAINS[i % 3], f"Model {i} handles {DOMAINS[i % 3]}."
        )
        for i in range(count)
    ]


def build_router(encoder: Path, prefix: str = "org") -> HubRouter:
    config = RouterConfig(encoder=EncoderConfig(str(encoder), max_length=64))
    router = HubRouter(config)
    router.add_models(records(prefix))
    return router.eval()


@pytest.fixture(scope="module")
def router_dir(tiny_encoder_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("serve") / "router"
    build_router(tiny_encoder_path).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def router(router_dir: Path) -> HubRouter:
    return HubRouter.from_pretrained(router_dir)


@pytest.fixture(scope="module")
def provider() -> Iterator[tuple[FakeProvider, BackgroundServer]]:
    fake = FakeProvider(slow_seconds=3.0)
    with fake.serve() as server:
        yield fake, server


@pytest.fixture
def fake(provider: tuple[FakeProvider, BackgroundServer]) -> FakeProvider:
    provider[0].faults.clear()
    provider[0].requests.clear()
    return provider[0]


@contextmanager
def serving(source: Any, **settings: Any) -> Iterator[BackgroundServer]:
    lookup = settings.pop("lookup", None)
    app = create_app(source, ServeConfig(**settings), servable_lookup=lookup)
    with BackgroundServer(app) as server:
        yield server


@pytest.fixture
def server(
    router_dir: Path, provider: tuple[FakeProvider, BackgroundServer], fake: FakeProvider, tmp_path: Path
):
    with serving(str(router_dir), inference_base_url=provider[1].url, deadline=2.0,
                 feedback=str(tmp_path / "feedback.jsonl")) as running:  # fmt: skip
        yield running


def chat_client(server: BackgroundServer, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


def ask(client: openai.OpenAI, text: str, **kwargs: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model=kwargs.pop("model", "hubroute/auto"), messages=[{"role": "user", "content": text}], **kwargs
    )


def metrics(server: BackgroundServer) -> dict[str, float]:
    text = httpx.get(f"{server.url}/metrics").text
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}"] = sample.value
    return values


# ----------------------------------------------------------------------------------------------- /v1/route --
def test_route_matches_in_process_route_with_every_option(
    server: BackgroundServer, router: HubRouter
) -> None:
    client = httpx.Client(base_url=server.url)
    one = client.post("/v1/route", json={"prompt": "transcribe this audio clip", "top_k": 3}).json()
    expected = router.route("transcribe this audio clip", top_k=3)
    assert [r["model_id"] for r in one["results"][0]] == [r.model_id for r in expected]
    assert one["results"][0][0]["score"] == pytest.approx(expected[0].score, abs=1e-5)
    prompts = ["detect the cars", "translate this sentence"]
    options = {"top_k": 2, "level": "family", "filters": {"domains": [VLM, CONV], "exclude_model_ids": "org/model-1"},
               "explain": True}  # fmt: skip
    many = client.post("/v1/route", json={"prompt": prompts, **options}).json()
    local = router.route(prompts, top_k=2, level="family", filters={"domains": [VLM, CONV],
                         "exclude_model_ids": ["org/model-1"]}, explain=True)  # fmt: skip
    assert [[(r["model_id"], r["group"]) for r in rs] for rs in many["results"]] == [
        [(r.model_id, r.group) for r in rs] for rs in local
    ]
    assert many["results"][0][0]["explanation"]["level_scores"].keys() == {"model", "family", "domain"}
    abstain = client.post("/v1/route", json={"prompt": "x y z", "min_score": 1.0}).json()
    assert abstain["results"] == [[]]
    backoff = client.post(
        "/v1/route", json={"prompt": "x y z", "min_score": -1.0, "on_low_confidence": "backoff"}
    )
    assert backoff.json()["results"][0][0]["level"] == "model"
    assert client.get("/openapi.json").json()["paths"].keys() >= {
        "/v1/route",
        "/v1/chat/completions",
        "/v1/feedback",
    }


def test_bad_input_gets_openai_style_errors(router_dir: Path, provider: Any) -> None:
    with serving(
        str(router_dir), api_key="sekret", max_body_bytes=2000, inference_base_url=provider[1].url
    ) as srv:
        good = {"authorization": "Bearer sekret"}
        client = httpx.Client(base_url=srv.url, headers=good)

        def error(response: httpx.Response, status: int) -> dict[str, Any]:
            assert response.status_code == status, response.text
            body = response.json()["error"]
            assert body.keys() == {"message", "type", "param", "code"}
            return body

        bad_json = client.post(
            "/v1/route", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert error(bad_json, 400)["code"] == "invalid_json"
        assert error(client.post("/v1/route", json={"prompt": "a", "bogus": 1}), 400)["param"] == "bogus"
        assert error(client.post("/v1/route", json={"prompt": "a", "filters": {"colour": "red"}}), 400)[
            "code"
        ] == ("unknown_parameter")
        assert error(client.post("/v1/route", json={"prompt": "   "}), 400)["code"] == "invalid_prompt"
        assert error(client.post("/v1/route", json={"prompt": []}), 400)["code"] == "invalid_prompt"
        assert error(client.post("/v1/route", json={"prompt": "a", "top_k": 0}), 400)["param"] == "top_k"
        bad_date = client.post("/v1/route", json={"prompt": "a", "filters": {"created_after": "yesterday"}})
        assert "ISO date" in error(bad_date, 400)["message"]
        assert error(client.post("/v1/route", json={"prompt": "a" * 5000}), 413)["code"] == "body_too_large"
        chunked = client.post("/v1/route", content=iter([b'{"prompt": "', b"a" * 3000, b'"}']))
        assert error(chunked, 413)["code"] == "body_too_large"
        no_key = httpx.post(f"{srv.url}/v1/route", json={"prompt": "a"})
        assert error(no_key, 401)["type"] == "authentication_error"
        wrong = httpx.post(
            f"{srv.url}/v1/route", json={"prompt": "a"}, headers={"authorization": "Bearer nope"}
        )
        assert "sekret" not in error(wrong, 401)["message"]
        assert httpx.get(f"{srv.url}/healthz").status_code == 200  # health needs no key
        no_messages = client.post("/v1/chat/completions", json={"model": "hubroute/auto", "messages": []})
        assert error(no_messages, 400)["param"] == "messages"
        only_system = client.post("/v1/chat/completions", json={"model": "hubroute/auto",
                                  "messages": [{"role": "system", "content": "be brief"}]})  # fmt: skip
        assert error(only_system, 400)["code"] == "no_user_message"
        unknown = client.post("/v1/chat/completions", json={"model": "nobody/model", "messages": [{"role": "user",
                              "content": "hi"}]})  # fmt: skip
        assert error(unknown, 404)["code"] == "model_not_found"
        with pytest.raises(openai.AuthenticationError):
            ask(chat_client(srv, "wrong"), "hello")
        assert ask(chat_client(srv, "sekret"), "hello").headers["x-hubroute-model"].startswith("org/")


# -------------------------------------------------------------------------------------------- batching -------
class _CountingRouter:
    """Stands in for a router: records each route() call."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], dict[str, Any]]] = []

    def route(self, prompts: list[str], **kwargs: Any) -> list[list[Any]]:
        if any(p == "bad" for p in prompts):
            raise ValueError("bad prompt")
        self.calls.append((list(prompts), kwargs))
        return [[f"{p}:{kwargs['top_k']}"] for p in prompts]


def test_micro_batcher_shares_one_route_call_per_option_set() -> None:
    fake_router = _CountingRouter()

    async def scenario() -> list[Any]:
        batcher = MicroBatcher(lambda: fake_router, max_batch=64, max_wait_ms=5)  # type: ignore[arg-type,return-value]
        await batcher.start()
        jobs = [batcher.route([f"p{i}"], RouteKey(top_k=1 + i % 2)) for i in range(10)]
        jobs.append(batcher.route(["bad"], RouteKey(top_k=1)))
        jobs.append(batcher.route(["q1", "q2"], RouteKey(top_k=1)))
        out = await asyncio.gather(*jobs, return_exceptions=True)
        await batcher.stop()
        return out

    out = asyncio.run(scenario())
    assert [o[0] for o in out[:10]] == [[[f"p{i}:{1 + i % 2}"]] for i in range(10)]  # type: ignore[index]
    assert isinstance(out[10], ValueError)  # only the bad request fails
    assert out[11][0] == [["q1:1"], ["q2:1"]]  # type: ignore[index]
    # One call per option set (the failed group is then retried request by request).
    batched = [prompts for prompts, _ in fake_router.calls if len(prompts) > 2]
    assert sorted(len(p) for p in batched) == [5]
    assert sum(len(p) for p, _ in fake_router.calls) == 12


def test_concurrent_requests_are_batched_and_all_answered(
    server: BackgroundServer, router: HubRouter
) -> None:
    prompts = [f"transcribe recording number {i}" for i in range(48)]

    async def hammer() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=server.url, limits=httpx.Limits(max_connections=32)) as client:
            replies = await asyncio.gather(*(client.post("/v1/route", json={"prompt": p}) for p in prompts))
        assert all(r.status_code == 200 for r in replies)
        return [r.json() for r in replies]

    replies = asyncio.run(hammer())
    expected = router.route(prompts)
    assert [r["results"][0][0]["model_id"] for r in replies] == [e[0].model_id for e in expected]
    seen = metrics(server)
    batches, routed = seen["hubroute_route_batch_prompts_count{}"], seen["hubroute_route_batch_prompts_sum{}"]
    assert routed >= len(prompts) and batches < routed  # some encoder passes served several requests


# ----------------------------------------------------------------------------------- chat completions ------
def test_openai_client_gets_the_routed_models_answer_with_the_decision(
    server: BackgroundServer, fake: FakeProvider, router: HubRouter
) -> None:
    client = chat_client(server)
    raw = ask(client, "detect the objects in this picture", max_tokens=16)
    chosen = router.route("detect the objects in this picture", top_k=3)
    assert raw.headers["x-hubroute-model"] == chosen[0].model_id
    assert float(raw.headers["x-hubroute-score"]) == pytest.approx(chosen[0].score, abs=1e-4)
    assert raw.headers["x-hubroute-fallback"] == "none"
    assert raw.headers["x-hubroute-domain"] == chosen[0].domain
    assert raw.headers["x-hubroute-alternatives"].split(",") == [r.model_id for r in chosen[1:]]
    completion = raw.parse()
    assert (
        completion.choices[0].message.content
        == f"{chosen[0].model_id} answers: detect the objects in this picture"
    )
    decision = completion.model_extra["hubroute"]
    assert decision["model"] == chosen[0].model_id and decision["attempts"][0]["outcome"] == "ok"
    assert fake.requests[-1].model == chosen[0].model_id and fake.requests[-1].body["max_tokens"] == 16
    streamed = ask(client, "detect the objects in this picture", stream=True)
    assert streamed.headers["x-hubroute-model"] == chosen[0].model_id
    assert streamed.headers["content-type"].startswith("text/event-stream")
    chunks = list(streamed.parse())
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        == completion.choices[0].message.content
    )
    assert chunks[0].model_extra["hubroute"]["model"] == chosen[0].model_id
    assert fake.requests[-1].stream


def test_a_404_falls_back_to_the_next_candidate(
    server: BackgroundServer, fake: FakeProvider, router: HubRouter
) -> None:
    client = chat_client(server)
    chosen = [r.model_id for r in router.route("translate this into German", top_k=3)]
    fake.faults[chosen[0]] = "not_deployed"
    for stream in (False, True):
        raw = ask(client, "translate this into German", stream=stream)
        assert raw.headers["x-hubroute-model"] == chosen[1]
        assert raw.headers["x-hubroute-fallback"] == "candidate"
        assert raw.headers["x-hubroute-attempts"] == f"{chosen[0]}=http_404,{chosen[1]}=ok"
        parsed = raw.parse()
        text = (
            "".join(c.choices[0].delta.content or "" for c in parsed if c.choices)
            if stream
            else parsed.choices[0].message.content
        )
        assert text.startswith(f"{chosen[1]} answers:")
    assert fake.models_called() == [chosen[0], chosen[1]] * 2
    seen = metrics(server)
    assert seen["hubroute_fallbacks_total{kind=candidate}"] == 2
    assert seen["hubroute_inference_attempts_total{outcome=http_404}"] == 2


def test_503_and_timeouts_fall_back_to_the_family_and_domain_backoff(
    router_dir: Path, provider: Any, fake: FakeProvider, router: HubRouter
) -> None:
    candidates = [r.model_id for r in router.route("recognise the speech", top_k=2)]
    fake.faults.update({candidates[0]: "unavailable", candidates[1]: "slow"})
    with serving(
        str(router_dir),
        inference_base_url=provider[1].url,
        deadline=2.5,
        attempt_timeout=0.8,
        fallback_candidates=2,
    ) as srv:
        raw = ask(chat_client(srv), "recognise the speech")
        assert raw.headers["x-hubroute-fallback"] in ("family", "domain")
        answered = raw.headers["x-hubroute-model"]
        assert answered not in candidates and raw.parse().choices[0].message.content.startswith(answered)
        outcomes = [a["outcome"] for a in raw.parse().model_extra["hubroute"]["attempts"]]
        assert outcomes == ["http_503", "timeout", "ok"]
        fake.faults.update(dict.fromkeys(router.registry.model_ids, "slow"))
        with pytest.raises(openai.APIStatusError) as failed:
            ask(chat_client(srv), "recognise the speech")
        assert failed.value.status_code == 504
        assert failed.value.response.json()["error"]["code"] == "all_models_failed"
        assert failed.value.response.headers["x-hubroute-fallback"] == "failed"
        assert (
            httpx.get(f"{srv.url}/healthz").status_code == 200
        )  # the provider's failures never stop the server


def test_route_only_direct_models_and_an_unreachable_provider(router_dir: Path, fake: FakeProvider) -> None:
    with serving(str(router_dir), inference_base_url="http://127.0.0.1:9", deadline=2.0) as srv:
        client = chat_client(srv)
        decision = ask(client, "translate this", extra_body={"hubroute": {"route_only": True}})
        assert decision.headers["x-hubroute-model"].startswith("org/")
        assert decision.parse().model_extra["hubroute"]["model"] == decision.headers["x-hubroute-model"]
        with pytest.raises(openai.UnprocessableEntityError) as abstained:
            ask(client, "translate this", extra_body={"hubroute": {"min_score": 1.0}})
        assert abstained.value.response.json()["error"]["code"] == "no_route"
        by_header = ask(client, "translate this", extra_headers={"x-hubroute-route-only": "true"})
        assert by_header.headers["x-hubroute-model"] == decision.headers["x-hubroute-model"]
        with pytest.raises(openai.APIStatusError) as down:
            ask(client, "translate this")
        assert down.value.status_code == 502
        assert down.value.response.json()["error"]["code"] == "all_models_failed"
        assert httpx.get(f"{srv.url}/healthz").json()["models"] == 9
    assert fake.requests == []


def test_a_registry_model_id_is_called_directly(server: BackgroundServer, fake: FakeProvider) -> None:
    raw = ask(chat_client(server), "anything at all", model="org/model-4")
    assert raw.headers["x-hubroute-model"] == "org/model-4" and raw.headers["x-hubroute-fallback"] == "none"
    assert fake.models_called() == ["org/model-4"]


def test_a_custom_inference_url_gets_its_own_key_never_the_hub_token(
    router_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 30: ``HF_TOKEN`` is for the Hub; an OpenAI-compatible server gets ``--inference-api-key`` (or
    ``HUBROUTE_INFERENCE_API_KEY``) or no ``Authorization`` header, and no key is ever echoed or logged."""
    hub_token, key = "hf_serve_secret_token_123", "sk-local-provider-456"
    monkeypatch.setenv("HF_TOKEN", hub_token)
    guarded = FakeProvider(token=key, faults={"org/model-0": "not_deployed"})
    caplog.set_level(logging.DEBUG)
    with guarded.serve() as upstream, serving(str(router_dir), inference_base_url=upstream.url,
                                              inference_api_key=key) as srv:  # fmt: skip
        raw = ask(chat_client(srv), "hello", model="org/model-3")
        assert raw.parse().choices[0].message.content.startswith("org/model-3")
        failing = httpx.post(f"{srv.url}/v1/chat/completions", json={"model": "org/model-0",
                             "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
        assert failing.status_code == 502
        seen = [
            raw.text,
            str(raw.headers),
            failing.text,
            str(failing.headers),
            httpx.get(f"{srv.url}/metrics").text,
        ]
    assert len(guarded.requests) == 2 and all(r.authorized for r in guarded.requests)
    assert {r.headers.get("authorization") for r in guarded.requests} == {f"Bearer {key}"}
    monkeypatch.setenv("HUBROUTE_INFERENCE_API_KEY", key)  # the environment variable, when no flag is given
    with guarded.serve() as upstream, serving(str(router_dir), inference_base_url=upstream.url) as srv:
        assert ask(chat_client(srv), "hello", model="org/model-3").headers["x-hubroute-fallback"] == "none"
    monkeypatch.delenv("HUBROUTE_INFERENCE_API_KEY")
    open_provider = FakeProvider()  # no key at all: no Authorization header (not the Hub token)
    with open_provider.serve() as upstream, serving(str(router_dir), inference_base_url=upstream.url) as srv:
        ask(chat_client(srv), "hello", model="org/model-3")
    assert [r.headers.get("authorization") for r in open_provider.requests] == [None]
    everything = "".join(map(str, guarded.requests + open_provider.requests)) + "".join(seen)
    assert hub_token not in everything and key not in "".join(seen)
    assert hub_token not in caplog.text and key not in caplog.text


# ------------------------------------------------------------------------------ models, metrics, servable ----
def test_models_healthz_and_metrics(server: BackgroundServer, fake: FakeProvider) -> None:
    listed = chat_client(server).models.list()
    assert [m.id for m in listed.data] == ["hubroute/auto"] + [f"org/model-{i}" for i in range(9)]
    health = httpx.get(f"{server.url}/healthz").json()
    assert health["status"] == "ok" and health["models"] == 9
    client = httpx.Client(base_url=server.url)
    client.post("/v1/route", json={"prompt": ["transcribe", "translate"]})
    client.post("/v1/route", json={"prompt": "nothing reaches this", "min_score": 1.0})
    client.post("/v1/route", json={"prompt": "a", "bogus": True})
    seen = metrics(server)
    assert seen["hubroute_requests_total{endpoint=/v1/route,status=200}"] == 2
    assert seen["hubroute_requests_total{endpoint=/v1/route,status=400}"] == 1
    assert seen["hubroute_abstentions_total{}"] == 1
    assert sum(v for k, v in seen.items() if k.startswith("hubroute_routed_total")) == 2
    assert seen["hubroute_request_latency_seconds_count{endpoint=/v1/route}"] == 3
    assert seen["hubroute_registry_models{}"] == 9


def test_servable_only_routes_to_served_models_and_caches_lookups(router_dir: Path, provider: Any) -> None:
    served = {"org/model-2", "org/model-7"}
    asked: list[str] = []
    lock = threading.Lock()

    def lookup(model_id: str) -> bool:
        with lock:
            asked.append(model_id)
        if model_id == "org/model-5":
            raise RuntimeError("Hub down")
        return model_id in served

    with serving(
        str(router_dir), servable_only=True, lookup=lookup, inference_base_url=provider[1].url
    ) as srv:
        client = httpx.Client(base_url=srv.url)
        for text in ("transcribe", "detect the cars", "translate"):
            ranked = client.post("/v1/route", json={"prompt": text, "top_k": 5}).json()["results"][0]
            assert {r["model_id"] for r in ranked} == served
        narrowed = client.post("/v1/route", json={"prompt": "x", "top_k": 5,
                                                  "filters": {"model_ids": ["org/model-2", "org/model-3"]}})  # fmt: skip
        assert [r["model_id"] for r in narrowed.json()["results"][0]] == ["org/model-2"]
        raw = ask(chat_client(srv), "transcribe")
        assert raw.headers["x-hubroute-model"] in served
    assert sorted(asked) == sorted(
        f"org/model-{i}" for i in range(9)
    )  # each model looked up once (TTL cache)


def test_hub_servable_lookup_reads_the_provider_mapping() -> None:
    from types import SimpleNamespace

    from hubroute.serve.servable import is_served

    live = SimpleNamespace(
        inference_provider_mapping=[SimpleNamespace(status="staging"), SimpleNamespace(status="live")]
    )
    assert is_served(live)
    assert not is_served(SimpleNamespace(inference_provider_mapping=[SimpleNamespace(status="error")]))
    assert not is_served(SimpleNamespace(inference_provider_mapping=None))


# -------------------------------------------------------------------------------------------- hot reload -----
def test_hot_reload_under_32_concurrent_clients_fails_no_request(
    tiny_encoder_path: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "live-router"
    build_router(tiny_encoder_path, "old").save_pretrained(folder)
    replacement = build_router(tiny_encoder_path, "new")
    with serving(str(folder), watch=0.1) as srv:
        first = httpx.get(f"{srv.url}/healthz").json()["revision"]
        stop = threading.Event()
        failures: list[str] = []
        seen: list[tuple[str, str]] = []

        def client_loop(worker: int) -> None:
            with httpx.Client(base_url=srv.url, timeout=30) as client:
                count = 0
                while not stop.is_set() or count < 3:
                    reply = client.post(
                        "/v1/route", json={"prompt": f"transcribe clip {worker} {count}", "top_k": 2}
                    )
                    count += 1
                    if reply.status_code != 200:
                        failures.append(reply.text)
                        continue
                    body = reply.json()
                    seen.append((body["revision"], body["results"][0][0]["model_id"]))

        with ThreadPoolExecutor(32) as pool:
            workers = [pool.submit(client_loop, i) for i in range(32)]
            while len(seen) < 64:
                threading.Event().wait(0.02)
            replacement.save_pretrained(folder)
            for _ in range(600):  # until the new router serves (at most ~60 s on a loaded machine)
                if any(m.startswith("new/") for _, m in seen[-32:]):
                    break
                threading.Event().wait(0.1)
            stop.set()
            for worker in workers:
                worker.result()
        assert failures == []
        health = httpx.get(f"{srv.url}/healthz").json()
        assert health["revision"] != first and health["reloads"] == 1
        prefixes = {rev: {m.split("/")[0] for r, m in seen if r == rev} for rev, _ in seen}
        assert prefixes == {
            first: {"old"},
            health["revision"]: {"new"},
        }  # each revision answers with its own models
        after = [m for _, m in seen[seen.index(next(s for s in seen if s[0] != first)) :]]
        assert all(m.startswith("new/") for m in after)
        assert metrics(srv)["hubroute_reloads_total{outcome=ok}"] == 1


def test_a_revision_that_fails_to_load_keeps_the_old_router_serving(
    tiny_encoder_path: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "router"
    build_router(tiny_encoder_path).save_pretrained(folder)
    with serving(str(folder), watch=0.1) as srv:
        before = httpx.get(f"{srv.url}/healthz").json()["revision"]
        config = json.loads((folder / "config.json").read_text())
        config["checksums"] = {k: "0" * 64 for k in config.get("checksums", {})} or {
            "registry.json": "0" * 64
        }
        (folder / "config.json").write_text(json.dumps(config))
        for _ in range(300):
            if metrics(srv).get("hubroute_reloads_total{outcome=failed}"):
                break
            threading.Event().wait(0.1)
        assert metrics(srv)["hubroute_reloads_total{outcome=failed}"] == 1
        reply = httpx.post(f"{srv.url}/v1/route", json={"prompt": "transcribe"})
        assert reply.status_code == 200 and reply.json()["revision"] == before
        shutil.rmtree(folder)  # the router is deleted
        threading.Event().wait(0.3)  # a missing folder is not a new revision
        assert httpx.post(f"{srv.url}/v1/route", json={"prompt": "transcribe"}).json()["revision"] == before


def test_create_app_takes_a_loaded_router_and_needs_one(router: HubRouter) -> None:
    app = create_app(router)
    assert app.state.hubroute.holder.router is router
    with pytest.raises(ValueError, match="needs a router"):
        create_app()
    with pytest.raises(ValueError, match="deadline"):
        ServeConfig(deadline=0)


def test_watch_follows_a_hub_repo_to_its_newest_commit(
    hub: Any, make_repo_id: Any, fresh_cache: Path, tiny_encoder_path: Path, tmp_path: Path
) -> None:
    from huggingface_hub import HfApi

    api, repo_id = HfApi(token=hub.write_token), make_repo_id("served")
    api.create_repo(repo_id)
    for prefix in ("old", "new"):
        build_router(tiny_encoder_path, prefix).save_pretrained(tmp_path / prefix)
    first = api.upload_folder(repo_id=repo_id, folder_path=tmp_path / "old").oid
    with serving(repo_id, watch=0.2) as srv:
        assert httpx.get(f"{srv.url}/healthz").json()["revision"] == first
        second = api.upload_folder(repo_id=repo_id, folder_path=tmp_path / "new", delete_patterns="*").oid
        for _ in range(300):
            if httpx.get(f"{srv.url}/healthz").json()["revision"] == second:
                break
            threading.Event().wait(0.1)
        reply = httpx.post(f"{srv.url}/v1/route", json={"prompt": "transcribe"}).json()
        assert reply["revision"] == second and reply["results"][0][0]["model_id"].startswith("new/")


def test_hubroute_and_its_cli_import_without_the_serve_stack() -> None:
    import subprocess
    import sys

    code = "import sys, hubroute, hubroute.cli.main; print(sorted(m for m in ('fastapi', 'uvicorn', 'prometheus_client') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("argv", [["serve", "--help"], ["bench", "serve", "--help"]])
def test_serve_commands_have_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from hubroute.cli.main import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0 and "--router" in capsys.readouterr().out


def test_a_stream_that_breaks_midway_ends_with_an_error_event(
    server: BackgroundServer, fake: FakeProvider
) -> None:
    fake.faults["org/model-2"] = "mid_stream"
    stream = ask(chat_client(server), "say something", model="org/model-2", stream=True)
    assert stream.headers["x-hubroute-model"] == "org/model-2"
    with pytest.raises(openai.APIError, match="failed mid-stream"):
        for _ in stream.parse():
            pass
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    assert metrics(server)["hubroute_inference_attempts_total{outcome=stream_error}"] == 1
