"""One process of a multi-process CARvETrainer run, for tests/test_distributed.py.

Launched as ``torchrun --nproc_per_node 2 tests/distributed_worker.py SCENARIO ENCODER OUT [ARGS]`` (or in one
process with plain ``python``). Every process writes what it saw to ``OUT/<scenario>-rank<R>.json`` (and
its parameters to ``OUT/<scenario>-rank<R>.pt``); the test compares the processes.

Scenarios:

- ``suite``: ``hubroute train`` (its ``run()``) on a data file, full fine-tuning with the card loss and EWC,
  then a second experience (phase 1 with the encoder's cached outputs, EWC, drift compensation), then Trainer
  checkpoints with rank 0 slow to write and rank 1 slow at every barrier;
- ``routes`` (also the end of ``suite``, with 4): one experience with a frozen encoder, sequential batches of
  ``BATCH`` per process; the top-5 routes of its prompts (``routes ENCODER OUT BATCH on``: with the
  row-sparse embedding table);
- ``timing``: one larger experience (frozen encoder) with the per-rank timings of the split passes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from factories import small_carve_config, topic_experience  # noqa: E402

from hubroute import CARvEConfig, CARvETrainer, HubRouter  # noqa: E402
from hubroute.routing.encoder import EncoderConfig  # noqa: E402
from hubroute.routing.router import RouterConfig  # noqa: E402
from hubroute.training import distributed  # noqa: E402
from hubroute.training import trainer as trainer_module  # noqa: E402
from hubroute.training.data import CARvECollator  # noqa: E402

RANK = int(os.environ.get("RANK", "0"))
SEEN: list[list[int]] = []  # example indices of every batch this process collated
SAVES: list[str] = []  # folders this process wrote with save_pretrained
TRAINERS: list[CARvETrainer] = []


def base_config(out: Path, **changes) -> CARvEConfig:
    """The trainer tests' small recipe (:func:`factories.small_carve_config`), with 4 examples per process and
    its Trainer files under ``out``."""
    defaults = {"output_dir": str(out / "runs"), "per_device_train_batch_size": 4, "encode_batch_size": 8}
    return small_carve_config(out, **{**defaults, **changes})


def digest(router: HubRouter) -> dict[str, str]:
    """A hash of every parameter and training tensor (bit-exact comparison across processes)."""
    tensors = {**dict(router.named_parameters()), **{f"t.{k}": v for k, v in router.training_tensors.items()}}
    return {
        name: hashlib.sha256(t.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]
        for name, t in sorted(tensors.items())
    }


def _instrument() -> None:
    collate = CARvECollator.__call__

    def recording_collate(self, batch_rows):
        SEEN.append([int(r["index"]) for r in batch_rows])
        return collate(self, batch_rows)

    CARvECollator.__call__ = recording_collate
    save = HubRouter.save_pretrained

    def recording_save(self, folder, **kwargs):
        SAVES.append(str(folder))
        return save(self, folder, **kwargs)

    HubRouter.save_pretrained = recording_save
    write = trainer_module.write_router

    def recording_write(router, folder):  # Trainer checkpoints write the router's files in place
        SAVES.append(str(folder))
        return write(router, folder)

    trainer_module.write_router = recording_write
    train = CARvETrainer.train

    def recording_train(self, *args, **kwargs):
        TRAINERS.append(self)
        return train(self, *args, **kwargs)

    CARvETrainer.train = recording_train


def _experience_info(trainer: CARvETrainer) -> dict:
    hard = trainer.sampler.hard_negatives
    return {
        "world_size": trainer.args.world_size,
        "process_index": trainer.args.process_index,
        "parallel_mode": str(trainer.args.parallel_mode),
        "features": hashlib.sha256(trainer.features.numpy().tobytes()).hexdigest()[:16],
        "hard": None if hard is None else hashlib.sha256(hard.tobytes()).hexdigest()[:16],
        "num_examples": len(trainer.train_dataset),
    }


def suite(encoder: str, out: Path) -> dict:
    from hubroute.cli.train import run

    _instrument()
    data = out / f"exp1-rank{RANK}.jsonl"  # the same rows; one file per process, no race to write it
    topic_experience(range(0, 6)).to_json(str(data))
    report: dict = {"rank": RANK}
    flags = [
        "--num_train_epochs", "2", "--per_device_train_batch_size", "4", "--num_candidates", "8",
        "--num_hard_negatives", "2", "--num_group_negatives", "3", "--num_far_negatives", "2",
        "--disable_tqdm", "true", "--seed", "0", "--logging_steps", "1000", "--encode_batch_size", "8",
        "--encoder_mode", "full", "--learning_rate", "1e-3", "--ewc_weight", "1.0", "--replay_fraction", "0.25",
        "--output_dir", str(out / "runs"), "--report_to", "none", "--holdout_fraction", "0",
    ]  # fmt: skip
    code = run(
        [
            "--data",
            str(data),
            "--output",
            str(out / "router"),
            "--encoder",
            encoder,
            "--max_length",
            "64",
            *flags,
        ]
    )
    trainer = TRAINERS[-1]
    router = trainer.router
    report["cli_exit"] = code
    report["e1"] = {**_experience_info(trainer), "seen": SEEN[:], "digest": digest(router)}
    if RANK == 0:  # the saved router loads and matches the trained one (rank 1 waited for it in run())
        loaded = HubRouter.from_pretrained(out / "router")
        report["loaded_matches"] = digest(loaded) == {k: v for k, v in digest(router).items()}
    report["saves_e1"] = SAVES[:]

    # Experience 2: phase 1 (encoder outputs cached, encoder parameters unused), EWC, drift compensation.
    SEEN.clear()
    args = base_config(out, encoder_mode="full", learning_rate=1e-3, ewc_weight=1.0, drift_compensation=True)
    second = CARvETrainer(
        model=router, args=args, train_dataset=topic_experience(range(4, 10)), experience="e2"
    )
    second.train()
    report["e2"] = {**_experience_info(second), "seen": SEEN[:], "digest": digest(router)}
    torch.save({k: v.detach().clone() for k, v in router.state_dict().items()}, out / f"suite-rank{RANK}.pt")

    # Trainer checkpoints: rank 0 is slow to write the router, rank 1 slow at every barrier.
    SAVES.clear()
    slow_save, slow_barrier = trainer_module.write_router, torch.distributed.barrier

    def delayed_save(router, folder):
        time.sleep(1.0)
        return slow_save(router, folder)

    def delayed_barrier(*args, **kwargs):
        time.sleep(0.5)
        return slow_barrier(*args, **kwargs)

    if RANK == 0:
        trainer_module.write_router = delayed_save
    else:
        torch.distributed.barrier = delayed_barrier
    ckpt_router = HubRouter(RouterConfig(EncoderConfig(encoder, max_length=64)))
    args = base_config(
        out,
        output_dir=str(out / "ckpt"),
        encoder_mode="full",
        learning_rate=1e-3,
        save_strategy="steps",
        save_steps=2,
    )
    CARvETrainer(model=ckpt_router, args=args, train_dataset=topic_experience(range(0, 6))).train()
    trainer_module.write_router, torch.distributed.barrier = slow_save, slow_barrier
    report["saves_ckpt"] = SAVES[:]
    distributed.wait_for_everyone()
    if RANK == 0:
        checkpoints = {}
        for folder in sorted((out / "ckpt").glob("checkpoint-*")):
            loaded = HubRouter.from_pretrained(folder)
            checkpoints[folder.name] = {
                "files": sorted(p.name for p in folder.iterdir()),
                "models": loaded.num_models,
                "encoder_saved": (folder / "encoder").is_dir(),
            }
        report["checkpoints"] = checkpoints
    report["routes"] = routes(encoder, out, batch=4)  # 2 processes x 4 = one process x 8
    return report


def routes(encoder: str, out: Path, batch: int, sparse: str = "off") -> dict:
    torch.manual_seed(0)
    router = HubRouter(RouterConfig(EncoderConfig(encoder, max_length=64)))
    data = topic_experience(range(0, 8), per_model=4)  # 32 examples: 4 steps of 8 per epoch
    args = base_config(
        out,
        sparse_embeddings=sparse,
        encoder_mode="frozen",
        per_device_train_batch_size=batch,
        train_sampling_strategy="sequential",
        warmup_steps=0,
        num_train_epochs=3,
        embedding_learning_rate=1e-2,
        head_learning_rate=1e-2,
    )
    trainer = CARvETrainer(model=router, args=args, train_dataset=data, experience="e1")
    trainer.train()
    scores, ids = router.search(list(data["prompt"]), 5)
    return {
        "rank": RANK,
        "world_size": trainer.args.world_size,
        "sparse": trainer.sparse,
        "digest": digest(router),
        "top5": ids.tolist(),
        "scores": scores.tolist(),
        "steps": trainer.state.global_step,
    }


def timing(encoder: str, out: Path, models: int, per_model: int) -> dict:
    router = HubRouter(RouterConfig(EncoderConfig(encoder, max_length=64)))
    data = topic_experience(range(0, models), per_model=per_model)
    args = base_config(out, encoder_mode="frozen", per_device_train_batch_size=32, num_train_epochs=1,
                       encode_batch_size=64, num_candidates=16, num_group_negatives=8)  # fmt: skip
    distributed.timings.clear()
    start = time.perf_counter()
    trainer = CARvETrainer(model=router, args=args, train_dataset=data, experience="e1")
    built = time.perf_counter()
    trainer.train()
    done = time.perf_counter()
    return {
        "rank": RANK,
        "world_size": trainer.args.world_size,
        "examples": len(data),
        "init_s": round(built - start, 2),
        "train_s": round(done - built, 2),
        "split_passes_s": {k: round(v, 2) for k, v in distributed.timings.items()},
    }


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("hubroute.training.distributed").setLevel(logging.INFO)
    torch.set_num_threads(1)
    scenario, encoder, out = argv[0], argv[1], Path(argv[2])
    out.mkdir(parents=True, exist_ok=True)
    if scenario == "suite":
        report = suite(encoder, out)
    elif scenario == "routes":
        report = routes(encoder, out, int(argv[3]), *argv[4:5])
    elif scenario == "timing":
        report = timing(encoder, out, int(argv[3]), int(argv[4]))
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")
    (out / f"{scenario}-rank{RANK}.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
