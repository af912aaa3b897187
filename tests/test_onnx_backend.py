"""The ONNX Runtime inference backends: routes identical to torch's, a graph exported here from the verified
weights and cached by their hash (never one read from a router folder), re-exported when the weights change or
the cached graph is damaged; the re-ranker on the same backend; the CLI and the server's option."""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from hubroute import BackendUnavailableError, EncoderConfig, HubRouter, ModelRecord, RouterConfig
from hubroute.bench.serve_load import format_table as serve_table
from hubroute.bench.serve_load import run_load_test
from hubroute.cli.main import main
from hubroute.routing import integrity
from hubroute.routing.rerank import Reranker
from hubroute.routing.runtime import GRAPH_FILE, META_FILE, cache_size_bytes, onnx_cache_dir
from hubroute.serve import ServeConfig, create_app
from hubroute.testing.server import BackgroundServer, free_port

pytest.importorskip("onnxruntime")

DOMAINS = ["Audio Automatic Speech Recognition", "Computer Vision Object Detection", "NLP Translation"]
TOPICS = ["transcribe the audio", "detect objects in the photo", "translate the text"]
PROMPTS = [
    "Transcribe this podcast episode into text",
    "Find every car in the parking lot picture",
    "Translate 'good morning' into German",
    "A long prompt about many things " * 40,
    "short",
]


def records(n: int = 12) -> list[ModelRecord]:
    return [
        ModelRecord(f"org/model-{m}", f"family-{m % 4}", DOMAINS[m % 3], f"Model {m} can {TOPICS[m % 3]}.")
        for m in range(n)
    ]


