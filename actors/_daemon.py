"""The long-running daemon behind ``callboard run CONFIG.toml``.

It hosts the configured agents until SIGTERM or SIGINT, then shuts down
gracefully; nats-py reconnects on its own when the server restarts, and the
host's subscriptions come back with it.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Mapping
from typing import Any

import anyio

from bus import ConnectOptions, connect, env_fields

from ._config import DaemonConfig, build_agents
from ._host import AgentHost

__all__ = ["READY_LINE", "run_daemon"]

log = logging.getLogger("callboard.daemon")

READY_LINE = "callboard daemon ready"
"""Printed on stderr once every agent is serving (scripts and tests wait for it)."""


async def run_daemon(config: DaemonConfig, *, flags: Mapping[str, Any] | None = None) -> None:
    """Run the agents of ``config`` until SIGTERM/SIGINT.

    Args:
        config: the validated config file.
        flags: connection options from the command line; they win over the
            environment, which wins over the file.
    """
    options = ConnectOptions.layered({"name": "callboard-daemon"}, config.nats, env_fields(), flags)
    agents = build_agents(config)
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async with (
            connect(options=options) as nc,
            AgentHost(
                nc,
                agents,
                prefix=config.prefix,
                heartbeat_interval=config.heartbeat_interval,
                grace_period=config.grace_period,
                max_delegation_depth=config.max_delegation_depth,
                max_payload=config.max_payload,
            ) as host,
        ):
            ids = ", ".join(agent.id for agent in host.agents)
            print(f"{READY_LINE}: {len(agents)} agent(s): {ids}", file=sys.stderr, flush=True)
            async for signum in signals:
                if signum == signal.SIGHUP:
                    log.warning("SIGHUP: configuration reload is not supported yet; ignoring")
                    continue
                log.info(
                    "%s: shutting down (grace period %gs, %d task(s) in flight)",
                    signal.Signals(signum).name,
                    config.grace_period,
                    host.in_flight,
                )
                break
    log.info("daemon stopped")
