"""Routing: the router, its registry of models, the prompt encoder and the scoring index.

The names below are imported on first use (torch and FAISS load then), so that importing a light module of
this package (the registry, the taxonomy, the index kinds) does not load the encoder stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._utils.lazy import lazy_attributes

if TYPE_CHECKING:
    from .config import IndexConfig, RerankConfig, RouterConfig
    from .encoder import DEFAULT_ENCODER, EncoderConfig, PromptEncoder
    from .index import ScoringIndex
    from .registry import ModelRecord, Registry, model_key
    from .rerank import Reranker
    from .results import RouteResult
    from .router import HubRouter
    from .scoring import Scorer

_LAZY = {
    "DEFAULT_ENCODER": ".encoder",
    "EncoderConfig": ".encoder",
    "PromptEncoder": ".encoder",
    "ScoringIndex": ".index",
    "ModelRecord": ".registry",
    "Registry": ".registry",
    "model_key": ".registry",
    "RouteResult": ".results",
    "Reranker": ".rerank",
    "HubRouter": ".router",
    "RouterConfig": ".config",
    "IndexConfig": ".config",
    "RerankConfig": ".config",
    "Scorer": ".scoring",
}
__getattr__ = lazy_attributes(__name__, _LAZY, globals())

__all__ = [
    "DEFAULT_ENCODER",
    "EncoderConfig",
    "PromptEncoder",
    "ScoringIndex",
    "ModelRecord",
    "Registry",
    "model_key",
    "RouteResult",
    "Reranker",
    "HubRouter",
    "RouterConfig",
    "IndexConfig",
    "RerankConfig",
    "Scorer",
]
