"""Routing: the router, its registry of models, the prompt encoder and the scoring index."""

from .config import RouterConfig
from .encoder import DEFAULT_ENCODER, EncoderConfig, PromptEncoder
from .index import ScoringIndex
from .registry import ModelRecord, Registry, model_key
from .rerank import Reranker
from .results import RouteResult
from .router import HubRouter

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
]
