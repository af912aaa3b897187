"""Evaluation: CMRBench metrics (accuracy matrices, forgetting) and routing accuracy, shared by the benchmark
and the update's forgetting gate."""

from .metrics import AccuracyMatrix, LabelMaps, score_predictions, summarize
from .ranking import Ranker, router_ranker, routing_accuracy

__all__ = [
    "AccuracyMatrix",
    "LabelMaps",
    "score_predictions",
    "summarize",
    "Ranker",
    "router_ranker",
    "routing_accuracy",
]
