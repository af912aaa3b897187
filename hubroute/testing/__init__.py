"""Test helpers shipped with hubroute, for its tests, examples and benchmarks (no network needed).

- :class:`LocalHub` (in :mod:`hubroute.testing.hub_server`) speaks the subset of the Hugging Face Hub HTTP API
  that ``huggingface_hub`` and ``datasets`` use; :mod:`hubroute.testing.hub_seed` fills one with models built
  from CMRBench.
- :mod:`hubroute.testing.fake_provider` is a fake OpenAI-compatible inference provider with faults, and
  :mod:`hubroute.testing.server` runs an ASGI app with uvicorn in a background thread.
"""

from .hub_server import LocalHub

__all__ = ["LocalHub"]
