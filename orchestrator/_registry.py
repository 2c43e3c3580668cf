"""What the orchestrator knows of the agents on the bus.

Agents are found through NATS micro discovery (``$SRV.INFO``), or registered
by hand. Each entry says who the agent is and which capabilities it serves.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import msgspec
from nats.aio.client import Client

from bus import Subjects
from bus.micro import ServiceInfo, capabilities_of, collect_replies

__all__ = ["AgentInfo", "discover_agents"]

_info_decoder = msgspec.json.Decoder(ServiceInfo)
_encoder = msgspec.json.Encoder()


class AgentInfo(msgspec.Struct, kw_only=True):
    """One agent as the orchestrator sees it.

    Attributes:
        id: the agent id (its micro service id).
        kind: the agent's kind (its micro service name).
        capabilities: the capabilities it serves.
        description: what it is for.
        keywords: per capability, the words a request may use for it.
        input_schemas: per capability, the JSON Schema of its input (as JSON text).
        max_concurrency: tasks it runs at once.
        in_flight: tasks it was running at its last heartbeat.
        last_seen: unix time it was last heard from.
    """

    id: str
    kind: str = ""
    capabilities: tuple[str, ...] = ()
    description: str = ""
    keywords: dict[str, tuple[str, ...]] = msgspec.field(default_factory=dict)
    input_schemas: dict[str, str] = msgspec.field(default_factory=dict)
    max_concurrency: int = 0
    in_flight: int = 0
    last_seen: float = 0.0

    @property
    def load(self) -> float:
        """In-flight tasks as a fraction of capacity (0 when capacity is unknown)."""
        return self.in_flight / self.max_concurrency if self.max_concurrency else 0.0

    @classmethod
    def from_service_info(cls, info: ServiceInfo, subjects: Subjects) -> AgentInfo | None:
        """The agent an INFO reply describes, or None if it is not a callboard agent
        of this prefix."""
        declared = capabilities_of(info, subjects)
        if not declared:
            return None
        meta = info.metadata or {}
        try:
            max_concurrency = int(meta.get("max_concurrency", "0"))
        except ValueError:
            max_concurrency = 0
        return cls(
            id=declared[0].agent_id,  # its agent_id metadata: the service id may differ
            kind=info.name,
            capabilities=tuple(c.name for c in declared),
            description=info.description,
            keywords={c.name: c.keywords for c in declared},
            input_schemas={c.name: _encoder.encode(c.input_schema).decode() for c in declared},
            max_concurrency=max_concurrency,
            last_seen=time.time(),
        )


async def discover_agents(nc: Client, subjects: Subjects, *, wait: float = 0.5) -> list[AgentInfo]:
    """Ask every micro service for its INFO and keep the callboard agents of this prefix."""
    found: list[AgentInfo] = []
    async for data in collect_replies(nc, "$SRV.INFO", wait=wait):
        try:
            info = _info_decoder.decode(data)
        except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
            continue
        agent = AgentInfo.from_service_info(info, subjects)
        if agent is not None:
            found.append(agent)
    return sorted(found, key=lambda a: a.id)


def first_with(agents: Iterable[AgentInfo], capability: str) -> AgentInfo | None:
    """The first agent (by id) that serves ``capability``."""
    return next((a for a in agents if capability in a.capabilities), None)
