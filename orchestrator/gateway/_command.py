"""``callboard gateway CONFIG``: the long-running gateway daemon.

Over HTTP (the default) it serves MCP's streamable HTTP at ``/mcp`` and A2A
at ``/a2a``, behind a bearer token from the environment; with ``--stdio`` it
speaks MCP on stdin/stdout instead, for a desktop client that starts it as a
subprocess (and needs no token: whoever can start it is already the user).
It stops on SIGTERM/SIGINT (or, with ``--stdio``, when the client closes stdin).
A NATS connection that will not come back (closed for good, or the login
refused again and again) ends it with ``ConnectionFailed`` (exit code 5), so
that its supervisor restarts it; ``/healthz`` says 503 while it is not connected.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import signal
import sys
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from typing import Any

import anyio
from prometheus_client import CollectorRegistry

from bus import (
    ConfigError,
    ConnectionFailed,
    ConnectionMetrics,
    ConnectOptions,
    MetricsServer,
    connect,
    connection_status,
    env_fields,
    wait_until_lost,
)

from ._config import GatewayConfig
from ._gateway import Gateway
from ._metrics import GatewayMetrics

__all__ = ["READY_LINE", "add_gateway_arguments", "run_gateway"]

log = logging.getLogger("callboard.gateway")

READY_LINE = "callboard gateway ready"
"""Printed on stderr once the gateway serves (scripts and tests wait for it)."""


def add_gateway_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``gateway`` subcommand's own flags."""
    parser.add_argument("config", help="the gateway's TOML config file")
    parser.add_argument(
        "--stdio",
        action="store_true",
        help="speak MCP on stdin/stdout (for a desktop client) instead of serving HTTP",
    )
    parser.add_argument(
        "--http",
        default=None,
        metavar="ADDR",
        help="serve MCP and A2A on ADDR (HOST:PORT); overrides the file's http_address",
    )
    parser.add_argument(
        "--metrics",
        default=None,
        metavar="ADDR",
        help="serve /metrics and /healthz on ADDR; overrides the file's metrics_address",
    )


def _print_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def run_gateway(
    config: GatewayConfig,
    *,
    flags: Mapping[str, Any] | None = None,
    stdio: bool = False,
    announce: Callable[[str], None] = _print_stderr,
) -> None:
    """Serve the gateway until a signal (or, over stdio, until the client leaves).

    Raises:
        ConfigError: the token is missing (HTTP), or an address cannot be served.
        ConnectionFailed: NATS cannot be reached.
    """
    try:
        from mcp.server.stdio import stdio_server
        from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

        from ._a2a import a2a_routes
        from ._http import HttpServer, build_http_app
        from ._mcp_server import build_mcp_server, mcp_initialization_options, mcp_route
    except ImportError as exc:
        raise ConfigError(
            f"the gateway needs the gateway extra ({exc}): pip install 'callboard[gateway]'"
        ) from exc

    options = ConnectOptions.layered(
        {"name": "callboard-gateway"}, config.nats, env_fields(), flags
    )
    token = None if stdio else config.token()
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    connection = ConnectionMetrics(registry, refusals=metrics.refusals)
    state = connection.track(options.name)
    http: HttpServer | None = None

    def health() -> tuple[bool, dict[str, Any]]:
        serving = stdio or (http is not None and http.serving)
        ok = state.connected and serving
        status = "ok" if ok else "unhealthy"
        return ok, {
            "status": status,
            "connected": state.connected,
            "connection": connection_status(state),
            "serving": serving,
        }

    lost: list[str] = []
    gateway: Gateway | None = None

    async def end_when_lost(serving: anyio.CancelScope) -> None:
        lost.append(await wait_until_lost(state))
        log.error("%s; stopping the gateway", lost[0])
        if gateway is not None:
            gateway.stopping = True
        serving.cancel()

    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with AsyncExitStack() as stack:
            if config.metrics_address is not None:
                server = MetricsServer(config.metrics_address, registry, health=health)
                url = (await stack.enter_async_context(server)).url
                announce(f"callboard gateway metrics on {url}/metrics (health on {url}/healthz)")
            nc = await stack.enter_async_context(connect(options=options, metrics=connection))
            gateway = await stack.enter_async_context(
                Gateway(nc, config, metrics=metrics, cancel_secret=_cancel_secret(token))
            )
            mcp = build_mcp_server(gateway)
            if not stdio:
                assert token is not None
                manager = StreamableHTTPSessionManager(app=mcp)
                await stack.enter_async_context(manager.run())
                public_url = config.public_url

                def base_url() -> str:
                    return public_url or (http.url if http is not None else "")

                routes = [mcp_route(manager), *a2a_routes(gateway, config, base_url)]
                app = build_http_app(routes, token=token, health=health, metrics=metrics)
                http = await stack.enter_async_context(HttpServer(config.http_address, app))
                announce(
                    f"{READY_LINE}: MCP on {http.url}/mcp, A2A on {http.url}/a2a; "
                    f"tools: {_names(gateway)}"
                )
            async with anyio.create_task_group() as tg:
                tg.start_soon(end_when_lost, tg.cancel_scope)
                if stdio:

                    async def serve_stdio() -> None:
                        async with stdio_server() as (read, write):
                            await mcp.run(read, write, mcp_initialization_options(mcp))
                        log.info("the MCP client closed stdin: stopping")
                        tg.cancel_scope.cancel()

                    tg.start_soon(serve_stdio)
                    announce(f"{READY_LINE}: MCP on stdio; tools: {_names(gateway)}")
                async for signum in signals:
                    log.info("%s: stopping the gateway", signal.Signals(signum).name)
                    break
                gateway.stopping = True
                tg.cancel_scope.cancel()
    if lost:
        raise ConnectionFailed(
            f"{lost[0]}: the gateway stops so that its supervisor restarts it "
            "(check the NATS server, the credentials and the server's authorization config)"
        )
    log.info("gateway stopped")


def _cancel_secret(token: str | None) -> bytes | None:
    """The cancel tokens' secret, derived from the bearer token (never sent as is).

    Gateways that share the token (replicas, the next run) can cancel the
    durable tasks each other submitted; without a token (stdio) it is random.
    """
    if token is None:
        return None
    return hashlib.blake2b(token.encode(), person=b"cb-gw-cancel").digest()


def _names(gateway: Gateway) -> str:
    return ", ".join(t.name for t in gateway.tools) or "none live yet"
