"""callboard as its users run it: ``Orchestrator.dispatch`` to an ``echo``
agent hosted by ``AgentHost``, with metrics and status events on.

Both sides count into a fresh ``CollectorRegistry`` (metrics on, as in a
daemon), the agent publishes its per-task status events (the default), and the
orchestrator follows live agents as ``async with Orchestrator(...)`` does.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from nats.aio.client import Client
from prometheus_client import CollectorRegistry

from actors import AgentHost, EchoAgent
from bus import AgentMetrics, ConnectOptions, DispatchMetrics, connect
from orchestrator import Orchestrator

from ._load import Send

__all__ = ["CAPABILITY", "connect_callboard", "dispatch_sender", "echo_agent", "orchestrator"]

CAPABILITY = "echo"


@asynccontextmanager
async def connect_callboard(url: str, name: str) -> AsyncIterator[Client]:
    """A connection made the way callboard makes them (``bus.connect``)."""
    async with connect(options=ConnectOptions(servers=(url,), name=name)) as nc:
        yield nc


@asynccontextmanager
async def echo_agent(nc: Client, *, max_concurrency: int) -> AsyncIterator[AgentHost]:
    """An ``EchoAgent`` hosted on ``nc`` with its metrics on a fresh registry.

    ``max_concurrency`` must exceed the load driven at it, or the agent refuses
    the excess with 503 (its default of 64 is below c=128).
    """
    agent = EchoAgent(max_concurrency=max_concurrency)
    metrics = AgentMetrics(CollectorRegistry())
    async with AgentHost(nc, [agent], metrics=metrics) as host:
        yield host


@asynccontextmanager
async def orchestrator(nc: Client) -> AsyncIterator[Orchestrator]:
    """An ``Orchestrator`` with its ``DispatchMetrics`` on a fresh registry."""
    async with Orchestrator(nc, metrics=DispatchMetrics(CollectorRegistry())) as orch:
        yield orch


def dispatch_sender(orch: Orchestrator, payload: Any) -> Send:
    """One ``orch.dispatch`` of ``payload`` to the echo capability."""
    return functools.partial(orch.dispatch, CAPABILITY, payload)
