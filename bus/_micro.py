"""The NATS micro service protocol (ADR-32) as msgspec Structs.

Agent hosts answer ``$SRV.PING``, ``$SRV.INFO`` and ``$SRV.STATS`` with these,
so ``nats micro ls/info/stats`` lists agents; the orchestrator decodes the
same types to discover them. ``capabilities_of`` reads the capability
catalog out of an INFO reply, so that the orchestrator's registry and an
agent that offers other agents' capabilities as tools parse it one way.

The replies follow the official ADR-32 JSON schemas (nats-io/jsm.go
``schemas/micro/v1``; tests/integration/test_srv_schemas.py checks them): a
service name is ASCII letters, digits, ``-`` and ``_`` (``valid_service_name``),
and a service id is unique on the server (``service_id``), since natscli and
nats.go clients refuse or merge replies that break either rule.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import anyio
import msgspec
from nats.aio.client import Client

from ._errors import ConfigError
from ._subjects import Subjects, validate_agent_id

__all__ = [
    "INFO_TYPE",
    "PING_TYPE",
    "SERVICE_NAME_RULE",
    "SRV_PREFIX",
    "STATS_TYPE",
    "CapabilityInfo",
    "EndpointInfo",
    "EndpointStats",
    "ServiceInfo",
    "ServicePing",
    "ServiceStats",
    "agent_id_of",
    "capabilities_of",
    "collect_replies",
    "discover_capabilities",
    "find_service_info",
    "rfc3339",
    "service_id",
    "srv_subjects",
    "valid_service_name",
]

SRV_PREFIX = "$SRV"
PING_TYPE = "io.nats.micro.v1.ping_response"
INFO_TYPE = "io.nats.micro.v1.info_response"
STATS_TYPE = "io.nats.micro.v1.stats_response"
DEFAULT_SERVICE_PREFIX = "agents"
"""The subject prefix whose agents keep their agent id as their service id."""
SERVICE_NAME_RULE = "ASCII letters, digits, '-' and '_' (the NATS micro name pattern)"

_SERVICE_NAME = re.compile(r"[A-Za-z0-9_-]+")


def valid_service_name(name: str) -> bool:
    """True if ``name`` matches ADR-32's ``^[a-zA-Z0-9_-]+$`` (ASCII only: ``résumé`` fails)."""
    return _SERVICE_NAME.fullmatch(name) is not None


def service_id(agent_id: str, prefix: str) -> str:
    """The ``$SRV`` id of an agent: unique on the server even across prefixes.

    The agent id under the default prefix, so ``nats micro info math math-1``
    works as users expect; ``<agent id>@<prefix>`` (dots written ``~``)
    otherwise, so ``math-1`` of ``agents`` and of ``team2`` are two services.
    Neither ``@`` nor ``~`` can occur in an agent id or a prefix token, so two
    agents never share an id.
    """
    if prefix == DEFAULT_SERVICE_PREFIX:
        return agent_id
    return f"{agent_id}@{prefix.replace('.', '~')}"


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
    data: Any | msgspec.UnsetType = msgspec.UNSET
    """Endpoint-specific statistics; left out when there are none, as nats.go does."""


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
) -> AsyncGenerator[bytes, None]:
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
                if msg.data:
                    yield msg.data
                elif (msg.headers or {}).get("Status") == "503":
                    return  # the server's "no responders": nobody listens, none will answer
    finally:
        await sub.unsubscribe()


class CapabilityInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One capability of one live agent, as its INFO reply declares it.

    Attributes:
        name: the capability name.
        agent_id: the agent serving it (its micro service id).
        kind: the agent's kind (its micro service name).
        description: what it does, in a sentence.
        keywords: words a request may contain when it wants it.
        input_schema: the JSON Schema of its input ({} when any JSON is accepted).
        output_schema: the JSON Schema of its result ({} when unknown).
    """

    name: str
    agent_id: str
    kind: str = ""
    description: str = ""
    keywords: tuple[str, ...] = ()
    input_schema: dict[str, Any] = msgspec.field(default_factory=dict)
    output_schema: dict[str, Any] = msgspec.field(default_factory=dict)


_info_decoder = msgspec.json.Decoder(ServiceInfo)
_schema_decoder = msgspec.json.Decoder(dict[str, Any])


def capabilities_of(info: ServiceInfo, subjects: Subjects) -> list[CapabilityInfo]:
    """The capabilities an INFO reply declares under ``subjects``' prefix.

    Endpoints of other prefixes (or of non-callboard services) are skipped; a
    schema that is missing or not a JSON object reads as ``{}`` (any input),
    since a peer's bad metadata must not hide the capability itself. The agent
    is named by its ``agent_id`` metadata (the service id may carry the prefix,
    and a nats.go agent's is random); a service without it is named by its id.
    """
    found: list[CapabilityInfo] = []
    agent_id = agent_id_of(info)
    if agent_id is None:
        return found
    for endpoint in info.endpoints:
        name = subjects.capability_of(endpoint.subject)
        if name is None:
            continue
        meta = endpoint.metadata or {}
        found.append(
            CapabilityInfo(
                name=name,
                agent_id=agent_id,
                kind=info.name,
                description=meta.get("description", ""),
                keywords=tuple(k for k in meta.get("keywords", "").split(",") if k),
                input_schema=_schema(meta.get("input_schema")),
                output_schema=_schema(meta.get("output_schema")),
            )
        )
    return found


def agent_id_of(info: ServiceInfo) -> str | None:
    """The agent id a service names itself by (``agent_id`` metadata, else its id).

    None when that is not a valid agent id (one subject token), since status
    events and direct addresses could not name it.
    """
    claimed = (info.metadata or {}).get("agent_id") or info.id
    try:
        return validate_agent_id(claimed)
    except ConfigError:
        return None


def _schema(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        return _schema_decoder.decode(text)
    except (msgspec.MsgspecError, RecursionError):
        return {}


async def find_service_info(
    nc: Client, kind: str, agent_id: str, subjects: Subjects, *, wait: float = 1.0
) -> ServiceInfo | None:
    """The INFO reply of one agent of ``subjects``' prefix, or None if none came in ``wait``.

    Asks ``$SRV.INFO.<kind>.<service id>`` first; an agent whose service id is
    not derived from its agent id (a nats.go agent's is random) is then found
    among the replies to ``$SRV.INFO.<kind>`` by its ``agent_id`` metadata.
    """
    subject = f"{SRV_PREFIX}.INFO.{kind}"
    for target in (f"{subject}.{service_id(agent_id, subjects.prefix)}", subject):
        async with aclosing(collect_replies(nc, target, wait=wait)) as replies:
            async for data in replies:
                try:
                    info = _info_decoder.decode(data)
                except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
                    continue
                if agent_id_of(info) == agent_id and capabilities_of(info, subjects):
                    return info
    return None


async def discover_capabilities(
    nc: Client, subjects: Subjects, *, wait: float = 0.5
) -> list[CapabilityInfo]:
    """Every live capability of the prefix, by ``$SRV.INFO`` scatter-gather.

    Sorted by name then agent id, so replicas of one capability are adjacent
    and the choice among them is stable.
    """
    found: list[CapabilityInfo] = []
    async for data in collect_replies(nc, f"{SRV_PREFIX}.INFO", wait=wait):
        try:
            info = _info_decoder.decode(data)
        except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
            continue
        found.extend(capabilities_of(info, subjects))
    return sorted(found, key=lambda c: (c.name, c.agent_id))
