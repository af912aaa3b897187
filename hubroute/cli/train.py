"""``hubroute train``: train a router on CMRBench experiences or a data file, from a YAML config file or flags.

The flags are the fields of :class:`TrainScriptArguments` and of :class:`~hubroute.CARvEConfig` (parsed with
:class:`trl.TrlParser`, so ``--config carve.yaml`` works as in TRL). ``--help`` lists the data, router and
CARvE flags and the common Trainer ones, without importing the training stack; ``--help-all`` adds every
inherited :class:`transformers.TrainingArguments` flag.
"""

from __future__ import annotations

import argparse
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..bench.names import CMRBENCH_REPO, EXPERIENCES
from ..training.arguments import RECIPES, TRAINER_DEFAULTS, CARvEArguments
from ._args import (
    ArgumentContainer,
    HelpFormatter,
    add_dataclass_arguments,
    check_file_argument,
    dataclass_help,
    wants_help,
)
from ._data import check_bench_source, check_router_source, load_bench_source, offline

__all__ = ["TrainScriptArguments", "help_parser", "make_parser", "print_help", "run"]

logger = logging.getLogger(__name__)

DEFAULT_ENCODER = "bundled:all-MiniLM-L6-v2"
"""The bundled encoder's name (:data:`hubroute.routing.encoder.DEFAULT_ENCODER`; a test keeps them equal)."""
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
"""Data file suffixes (:data:`hubroute.training.data.DATA_SUFFIXES`; a test keeps them equal)."""

USAGE = "hubroute train --output DIR [--data DATA] [--router ROUTER] [options]"
DESCRIPTION = (
    "Train a router with CARvE on CMRBench's experiences (--data: the Hub or a folder) or one data file, saving "
    "it to --output after each experience."
)


@dataclass
class TrainScriptArguments:
    """What to train on and where the router goes (the training recipe itself is :class:`CARvEConfig`)."""

    output: str = field(metadata={"help": "Folder the router is saved to, after each experience."})
    data: str = field(
        default=CMRBENCH_REPO,
        metadata={
            "help": f"CMRBench: a folder or a Hub dataset repo (default: {CMRBENCH_REPO}); or one .jsonl, .json, "
            ".csv or .parquet file with prompt and model_id columns."
        },
    )
    experiences: list[str] | None = field(
        default=None,
        metadata={
            "help": f"CMRBench experiences to learn, in order (default: all: {' '.join(EXPERIENCES)})."
        },
    )
    router: str | None = field(
        default=None, metadata={"help": "Continue a saved router (folder or Hub repo)."}
    )
    encoder: str = field(
        default=DEFAULT_ENCODER,
        metadata={"help": "Encoder of a new router: a model id or folder (default: the bundled MiniLM)."},
    )
    embedding_dim: int | None = field(
        default=None, metadata={"help": "Embedding size of a new router (default: the encoder's)."}
    )
    temperature: float = field(default=0.08, metadata={"help": "Temperature of a new router."})
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
        metadata={"help": "Prompt tokens of a new router (default: 256, or the encoder's limit)."},
    )

    def __post_init__(self) -> None:
        if self.embedding_dim is not None and self.embedding_dim < 1:
            raise ValueError(f"--embedding-dim must be a positive integer, got {self.embedding_dim}.")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"--temperature must be a positive number, got {self.temperature}.")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"--max-length must be a positive integer, got {self.max_length}.")
        unknown = [name for name in self.experiences or [] if name not in EXPERIENCES]
        if unknown and Path(self.data).suffix.lower() not in DATA_SUFFIXES:
            raise KeyError(f"Unknown CMRBench experience(s) {unknown}; choose from {list(EXPERIENCES)}.")


# Inherited TrainingArguments flags shown in the short help (defaults are transformers'; a test checks them).
_COMMON_TRAINER_FLAGS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("seed", {"metavar": "N", "default": 42, "help": "Random seed."}),
    ("max_steps", {"metavar": "N", "default": -1, "help": "Stop after N steps (-1: the epochs decide)."}),
    ("bf16", {"metavar": "BOOL", "nargs": "?", "help": "bf16 mixed precision (GPU)."}),
    ("fp16", {"metavar": "BOOL", "nargs": "?", "help": "fp16 mixed precision (GPU)."}),
    ("push_to_hub", {"metavar": "BOOL", "nargs": "?",
                     "help": "Push the trained router to --hub-model-id (after the last experience)."}),
    ("hub_model_id", {"metavar": "ORG/NAME", "help": "The Hub repo --push-to-hub pushes to (needed with it)."}),
    ("hub_private_repo", {"metavar": "BOOL", "nargs": "?", "help": "Create that repo private."}),
    ("hub_revision", {"metavar": "BRANCH", "help": "Push to this branch of the repo (default: main)."}),
    ("hub_token", {"metavar": "TOKEN", "help": "Hub token (default: HF_TOKEN or the stored login)."}),
)  # fmt: skip


