"""NATS micro discovery for one agent: answers ``$SRV.PING/INFO/STATS``.

Implemented here rather than with ``nats.micro`` because (1) every error reply
must count in ``num_errors``, not only handler exceptions, (2) the service id
is derived from the agent id (``bus.micro.service_id``) so that discovery and
status events name the same agent, and (3) callboard's handlers run in its own
worker pool, not in the subscription callback ``nats.micro`` awaits one
request at a time.
"""

from __future__ import annotations

import datetime
import inspect
import logging
from importlib import metadata as importlib_metadata

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bus import PROTOCOL_VERSION, QUEUE_GROUP, Subjects, unsubscribe_all
from bus.micro import (
    EndpointInfo,
    EndpointStats,
    ServiceInfo,
    ServicePing,
    ServiceStats,
    rfc3339,
    service_id,
    srv_subjects,
    valid_service_name,
)
from bus.security import ReplyGuard

from ._agent import Agent

__all__ = ["EndpointCounters", "ServiceResponder", "callboard_version"]

log = logging.getLogger("callboard.discovery")
_encoder = msgspec.json.Encoder()


def callboard_version() -> str:
    """The installed callboard version (semver, as the micro protocol wants)."""
    try:
        return importlib_metadata.version("callboard")
    except importlib_metadata.PackageNotFoundError:
        return "0.0.0"


class EndpointCounters:
    """Request, error and time counters of one capability, for ``$SRV.STATS``."""

    __slots__ = ("last_error", "num_errors", "num_requests", "processing_ns")

    def __init__(self) -> None:
        self.num_requests = 0
        self.num_errors = 0
        self.processing_ns = 0
        self.last_error = ""

    def record(self, elapsed_ns: int, error: str | None) -> None:
        """Count one reply; every error reply counts, whatever caused it."""
        self.num_requests += 1
        self.processing_ns += elapsed_ns
        if error is not None:
            self.num_errors += 1
            self.last_error = error


class ServiceResponder:
    """Answers the micro discovery verbs for one agent."""

    def __init__(
        self,
        nc: Client,
        agent: Agent,
        subjects: Subjects,
        counters: dict[str, EndpointCounters],
    ) -> None:
        self._nc = nc
        self._agent = agent
        self._subjects = subjects
        self._counters = counters
        self._subs: list[Subscription] = []
        self.reply_guard: ReplyGuard | None = None  # security: set by the runner
        self._started = datetime.datetime.now(datetime.UTC)
        self._version = callboard_version()
        if not valid_service_name(agent.kind):  # the daemon's config check refuses these
            log.warning(
                "agent %s: kind %r is not a valid service name; using 'agent'", agent.id, agent.kind
            )
        self._name = agent.kind if valid_service_name(agent.kind) else "agent"
        self._id = service_id(agent.id, subjects.prefix)
        self._metadata = {
            "agent_id": agent.id,
            "capabilities": ",".join(agent.capability_names),
            "max_concurrency": str(agent.max_concurrency),
            "prefix": subjects.prefix,
            "protocol": str(PROTOCOL_VERSION),
            "framework": "callboard",
        }
        self._info = _encoder.encode(self._build_info())
        self._ping = _encoder.encode(
            ServicePing(
                name=self._name, id=self._id, version=self._version, metadata=self._metadata
            )
        )

    def _build_info(self) -> ServiceInfo:
        endpoints = []
        for cap in self._agent.capability_specs:
            meta = {
                "description": cap.description,
                "keywords": ",".join(cap.keywords),
                "input_schema": _encoder.encode(cap.input_schema()).decode(),
                "output_schema": _encoder.encode(cap.output_schema()).decode(),
            }
            endpoints.append(
                EndpointInfo(
                    name=cap.name,
                    subject=self._subjects.task(cap.name),
                    queue_group=QUEUE_GROUP,
                    metadata=meta,
                )
            )
        return ServiceInfo(
            name=self._name,
            id=self._id,
            version=self._version,
            description=self._agent.description or _summary(type(self._agent)),
            metadata=self._metadata,
            endpoints=endpoints,
        )

    def stats(self) -> ServiceStats:
        """The current STATS reply."""
        endpoints = []
        for cap in self._agent.capability_specs:
            c = self._counters[cap.name]
            endpoints.append(
                EndpointStats(
                    name=cap.name,
                    subject=self._subjects.task(cap.name),
                    queue_group=QUEUE_GROUP,
                    num_requests=c.num_requests,
                    num_errors=c.num_errors,
                    last_error=c.last_error,
                    processing_time=c.processing_ns,
                    average_processing_time=c.processing_ns // c.num_requests
                    if c.num_requests
                    else 0,
                )
            )
        return ServiceStats(
            name=self._name,
            id=self._id,
            version=self._version,
            started=rfc3339(self._started),
            metadata=self._metadata,
            endpoints=endpoints,
        )

    async def start(self) -> None:
        """Subscribe to the nine ``$SRV`` subjects of this service."""
        handlers = {"PING": self._on_ping, "INFO": self._on_info, "STATS": self._on_stats}
        for verb, handler in handlers.items():
            for subject in srv_subjects(verb, self._name, self._id):
                self._subs.append(await self._nc.subscribe(subject, cb=handler))

    async def stop(self) -> None:
        """Stop answering discovery."""
        subs, self._subs = self._subs, []
        await unsubscribe_all(subs)

    async def _reply(self, msg: Msg, body: bytes) -> None:
        if msg.reply and (self.reply_guard is None or self.reply_guard.allows(msg.reply)):
            await self._nc.publish(msg.reply, body)  # security: only to an inbox

    async def _on_ping(self, msg: Msg) -> None:
        await self._reply(msg, self._ping)

    async def _on_info(self, msg: Msg) -> None:
        await self._reply(msg, self._info)

    async def _on_stats(self, msg: Msg) -> None:
        await self._reply(msg, _encoder.encode(self.stats()))


def _summary(cls: type) -> str:
    """The first line of a class's docstring: one line in ``nats micro ls``."""
    doc = inspect.cleandoc(cls.__doc__ or "")
    return doc.split("\n", 1)[0].strip()
