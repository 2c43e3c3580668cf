"""The NATS micro service protocol (ADR-32) as msgspec Structs.

Agent hosts answer ``$SRV.PING``, ``$SRV.INFO`` and ``$SRV.STATS`` with these,
so ``nats micro ls/info/stats`` lists agents; the orchestrator decodes the
same types to discover them.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from typing import Any

import anyio
import msgspec
from nats.aio.client import Client

__all__ = [
    "INFO_TYPE",
    "PING_TYPE",
    "SRV_PREFIX",
    "STATS_TYPE",
    "EndpointInfo",
    "EndpointStats",
    "ServiceInfo",
    "ServicePing",
    "ServiceStats",
    "collect_replies",
    "rfc3339",
    "srv_subjects",
]

SRV_PREFIX = "$SRV"
PING_TYPE = "io.nats.micro.v1.ping_response"
INFO_TYPE = "io.nats.micro.v1.info_response"
STATS_TYPE = "io.nats.micro.v1.stats_response"


class EndpointInfo(msgspec.Struct, kw_only=True):
    """One endpoint (a capability) in an INFO reply."""

    name: str
    subject: str
    queue_group: str = ""
    metadata: dict[str, str] | None = None


class EndpointStats(msgspec.Struct, kw_only=True):
    """One endpoint's counters in a STATS reply; times in nanoseconds."""

    name: str
    subject: str
    queue_group: str = ""
    num_requests: int = 0
    num_errors: int = 0
    last_error: str = ""
    processing_time: int = 0
    average_processing_time: int = 0
    data: Any = None


class ServicePing(msgspec.Struct, kw_only=True):
    """The PING reply."""

    name: str
    id: str
    version: str
    metadata: dict[str, str] | None = None
    type: str = PING_TYPE


class ServiceInfo(msgspec.Struct, kw_only=True):
    """The INFO reply: the service and its endpoints."""

    name: str
    id: str
    version: str
    description: str = ""
    metadata: dict[str, str] | None = None
    endpoints: list[EndpointInfo] = msgspec.field(default_factory=list)
    type: str = INFO_TYPE


class ServiceStats(msgspec.Struct, kw_only=True):
    """The STATS reply: per-endpoint request, error and timing counters."""

    name: str
    id: str
    version: str
    started: str = ""
    metadata: dict[str, str] | None = None
    endpoints: list[EndpointStats] = msgspec.field(default_factory=list)
    type: str = STATS_TYPE


def srv_subjects(verb: str, name: str, service_id: str) -> tuple[str, str, str]:
    """The three subjects a service answers for a verb: all, by name, by name and id."""
    base = f"{SRV_PREFIX}.{verb}"
    return base, f"{base}.{name}", f"{base}.{name}.{service_id}"


def rfc3339(moment: datetime.datetime) -> str:
    """UTC timestamp in the form the micro protocol uses."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def collect_replies(
    nc: Client, subject: str, *, wait: float = 0.5, payload: bytes = b""
) -> AsyncIterator[bytes]:
    """Scatter-gather: publish one request, yield every reply that arrives within ``wait``.

    Discovery cannot know how many services will answer, so it listens for a
    bounded window, as ``nats micro ls`` does.
    """
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    try:
        await nc.publish(subject, payload, reply=inbox)
        with anyio.move_on_after(wait):
            async for msg in sub.messages:
                yield msg.data
    finally:
        await sub.unsubscribe()
