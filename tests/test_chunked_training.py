"""Chunked encoder passes (``CARvEConfig.encoder_chunk_size``): the same objective and gradients as the whole
batch at once, with the encoder never holding more than a chunk of texts with their activations.

Tolerance: every float32 gradient element agrees within ``rtol=1e-4, atol=1e-5``, and all the gradients together
within a relative L2 distance of 1e-5 (measured: 1.1e-6). Chunks are sorted and cut to their own longest text, so
the sums run in another order; nothing else differs. (The attention key biases have a true gradient of zero,
softmax being shift-invariant: only the absolute tolerance applies to their float noise, about 1e-11.)
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from factories import build_tiny_encoder, make_experience

from hubroute import CARvEConfig, CARvETrainer, EncoderConfig, HubRouter, RouterConfig
from hubroute.routing.encoder import PromptEncoder

RTOL, ATOL = 1e-4, 1e-5
TOPICS = ["transcribe the audio", "detect objects in the photo", "translate the text", "summarise the news"]
DOMAINS = [
    "Audio Automatic Speech Recognition",
    "Computer Vision Object Detection",
    "Natural Language Processing Translation",
    "Natural Language Processing Summarization",
]


def _experience(models: int = 8, per_model: int = 3):
    rows = [
        (
            f"{TOPICS[m % 4]} " + "please " * ((m * 3 + k) % 7) + f"model {m} variant {k}",  # varied lengths
            f"org/model-{m}",
            DOMAINS[m % 4],
        )
        for m in range(models)
        for k in range(per_model)
    ]
    return make_experience(rows, card="A model card that says what the model does and for whom.")


def _config(tmp_path, **changes) -> CARvEConfig:
    base = CARvEConfig(
        output_dir=str(tmp_path / "out"),
        num_train_epochs=1,
        per_device_train_batch_size=12,
        num_candidates=6,
        num_hard_negatives=1,
        num_group_negatives=2,
        num_far_negatives=2,
        disable_tqdm=True,
        seed=0,
        logging_steps=1000,
        card_loss_weight=1.0,
    )
    return dataclasses.replace(base, **changes)


@pytest.fixture(scope="module")
def dropout_free_encoder(tmp_path_factory: pytest.TempPathFactory):
    """A tiny encoder without dropout: its forward is a function of the weights alone."""
    return build_tiny_encoder(tmp_path_factory.mktemp("tiny-encoder-no-dropout"), dropout=0.0)


def _batch_sizes_seen(router: HubRouter) -> tuple[list[int], torch.utils.hooks.RemovableHandle]:
    sizes: list[int] = []
    embeddings = router.encoder.model[0].model.embeddings  # BERT's first module: once per encoder pass
    handle = embeddings.register_forward_hook(lambda module, args, output: sizes.append(output.shape[0]))
    return sizes, handle


def test_chunked_loss_and_gradients_equal_the_whole_batch(tiny_config, tmp_path):
    router = HubRouter(tiny_config)
    trainer = CARvETrainer(model=router, args=_config(tmp_path), train_dataset=_experience(), experience="e1")
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(12)])
    assert "card_features" in batch  # the card loss's pass is chunked too
    router.eval()  # dropout off, so both passes compute the same function (dropout: next test)
    losses, grads, seen = {}, {}, {}
    for chunk in (0, 5):
        trainer.args.encoder_chunk_size = chunk
        router.zero_grad(set_to_none=True)
        sizes, handle = _batch_sizes_seen(router)
        loss = trainer.compute_loss(router, batch)
        loss.backward()
        handle.remove()
        losses[chunk], seen[chunk] = float(loss.detach()), sizes
        grads[chunk] = {n: p.grad.clone() for n, p in router.named_parameters() if p.grad is not None}

    assert max(seen[0]) == 12  # the whole batch of prompts at once
    assert max(seen[5]) <= 5 and len(seen[5]) > 2 * len(seen[0])  # chunks, each run again in the backward
    assert losses[5] == pytest.approx(losses[0], rel=1e-6)
    assert grads[5].keys() == grads[0].keys()
    assert any(name.startswith("encoder.") for name in grads[0])
    for name, grad in grads[0].items():
        torch.testing.assert_close(
            grads[5][name], grad, rtol=RTOL, atol=ATOL, msg=lambda m, name=name: f"{name}: {m}"
        )
    difference = sum(float((grads[5][n] - g).norm() ** 2) for n, g in grads[0].items()) ** 0.5
    assert (
        difference <= 1e-5 * sum(float(g.norm() ** 2) for g in grads[0].values()) ** 0.5
    )  # measured: 1.1e-6


def test_recomputed_chunks_draw_the_same_dropout_masks(tiny_encoder_path):
    encoder = PromptEncoder(EncoderConfig(str(tiny_encoder_path), max_length=64))
    encoder.train()  # dropout on
    texts = [f"route prompt number {i} to a model" for i in range(10)]  # one token length: no chunk is cut
    features = encoder.tokenize(texts)
    weights = torch.randn(10, encoder.dim, generator=torch.Generator().manual_seed(1))

    def grads_of(pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        encoder.zero_grad(set_to_none=True)
        (pooled * weights).sum().backward()
        return {n: p.grad.clone() for n, p in encoder.named_parameters() if p.grad is not None}

    torch.manual_seed(0)
    chunks = [
        {k: v[s : s + 4] if isinstance(v, torch.Tensor) else v for k, v in features.items()}
        for s in range(0, 10, 4)
    ]
    plain = torch.cat([encoder(chunk) for chunk in chunks])
    expected = grads_of(plain)
    torch.manual_seed(0)
    chunked = encoder(features, chunk_size=4)
    torch.testing.assert_close(chunked, plain, rtol=0, atol=0)  # the same masks in the first pass
    got = grads_of(chunked)
    for name, grad in expected.items():  # and again when the backward pass recomputes each chunk
        torch.testing.assert_close(got[name], grad, rtol=RTOL, atol=ATOL, msg=name)
    torch.manual_seed(1)
    assert not torch.allclose(encoder(features, chunk_size=4), chunked)  # dropout does act


def test_training_with_chunks_ends_where_the_whole_batch_does(dropout_free_encoder, tmp_path):
    """Whole trainings (gradient accumulation included): the weights end up the same."""
    config = RouterConfig(encoder=EncoderConfig(str(dropout_free_encoder), max_length=64))
    weights = {}
    for chunk in (0, 5):
        torch.manual_seed(0)
        router = HubRouter(config)
        args = _config(tmp_path, encoder_chunk_size=chunk, gradient_accumulation_steps=2, num_train_epochs=2)
        CARvETrainer(model=router, args=args, train_dataset=_experience(), experience="e1").train()
        weights[chunk] = {n: p.detach().clone() for n, p in router.named_parameters()}
    for name, value in weights[0].items():
        torch.testing.assert_close(weights[5][name], value, rtol=1e-4, atol=1e-5, msg=name)
    assert not torch.equal(weights[0]["projection.weight"], HubRouter(config).projection.weight)


def test_chunk_size_from_python_yaml_and_the_command_line(tmp_path):
    from hubroute.cli.train import make_parser

    assert CARvEConfig().encoder_chunk_size == 8
    with pytest.raises(ValueError, match="encoder_chunk_size"):
        CARvEConfig(encoder_chunk_size=-1)
    yaml = tmp_path / "carve.yaml"
    yaml.write_text("encoder_chunk_size: 4\n")
    _, parsed = make_parser().parse_args_and_config(
        ["--data", "d.jsonl", "--output", "r", "--config", str(yaml)]
    )
    assert parsed.encoder_chunk_size == 4
    _, parsed = make_parser().parse_args_and_config(
        ["--data", "d.jsonl", "--output", "r", "--config", str(yaml), "--encoder_chunk_size", "0"]
    )
    assert parsed.encoder_chunk_size == 0


def test_the_quick_recipe_from_python_and_the_command_line(tmp_path):
    from hubroute.cli.train import _recipe_defaults, make_parser

    quick = CARvEConfig.from_recipe("quick", seed=3)
    assert (quick.encoder_mode, quick.seed) == ("frozen", 3)
    with pytest.raises(ValueError, match="Unknown recipe 'fast'"):
        CARvEConfig.from_recipe("fast")

    def parse(*argv: str) -> CARvEConfig:
        parser = make_parser()
        argv = ("--data", "d.jsonl", "--output", "r", *argv)
        _recipe_defaults(parser, list(argv))
        return parser.parse_args_and_config(list(argv))[1]

    assert parse().encoder_mode == "full"
    assert parse("--recipe", "quick").encoder_mode == "frozen"
    yaml = tmp_path / "quick.yaml"
    yaml.write_text("num_train_epochs: 7\n")
    config = parse("--recipe", "quick", "--config", str(yaml), "--encoder_mode", "lora")
    assert (config.encoder_mode, config.num_train_epochs) == ("lora", 7.0)  # flags, then the file, win
