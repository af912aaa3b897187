"""What an update keeps on disk so that a rerun does no work twice: encodings, and prompts written per shard."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hubroute.routing.encoder import EncoderConfig, PromptEncoder
from hubroute.update.crawl import CrawledModel
from hubroute.update.encodings import EncodingCache, cached_encoder, encoder_fingerprint
from hubroute.update.experience import build_experience
from hubroute.update.prompts import TemplateGenerator, TransformersGenerator, generate_many


def models(count: int) -> list[CrawledModel]:
    tasks = ["automatic-speech-recognition", "translation", "text-to-image", "summarization"]
    return [
        CrawledModel(
            model_id=f"acme/model-{i}",
            created_at=1_780_000_000_000 - i,
            pipeline_tag=tasks[i % 4],
            description=f"A model that handles recordings of meeting number {i} and writes clean notes for teams.",
            uses=[f"Summarise meeting {i} for the whole team"],
            card_text=f"Meeting notes model {i}.",
        )  # fmt: skip
        for i in range(count)
    ]


class Counting:
    """Counts the texts an encoder is asked to encode."""

    def __init__(self, encoder: PromptEncoder) -> None:
        self.texts: list[str] = []
        self.original = encoder.encode
        encoder.__dict__["encode"] = self

    def __call__(self, texts, batch_size: int = 64, show_progress: bool = False) -> torch.Tensor:
        self.texts += list(texts)
        return self.original(texts, batch_size=batch_size, show_progress=show_progress)


def test_encodings_are_cached_on_disk_and_a_changed_encoder_misses(
    tiny_encoder_path: Path, tmp_path: Path
) -> None:
    encoder = PromptEncoder(EncoderConfig(str(tiny_encoder_path), max_length=32))
    reference = encoder.encode(["translate this letter", "transcribe the call", "draw a red fox"])
    counting = Counting(encoder)
    texts = ["translate this letter", "transcribe the call", "translate this letter", "draw a red fox"]
    with cached_encoder(encoder, tmp_path) as cache:
        first = encoder.encode(texts, batch_size=2)
    assert cache is not None and cache.computed == 3 and cache.hits == 0  # a duplicate is encoded once
    assert counting.texts == ["translate this letter", "transcribe the call", "draw a red fox"]
    assert torch.allclose(first[[0, 1, 3]], reference, atol=1e-5) and torch.equal(first[0], first[2])

    counting.texts.clear()
    with cached_encoder(encoder, tmp_path) as again:  # a new process would read the same shards
        second = encoder.encode(texts + ["caption this photo"])
    assert again is not None and again.hits == 4 and again.computed == 1
    assert counting.texts == ["caption this photo"]  # nothing encoded twice
    assert torch.equal(second[:4], first)
    assert encoder.__dict__["encode"] is counting  # the block restored what was there

    with torch.no_grad():  # a fine-tuned encoder has another fingerprint: nothing stale is read
        next(encoder.parameters()).add_(0.01)
    counting.texts.clear()
    with cached_encoder(encoder, tmp_path) as changed:
        encoder.encode(texts)
    assert changed is not None and changed.hits == 0 and len(counting.texts) == 3
    assert len({p.name for p in tmp_path.iterdir()}) == 2  # one folder per fingerprint


def test_a_torn_cache_shard_is_ignored_and_encoded_again(tiny_encoder_path: Path, tmp_path: Path) -> None:
    encoder = PromptEncoder(EncoderConfig(str(tiny_encoder_path), max_length=32))
    cache = EncodingCache(tmp_path, encoder_fingerprint(encoder), shard_rows=2)
    cache.encode(encoder.encode, ["a", "b", "c", "d", "e"])
    shards = sorted(cache.folder.glob("shard-*.safetensors"))
    assert len(shards) == 3
    shards[-1].write_bytes(shards[-1].read_bytes()[:40])  # damaged (e.g. by a disk error)
    reread = EncodingCache(tmp_path, cache.fingerprint)
    assert len(reread) == 4
    reread.encode(encoder.encode, ["a", "b", "c", "d", "e"])
    assert reread.computed == 1 and reread.hits == 4


def test_prompt_writing_resumes_at_the_first_shard_it_had_not_written(tmp_path: Path) -> None:
    crawled = models(23)
    reference = build_experience(crawled, prompts_per_model=4, families={})

    class Flaky(TemplateGenerator):
        def __init__(self, fail_after: int | None) -> None:
            super().__init__()
            self._fail_after, self.written = fail_after, []

        def generate(self, model: CrawledModel, count: int, seed: int = 0) -> list[str]:
            if self._fail_after is not None and len(self.written) == self._fail_after:
                raise RuntimeError("the language model server went away")
            self.written.append(model.model_id)
            return super().generate(model, count, seed)

    checkpoint = tmp_path / "prompts.jsonl"
    crashing = Flaky(fail_after=12)  # mid-way through the third shard of 5
    with pytest.raises(RuntimeError, match="went away"):
        build_experience(crawled, generator=crashing, prompts_per_model=4, families={}, checkpoint=checkpoint,
                         shard_size=5)  # fmt: skip
    assert len(checkpoint.read_text().splitlines()) == 3  # the header and two shards
    with checkpoint.open("a") as handle:
        handle.write('{"shard": 2, "models": [{"key": "')  # and a torn line, as a kill would leave

    resumed, stats = Flaky(fail_after=None), {}
    experience = build_experience(crawled, generator=resumed, prompts_per_model=4, families={},
                                  checkpoint=checkpoint, shard_size=5, stats=stats)  # fmt: skip
    assert resumed.written == [m.model_id for m in crawled[10:]]  # shards 1-2 were not written again
    assert stats == {"cached": 10, "written": 13}
    assert experience["prompt"] == reference["prompt"] and experience["model_id"] == reference["model_id"]

    again = Flaky(fail_after=None)
    build_experience(crawled, generator=again, prompts_per_model=4, families={}, checkpoint=checkpoint)
    assert again.written == []  # a rerun writes nothing it has
    other = Flaky(fail_after=None)
    build_experience(crawled, generator=other, prompts_per_model=3, families={}, checkpoint=checkpoint)
    assert len(other.written) == 23  # other settings are other prompts


def test_a_local_language_model_writes_a_shard_in_one_batch(tiny_decoder_path: Path) -> None:
    generator = TransformersGenerator(
        str(tiny_decoder_path), max_new_tokens=16, temperature=0.0, batch_size=4
    )
    calls: list[int] = []
    pipe = generator.pipeline
    original = pipe.__call__

    class Recording:
        tokenizer = pipe.tokenizer

        def __call__(self, inputs, **kwargs):
            calls.append(len(inputs) if isinstance(inputs, list) else 1)
            return original(inputs, **kwargs)

    generator._pipeline = Recording()
    crawled = models(5)
    batched = generate_many(generator, crawled, 3, seed=0)
    assert calls == [5] and [len(p) for p in batched] == [3] * 5
    assert all(isinstance(p, str) and p for prompts in batched for p in prompts)
