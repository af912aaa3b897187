"""CUDA paths: training through Accelerate with mixed precision, routing on the GPU, moving checkpoints
between GPU and CPU. Skipped on machines without CUDA (CI has none); run them with ``pytest -m gpu``
on a GPU machine."""

from __future__ import annotations

import pytest
import torch
from factories import small_carve_config, top1_accuracy, topic_experience

from hubroute import CARvETrainer, EncoderConfig, HubRouter, RouterConfig
from hubroute.training.data import records_from_rows

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

PROMPTS = [
    "transcribe the audio number 3",
    "detect objects in the photo number 4",
    "translate the text number 5",
]


def cuda_config(tmp_path, **changes):
    fast = {
        "num_train_epochs": 8,
        "learning_rate": 5e-3,
        "embedding_learning_rate": 1e-2,
        "head_learning_rate": 1e-2,
    }
    return small_carve_config(tmp_path, **{**fast, **changes})


def assert_on_cuda(router: HubRouter) -> None:
    assert router.model_embeddings.device.type == "cuda"
    assert router.encoder.device.type == "cuda"


@pytest.mark.parametrize("precision", [{}, {"bf16": True}, {"fp16": True}], ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("encoder_mode", ["frozen", "full"])
def test_training_on_cuda_with_mixed_precision(tiny_config, tmp_path, encoder_mode, precision):
    router = HubRouter(tiny_config)
    data = topic_experience(range(9))
    args = cuda_config(tmp_path, encoder_mode=encoder_mode, **precision)
    trainer = CARvETrainer(model=router, args=args, train_dataset=data, experience="e1")
    assert trainer.args.device.type == "cuda"
    trainer.train()
    loss = trainer.state.log_history[-1]["train_loss"]
    assert torch.isfinite(torch.tensor(loss)) and loss > 0
    assert_on_cuda(router)
    assert router.model_embeddings.dtype == torch.float32  # master weights stay fp32 under autocast
    assert top1_accuracy(router, data) > 1 / 3

    router.save_pretrained(tmp_path / "saved")
    on_cpu = HubRouter.from_pretrained(tmp_path / "saved")
    assert on_cpu.model_embeddings.device.type == "cpu"
    gpu_scores, gpu_ids = router.search(PROMPTS, 3)
    cpu_scores, cpu_ids = on_cpu.search(PROMPTS, 3)
    assert (gpu_ids == cpu_ids).all()
    assert abs(gpu_scores - cpu_scores).max() < 1e-3


def test_continuing_a_router_on_cuda_second_experience_and_cold_start(tiny_config, tmp_path):
    router = HubRouter(tiny_config)
    CARvETrainer(
        model=router, args=cuda_config(tmp_path, bf16=True), train_dataset=topic_experience(range(6))
    ).train()
    first_rows = router.model_embeddings.detach()[:6].clone()
    trainer = CARvETrainer(
        model=router,
        args=cuda_config(tmp_path, bf16=True, ewc_weight=1.0),
        train_dataset=topic_experience(range(6, 12)),
        experience="e2",
    )
    trainer.train()
    assert router.num_models == 12
    assert_on_cuda(router)
    drift = (router.model_embeddings.detach()[:6] - first_rows).norm(dim=-1).mean().item()
    assert drift < 1.0
    assert len(router.training_state["replay"]) > 0

    cold = topic_experience(range(12, 15))
    added = router.add_models(records_from_rows(cold), neighbors=2, experience="e3")
    assert len(added) == 3 and router.num_models == 15
    assert_on_cuda(router)
    assert torch.isfinite(router.model_embeddings[12:]).all()
    assert [len(r) for r in router.route(list(cold["prompt"]), top_k=2)] == [2] * len(cold)


def test_lora_decoder_on_cuda_in_bf16(tiny_decoder_path, tmp_path):
    router = HubRouter(RouterConfig(encoder=EncoderConfig(str(tiny_decoder_path), max_length=64)))
    args = cuda_config(tmp_path, encoder_mode="lora", lora_r=4, lora_alpha=8, bf16=True)
    CARvETrainer(model=router, args=args, train_dataset=topic_experience(range(6))).train()
    assert router.encoder.has_lora
    assert_on_cuda(router)
    router.save_pretrained(tmp_path / "lora")
    reloaded = HubRouter.from_pretrained(tmp_path / "lora")
    assert (router.search(PROMPTS, 3)[1] == reloaded.search(PROMPTS, 3)[1]).all()


def test_routing_a_cpu_router_moved_to_cuda_gives_the_same_results(tiny_config, tmp_path):
    router = HubRouter(tiny_config)
    CARvETrainer(
        model=router,
        args=small_carve_config(tmp_path, use_cpu=True),
        train_dataset=topic_experience(range(9)),
    ).train()
    cpu_results = router.route(PROMPTS, top_k=3)
    router.to("cuda")
    assert_on_cuda(router)
    gpu_results = router.route(PROMPTS, top_k=3)
    long_batch = router.route(PROMPTS * 40, top_k=1)  # over one batch: the length-sorted encode path
    for cpu, gpu in zip(cpu_results, gpu_results):
        assert [r.model_id for r in cpu] == [r.model_id for r in gpu]
        assert all(abs(a.score - b.score) < 1e-4 for a, b in zip(cpu, gpu))
    assert [r[0].model_id for r in long_batch[:3]] == [r[0].model_id for r in gpu_results]