def _common_trainer_flags(group: ArgumentContainer) -> None:
    for name, kwargs in _COMMON_TRAINER_FLAGS:
        underscored = [f"--{name}"] if "_" in name else []
        action = group.add_argument(f"--{name.replace('_', '-')}", *underscored, dest=name, **kwargs)
        action.hubroute_hidden_spellings = set(underscored)  # type: ignore[attr-defined]
    group.add_argument(
        "--config", metavar="YAML", help="YAML file of any of these fields (flags given too win)."
    )
    _progress_flag(group)


def _carve_fields() -> list[str]:
    import dataclasses

    return [f.name for f in dataclasses.fields(CARvEArguments) if f.name not in TRAINER_DEFAULTS]


SHORT_HELP_GROUPS: list[tuple[str, type, list[str]]] = [
    ("data and output", TrainScriptArguments, ["data", "experiences", "output", "router", "recipe"]),
    ("a new router", TrainScriptArguments, ["encoder", "embedding_dim", "temperature", "max_length"]),
    ("the CARvE recipe (CARvEConfig)", CARvEArguments, _carve_fields()),
    (
        "training (transformers.TrainingArguments, with CARvE's defaults)",
        CARvEArguments,
        list(TRAINER_DEFAULTS),
    ),
]
"""The dataclass fields ``hubroute train --help`` lists, group by group (the common Trainer flags follow)."""


def help_parser(full: bool = False) -> argparse.ArgumentParser:
    """The parser that prints ``hubroute train --help``, built from the dataclasses without the training stack.

    Args:
        full: ``--help-all``: add every other inherited :class:`transformers.TrainingArguments` option, from
            :class:`~hubroute.CARvEConfig`'s fields (this imports the training stack).

    Returns:
        A parser for its help only; :func:`make_parser` parses.
    """
    epilog = (
        "Every other transformers.TrainingArguments flag is accepted too: `hubroute train --help-all` lists "
        "them. Each flag also takes underscores (--num_train_epochs)."
    )
    groups: list[tuple[str, Any]] = [(title, (cls, names)) for title, cls, names in SHORT_HELP_GROUPS]
    groups.append(("common inherited Trainer options", _common_trainer_flags))
    if full:
        from ..training.config import CARvEConfig

        shown = {name for _, _, names in SHORT_HELP_GROUPS for name in names}
        shown |= {name for name, _ in _COMMON_TRAINER_FLAGS} | {"config", "disable_tqdm"}  # --no-progress
        groups.append(
            (
                "every other inherited transformers.TrainingArguments option",
                lambda group: add_dataclass_arguments(group, CARvEConfig, skip=shown),
            )
        )
    return dataclass_help("hubroute train", DESCRIPTION, groups, epilog=None if full else epilog, usage=USAGE)


def print_help(full: bool = False) -> None:
    """Print ``hubroute train --help`` (``full``: ``--help-all``, every inherited Trainer flag too)."""
    help_parser(full).print_help()


def make_parser(prog: str = "hubroute train") -> Any:
    """The real parser of ``hubroute train`` (:class:`trl.TrlParser` over the script's arguments and
    :class:`~hubroute.CARvEConfig`, plus ``--no-progress``); it imports the training stack."""
    from trl import TrlParser

    from ..training.config import CARvEConfig

    # Typed Any: transformers types DataClassType as NewType("DataClassType", Any), which no class matches.
    dataclasses: list[Any] = [TrainScriptArguments, CARvEConfig]
    parser = TrlParser(dataclasses, prog=prog, usage=USAGE, formatter_class=HelpFormatter)
    _progress_flag(parser)
    return parser


def _progress_flag(parser: ArgumentContainer) -> None:
    parser.add_argument(
        "--no-progress",
        "--no_progress",
        dest="disable_tqdm",
        action="store_const",
        const=True,
        default=argparse.SUPPRESS,
        help="Quiet: no progress bars or lines (transformers', datasets' and huggingface_hub's included), only "
        "what was trained and saved (same as --disable-tqdm true).",
    )


