"""``hubroute train``: teach a router one experience or a sequence, from a config file or flags."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..bench.cmrbench import load_cmrbench
from ..routing.encoder import DEFAULT_ENCODER, EncoderConfig, encoder_token_limit
from ..routing.router import HubRouter, RouterConfig
from ..routing.serialization import check_router_target
from ..training.config import RECIPES, CARvEConfig
from ..training.data import DATA_SUFFIXES, load_experience_file
from ..training.progress import quiet_libraries
from ..training.trainer import CARvETrainer

__all__ = ["TrainScriptArguments", "make_parser", "run"]

logger = logging.getLogger(__name__)


@dataclass
class TrainScriptArguments:
    """What to train on and where the router goes (the training recipe itself is :class:`CARvEConfig`)."""

    data: str = field(
        metadata={
            "help": "A CMRBench folder or Hub dataset repo (with --experiences), or one data file "
            "(.jsonl/.json/.csv/.parquet) with 'prompt' and 'model_id' columns."
        }
    )
    output: str = field(metadata={"help": "Folder the trained router is saved to (after every experience)."})
    experiences: list[str] | None = field(
        default=None, metadata={"help": "CMRBench experiences to learn, in order (default: all)."}
    )
    router: str | None = field(
        default=None, metadata={"help": "Continue a saved router (folder or Hub repo)."}
    )
    encoder: str = field(
        default=DEFAULT_ENCODER, metadata={"help": "Encoder of a new router (model id or path)."}
    )
    embedding_dim: int | None = field(default=None, metadata={"help": "Embedding size of a new router."})
    temperature: float = field(default=0.08, metadata={"help": "Softmax temperature of a new router."})
    recipe: str = field(
        default="default",
        metadata={
            "help": "Training recipe whose settings replace the defaults (a --config file and flags still win): "
            "'default', or 'quick' (frozen encoder, only the projection and model embeddings train: a first "
            "router in minutes and little memory; see docs/guides/train-recipes.md).",
            "choices": sorted(RECIPES),
        },
    )
    max_length: int | None = field(
        default=None,
        metadata={
            "help": "Prompt truncation (tokens) of a new router (default: 256, or the encoder's limit if lower)."
        },
    )


def make_parser(prog: str = "hubroute train") -> Any:
    import argparse

    from trl import TrlParser

    # The ignore: transformers types DataClassType as NewType("DataClassType", Any), which no class matches.
    parser = TrlParser([TrainScriptArguments, CARvEConfig], prog=prog)  # type: ignore[list-item]
    parser.add_argument(
        "--no-progress",
        "--no_progress",
        dest="disable_tqdm",
        action="store_const",
        const=True,
        default=argparse.SUPPRESS,
        help="Quiet: no progress bars or lines (transformers', datasets' and huggingface_hub's included), only "
        "what was trained and saved (same as --disable_tqdm true).",
    )
    return parser


def _experiences(script: TrainScriptArguments) -> list[tuple[str, Any]]:
    path = Path(script.data)
    if path.is_file() or path.suffix.lower() in DATA_SUFFIXES:  # a missing data file is named as such
        return [(path.stem, load_experience_file(path))]

    bench = load_cmrbench(script.data, experiences=script.experiences)
    return [(e.name, e.train) for e in bench]


def _recipe_defaults(parser: Any, argv: list[str]) -> None:
    """Make the ``--recipe`` named in ``argv`` the parser's defaults (under --config and the flags)."""
    import argparse

    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--recipe", default="default", choices=sorted(RECIPES))
    known, _ = first.parse_known_args(argv)
    parser.set_defaults(**RECIPES[known.recipe])


def run(argv: list[str]) -> int:
    """Parse ``argv`` and train; return the exit code."""
    parser = make_parser()
    _recipe_defaults(parser, argv)
    script, config = parser.parse_args_and_config(argv)
    from transformers import set_seed

    if config.disable_tqdm:
        quiet_libraries()
    check_router_target(Path(script.output))  # before any training: --output must be writable as a router
    experiences = _experiences(script)
    set_seed(config.seed)  # the new router's projection is drawn before the trainer seeds anything
    if script.router:
        router = HubRouter.from_pretrained(script.router)
        print(
            f"Continuing {script.router}: {router.num_models} models, experiences {router.info.get('experiences', [])}"
        )
    else:
        max_length = script.max_length or min(256, encoder_token_limit(script.encoder) or 256)
        encoder = EncoderConfig(script.encoder, max_length=max_length)
        router = HubRouter(
            RouterConfig(encoder, embedding_dim=script.embedding_dim, temperature=script.temperature)
        )
    for i, (name, data) in enumerate(experiences, start=1):
        print(f"Experience {i}/{len(experiences)} {name}: {len(data)} examples")
        trainer = CARvETrainer(
            model=router, args=config, train_dataset=data, experience=name,
            progress=f"experience {i}/{len(experiences)} {name}",
        )  # fmt: skip
        trainer.train()
        if trainer.is_world_process_zero():  # under a multi-process launch, the main process writes
            trainer.accelerator.unwrap_model(trainer.model).save_pretrained(script.output)
            print(f"Saved {router.num_models} models to {script.output}")
        trainer.accelerator.wait_for_everyone()  # the others wait for the saved router
    return 0
