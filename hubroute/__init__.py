"""hubroute: pick the right Hugging Face model for a prompt, and keep learning as the Hub grows.

The main entry points:

- :class:`HubRouter` routes prompts (``route``) and is saved and shared with ``save_pretrained`` /
  ``from_pretrained`` / ``push_to_hub``;
- :class:`CARvEConfig` and :class:`CARvETrainer` teach a router one experience (new models and prompts)
  with the CARvE objective, replay and anchoring (and, with ``rerank_train``, its :class:`Reranker`: a
  cross-encoder that re-ranks the router's top candidates against their cards);
- :class:`Runner` routes a prompt (with its image, audio or table) to a model whose task takes it and runs
  that model's own ``InferenceClient`` call (:class:`RunConfig`, :class:`RunResult`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._utils.lazy import lazy_attributes
from ._utils.version import __version__
from .errors import (
    BackendUnavailableError,
    CheckpointError,
    CheckpointNotFoundError,
    DataFormatError,
    DistributedLaunchError,
    ForgettingGateError,
    HubAccessError,
    HubRouteError,
    IncompatibleCheckpointError,
    InvalidInputError,
    InvalidPromptError,
    ModelCallError,
    TaskNotAvailableError,
    UnknownModelError,
)

if TYPE_CHECKING:
    from .routing.config import IndexConfig, RerankConfig, RouterConfig
    from .routing.encoder import DEFAULT_ENCODER, EncoderConfig
    from .routing.options import Calibration, RouteFilter
    from .routing.registry import ModelRecord, Registry
    from .routing.rerank import Reranker
    from .routing.results import Explanation, NearestPrompt, RouteResult
    from .routing.router import HubRouter
    from .run.runner import RunConfig, Runner, RunResult
    from .training.config import CARvEConfig
    from .training.trainer import CARvETrainer

# torch, transformers, the training stack and the runner are imported when a name that needs them is first
# used, so that `import hubroute` (and `hubroute --help`) stays fast.
_LAZY = {
    "RouterConfig": ".routing.config",
    "IndexConfig": ".routing.config",
    "RerankConfig": ".routing.config",
    "DEFAULT_ENCODER": ".routing.encoder",
    "EncoderConfig": ".routing.encoder",
    "Calibration": ".routing.options",
    "RouteFilter": ".routing.options",
    "ModelRecord": ".routing.registry",
    "Registry": ".routing.registry",
    "Reranker": ".routing.rerank",
    "Explanation": ".routing.results",
    "NearestPrompt": ".routing.results",
    "RouteResult": ".routing.results",
    "HubRouter": ".routing.router",
    "Runner": ".run.runner",
    "RunConfig": ".run.runner",
    "RunResult": ".run.runner",
    "CARvEConfig": ".training.config",
    "CARvETrainer": ".training.trainer",
}
__getattr__ = lazy_attributes(__name__, _LAZY, globals())


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "__version__",
    "HubRouter",
    "RouterConfig",
    "IndexConfig",
    "RerankConfig",
    "RouteResult",
    "RouteFilter",
    "Calibration",
    "Explanation",
    "NearestPrompt",
    "Registry",
    "ModelRecord",
    "Reranker",
    "EncoderConfig",
    "DEFAULT_ENCODER",
    "CARvEConfig",
    "CARvETrainer",
    "Runner",
    "RunConfig",
    "RunResult",
    "HubRouteError",
    "InvalidPromptError",
    "UnknownModelError",
    "CheckpointError",
    "CheckpointNotFoundError",
    "IncompatibleCheckpointError",
    "DataFormatError",
    "DistributedLaunchError",
    "BackendUnavailableError",
    "HubAccessError",
    "ForgettingGateError",
    "InvalidInputError",
    "TaskNotAvailableError",
    "ModelCallError",
]
