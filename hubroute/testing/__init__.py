"""Test helpers: the local Hub-compatible server for tests and examples.

:class:`LocalHub` (in :mod:`hubroute.testing.hub_server`) speaks the subset of the Hugging Face Hub HTTP API
that ``huggingface_hub`` and ``datasets`` use, so tests and examples run without the network;
:mod:`hubroute.testing.hub_seed` fills one with models built from CMRBench.
"""

from .hub_server import LocalHub

__all__ = ["LocalHub"]
