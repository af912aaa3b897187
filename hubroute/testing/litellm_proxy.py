"""The real LiteLLM proxy in front of ``hubroute serve`` replicas, on loopback (tests, the fleet guide).

:func:`litellm_config` writes the deployment recipe of ``docs/guides/fleet.md``: every replica is a deployment
of one model name (``hubroute``), so LiteLLM balances between them and retries another replica when one
fails, and a ``fallbacks`` group answers when every replica of the first fails. :class:`LiteLLMProxy` runs
``litellm --config FILE`` (its own process) on 127.0.0.1 with the local cost map, so it needs no network.

The proxy needs ``litellm``'s proxy packages (``pip install 'litellm[proxy]'``); :func:`missing_proxy_modules`
names those not installed. litellm 1.83's proxy imports its MCP gateway, written for ``mcp`` 1.x; when the
``mcp`` installed is 2.x (hubroute's MCP server), the proxy is started with ``mcp`` hidden, which litellm
treats as "MCP not installed" (its MCP gateway off, everything else on).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import yaml

from .server import free_port

__all__ = ["PROXY_MODULES", "missing_proxy_modules", "litellm_config", "LiteLLMProxy"]

PROXY_MODULES = {
    "websockets": "websockets", "backoff": "backoff", "orjson": "orjson", "apscheduler": "APScheduler",
    "tzlocal": "tzlocal", "boto3": "boto3", "email_validator": "email-validator", "fastapi_sso": "fastapi-sso",
    "litellm": "litellm",
}  # fmt: skip
"""Modules litellm 1.83's proxy imports at start that hubroute's own extras do not bring, and their packages."""

_LAUNCHER = (
    "import sys\n"
    "try:\n"
    "    import mcp.server as _s\n"
    "    if not hasattr(_s.Server, 'list_tools'):\n"
    "        raise ImportError\n"
    "except ImportError:\n"
    "    for name in [m for m in sys.modules if m == 'mcp' or m.startswith('mcp.')]:\n"
    "        del sys.modules[name]\n"
    "    sys.modules['mcp'] = None  # an mcp litellm cannot use: litellm's MCP gateway is left off\n"
    "from litellm.proxy.proxy_cli import run_server\n"
    "run_server()\n"
)


def missing_proxy_modules() -> list[str]:
    """The packages the LiteLLM proxy needs that are not installed (``[]``: it can start)."""
    return [package for module, package in PROXY_MODULES.items() if importlib.util.find_spec(module) is None]


def litellm_config(
    replicas: list[str],
    *,
    model_name: str = "hubroute",
    api_key: str | None = None,
    fallback: str | None = None,
    num_retries: int = 2,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """The LiteLLM proxy config of a fleet: each replica a deployment of ``model_name``.

    Args:
        replicas: Base URLs of the replicas (``http://host:port``).
        model_name: The model name clients ask for.
        api_key: The replicas' ``--api-key`` (``None``: a placeholder, the replicas need none).
        fallback: A model name to fall back to when every replica fails (``None``: the replicas, as a second
            group ``<model_name>-fallback``, so a request that failed on one is sent to the other).
        num_retries: Retries of a failed request on another deployment.
        timeout: Seconds per request.

    Returns:
        The config as a mapping (write it with ``yaml.safe_dump``).
    """
    key = api_key or "none"
    deployments: list[dict[str, Any]] = [
        {"model_name": model_name, "litellm_params": {"model": "openai/hubroute/auto", "api_base": f"{url.rstrip('/')}/v1",
                                                      "api_key": key, "timeout": timeout}}
        for url in replicas
    ]  # fmt: skip
    backup = fallback or f"{model_name}-fallback"
    if fallback is None:
        deployments += [
            {"model_name": backup, "litellm_params": dict(d["litellm_params"])} for d in deployments
        ]
    return {
        "model_list": deployments,
        "router_settings": {"routing_strategy": "simple-shuffle", "num_retries": num_retries, "retry_after": 0,
                            "allowed_fails": 1, "cooldown_time": 5},
        "litellm_settings": {"drop_params": True, "fallbacks": [{model_name: [backup]}], "request_timeout": timeout},
    }  # fmt: skip


class LiteLLMProxy:
    """``litellm --config`` on 127.0.0.1 in a child process; a context manager that starts and stops it.

    Args:
        config: The proxy config (see :func:`litellm_config`).
        port: Port (default: a free one).
        log: File the proxy's output goes to (default: a temporary file).
    """

    def __init__(
        self, config: dict[str, Any], port: int | None = None, log: str | Path | None = None
    ) -> None:
        self.config, self.port = config, port or free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="hubroute-litellm-")
        self.config_path = Path(self._dir.name) / "litellm.yaml"
        self.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.log_path = Path(log) if log else Path(self._dir.name) / "litellm.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:port``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> LiteLLMProxy:
        """Start the proxy; return once ``/health/liveliness`` answers.

        Raises:
            RuntimeError: a package is missing, or the proxy did not start (its log's end is in the message).
        """
        missing = missing_proxy_modules()
        if missing:
            raise RuntimeError(f"The LiteLLM proxy needs these packages: pip install {' '.join(missing)}")
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
               "DISABLE_SCHEMA_UPDATE": "True", "LITELLM_DONT_SHOW_FEEDBACK_BOX": "True"}  # fmt: skip
        command = [sys.executable, "-c", _LAUNCHER, "--config", str(self.config_path), "--host", "127.0.0.1",
                   "--port", str(self.port), "--num_workers", "1"]  # fmt: skip
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        stop = time.monotonic() + timeout
        while time.monotonic() < stop:
            if self.process.poll() is not None:
                raise RuntimeError(f"The LiteLLM proxy exited: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health/liveliness", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"The LiteLLM proxy did not start within {timeout:.0f} s: {self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the proxy's output."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the proxy (terminate, then kill after 15 s)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(15)
        self._dir.cleanup()

    def __enter__(self) -> LiteLLMProxy:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
