"""Run an ASGI app with uvicorn in a background thread on a free loopback port (tests, benchmarks, examples),
or ``hubroute serve`` in a child process (:class:`ServeProcess`)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["free_port", "BackgroundServer", "ServeProcess"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class BackgroundServer:
    """uvicorn serving ``app`` in a daemon thread; a context manager that starts and stops it.

    Args:
        app: The ASGI app.
        host: Interface to bind (loopback by default).
        port: Port (default: a free one).
        log_level: uvicorn's log level.

    Example:
        ```python
        >>> with BackgroundServer(app) as server:
        ...     httpx.get(f"{server.url}/healthz")
        ```
    """

    def __init__(
        self, app: Any, host: str = "127.0.0.1", port: int | None = None, log_level: str = "warning"
    ) -> None:
        import uvicorn

        self.host, self.port = host, port or free_port(host)
        config = uvicorn.Config(app, host=self.host, port=self.port, log_level=log_level, lifespan="on",
                                timeout_graceful_shutdown=5)  # fmt: skip
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 60.0) -> BackgroundServer:
        """Start serving; return once the server accepts connections.

        Raises:
            RuntimeError: it did not start within ``timeout`` seconds.
        """
        self._thread = threading.Thread(target=self.server.run, name=f"uvicorn-{self.port}", daemon=True)
        self._thread.start()
        stop = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > stop:
                raise RuntimeError(f"The server on {self.url} did not start.")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Ask the server to exit and wait for its thread."""
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()


class ServeProcess:
    """``hubroute serve ARGS`` in a child process on 127.0.0.1 (a replica that a test can kill); a context
    manager that starts it, waits for ``/healthz`` and stops it.

    Args:
        args: The ``hubroute serve`` arguments (``--port`` and ``--host`` are added).
        port: Port (default: a free one).
        env: Extra environment variables.
        log: File the server's output goes to (default: discarded).
    """

    def __init__(
        self,
        args: list[str],
        port: int | None = None,
        env: dict[str, str] | None = None,
        log: str | None = None,
    ) -> None:
        self.args, self.port, self.env, self.log = list(args), port or free_port(), dict(env or {}), log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:port``."""
        return f"http://127.0.0.1:{self.port}"

    def launch(self) -> ServeProcess:
        """Start the process without waiting for it (see :meth:`wait`)."""
        command = [sys.executable, "-m", "hubroute.cli.main", "serve", *self.args, "--host", "127.0.0.1",
                   "--port", str(self.port), "--log-level", "warning"]  # fmt: skip
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115 - the child keeps it
        self.process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **self.env}
        )
        return self

    def wait(self, timeout: float = 300.0) -> ServeProcess:
        """Return once ``/healthz`` answers.

        Raises:
            RuntimeError: the process exited, or did not answer within ``timeout`` seconds.
        """
        import httpx

        assert self.process is not None
        stop = time.monotonic() + timeout
        while time.monotonic() < stop:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"hubroute serve on port {self.port} exited with {self.process.returncode}."
                )
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError(f"hubroute serve on port {self.port} did not start within {timeout:.0f} s.")

    def peak_rss_mb(self) -> float | None:
        """The process's peak resident memory (``VmHWM``), in MiB (``None`` where ``/proc`` has none)."""
        if self.process is None:
            return None
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final flush (a crash)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM (a graceful shutdown: uvicorn's, then the app's), then SIGKILL after ``timeout`` seconds."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        return self.process.returncode

    def __enter__(self) -> ServeProcess:
        return self.launch().wait()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
