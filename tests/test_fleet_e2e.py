"""The continual loop across a fleet, end to end on loopback: two ``hubroute serve`` replicas behind the real
LiteLLM proxy, their feedback in one dataset repo of the local Hub, ``hubroute update --feedback ORG/NAME``
pushing a candidate, shadow numbers, ``hubroute promote`` and the switch under traffic; and a replica killed
mid-run that loses no acknowledged feedback row."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from factories import FLEET_CHAT_DOMAINS, FLEET_TRAINING, fleet_router, fleet_rows
from huggingface_hub import HfApi
from openai import OpenAI

from hubroute import HubRouter
from hubroute.cli.main import main
from hubroute.serve.promote import read_shadow
from hubroute.testing.fake_provider import FakeProvider
from hubroute.testing.litellm_proxy import LiteLLMProxy, litellm_config, missing_proxy_modules
from hubroute.testing.server import ServeProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TRAINING = FLEET_TRAINING
WATCH = 1.0


def fed_rows(numbers: range = range(3)) -> list[tuple[str, str]]:
    return fleet_rows(numbers)


def push_tiny_router(encoder: Path, repo: str, token: str) -> HubRouter:
    router = fleet_router(
        encoder, FLEET_CHAT_DOMAINS
    )  # ships the tiny encoder: the replicas load it from the Hub
    router.push_to_hub(repo, token=token, tag="serving")
    return router


def replica_env(token: str) -> dict[str, str]:
    """What a deployed replica has: a Hub write token, used implicitly (the suite turns that off)."""
    return {"HF_TOKEN": token, "HF_HUB_DISABLE_IMPLICIT_TOKEN": "0", "OMP_NUM_THREADS": "1"}


def wait_for(check, timeout: float, what: str, every: float = 0.2):  # noqa: ANN001, ANN201 - a test helper
    stop = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < stop, f"timed out waiting for {what}"
        time.sleep(every)


def hub_rows(dataset: str, prefix: str = "feedback/") -> list[dict]:
    api = HfApi()
    files = [f for f in api.list_repo_files(dataset, repo_type="dataset") if f.startswith(prefix)]
    revision = api.dataset_info(dataset).sha
    rows = []
    for name in files:
        path = api.hf_hub_download(dataset, name, repo_type="dataset", revision=revision)
        rows += [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return rows


@pytest.mark.skipif(bool(missing_proxy_modules()), reason=f"pip install {' '.join(missing_proxy_modules())}")
def test_two_replicas_behind_litellm_learn_shadow_and_switch_without_a_failed_request(
    tiny_encoder_path: Path, tmp_path: Path, hub, make_repo_id, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_TOKEN", hub.write_token)  # update and promote use it as a deployment does
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_IMPLICIT_TOKEN", False)
    started = time.monotonic()
    repo, dataset = make_repo_id("router"), make_repo_id("feedback")
    push_tiny_router(tiny_encoder_path, repo, hub.write_token)
    provider = FakeProvider()
    with provider.serve() as upstream:
        replicas = [
            ServeProcess(
                ["--router", repo, "--revision", "serving", "--watch", str(WATCH), "--shadow-revision", "candidate",
                 "--feedback-repo", dataset, "--feedback-replica", f"replica-{i}", "--feedback-dir",
                 str(tmp_path / f"replica-{i}"), "--feedback-every", "1", "--inference-base-url", upstream.url],
                env=replica_env(hub.write_token), log=str(tmp_path / f"replica-{i}.log"),
            ).launch()
            for i in range(2)
        ]  # fmt: skip
        proxy = LiteLLMProxy(litellm_config([r.url for r in replicas]), log=tmp_path / "litellm.log")
        try:
            proxy.start()
            for replica in replicas:
                replica.wait()
            print(f"fleet up in {time.monotonic() - started:.1f} s")
            run_the_loop(repo, dataset, replicas, proxy, provider, tmp_path, capsys)
        finally:
            proxy.stop()
            codes = [replica.stop() for replica in replicas]
    assert set(codes) <= {0, -15}  # a graceful stop (uvicorn re-raises SIGTERM once it has shut down)
    print(f"whole test: {time.monotonic() - started:.1f} s")


def run_the_loop(repo, dataset, replicas, proxy, provider, tmp_path, capsys) -> None:  # noqa: ANN001
    client = OpenAI(base_url=f"{proxy.url}/v1", api_key="none", max_retries=0, timeout=60)
    api = HfApi()
    serving = api.model_info(repo, revision="serving").sha

    def ask(prompt: str) -> tuple[str, str]:
        """Chat through LiteLLM; return (the model that answered, the replica that routed it)."""
        raw = client.chat.completions.with_raw_response.create(
            model="hubroute", messages=[{"role": "user", "content": prompt}]
        )
        answer = raw.parse().choices[0].message.content or ""
        return answer.split(" answers: ")[0], raw.headers.get("x-litellm-model-api-base", "").removesuffix(
            "/v1"
        )

    # 1. Traffic through LiteLLM reaches both replicas; feedback through both lands in one dataset repo.
    rows = fed_rows()
    answered = [ask(prompt) for prompt, _ in rows]
    before = sum(model == fed for (model, _), (_, fed) in zip(answered, rows))
    assert {url for _, url in answered} == {r.url for r in replicas}, "LiteLLM balances over both replicas"
    for i, (prompt, model) in enumerate(rows):
        reply = httpx.post(f"{replicas[i % 2].url}/v1/feedback", json={"prompt": prompt, "model_id": model})
        assert reply.status_code == 200
    committed = wait_for(lambda: len(hub_rows(dataset)) == len(rows) and hub_rows(dataset), 60, "the commits")
    assert sorted((r["prompt"], r["model_id"]) for r in committed) == sorted(rows)
    assert {f.split("/")[1] for f in api.list_repo_files(dataset, repo_type="dataset") if f.startswith("feedback/")} == {
        "replica-0", "replica-1"
    }  # fmt: skip

    # 2. The update learns every replica's rows and pushes a candidate under the candidate tag.
    argv = ["update", "--router", repo, "--revision", "serving", "--feedback", dataset, "--push", repo,
            "--candidate-tag", "candidate", "--workdir", str(tmp_path / "update"), "--no-progress",
            "--training", json.dumps(TRAINING), "--max-forgetting", "100"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    candidate = api.model_info(repo, revision="candidate").sha
    assert candidate != serving and api.model_info(repo, revision="serving").sha == serving
    learned = HubRouter.from_pretrained(repo, revision="candidate")
    assert learned.training_state["feedback_repos"][dataset]["commit"] == api.dataset_info(dataset).sha

    # 3. Both replicas shadow the candidate; prompts that then get feedback score both revisions.
    for replica in replicas:
        wait_for(lambda r=replica: httpx.get(f"{r.url}/healthz").json()["shadow_revision"] == candidate,
                 60, "the shadow revision")  # fmt: skip
    for prompt, model in rows:
        _, url = ask(prompt)
        assert httpx.post(f"{url}/v1/feedback", json={"prompt": prompt, "model_id": model}).status_code == 200
    urls = [r.url for r in replicas]
    numbers = wait_for(
        lambda: (n := read_shadow(urls, serving, candidate)).feedback >= len(rows) and n, 30, "shadow"
    )
    print(f"shadow: {numbers.prompts} prompts, agreement {numbers.agreement():.1f}%, accuracy on {numbers.feedback} "
          f"with feedback: serving {numbers.accuracy('serving'):.1f}%, candidate {numbers.accuracy('candidate'):.1f}%")  # fmt: skip
    assert numbers.prompts >= len(rows) and numbers.accuracy("candidate") > numbers.accuracy("serving")

    # 4. Promotion moves the serving tag; both replicas switch within the watch interval, under traffic.
    failures: list[str] = []
    sent = [0]
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            try:
                ask(rows[sent[0] % len(rows)][0])
            except Exception as err:  # noqa: BLE001 - every failed request is counted
                failures.append(repr(err))
            sent[0] += 1

    with ThreadPoolExecutor(2) as pool:
        for _ in range(2):
            pool.submit(traffic)
        time.sleep(1)
        promoted_at = time.monotonic()
        assert main(["promote", "--router", repo, *(a for u in urls for a in ("--replica", u)),
                     "--min-prompts", str(len(rows)), "--min-feedback", str(len(rows)),
                     "--min-accuracy-gain", "10"]) == 0, capsys.readouterr()  # fmt: skip
        for replica in replicas:
            wait_for(lambda r=replica: httpx.get(f"{r.url}/healthz").json()["revision"] == candidate,
                     60, "the switch", every=0.05)  # fmt: skip
        switched = time.monotonic() - promoted_at
        time.sleep(1)
        stop.set()
    print(f"switch: both replicas serve {candidate[:12]} {switched:.1f} s after the promotion (watch {WATCH} s); "
          f"{sent[0]} requests through LiteLLM during it, {len(failures)} failed")  # fmt: skip
    assert api.model_info(repo, revision="serving").sha == candidate
    assert failures == [] and sent[0] > 0
    assert switched < WATCH + 20  # the poll interval, plus loading and warming the tiny router

    # 5. The fed prompts now route to the fed models.
    after = sum(ask(prompt)[0] == model for prompt, model in rows)
    print(f"fed prompts routed to the fed model: {before}/{len(rows)} before, {after}/{len(rows)} after")
    assert after >= 0.75 * len(rows) > before


def test_a_replica_killed_mid_run_loses_no_acknowledged_feedback_row(
    tiny_encoder_path: Path, tmp_path: Path, hub, make_repo_id
) -> None:
    repo, dataset = make_repo_id("router"), make_repo_id("feedback")
    push_tiny_router(tiny_encoder_path, repo, hub.write_token)
    args = ["--router", repo, "--feedback-repo", dataset, "--feedback-replica", "replica-0",
            "--feedback-dir", str(tmp_path / "replica-0"), "--feedback-every", "2"]  # fmt: skip
    env = replica_env(hub.write_token)
    acknowledged: list[str] = []
    errors: list[str] = []
    with ServeProcess(args, env=env, log=str(tmp_path / "first.log")) as replica:
        number = iter(range(10**6))
        lock = threading.Lock()

        def send() -> None:
            with httpx.Client(base_url=replica.url, timeout=30) as http:
                while True:
                    with lock:
                        prompt = f"transcribe the podcast episode {next(number)}"
                    try:
                        reply = http.post("/v1/feedback", json={"prompt": prompt, "model_id": "org/model-1"})
                    except httpx.HTTPError:
                        return  # the replica is gone
                    if reply.status_code == 200:
                        with lock:
                            acknowledged.append(prompt)
                    else:
                        errors.append(reply.text)

        threads = [threading.Thread(target=send) for _ in range(4)]
        for thread in threads:
            thread.start()
        wait_for(lambda: len(acknowledged) >= 50 and hub_rows(dataset), 120, "a first commit", every=0.1)
        time.sleep(0.5)  # rows keep coming: some acknowledged after the last commit
        replica.kill()  # SIGKILL mid-run: no shutdown, no final flush
        for thread in threads:
            thread.join(60)
    before = len(hub_rows(dataset))
    print(f"killed after {len(acknowledged)} acknowledged rows; {before} were committed before the kill")
    assert errors == [] and 0 < before < len(acknowledged)
    with ServeProcess(args, env=env, log=str(tmp_path / "second.log")):  # the same replica starts again
        rows = wait_for(
            lambda: (r := hub_rows(dataset)) and len(r) >= len(acknowledged) and r, 60, "the commit"
        )
    prompts = [r["prompt"] for r in rows]
    print(f"after the restart: {len(rows)} rows on the Hub, {len(acknowledged)} acknowledged")
    assert set(acknowledged) <= set(prompts) and len(prompts) == len(set(prompts))  # none lost, none twice