def _flag_value(argv: list[str], flag: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _check_push(config: Any) -> None:
    """Check ``--push-to-hub`` before training: a repo id to push to, and a token to push with."""
    from .._utils.repo_ids import is_repo_id

    if not config.push_to_hub:
        return
    if not config.hub_model_id:
        raise ValueError("--push-to-hub needs --hub-model-id ORG/NAME: the Hub repo to push the router to.")
    if not is_repo_id(config.hub_model_id):
        raise ValueError(f"--hub-model-id {config.hub_model_id!r} is not a Hub repo id (ORG/NAME).")
    if offline():
        raise ValueError("--push-to-hub cannot push while HF_HUB_OFFLINE is set; unset it, or push later with "
                         "`hubroute push OUTPUT ORG/NAME`.")  # fmt: skip
    from huggingface_hub import get_token

    if not (config.hub_token or get_token()):
        raise ValueError(
            "--push-to-hub needs a Hub token with write access: set HF_TOKEN, run `hf auth login`, or pass "
            "--hub-token."
        )


def _check_encoder(name: str) -> None:
    """Check, before anything is loaded, that the encoder of a new router can be found.

    Raises:
        FileNotFoundError: not the bundled encoder, not a folder and not a Hub model id.
        HubAccessError: a Hub model id while offline that is not in the cache.
    """
    from .._utils.repo_ids import is_repo_id

    if name == DEFAULT_ENCODER or Path(name).expanduser().is_dir():
        return
    if Path(name).expanduser().exists() or not is_repo_id(name):
        raise FileNotFoundError(
            f"--encoder {name}: no model folder there, and not a Hub model id. Pass a sentence-transformers "
            f"folder, a Hub model id, or leave it out for the bundled {DEFAULT_ENCODER}."
        )
    if offline():
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(name, "config.json"), str):
            from ..errors import HubAccessError

            raise HubAccessError(
                f"--encoder {name} is a Hub model that is not in the local cache, and HF_HUB_OFFLINE forbids "
                "downloading it. Download it once online, pass a local folder, or leave --encoder out for the "
                f"bundled {DEFAULT_ENCODER}."
            )


def _check_data(script: TrainScriptArguments) -> None:
    if Path(script.data).suffix.lower() in DATA_SUFFIXES:
        check_file_argument("--data", script.data)
    else:
        check_bench_source("--data", script.data)


def _experiences(script: TrainScriptArguments) -> list[tuple[str, Any]]:
    path = Path(script.data)
    if path.is_file() or path.suffix.lower() in DATA_SUFFIXES:  # a missing data file is named as such
        from ..training.data import load_experience_file

        return [(path.stem, load_experience_file(path))]
    bench = load_bench_source("--data", script.data, script.experiences)
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
    if "--help-all" in argv or wants_help(argv):  # as argparse does: print, then exit 0
        print_help(full="--help-all" in argv)
        raise SystemExit(0)
    check_file_argument("--config", _flag_value(argv, "--config"))
    parser = make_parser()
    _recipe_defaults(parser, argv)
    script, config = parser.parse_args_and_config(argv)
    from ..routing.serialization import check_router_target

    # Before any loading: the output, the data, the router or encoder, the push.
    check_router_target(Path(script.output))
    _check_data(script)
    check_router_source("--router", script.router)
    if not script.router:
        _check_encoder(script.encoder)
    _check_push(config)
    if config.disable_tqdm:
        from ..training.progress import quiet_libraries

        quiet_libraries()
    return _train(script, config)


def _train(script: TrainScriptArguments, config: Any) -> int:
    import dataclasses

    from transformers import set_seed

    from ..routing.encoder import EncoderConfig, encoder_token_limit
    from ..routing.router import HubRouter, RouterConfig
    from ..training import distributed
    from ..training.trainer import CARvETrainer

    experiences = _experiences(script)
    push = config.push_to_hub
    # The router is pushed by this command (the Trainer would push its own, empty, output folder).
    config = dataclasses.replace(config, push_to_hub=False) if push else config
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
    if push and distributed.is_main_process():
        _push(router, config, script.output)
    return 0


def _push(router: Any, config: Any, output: str) -> None:
    from ..errors import HubAccessError

    try:
        commit = router.push_to_hub(
            config.hub_model_id, token=config.hub_token, private=config.hub_private_repo or None,
            branch=config.hub_revision,
        )  # fmt: skip
    except HubAccessError as err:
        raise HubAccessError(
            f"{err} The router is saved in {output}: push it with `hubroute push {output} {config.hub_model_id}`."
        ) from err
    print(f"Pushed {output} to {config.hub_model_id}: {commit}")
