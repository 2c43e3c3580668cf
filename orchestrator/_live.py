"""The live registry: which agents are up, what they serve, and how loaded they are.

It listens only to ``online``, ``heartbeat`` and ``offline`` events (never to
the per-task ones), asks ``$SRV.INFO`` once at start for agents that are
already up, and asks a new agent's INFO when it comes online (for keywords
and schemas). An agent silent for longer than ``heartbeat_timeout`` drops out.

What agents say about themselves is a claim. The agent id of an event is the
one in its subject, which the server lets only that agent's user publish; an
event whose body disagrees is dropped and counted (``rejected_events``, and in
Prometheus once given ``count_refusals``), as is one that does not decode. The
capabilities a heartbeat or an INFO answer lists are confirmed before routing
believes them (``confirmed``): a ping on ``<prefix>.agent.<capability>.<id>``,
which only a user allowed to serve the capability may subscribe, must be
answered, and the keywords and input schema routing uses come from that answer.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import anyio
import msgspec
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bus import Heartbeat, Offline, Online, RefusalMetrics, Subjects, unsubscribe_all
from bus.codec import OPERATION
from bus.micro import ServiceInfo, find_service_info
from bus.security import StatusBinding

from ._registry import AgentInfo, discover_agents

__all__ = ["DEFAULT_HEARTBEAT_TIMEOUT", "LiveRegistry", "RegistryListener"]

log = logging.getLogger("callboard.registry")

DEFAULT_HEARTBEAT_TIMEOUT = 15.0
"""Seconds without a heartbeat after which an agent counts as gone (3 missed beats)."""

RegistryListener = Callable[[str, AgentInfo | None, float], None]
"""Told of each change on the event loop: (agent id, the agent, or None once it is
dropped, and the monotonic time it was last heard from)."""

_lifecycle_decoder = msgspec.json.Decoder(Online | Heartbeat | Offline)
_info_decoder = msgspec.json.Decoder(ServiceInfo)
_encoder = msgspec.json.Encoder()

CONFIRM_TIMEOUT = 1.0
"""Seconds to wait for an agent to answer a ping on a capability-bound address."""


class _CapabilityPing(msgspec.Struct):
    """What an agent answers on ``<prefix>.agent.<capability>.<id>`` to a ping."""

    keywords: tuple[str, ...] = ()
    input_schema: dict[str, object] = msgspec.field(default_factory=dict)
    in_flight: int = 0
    max_concurrency: int = 0


_ping_decoder = msgspec.json.Decoder(_CapabilityPing)


class LiveRegistry:
    """Agents known to be alive on one prefix, kept up to date from the status stream.

    Args:
        nc: the connection.
        subjects: the system's subjects.
        heartbeat_timeout: seconds of silence after which an agent drops out.
        clock: monotonic time source (injectable for tests of expiry).

    Attributes:
        on_change: called after every change (an agent added, refreshed or
            dropped), e.g. to keep metrics; None by default, costing nothing.
        malformed_events: lifecycle events dropped because they did not decode.
    """

    def __init__(
        self,
        nc: Client,
        subjects: Subjects,
        *,
        heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.nc = nc
        self.subjects = subjects
        self.heartbeat_timeout = heartbeat_timeout
        self.clock = clock
        self.on_change: RegistryListener | None = None
        self._agents: dict[str, AgentInfo] = {}
        self._seen: dict[str, float] = {}
        self._subs: list[Subscription] = []
        self._changed = anyio.Event()
        self.binding = StatusBinding(subjects)
        self.malformed_events = 0
        self._on_malformed: Callable[[], None] | None = None
        self._confirmed: dict[tuple[str, str], _CapabilityPing] = {}
        self._unconfirmed: dict[tuple[str, str], float] = {}

    @property
    def rejected_events(self) -> int:
        """Lifecycle events dropped because their body disagreed with their subject."""
        return self.binding.rejected

    def count_refusals(self, refusals: RefusalMetrics) -> None:
        """Count the events it drops in ``refusals`` too: forged (``status_body_mismatch``)
        and undecodable (``malformed_status_event``)."""
        self.binding.on_rejected = refusals.counter("status_body_mismatch")
        self._on_malformed = refusals.counter("malformed_status_event")

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(
        self, predicate: Callable[[list[AgentInfo]], bool], *, timeout: float = 10.0
    ) -> list[AgentInfo]:
        """Wait until ``predicate(live agents)`` holds, e.g. until a math agent is up.

        Raises:
            TimeoutError: it did not hold within ``timeout`` seconds.
        """
        with anyio.fail_after(timeout):
            while not predicate(agents := self.live()):
                await self._changed.wait()
        return agents

    async def start(self, *, discover: bool = True, wait: float = 0.3) -> None:
        """Subscribe to lifecycle events and (optionally) discover agents already up."""
        for state in ("online", "heartbeat", "offline"):
            self._subs.append(
                await self.nc.subscribe(self.subjects.status_of_state(state), cb=self._on_event)
            )
        if discover:
            for agent in await discover_agents(self.nc, self.subjects, wait=wait):
                self.add(agent)

    async def stop(self) -> None:
        """Stop listening."""
        subs, self._subs = self._subs, []
        await unsubscribe_all(subs)

    def add(self, agent: AgentInfo) -> None:
        """Record (or refresh) an agent as alive now."""
        known = self._agents.get(agent.id)
        if known is not None and not agent.keywords:
            agent = msgspec.structs.replace(
                agent, keywords=known.keywords, input_schemas=known.input_schemas
            )
        self._agents[agent.id] = agent
        self._seen[agent.id] = seen = self.clock()
        self._notify()
        if self.on_change is not None:
            self.on_change(agent.id, agent, seen)

    def remove(self, agent_id: str) -> None:
        """Forget an agent."""
        seen = self._seen.pop(agent_id, 0.0)
        for key in [k for k in self._confirmed if k[0] == agent_id]:
            del self._confirmed[key]
        for key in [k for k in self._unconfirmed if k[0] == agent_id]:
            del self._unconfirmed[key]
        if self._agents.pop(agent_id, None) is not None:
            self._notify()
            if self.on_change is not None:
                self.on_change(agent_id, None, seen)

    def live(self) -> list[AgentInfo]:
        """The agents heard from within the heartbeat timeout, by id."""
        cutoff = self.clock() - self.heartbeat_timeout
        for agent_id in [a for a, seen in self._seen.items() if seen < cutoff]:
            log.info("agent %s missed its heartbeats; dropping it", agent_id)
            self.remove(agent_id)
        return sorted(self._agents.values(), key=lambda a: a.id)

    def serving(self, capability: str) -> list[AgentInfo]:
        """Live agents that serve ``capability``."""
        return [a for a in self.live() if capability in a.capabilities]

    def capabilities(self) -> dict[str, list[AgentInfo]]:
        """Live agents grouped by capability."""
        grouped: dict[str, list[AgentInfo]] = {}
        for agent in self.live():
            for capability in agent.capabilities:
                grouped.setdefault(capability, []).append(agent)
        return grouped

    async def confirmed(self) -> list[AgentInfo]:
        """The live agents with only the capabilities they have proven to serve.

        Each (agent, capability) not yet confirmed is pinged on its
        capability-bound address (all at once). No answer leaves the capability
        out: after "no responders" (nobody may listen there) it is asked again
        only after ``heartbeat_timeout``, so that a forged claim costs one round
        trip, not one per request; after a timeout, next time. The keywords and
        input schema of a confirmed capability are the ones its ping answered,
        never those of an unbound claim.
        """
        agents = self.live()
        retry_before = self.clock() - self.heartbeat_timeout
        pending = [
            key
            for agent in agents
            for key in ((agent.id, capability) for capability in agent.capabilities)
            if key not in self._confirmed and self._unconfirmed.get(key, -math.inf) < retry_before
        ]
        if pending:
            async with anyio.create_task_group() as tg:
                for agent_id, capability in pending:
                    tg.start_soon(self._confirm, agent_id, capability)
        result = []
        for agent in agents:
            proofs = {c: self._confirmed.get((agent.id, c)) for c in agent.capabilities}
            proven = {c: p for c, p in proofs.items() if p is not None}
            if not proven:
                continue
            result.append(
                msgspec.structs.replace(
                    agent,
                    capabilities=tuple(proven),
                    keywords={c: p.keywords for c, p in proven.items()},
                    input_schemas={
                        c: _encoder.encode(p.input_schema).decode() for c, p in proven.items()
                    },
                )
            )
        return result

    async def _confirm(self, agent_id: str, capability: str) -> None:
        try:
            subject = self.subjects.agent_task(capability, agent_id)
            reply = await self.nc.request(
                subject, b"", timeout=CONFIRM_TIMEOUT, headers={OPERATION: "ping"}
            )
            proof = _ping_decoder.decode(reply.data)
        except nats.errors.NoRespondersError:
            log.debug("nobody listens for %s as %s: not confirmed", capability, agent_id)
            if agent_id in self._agents:
                self._unconfirmed[(agent_id, capability)] = self.clock()
            return
        except Exception as exc:  # a timeout, a malformed answer
            log.debug("%s did not confirm capability %s: %s", agent_id, capability, exc)
            return
        if agent_id in self._agents:
            self._unconfirmed.pop((agent_id, capability), None)
            self._confirmed[(agent_id, capability)] = proof

    async def _on_event(self, msg: Msg) -> None:
        try:
            event = _lifecycle_decoder.decode(msg.data)
        except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
            log.debug("ignoring malformed lifecycle event on %s", msg.subject)
            self.malformed_events += 1
            if self._on_malformed is not None:
                self._on_malformed()
            return
        if not self.binding.accepts(msg.subject, event):
            return  # the body names another agent or state than the subject binds
        if isinstance(event, Offline):
            self.remove(event.agent)
            return
        known = self._agents.get(event.agent)
        in_flight = event.in_flight if isinstance(event, Heartbeat) else 0
        base = known or AgentInfo(id=event.agent)
        self.add(
            msgspec.structs.replace(
                base,
                capabilities=event.capabilities or base.capabilities,
                max_concurrency=event.max_concurrency or base.max_concurrency,
                in_flight=in_flight,
                last_seen=event.ts,
            )
        )
        if isinstance(event, Online) and event.service and not base.keywords:
            await self._fetch_info(event.service, event.agent)

    async def _fetch_info(self, kind: str, agent_id: str) -> None:
        try:
            found = await find_service_info(self.nc, kind, agent_id, self.subjects)
            info = AgentInfo.from_service_info(found, self.subjects) if found else None
        except Exception as exc:
            log.debug("INFO of new agent %s failed: %s", agent_id, exc)
            return
        if info is not None and info.id == agent_id and agent_id in self._agents:
            self.add(msgspec.structs.replace(info, in_flight=self._agents[agent_id].in_flight))