@pytest.fixture
def router_dir(tiny_config: RouterConfig, tmp_path: Path) -> Path:
    router = HubRouter(dataclasses.replace(tiny_config, domain_prior=0.0))
    router.add_models(records())
    router.save_pretrained(tmp_path / "router")
    return tmp_path / "router"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh graph cache, also the default one (``HUBROUTE_CACHE``) for the CLI and the server."""
    monkeypatch.setenv("HUBROUTE_CACHE", str(tmp_path / "hubroute-cache"))
    return onnx_cache_dir()


def ids(results: list[list]) -> list[list[str]]:
    return [[r.model_id for r in ranked] for ranked in results]


def spinning(model: torch.nn.Module) -> str:
    """The ``allow_spinning`` option of the ONNX Runtime session of ``model`` (an encoder or re-ranker)."""
    options = model.runtime.session.get_session_options()
    return str(options.get_session_config_entry("session.intra_op.allow_spinning"))


def entries(cache: Path) -> list[Path]:
    return sorted(p for p in cache.iterdir() if p.is_dir()) if cache.is_dir() else []


def test_onnx_routes_like_torch_from_a_graph_cached_outside_the_router(router_dir: Path, cache: Path) -> None:
    torch_router = HubRouter.from_pretrained(router_dir)
    onnx_router = HubRouter.from_pretrained(router_dir, backend="onnx")
    assert (torch_router.backend, onnx_router.backend) == ("torch", "onnx")
    assert ids(onnx_router.route(PROMPTS, top_k=5)) == ids(torch_router.route(PROMPTS, top_k=5))
    np.testing.assert_allclose(
        onnx_router.scorer.encode(PROMPTS), torch_router.scorer.encode(PROMPTS), atol=1e-5
    )
    graph = onnx_router.encoder.runtime.graph
    assert graph is not None and graph.exported and graph.variant == "fp32" and graph.export_s > 0
    assert graph.folder.parent == cache and (graph.folder / GRAPH_FILE).stat().st_size == graph.size_bytes
    assert not list(router_dir.resolve().rglob("*.onnx"))  # nothing written into the router folder
    HubRouter.from_pretrained(router_dir)  # whose checksum manifest still verifies
    # Loaded again: the same graph, read from the cache (its hash checked), not exported.
    again = HubRouter.from_pretrained(router_dir, backend="onnx")
    assert again.encoder.runtime.graph.exported is False
    assert again.encoder.runtime.graph.graph_sha256 == graph.graph_sha256
    assert ids(again.route(PROMPTS, top_k=5)) == ids(torch_router.route(PROMPTS, top_k=5))
    assert len(entries(cache)) == 1 and cache_size_bytes(cache) >= graph.size_bytes


def test_more_prompts_than_a_batch_and_every_routing_option_match(router_dir: Path, cache: Path) -> None:
    torch_router = HubRouter.from_pretrained(router_dir)
    onnx_router = HubRouter.from_pretrained(router_dir, backend="onnx")
    prompts = [f"{TOPICS[i % 3]} please, item {i} " + "word " * (i % 17) for i in range(40)]
    for kwargs in ({"batch_size": 8}, {"level": "family"}, {"filters": {"domains": DOMAINS[:2]}}):
        assert ids(onnx_router.route(prompts, top_k=3, **kwargs)) == ids(
            torch_router.route(prompts, top_k=3, **kwargs)
        )
    explained = onnx_router.route(PROMPTS[0], top_k=2, explain=True)[0].explanation
    assert explained is not None and explained.card_sentence


def test_a_damaged_cached_graph_is_detected_and_exported_again(router_dir: Path, cache: Path) -> None:
    first = HubRouter.from_pretrained(router_dir, backend="onnx").encoder.runtime.graph
    expected = ids(HubRouter.from_pretrained(router_dir).route(PROMPTS, top_k=5))
    graph_file = first.folder / GRAPH_FILE
    data = bytearray(graph_file.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the weights: still a loadable graph
    graph_file.write_bytes(bytes(data))
    repaired = HubRouter.from_pretrained(router_dir, backend="onnx")
    graph = repaired.encoder.runtime.graph
    assert graph.exported and graph.repaired is not None and "SHA-256" in graph.repaired
    assert graph.graph_sha256 == first.graph_sha256  # the same export as before the damage
    assert ids(repaired.route(PROMPTS, top_k=5)) == expected
    (first.folder / META_FILE).write_text("{not json")
    assert HubRouter.from_pretrained(router_dir, backend="onnx").encoder.runtime.graph.repaired is not None
    (first.folder / GRAPH_FILE).unlink()
    assert HubRouter.from_pretrained(router_dir, backend="onnx").encoder.runtime.graph.exported


def test_an_onnx_file_that_comes_with_a_router_is_never_loaded(router_dir: Path, cache: Path) -> None:
    # A hostile router ships its own graph (listed in its checksum manifest, so the folder verifies): a graph
    # that is not the encoder's (an empty file ONNX Runtime cannot even load). It must be ignored.
    folder = router_dir.resolve()
    for where in (folder / GRAPH_FILE, folder / "encoder" / GRAPH_FILE, folder / "onnx" / GRAPH_FILE):
        where.parent.mkdir(exist_ok=True)
        where.write_bytes(b"not an onnx graph")
    config = json.loads((folder / "config.json").read_text())
    config["checksums"] = integrity.build_manifest(folder)
    (folder / "config.json").write_text(json.dumps(config))
    expected = ids(HubRouter.from_pretrained(router_dir).route(PROMPTS, top_k=5))
    router = HubRouter.from_pretrained(router_dir, backend="onnx")
    assert ids(router.route(PROMPTS, top_k=5)) == expected
    assert router.encoder.runtime.graph.folder.parent == cache


def test_trained_weights_are_exported_again_and_copies_work(router_dir: Path, cache: Path) -> None:
    router = HubRouter.from_pretrained(router_dir, backend="onnx")
    reference = HubRouter.from_pretrained(router_dir)
    before = router.encoder.runtime.graph
    with torch.no_grad():  # weights changed in place, in eval mode
        for param in router.encoder.parameters():
            param.add_(0.05 * torch.randn_like(param))
    router.weights_changed()  # declared, so the next call hashes the weights again
    reference.encoder.load_state_dict(router.encoder.state_dict())
    vectors = router.scorer.encode(PROMPTS)
    after = router.encoder.runtime.graph
    assert after.weights_sha256 != before.weights_sha256 and after.exported
    np.testing.assert_allclose(vectors, reference.scorer.encode(PROMPTS), atol=1e-5)
    # A training loop: train mode, then steps of torch's fused AdamW, which writes the weights without bumping
    # their version counters; the router, back in eval mode, routes with the new weights.
    router.train()
    assert router.scorer.encode(PROMPTS[:1]).shape[0] == 1  # training mode always runs torch
    optimizer = torch.optim.AdamW(router.encoder.parameters(), lr=1e-2, fused=True)
    for _ in range(2):
        features = router.encoder.tokenize(PROMPTS)
        router.encoder(features).pow(2).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    router.eval()
    reference.encoder.load_state_dict(router.encoder.state_dict())
    trained = router.scorer.encode(PROMPTS)
    assert router.encoder.runtime.graph.weights_sha256 != after.weights_sha256
    np.testing.assert_allclose(trained, reference.scorer.encode(PROMPTS), atol=1e-5)
    clone = copy.deepcopy(router)  # a copy hashes its own weights and finds their graph in the cache
    np.testing.assert_allclose(clone.scorer.encode(PROMPTS), trained, atol=1e-6)
    assert clone.encoder.runtime.graph.exported is False


def test_a_lora_encoder_exports_merged(tiny_encoder_path: Path, tmp_path: Path, cache: Path) -> None:
    lora = {"r": 4, "lora_alpha": 8, "target_modules": ["query", "value"]}
    config = RouterConfig(encoder=EncoderConfig(str(tiny_encoder_path), max_length=64, lora=lora))
    router = HubRouter(config)
    router.add_models(records(6))
    with torch.no_grad():  # a trained adapter (a fresh one's B is zero, a no-op)
        for name, param in router.encoder.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    router.eval()
    expected = router.scorer.encode(PROMPTS)
    router.set_backend("onnx")
    graph = router.encoder.runtime.graph
    np.testing.assert_allclose(router.scorer.encode(PROMPTS), expected, atol=1e-5)
    assert router.encoder.has_lora  # the merge was made on a copy
    router.save_pretrained(tmp_path / "lora")
    loaded = HubRouter.from_pretrained(tmp_path / "lora", backend="onnx")
    assert loaded.encoder.runtime.graph.weights_sha256 == graph.weights_sha256
    assert not loaded.encoder.runtime.graph.exported
    np.testing.assert_allclose(loaded.scorer.encode(PROMPTS), expected, atol=1e-5)


def test_int8_is_close_to_fp32_and_smaller(router_dir: Path, cache: Path) -> None:
    fp32 = HubRouter.from_pretrained(router_dir, backend="onnx")
    int8 = HubRouter.from_pretrained(router_dir, backend="onnx-int8")
    assert int8.backend == "onnx-int8"
    a, b = fp32.scorer.encode(PROMPTS), int8.scorer.encode(PROMPTS)
    assert np.all((a * b).sum(1) > 0.9) and not np.allclose(a, b, atol=1e-6)
    assert int8.encoder.runtime.graph.size_bytes < fp32.encoder.runtime.graph.size_bytes
    assert len(entries(cache)) == 2  # the fp32 graph, cached once, and the int8 graph quantised from it


def test_the_reranker_scores_on_the_routers_backend(
    router_dir: Path, tiny_encoder_path: Path, cache: Path
) -> None:
    router = HubRouter.from_pretrained(router_dir)
    router.reranker = Reranker(str(tiny_encoder_path), max_length=48)
    documents = [r.document() for r in router.registry][: len(PROMPTS)]
    expected = router.reranker.score(PROMPTS, documents)
    torch_ranked = ids(router.route(PROMPTS, top_k=5, rerank=True))
    router.set_backend("onnx")
    assert router.reranker.backend == "onnx" and router.reranker.runtime.graph.kind == "reranker"
    np.testing.assert_allclose(router.reranker.score(PROMPTS, documents), expected, atol=1e-5)
    assert ids(router.route(PROMPTS, top_k=5, rerank=True)) == torch_ranked
    router.reranker = Reranker(str(tiny_encoder_path), max_length=48)  # a new one takes the router's backend
    assert router.reranker.backend == "onnx"
    router.set_backend("torch")
    assert (router.backend, router.reranker.backend) == ("torch", "torch")


def test_worker_threads_spin_unless_told_not_to_in_every_session(
    router_dir: Path, tiny_encoder_path: Path, cache: Path
) -> None:
    router = HubRouter.from_pretrained(router_dir)
    expected = ids(router.route(PROMPTS, top_k=3))
    router.set_backend("onnx")
    assert spinning(router.encoder) == "1"
    router.set_backend("onnx", spin_wait=False)
    router.reranker = Reranker(str(tiny_encoder_path), max_length=48)  # takes the router's backend options
    assert spinning(router.encoder) == spinning(router.reranker) == "0"
    assert ids(router.route(PROMPTS, top_k=3)) == expected


@pytest.mark.slow
def test_bad_backends_fail_clearly_and_torch_needs_no_onnxruntime(
    router_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="backend must be one of"):
        HubRouter.from_pretrained(router_dir, backend="tensorrt")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    with pytest.raises(BackendUnavailableError, match=r"pip install 'hubroute\[onnx\]'"):
        HubRouter.from_pretrained(router_dir, backend="onnx")
    assert HubRouter.from_pretrained(router_dir).route("transcribe the audio")  # the core works without it
    code = (
        "import sys; sys.modules['onnxruntime'] = None; sys.modules['onnx'] = None\n"
        "from hubroute import HubRouter\n"
        f"print(HubRouter.from_pretrained({str(router_dir)!r}).route('transcribe the audio')[0].model_id)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("org/model-")


def test_route_cli_with_the_onnx_backend(
    router_dir: Path, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["route", *PROMPTS[:3], "--router", str(router_dir), "--top-k", "5", "--json"]) == 0
    torch_out = json.loads(capsys.readouterr().out)
    assert (
        main(
            [
                "route",
                *PROMPTS[:3],
                "--router",
                str(router_dir),
                "--top-k",
                "5",
                "--json",
                "--backend",
                "onnx",
            ]
        )
        == 0
    )
    onnx_out = json.loads(capsys.readouterr().out)
    assert [[r["model_id"] for r in rs] for rs in onnx_out] == [
        [r["model_id"] for r in rs] for rs in torch_out
    ]
    assert entries(cache)  # the CLI's graph went to HUBROUTE_CACHE


@pytest.mark.timeout(180)
def test_serve_with_the_onnx_backend(router_dir: Path, cache: Path) -> None:
    expected = HubRouter.from_pretrained(router_dir).route(PROMPTS, top_k=3)
    app = create_app(str(router_dir), ServeConfig(backend="onnx"))
    assert app.state.hubroute.holder.router.backend == "onnx"
    assert spinning(app.state.hubroute.holder.router.encoder) == "0"  # the event loop needs the cores
    with BackgroundServer(app) as server:
        reply = httpx.post(f"{server.url}/v1/route", json={"prompt": PROMPTS, "top_k": 3}).json()
    assert [[r["model_id"] for r in rs] for rs in reply["results"]] == ids(expected)
    with pytest.raises(ValueError, match="backend must be one of"):
        ServeConfig(backend="gpu")
    spinning_router = HubRouter.from_pretrained(router_dir, backend="onnx")  # a router handed over in process
    assert spinning(spinning_router.encoder) == "1"
    app = create_app(spinning_router, ServeConfig(backend="onnx"))
    assert spinning(app.state.hubroute.holder.router.encoder) == "0"


def test_speed_bench_times_the_backends_side_by_side(
    router_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(f"{TOPICS[i % 3]}, request number {i}" for i in range(24)) + "\n")
    output, cache = tmp_path / "speed.json", tmp_path / "bench-cache"
    code = main([
        "bench", "speed", "--router", str(router_dir), "--prompts", str(prompts), "--registry-sizes", "12",
        "--num-prompts", "6", "--batch-size", "4", "--num-batches", "2", "--recall-prompts", "8",
        "--backends", "torch", "onnx", "onnx-int8", "--onnx-cache-dir", str(cache), "--output", str(output),
    ])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "| 12 | onnx |" in printed and "| 12 | onnx-int8 |" in printed and "ONNX graph cache" in printed
    results = json.loads(output.read_text())
    (size,) = results["sizes"]
    assert size["backend"] == "torch" and set(size["backends"]) == {"onnx", "onnx-int8"}
    for stats in size["backends"].values():
        assert stats["single"]["route"]["p50_ms"] > 0 and stats["batched_throughput_over_torch"] > 0
    graphs = results["graphs"]
    assert (
        graphs["onnx"]["exported"]
        and graphs["onnx"]["export_s"] > 0
        and not graphs["onnx"]["cached_load_exported"]
    )
    assert graphs["onnx"]["damaged_detected"] and graphs["onnx"]["damaged_reexported_same_graph"]
    assert graphs["cache_mb"] > graphs["onnx"]["graph_mb"] > graphs["onnx-int8"]["graph_mb"] > 0
    assert "route_p50_onnx_le_0.6x_torch_at_12" in results["checks"]
    assert HubRouter.from_pretrained(router_dir).backend == "torch"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_serve_bench_compares_the_backends_in_one_run(router_dir: Path, cmrbench_dir: Path) -> None:
    with BackgroundServer(create_app(str(router_dir))) as reference:  # e.g. the previous release
        results = run_load_test(
            router=str(router_dir),
            data=cmrbench_dir,
            concurrency=[1, 4],
            requests=8,
            top_k=3,
            backends=["torch", "onnx"],
            rounds=2,
            reference_url=reference.url,
        )
    assert set(results.in_process_backends) == {"torch", "onnx"}
    assert results.in_process == results.in_process_backends["torch"]
    assert sorted((level.backend, level.concurrency) for level in results.levels) == [
        ("onnx", 1), ("onnx", 4), ("reference", 1), ("reference", 4), ("torch", 1), ("torch", 4)
    ]  # fmt: skip
    assert all(
        level.requests == 16 and level.failures == 0 and level.requests_per_s > 0 for level in results.levels
    )
    assert all(level.mean_batch_prompts for level in results.levels)  # read from each server's /metrics
    table = serve_table(results)
    assert (
        "| /v1/route, concurrency 4, onnx |" in table
        and "| /v1/route, concurrency 4, reference |" in table
        and "| in-process route(), one prompt at a time, onnx |" in table
        and f"reference: the server at {reference.url}" in table
    )


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_serve_bench_on_one_server_and_with_a_shadow_revision(router_dir: Path, cmrbench_dir: Path) -> None:
    alone = run_load_test(
        router=str(router_dir), data=cmrbench_dir, concurrency=[1, 4], requests=8, backends=["onnx"]
    )
    assert [(level.backend, level.concurrency) for level in alone.levels] == [("onnx", 1), ("onnx", 4)]
    assert all(
        level.requests == 8 and level.failures == 0 and level.mean_batch_prompts for level in alone.levels
    )
    assert (
        "c1_p50_over_in_process_p50" in alone.checks
    )  # the levels are labelled with the backend they ran on
    shadowed = run_load_test(router=str(router_dir), data=cmrbench_dir, concurrency=[1], requests=8, shadow=True,
                             rounds=2)  # fmt: skip
    (plain,) = shadowed.levels
    (shadow,) = shadowed.shadow["levels"]
    assert plain.requests == shadow["requests"] == 16 and plain.failures == shadow["failures"] == 0
    assert (
        "shadow_c1_p50_over_plain_p50" in shadowed.checks and "c1_p50_over_in_process_p50" in shadowed.checks
    )


def test_serve_bench_says_when_no_reference_server_answers(router_dir: Path, cmrbench_dir: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConnectionError, match=f"No hubroute server answers at --reference-url {url}"):
        run_load_test(router=str(router_dir), data=cmrbench_dir, reference_url=url)


@pytest.mark.slow
def test_cmrbench_evaluates_the_same_trained_routers_on_each_backend(small_bench, tiny_config) -> None:
    from hubroute import CARvEConfig
    from hubroute.bench.runner import format_table, run_cmrbench

    config = CARvEConfig(num_train_epochs=1, per_device_train_batch_size=16, output_dir="unused", seed=0)
    results = run_cmrbench(
        small_bench, methods=["carve", "bm25"], config=config, router_config=tiny_config, show_progress=False,
        backends=["torch", "onnx", "onnx-int8"],
    )  # fmt: skip
    assert list(results) == ["carve", "carve@onnx", "carve@onnx-int8", "bm25"]
    onnx = results["carve@onnx"]
    final = onnx["agreement"]["final"]
    assert final["prompts"] == sum(len(e.test) for e in small_bench) and final["top5_identical"] >= 0.99
    assert onnx["agreement"]["every_evaluation"]["prompts"] > final["prompts"]
    for key in ("M_acc", "F_acc", "D_acc", "M_at5"):
        assert onnx[key] == pytest.approx(results["carve"][key], abs=0.5), key
    # The encoder was fine-tuned by each experience: each one's graph was exported then.
    assert [t["exported"] for t in onnx["wall_time_s"]["per_experience"][0]] == [1.0] * len(small_bench)
    table = format_table(results)
    assert "| carve@onnx |" in table and "carve@onnx-int8: the same top-5 as torch" in table


def test_inference_encodes_prompts_in_chunks_of_similar_lengths(router_dir: Path) -> None:
    from hubroute.routing.encoder import length_chunks

    lengths = [3] * 5 + [20] * 3 + [256] + [12] * 70 + [13]
    chunks = length_chunks(lengths, batch_size=32, call_tokens=16)
    assert sorted(i for chunk in chunks for i in chunk) == list(range(len(lengths)))
    assert all(len(chunk) <= 32 for chunk in chunks)
    assert [8] in chunks  # the one long prompt pads nothing else
    assert not any({0, 1, 2, 3, 4} & set(c) and {5, 6, 7} & set(c) for c in chunks)  # nor the short to 20
    assert set(range(9, 79)) & next(
        set(c) for c in chunks if 79 in c
    )  # but 13 joins 12s: cheaper than a call
    assert len(length_chunks(lengths, batch_size=32, call_tokens=0)) > len(chunks)  # free calls: no padding
    assert all(len(c) == 1 for c in length_chunks([200, 210, 220], batch_size=8, max_tokens=300))
    router = HubRouter.from_pretrained(router_dir)  # chunked or alone, a prompt gets the same vector
    texts = ["hi"] * 3 + ["a medium prompt " * 6] * 3 + ["long " * 300] + ["x" * 40] * 20 + PROMPTS
    alone = np.concatenate([router.scorer.encode([t]) for t in texts])
    np.testing.assert_allclose(router.scorer.encode(texts, batch_size=4), alone, atol=1e-5)
    np.testing.assert_allclose(router.scorer.encode(texts[::-1])[::-1], alone, atol=1e-5)


@pytest.mark.parametrize("side", ["right", "left"])
def test_chunks_cut_from_one_tokenisation_equal_chunks_tokenised_alone(
    tiny_encoder_path: Path, tiny_decoder_path: Path, side: str
) -> None:
    from hubroute.routing.encoder import PromptEncoder, length_chunks

    texts = ["hi", "a medium prompt " * 6, "long " * 100, "x" * 40, "Translate this", "one two three four"]
    for path in (tiny_encoder_path, tiny_decoder_path):  # mean pooling; a causal LM's last-token pooling
        encoder = PromptEncoder(EncoderConfig(str(path), max_length=64)).eval()
        encoder.model.tokenizer.padding_side = side
        lengths = encoder.tokenize(texts)["attention_mask"].sum(1).tolist()
        expected = np.empty((len(texts), encoder.dim), dtype=np.float32)
        for rows in length_chunks(lengths, 3, encoder.runtime.call_tokens):
            expected[rows] = encoder.runtime(encoder.tokenize([texts[i] for i in rows]))
        np.testing.assert_array_equal(encoder.infer(texts, batch_size=3), expected)


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_batched_comparison_with_another_checkout_runs_each_side_in_its_own_process(
    router_dir: Path, cmrbench_dir: Path, tmp_path: Path
) -> None:
    output = tmp_path / "batched.json"
    command = [
        sys.executable, str(EXAMPLES / "batched_vs_release.py"), "--release-python", sys.executable,
        "--router", str(router_dir), "--data", str(cmrbench_dir), "--batch-size", "4", "--batches", "2",
        "--rounds", "1", "--output", str(output),
    ]  # fmt: skip
    printed = subprocess.run(command, capture_output=True, text=True, timeout=280, check=True).stdout
    results = json.loads(output.read_text())
    assert set(results["ms_per_prompt"]) == {"release", "torch", "onnx"}
    assert all(ms > 0 for ms in results["ms_per_prompt"].values())
    assert results["same_top3_as_release"] == {"torch": 1.0, "onnx": 1.0}  # the same code on every side
    assert all(Path(path).is_file() for path in results["hubroute"].values())
    assert "onnx over release:" in printed and "| release |" in printed


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_fp32_ceiling_measures_both_runtimes(cmrbench_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "ceiling.json"
    command = [
        sys.executable, str(EXAMPLES / "fp32_ceiling.py"), "--data", str(cmrbench_dir), "--prompts", "32",
        "--rounds", "1", "--output", str(output),
    ]  # fmt: skip
    printed = subprocess.run(command, capture_output=True, text=True, timeout=280, check=True).stdout
    results = json.loads(output.read_text())
    assert results["prompts"] == 32 and results["padded_over_real_tokens"] >= 1.0
    for row in results["matmul"].values():
        assert row["torch_gflops"] > 0 and row["onnx_gflops"] > 0
    assert results["needed_gflops"] == pytest.approx(1.8 * results["encoder"]["torch"]["gflops"])
    assert results["target_within_ceiling"] == (results["needed_gflops"] <= results["best_matmul_gflops"])
    assert "fp32 MatMul here ran at" in printed
