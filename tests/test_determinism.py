"""The same seed trains the same router: in one process, and in two processes with different hash seeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hubroute.training.losses import CandidateContrastiveLoss

CHILD = """
import hashlib, json, sys
from datasets import Dataset
from transformers import set_seed
from hubroute import CARvEConfig, CARvETrainer, EncoderConfig, HubRouter, RouterConfig

encoder, output_dir = sys.argv[1:3]
DOMAINS = ["Audio Automatic Speech Recognition", "Audio Text-to-Speech", "Computer Vision Object Detection",
           "Computer Vision Image Classification", "Natural Language Processing Translation",
           "Natural Language Processing Summarization", "Multimodal Image-Text-to-Text"]

def experience(models):
    rows = [(f"please {DOMAINS[m % 7].lower()} job {m} case {k}" + " more" * k, f"org{m % 3}/Model-{m}",
             DOMAINS[m % 7]) for m in models for k in range(3)]
    return Dataset.from_dict({"prompt": [r[0] for r in rows], "model_id": [r[1] for r in rows],
                              "domain": [r[2] for r in rows], "card_text": [f"{r[1]} does {r[2]}." for r in rows]})

set_seed(0)
router = HubRouter(RouterConfig(encoder=EncoderConfig(encoder, max_length=64)))
args = CARvEConfig(output_dir=output_dir, num_train_epochs=1, per_device_train_batch_size=32, num_candidates=40,
                   disable_tqdm=True, seed=0, logging_steps=1000, holdout_fraction=0.0)
digests = []
for name, models in (("e1", range(0, 50)), ("e2", range(40, 80))):
    CARvETrainer(model=router, args=args, train_dataset=experience(models), experience=name).train()
    state = {k: hashlib.sha256(v.detach().float().numpy().tobytes()).hexdigest() for k, v in router.state_dict().items()}
    routes = [[r.model_id for r in rs] for rs in router.route(["please translate job 3", "detect job 40"], top_k=5)]
    digests.append({"weights": state, "routes": routes, "replay": router.training_state["replay"]})
print(json.dumps(digests))
"""


def _train_in_child(encoder: Path, tmp_path: Path, hash_seed: str) -> list[dict]:
    # Batches of 32 x 40 candidates x 32 dimensions: enough for torch to spread the gradient over threads.
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "TOKENIZERS_PARALLELISM": "false"}
    env.pop("OMP_NUM_THREADS", None)  # the race needs several threads: torch's default
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(encoder), str(tmp_path / f"out-{hash_seed}")],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # two trainings of two experiences, about a minute
def test_two_processes_with_different_hash_seeds_train_the_same_router(tiny_encoder_path, tmp_path):
    first = _train_in_child(tiny_encoder_path, tmp_path, "1")
    second = _train_in_child(tiny_encoder_path, tmp_path, "2")
    for after, (a, b) in enumerate(zip(first, second), start=1):
        differ = sorted(k for k in a["weights"] if a["weights"][k] != b["weights"][k])
        assert differ == [], f"after experience {after}, these weights differ: {differ}"
        assert a["routes"] == b["routes"] and a["replay"] == b["replay"]


def test_the_candidate_loss_gradient_is_the_same_at_every_call():
    # Large enough for torch to split the gradient's accumulation over threads (2 at least).
    threads = torch.get_num_threads()
    torch.set_num_threads(max(threads, 2))
    try:
        generator = torch.Generator().manual_seed(0)
        queries = F.normalize(torch.randn(64, 384, generator=generator), dim=-1)
        table = torch.randn(300, 384, generator=generator)
        candidates = torch.randint(0, 300, (64, 64), generator=generator)
        loss = CandidateContrastiveLoss(0.05)
        grads = set()
        for _ in range(12):
            rows = table.clone().requires_grad_(True)
            loss(queries, F.normalize(rows, dim=-1), candidates).backward()
            assert rows.grad is not None
            grads.add(rows.grad.numpy().tobytes())
        assert len(grads) == 1
    finally:
        torch.set_num_threads(threads)
