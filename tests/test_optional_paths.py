"""The paths the GPU tests cover, exercised on the CPU so that a dependency release that breaks them shows in CI.

The GPU suite (``-m gpu``) is skipped without CUDA; these tests run the same library calls (peft's LoRA API,
Accelerate's mixed precision through the Trainer) on the CPU with tiny models.
"""

from __future__ import annotations

import pytest
import torch
from factories import small_carve_config, topic_experience

from hubroute import CARvETrainer, EncoderConfig, HubRouter, RouterConfig


def test_the_optional_apis_import():
    from accelerate import Accelerator  # noqa: F401
    from accelerate.utils import is_bf16_available  # noqa: F401
    from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict  # noqa: F401
    from torch.amp import autocast  # noqa: F401


@pytest.mark.parametrize("encoder_mode", ["frozen", "full"])
def test_bf16_autocast_training_on_cpu(tiny_config, tmp_path, encoder_mode):
    router = HubRouter(tiny_config)
    data = topic_experience(range(6))
    args = small_carve_config(tmp_path, encoder_mode=encoder_mode, bf16=True, use_cpu=True)
    trainer = CARvETrainer(model=router, args=args, train_dataset=data, experience="e1")
    trainer.train()
    loss = trainer.state.log_history[-1]["train_loss"]
    assert torch.isfinite(torch.tensor(loss)) and loss > 0
    assert router.model_embeddings.dtype == torch.float32  # master weights stay fp32 under autocast
    router.save_pretrained(tmp_path / "saved")
    reloaded = HubRouter.from_pretrained(tmp_path / "saved")
    assert (
        reloaded.route(data["prompt"][0], top_k=3)[0].model_id == router.route(data["prompt"][0])[0].model_id
    )


def test_lora_decoder_in_bf16_on_cpu(tiny_decoder_path, tmp_path):
    router = HubRouter(RouterConfig(encoder=EncoderConfig(str(tiny_decoder_path), max_length=32)))
    args = small_carve_config(tmp_path, encoder_mode="lora", lora_r=4, lora_alpha=8, bf16=True, use_cpu=True)
    CARvETrainer(model=router, args=args, train_dataset=topic_experience(range(6)), experience="e1").train()
    assert router.encoder.has_lora
    router.save_pretrained(tmp_path / "lora")
    reloaded = HubRouter.from_pretrained(tmp_path / "lora")
    assert reloaded.encoder.has_lora
    prompts = topic_experience(range(6))["prompt"][:3]
    assert torch.allclose(
        torch.from_numpy(router.embed_prompts(prompts)),
        torch.from_numpy(reloaded.embed_prompts(prompts)),
        atol=1e-5,
    )
