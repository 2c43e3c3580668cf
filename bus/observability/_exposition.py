"""Serving metrics over HTTP: ``/metrics`` for Prometheus and ``/healthz`` for
whatever restarts or routes around an unhealthy process (systemd, Kubernetes,
a load balancer).

The server runs on the process's own event loop, with bounds, because whoever
can reach the port can open connections: at most ``max_connections`` at once
(fewer when the process's file limit is low, so the NATS connection always has
descriptors to reconnect with), each closed if its request does not arrive
within ``timeout`` seconds. When every slot is taken, a new connection replaces
the oldest one that has not sent its request yet, so idle connections cannot
lock a health probe out; connections beyond that wait in the kernel's backlog,
costing the process no descriptor. ``/healthz`` is answered on the loop, so a
loop too busy to serve cannot answer "ok"; ``/metrics`` is rendered in a worker
thread, one scrape at a time.
"""

from __future__ import annotations

import logging
import os
import resource
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import anyio
import h11
import msgspec
from anyio.abc import SocketAttribute, SocketListener, SocketStream, TaskGroup
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from .._errors import CallboardError, ConfigError

__all__ = [
    "DEFAULT_HTTP_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_METRICS_HOST",
    "HealthCheck",
    "MetricsServer",
    "parse_metrics_address",
]

log = logging.getLogger("callboard.metrics")

DEFAULT_METRICS_HOST = "127.0.0.1"
"""Where metrics are served when an address gives only a port: never every
interface unless the address says so (``0.0.0.0:9464``)."""
DEFAULT_MAX_CONNECTIONS = 16
"""HTTP connections served at once: a few probes and scrapers need no more."""
DEFAULT_HTTP_TIMEOUT = 5.0
"""Seconds a connection may take to send its request, and to take the answer."""
FILES_KEPT_FOR_THE_REST = 32
"""File descriptors the server never counts on: the NATS connection (and the new
one of a reconnect), logs, the event loop's own."""

HealthCheck = Callable[[], tuple[bool, Mapping[str, Any]]]
"""Returns (healthy, details); called on the event loop, so it must not block."""

_ACCEPT_BACKOFF = 0.5
"""Seconds to wait after an accept failed (no descriptor left) before trying again."""
_MAX_REQUEST_HEAD = 8 * 1024
"""Bytes of request line and headers accepted; a probe or a scrape sends a few hundred."""
_BAD_REQUEST = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n"
    b"Connection: close\r\n\r\nbad request\n"
)
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


