"""Serving metrics over HTTP: ``/metrics`` for Prometheus and ``/healthz`` for
whatever restarts or routes around an unhealthy process (systemd, Kubernetes,
a load balancer).

The server runs in threads the way prometheus_client's ``start_http_server``
does, so a scrape never waits for a busy event loop. For the same reason the
health check it calls runs in the server's thread: it must only read a
snapshot that the event loop keeps up to date, never an asyncio object.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from socketserver import ThreadingMixIn
from types import TracebackType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIEnvironment

import anyio
import msgspec
from prometheus_client import CollectorRegistry, make_wsgi_app

from .._errors import CallboardError, ConfigError

__all__ = ["DEFAULT_METRICS_HOST", "HealthCheck", "MetricsServer", "parse_metrics_address"]

log = logging.getLogger("callboard.metrics")

DEFAULT_METRICS_HOST = "127.0.0.1"
"""Where metrics are served when an address gives only a port: never every
interface unless the address says so (``0.0.0.0:9464``)."""

HealthCheck = Callable[[], tuple[bool, Mapping[str, Any]]]
"""Returns (healthy, details); called from the server's thread."""

_POLL_INTERVAL = 0.2
"""Seconds between the server loop's shutdown checks: how long closing may take."""
_ADDRESS_HELP = (
    "write PORT, :PORT or HOST:PORT, e.g. 9464 or 127.0.0.1:9464 "
    "(0.0.0.0:9464 to listen on every interface; port 0 picks a free one)"
)


def parse_metrics_address(address: str) -> tuple[str, int]:
    """``"9464"``, ``":9464"`` → ``("127.0.0.1", 9464)``; ``"HOST:PORT"`` as written.

    An IPv6 host goes in brackets: ``[::1]:9464``.

    Raises:
        ConfigError: the address is not one of those forms.
    """
    text = address.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host or "/" in host:
        raise ConfigError(f"invalid metrics address {address!r}: {_ADDRESS_HELP}")
    if not (port_text.isascii() and port_text.isdigit()) or int(port_text) > 65535:
        raise ConfigError(f"invalid metrics address {address!r}: {_ADDRESS_HELP}")
    return host or DEFAULT_METRICS_HOST, int(port_text)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr: a scrape every few seconds is not news."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class MetricsServer:
    """Serves ``/metrics`` from a registry and ``/healthz`` from a health check.

    An async context manager: the server listens from entry to exit.

    Args:
        address: ``PORT``, ``:PORT`` or ``HOST:PORT`` (see ``parse_metrics_address``).
        registry: the registry whose metrics are served.
        health: returns (healthy, details): 200 or 503 with ``details`` as JSON.
            Without one, ``/healthz`` answers 200 while the server runs.

    Attributes:
        host: the interface it listens on.
        port: the port asked for, then the port bound (port 0 picks one).

    Raises:
        ConfigError: the address is malformed (here), or cannot be listened on
            (on entry).
    """

    def __init__(
        self, address: str, registry: CollectorRegistry, *, health: HealthCheck | None = None
    ) -> None:
        self.host, self.port = parse_metrics_address(address)
        self._metrics_app = make_wsgi_app(registry)
        self._health = health
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        if self._server is None:
            raise CallboardError("the metrics server is not running")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def __aenter__(self) -> MetricsServer:
        if self._server is not None:
            raise CallboardError("the metrics server is already running")
        await anyio.to_thread.run_sync(self._start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._stop)

    def _start(self) -> None:
        try:
            family = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)[0][0]
            server_class = _Server6 if family == socket.AF_INET6 else _Server
            server = make_server(
                self.host, self.port, self._app, server_class, handler_class=_QuietHandler
            )
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {self.host}:{self.port}: {exc.strerror or exc}; "
                "choose another address (metrics_address, --metrics)"
            ) from exc
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL},
            name=f"callboard-metrics-{self.port}",
            daemon=True,
        )
        self._thread.start()
        log.debug("serving metrics on %s", self.url)

    def _stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            body: Iterable[bytes] = self._metrics_app(environ, start_response)
            return body
        if path == "/healthz":
            return self._healthz(start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [f"no {path}: this server has /metrics and /healthz\n".encode()]

    def _healthz(self, start_response: StartResponse) -> list[bytes]:
        healthy: bool
        details: Mapping[str, Any]
        if self._health is None:
            healthy, details = True, {"status": "ok"}
        else:
            try:
                healthy, details = self._health()
            except Exception as exc:
                log.exception("the health check failed")
                healthy, details = False, {"status": "unhealthy", "error": str(exc)}
        status = "200 OK" if healthy else "503 Service Unavailable"
        start_response(status, [("Content-Type", "application/json")])
        return [msgspec.json.encode(details) + b"\n"]
