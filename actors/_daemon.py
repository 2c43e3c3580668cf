"""The long-running daemon behind ``callboard run CONFIG.toml``.

It hosts the configured agents until SIGTERM or SIGINT, then shuts down
gracefully; nats-py reconnects on its own when the server restarts, and the
host's subscriptions come back with it. A connection that will not come back
(closed for good, or the login refused ``DEFAULT_MAX_REFUSALS`` times in a row:
a revoked password) ends the daemon with ``ConnectionFailed`` (exit code 5),
so that systemd or Kubernetes restarts it. SIGHUP reloads the config file
(``actors._reload``). With ``metrics_address`` set it also serves ``/metrics``
and ``/healthz``, from before it connects until after it has drained, so a
scrape sees the drain and a health check sees it coming.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack
from typing import Any

import anyio
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

from bus import (
    AgentMetrics,
    ConnectionFailed,
    ConnectionMetrics,
    ConnectionState,
    ConnectOptions,
    MetricsServer,
    connect,
    connection_status,
    env_fields,
    wait_until_lost,
)

from ._config import DaemonConfig, agent_slots, build_agent
from ._host import AgentHost
from ._reload import ConfigReloader

__all__ = ["READY_LINE", "DaemonMetrics", "run_daemon"]

log = logging.getLogger("callboard.daemon")

READY_LINE = "callboard daemon ready"
"""Printed on stderr once every agent is serving (scripts and tests wait for it)."""


class DaemonMetrics:
    """The daemon's own registry (its agents, its connection, the process) and
    the server of ``/metrics`` and ``/healthz``.

    ``health`` runs on the event loop (a loop too busy to answer cannot say
    "ok"); it reads only plain values (the connection state, the host's
    ``agent_states``), never the connection or the host's runners.

    Args:
        address: where to serve (``metrics_address``, ``--metrics``).
        connection_name: the NATS connection's name, its ``connection`` label.

    Attributes:
        host: the agent host once it serves; ``health`` reads its ``agent_states``.
        stopping: set when a signal starts the shutdown, so ``/healthz`` says
            ``draining`` from that moment on.
    """

    def __init__(self, address: str, connection_name: str | None) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.agents = AgentMetrics(self.registry)
        self.connections = ConnectionMetrics(self.registry, refusals=self.agents.refusals)
        self.connection = self.connections.track(connection_name)
        self.server = MetricsServer(address, self.registry, health=self.health)
        self.host: AgentHost | None = None
        self.stopping = False

    def health(self) -> tuple[bool, dict[str, Any]]:
        """200 when connected and serving; 503 ``draining`` once the agents stop, else
        ``unhealthy`` (``connection`` says why: reconnecting, refused, closed).

        An agent that a config reload removes drains alone: the daemon still
        serves with the others, so it stays healthy meanwhile.
        """
        connection = connection_status(self.connection)
        connected = connection == "connected"
        host = self.host
        agents = dict(host.agent_states) if host is not None else {}
        states = set(agents.values())
        if self.stopping or ("draining" in states and "serving" not in states):
            status = "draining"
        elif not connected or "serving" not in states:
            status = "unhealthy"
        else:
            status = "ok"
        details = {"status": status, "connected": connected, "connection": connection}
        return status == "ok", {**details, "agents": agents}


def _print_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def run_daemon(
    config: DaemonConfig,
    *,
    flags: Mapping[str, Any] | None = None,
    reload: Callable[[], DaemonConfig] | None = None,
    announce: Callable[[str], None] = _print_stderr,
) -> None:
    """Run the agents of ``config`` until SIGTERM/SIGINT; reload them on SIGHUP.

    Args:
        config: the validated config file.
        flags: connection options from the command line; they win over the
            environment, which wins over the file.
        reload: reads the config again for SIGHUP; None ignores SIGHUP (a
            config that came from no file).
        announce: prints the lines scripts wait for (ready, metrics, reloaded);
            the CLI passes one that writes them in its log format.
    """
    options = ConnectOptions.layered({"name": "callboard-daemon"}, config.nats, env_fields(), flags)
    slots = agent_slots(config)
    agents = [build_agent(slot) for slot in slots]
    metrics = None
    if config.metrics_address is not None:
        metrics = DaemonMetrics(config.metrics_address, options.name)
    # the connection's fortunes are followed even when no one scrapes them
    connections = metrics.connections if metrics else ConnectionMetrics(CollectorRegistry())
    lost: list[str] = []
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async with AsyncExitStack() as stack:
            if metrics is not None:
                url = (await stack.enter_async_context(metrics.server)).url
                announce(f"callboard daemon metrics on {url}/metrics (health on {url}/healthz)")
            nc = await stack.enter_async_context(connect(options=options, metrics=connections))
            host = AgentHost(
                nc,
                agents,
                prefix=config.prefix,
                heartbeat_interval=config.heartbeat_interval,
                grace_period=config.grace_period,
                max_delegation_depth=config.max_delegation_depth,
                max_payload=config.max_payload,
                durable=config.durable,
                metrics=metrics.agents if metrics else None,
            )
            await stack.enter_async_context(host)
            if metrics is not None:
                metrics.host = host
            reloader = ConfigReloader(
                host,
                config,
                list(zip(slots, agents, strict=True)),
                load=reload or (lambda: config),
                announce=announce,
            )
            ids = ", ".join(agent.id for agent in host.agents)
            announce(f"{READY_LINE}: {len(agents)} agent(s): {ids}")
            async with anyio.create_task_group() as tg:
                tg.start_soon(reloader.run)
                why = "connection lost"
                with anyio.CancelScope() as serving:
                    tg.start_soon(_end_when_lost, connections.track(options.name), serving, lost)
                    why = await _until_stop_signal(signals, reloader, has_config=reload is not None)
                if metrics is not None:
                    metrics.stopping = True
                if lost:
                    why = lost[0]
                    host.grace_period = 0.0  # no reply could reach a caller any more
                log.info(
                    "%s: shutting down (grace period %gs, %d task(s) in flight)",
                    why,
                    host.grace_period,
                    host.in_flight,
                )
                await reloader.close()
                tg.cancel_scope.cancel()
    if lost:
        raise ConnectionFailed(
            f"{lost[0]}: the daemon stops so that its supervisor restarts it "
            "(check the NATS credentials and the server's authorization config)"
        )
    log.info("daemon stopped")


async def _until_stop_signal(
    signals: AsyncIterator[int], reloader: ConfigReloader, *, has_config: bool
) -> str:
    """Reload on every SIGHUP; return the name of the signal that stops the daemon."""
    async for signum in signals:
        if signum != signal.SIGHUP:
            return signal.Signals(signum).name
        if not has_config:
            log.warning("SIGHUP: this daemon has no config file to reload; ignoring")
        else:
            log.info("SIGHUP: reloading the config")
            reloader.request()
    return "end of signals"


async def _end_when_lost(
    connection: ConnectionState, serving: anyio.CancelScope, lost: list[str]
) -> None:
    """Stop serving once the connection will not come back, saying why in ``lost``."""
    lost.append(await wait_until_lost(connection))
    log.error("%s; shutting down", lost[0])
    serving.cancel()