def connection_budget(wanted: int = DEFAULT_MAX_CONNECTIONS) -> int:
    """``wanted``, or fewer when the file limit leaves less than that spare.

    Counted when the server starts: half of what the limit leaves above the
    descriptors open now and ``FILES_KEPT_FOR_THE_REST``, at least one.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    try:
        open_now = len(os.listdir("/proc/self/fd"))
    except OSError:  # not Linux: assume a quiet process
        open_now = 16
    return max(1, min(wanted, (soft - open_now - FILES_KEPT_FOR_THE_REST) // 2))


@dataclass(eq=False)
class _Connection:
    stream: SocketStream
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    waiting: bool = True  # its request has not arrived yet: the first to make room


class MetricsServer:
    """Serves ``/metrics`` from a registry and ``/healthz`` from a health check.

    An async context manager: the server listens from entry to exit, on the
    event loop of the task that entered it.

    Args:
        address: ``PORT``, ``:PORT`` or ``HOST:PORT`` (see ``parse_metrics_address``).
        registry: the registry whose metrics are served.
        health: returns (healthy, details): 200 or 503 with ``details`` as JSON.
            Without one, ``/healthz`` answers 200 while the server runs.
        max_connections: connections served at once, at most (fewer if the file
            limit is low: ``connection_budget``).
        timeout: seconds a connection may take to send its request, and to
            receive the answer.

    Attributes:
        host: the interface it listens on.
        port: the port asked for, then the port bound (port 0 picks one).
        max_connections: the cap in force once it runs.

    Raises:
        ConfigError: the address is malformed (here), or cannot be listened on
            (on entry).
    """

    def __init__(
        self,
        address: str,
        registry: CollectorRegistry,
        *,
        health: HealthCheck | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        timeout: float = DEFAULT_HTTP_TIMEOUT,
    ) -> None:
        self.host, self.port = parse_metrics_address(address)
        self.max_connections = max_connections
        self.timeout = timeout
        self._registry = registry
        self._health = health
        self._listener: SocketListener | None = None
        self._task_group: TaskGroup | None = None
        self._open: dict[int, _Connection] = {}
        self._closed = anyio.Event()
        self._scrape = anyio.CapacityLimiter(1)

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        if self._listener is None:
            raise CallboardError("the metrics server is not running")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def open_connections(self) -> int:
        """HTTP connections open now."""
        return len(self._open)

    async def __aenter__(self) -> MetricsServer:
        if self._listener is not None:
            raise CallboardError("the metrics server is already running")
        try:
            family, *_, sockaddr = socket.getaddrinfo(
                self.host, self.port, type=socket.SOCK_STREAM
            )[0]
            listeners = await anyio.create_tcp_listener(
                local_host=str(sockaddr[0]), local_port=self.port, family=family
            )
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {self.host}:{self.port}: {exc.strerror or exc}; "
                "choose another address (metrics_address, --metrics)"
            ) from exc
        listener = listeners.listeners[0]
        assert isinstance(listener, SocketListener)
        self._listener = listener
        self.port = listener.extra(SocketAttribute.local_port)
        self.max_connections = connection_budget(self.max_connections)
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._task_group.start_soon(self._serve, listener, self._task_group)
        log.debug("serving metrics on %s (%d connections at most)", self.url, self.max_connections)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task_group, self._task_group = self._task_group, None
        listener, self._listener = self._listener, None
        if task_group is None or listener is None:
            return
        task_group.cancel_scope.cancel()
        try:
            await task_group.__aexit__(None, None, None)  # its tasks end at once: cancelled
        finally:
            with anyio.CancelScope(shield=True):
                await listener.aclose()

    async def _serve(self, listener: SocketListener, task_group: TaskGroup) -> None:
        """Accept connections while there is a free slot (or one to free)."""
        while True:
            while len(self._open) > self.max_connections:
                await self._closed.wait()
            try:
                stream = await listener.accept()
            except OSError as exc:
                # no descriptor left (EMFILE): wait instead of spinning on the backlog
                log.warning("metrics server: cannot accept a connection: %s", exc)
                await anyio.sleep(_ACCEPT_BACKOFF)
                continue
            connection = _Connection(stream)
            self._open[id(connection)] = connection
            task_group.start_soon(self._handle, connection)
            if len(self._open) > self.max_connections:
                self._make_room(connection)

    def _make_room(self, newcomer: _Connection) -> None:
        """Close the oldest connection still waiting for its request; the newcomer
        itself if every other one is being answered."""
        for connection in self._open.values():
            if connection.waiting and connection is not newcomer:
                connection.scope.cancel()
                return
        newcomer.scope.cancel()

    async def _handle(self, connection: _Connection) -> None:
        try:
            with connection.scope:
                async with connection.stream:
                    await self._exchange(connection)
        except (TimeoutError, OSError, anyio.BrokenResourceError, anyio.EndOfStream):
            pass  # the peer left, or took too long: nothing to answer
        except Exception:
            log.exception("the metrics server failed to answer a request")
        finally:
            del self._open[id(connection)]
            closed, self._closed = self._closed, anyio.Event()
            closed.set()

    async def _exchange(self, connection: _Connection) -> None:
        """Read one request, send one answer, close (no keep-alive)."""
        stream = connection.stream
        http = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_REQUEST_HEAD)
        with anyio.fail_after(self.timeout):
            try:
                request = await _receive_request(http, stream)
            except h11.RemoteProtocolError:
                await stream.send(_BAD_REQUEST)
                return
        if request is None:
            return
        connection.waiting = False
        status, content_type, body = await self._answer(request)
        headers = [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
        ]
        with anyio.fail_after(self.timeout):
            await stream.send(http.send(h11.Response(status_code=status, headers=headers)) or b"")
            if request.method != b"HEAD":
                await stream.send(http.send(h11.Data(data=body)) or b"")
            await stream.send(http.send(h11.EndOfMessage()) or b"")

    async def _answer(self, request: h11.Request) -> tuple[int, str, bytes]:
        path = urlsplit(request.target.decode("ascii", "replace")).path
        if request.method not in (b"GET", b"HEAD"):
            return 405, "text/plain; charset=utf-8", b"only GET and HEAD\n"
        if path == "/metrics":
            accept = ",".join(v.decode("latin-1") for k, v in request.headers if k == b"accept")
            encoder, content_type = choose_encoder(accept)
            body: bytes = await anyio.to_thread.run_sync(
                encoder, self._registry, limiter=self._scrape
            )
            return 200, content_type, body
        if path == "/healthz":
            healthy, details = self._check_health()
            return 200 if healthy else 503, "application/json", msgspec.json.encode(details) + b"\n"
        message = f"no {path}: this server has /metrics and /healthz\n"
        return 404, "text/plain; charset=utf-8", message.encode()

    def _check_health(self) -> tuple[bool, Mapping[str, Any]]:
        if self._health is None:
            return True, {"status": "ok"}
        try:
            return self._health()
        except Exception as exc:
            log.exception("the health check failed")
            return False, {"status": "unhealthy", "error": str(exc)}


async def _receive_request(http: h11.Connection, stream: SocketStream) -> h11.Request | None:
    """The request, once its head has arrived; None if the peer closed first."""
    while True:
        event = http.next_event()
        if isinstance(event, h11.Request):
            return event
        if event is not h11.NEED_DATA:
            return None
        try:
            data = await stream.receive(4096)
        except anyio.EndOfStream:
            return None
        http.receive_data(data)
