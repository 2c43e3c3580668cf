"""The gateway's HTTP face: one Starlette app served by uvicorn, with MCP's
streamable HTTP at ``/mcp``, A2A at ``/a2a`` (its card at
``/.well-known/agent-card.json``), and ``/healthz``.

Every path but ``/healthz`` needs ``Authorization: Bearer <token>``; the token
is compared in constant time, and a request without it is answered 401 before
MCP or A2A sees it.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import socket
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any

import anyio
import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from bus import ConfigError, parse_metrics_address

from ._metrics import GatewayMetrics

__all__ = ["BearerAuth", "HttpServer", "build_http_app"]

log = logging.getLogger("callboard.gateway.http")

_GRACEFUL_SHUTDOWN = 5
"""Seconds open requests (an SSE stream, a long tool call) get to end on shutdown."""
OPEN_PATHS = frozenset({"/healthz"})
"""Paths served without the token: a probe needs no secret."""


class BearerAuth:
    """ASGI middleware: refuse every request without the bearer token (401).

    Args:
        app: the application it guards.
        token: the token callers must send.
        metrics: counts refusals; None counts nothing.
    """

    def __init__(self, app: ASGIApp, token: str, metrics: GatewayMetrics | None = None) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope.get("headers", ()) if k == b"authorization"), b"")
        if hmac.compare_digest(given, self._expected):
            await self.app(scope, receive, send)
            return
        if self.metrics is not None:
            self.metrics.refused.labels("unauthorized").inc()
        body = {
            "error": {"code": 401, "type": "unauthorized", "message": "a bearer token is needed"}
        }
        response = Response(
            msgspec.json.encode(body),
            status_code=401,
            media_type="application/json",
            headers={"WWW-Authenticate": 'Bearer realm="callboard"'},
        )
        await response(scope, receive, send)


def build_http_app(
    routes: Sequence[BaseRoute],
    *,
    token: str,
    health: Callable[[], tuple[bool, dict[str, Any]]],
    metrics: GatewayMetrics | None = None,
) -> ASGIApp:
    """The app: ``routes`` (MCP, A2A) behind the token, and an open ``/healthz``."""

    async def healthz(_request: Request) -> Response:
        healthy, details = health()
        return JSONResponse(details, status_code=200 if healthy else 503)

    app = Starlette(routes=[*routes, Route("/healthz", healthz, methods=["GET"])])
    return BearerAuth(app, token, metrics)


class _Uvicorn(uvicorn.Server):
    """uvicorn without its signal handlers: the gateway's own receiver owns SIGTERM/SIGINT."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = anyio.Event()
        """Set once it listens, or once it has given up."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        finally:
            self.ready.set()


class HttpServer:
    """Serves an ASGI app on ``HOST:PORT`` for the duration of an ``async with``.

    Args:
        address: ``HOST:PORT`` (port 0 picks a free one).
        app: the application.

    Attributes:
        url: ``http://host:port`` once it listens.
    """

    def __init__(self, address: str, app: ASGIApp) -> None:
        self.host, self.port = parse_metrics_address(address)
        self.app = app
        self.url = ""
        self._server: _Uvicorn | None = None
        self._task_group: anyio.abc.TaskGroup | None = None

    @property
    def serving(self) -> bool:
        """True while uvicorn runs."""
        return self._server is not None and self._server.started and not self._server.should_exit

    async def __aenter__(self) -> HttpServer:
        try:
            family = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)[0][0]
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
        except OSError as exc:
            raise ConfigError(
                f"cannot serve the gateway on {self.host}:{self.port}: {exc.strerror or exc}"
            ) from exc
        self.port = sock.getsockname()[1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{host}:{self.port}"
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN,
        )
        server = self._server = _Uvicorn(config)

        async def serve() -> None:
            try:
                await server.serve(sockets=[sock])
            finally:
                server.ready.set()
                sock.close()

        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._task_group.start_soon(serve)
        await server.ready.wait()
        if not server.started:
            await self.__aexit__(None, None, None)
            raise ConfigError(f"the gateway's HTTP server did not start on {self.url}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._task_group is not None:
            task_group, self._task_group = self._task_group, None
            # uvicorn closes its connections within _GRACEFUL_SHUTDOWN, so this ends
            await task_group.__aexit__(exc_type, exc, tb)
