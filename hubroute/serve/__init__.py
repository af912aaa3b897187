"""``hubroute serve``: an OpenAI-compatible router endpoint (FastAPI + uvicorn).

Needs the ``serve`` extra (``pip install "hubroute[serve]"``): FastAPI, uvicorn, prometheus-client, httpx.

- :func:`create_app` builds the ASGI app (``POST /v1/route``, ``POST /v1/chat/completions``, ``POST /v1/feedback``,
  ``GET /v1/models``, ``/healthz``, ``/metrics``; OpenAPI at ``/docs``), to run with uvicorn or mount in-process;
- :class:`ServeConfig` holds every setting.
"""

from __future__ import annotations

from .app import create_app
from .config import AUTO_MODEL, ServeConfig

__all__ = ["create_app", "ServeConfig", "AUTO_MODEL"]
