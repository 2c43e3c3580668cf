"""Runs one agent on the bus: its lifecycle, from ``online`` to ``offline``.

An ``AgentRunner`` puts together the rooms an agent is served by, each a
module of its own:

- ``Executor`` (``_executor``): runs the handler on one task, for any intake;
- ``CoreIntake`` (``_core_intake``): request-reply tasks, admission, the worker pool;
- ``Replier`` (``_replier``): the reply or error reply and the final event;
- ``DirectAddress`` (``_direct``): the control address (pings and cancels);
- ``DirectAddresses`` (``_capability_address``): targeted tasks, on subjects that bind
  the capability;
- ``StatusPublisher`` (``_status``) and ``ServiceResponder`` (``_discovery``).

A second intake (durable tasks, ``DurableWorker``) plugs into ``executor``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from anyio.abc import TaskGroup
from nats.aio.client import Client

from bus import AgentMetrics, AgentSeries, Heartbeat, Offline, Online, Subjects, TaskClient
from bus.wire import wire_for

from ._agent import Agent
from ._capability_address import DirectAddresses
from ._core_intake import CoreIntake
from ._direct import DirectAddress
from ._discovery import EndpointCounters, ServiceResponder
from ._executor import DEFAULT_MAX_DELEGATION_DEPTH, DEFAULT_MAX_PAYLOAD, Executor
from ._replier import Replier
from ._status import StatusPublisher

__all__ = ["DEFAULT_MAX_DELEGATION_DEPTH", "DEFAULT_MAX_PAYLOAD", "AgentRunner"]

log = logging.getLogger("callboard.agent")


class AgentRunner:
    """Hosts one agent: subscribes its capabilities and runs its tasks.

    Args:
        nc: the connection.
        agent: the agent to host.
        subjects: subject builder of the system.
        client: the task client used for delegation.
        max_delegation_depth: longest delegation chain accepted.
        max_payload: largest payload accepted, in bytes.
        metrics: where to count its tasks, or None to count nothing.

    Attributes:
        executor: runs its tasks; what every intake hands them to.
        status: publishes its status events.
        counters: its ``$SRV.STATS`` counters per capability.
        series: its Prometheus series, or None.
    """

    def __init__(
        self,
        nc: Client,
        agent: Agent,
        subjects: Subjects,
        *,
        client: TaskClient,
        max_delegation_depth: int = DEFAULT_MAX_DELEGATION_DEPTH,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        metrics: AgentMetrics | None = None,
    ) -> None:
        self.nc = nc
        self.agent = agent
        self.subjects = subjects
        self.client = client
        self.series: AgentSeries | None = None
        if metrics is not None:
            limit = agent.max_concurrency
            self.series = metrics.bind(agent.id, agent.kind, agent.capability_names, limit)
            self.series.read_in_flight(lambda: self.executor.in_flight)
        counters = self.series.status_events if self.series is not None else None
        self.status = StatusPublisher(nc, subjects, agent.id, counters=counters)
        self.counters = {name: EndpointCounters() for name in agent.capability_names}
        self.discovery = ServiceResponder(nc, agent, subjects, self.counters)
        wire = wire_for(nc)
        self.executor = Executor(
            agent,
            client,
            self.status,
            wire,
            self.counters,
            self.series,
            max_delegation_depth=max_delegation_depth,
            max_payload=max_payload,
        )
        replier = Replier(self.executor, self.status, wire)
        self._intake = CoreIntake(nc, subjects, self.executor, replier)
        # security: replies only to inboxes, caller-only cancels, capability-bound addresses
        self.reply_guard = self._intake.reply_guard
        self.caller_cancels = self.executor.caller_cancels
        self._direct = DirectAddress(
            nc, subjects, self.executor, self._intake, replier, self.snapshot, self.reply_guard
        )
        self.direct = DirectAddresses(
            nc, subjects, agent, self._intake.admit, self.reply_guard, self.snapshot
        )
        self.discovery.reply_guard = self.reply_guard
        if metrics is not None:  # refusals count on their own paths only
            self.reply_guard.on_refused = metrics.refusals.counter("reply_not_inbox")
            self.caller_cancels.on_refused = metrics.refusals.counter("cancel_token")

    @property
    def in_flight(self) -> int:
        """Tasks running now (core and durable)."""
        return self.executor.in_flight

    @property
    def limit(self) -> int:
        """The agent's concurrency limit."""
        return self.executor.limit

    @property
    def max_payload(self) -> int:
        """Largest payload accepted, in bytes (a config reload may change it)."""
        return self.executor.max_payload

    @max_payload.setter
    def max_payload(self, value: int) -> None:
        self.executor.max_payload = value

    @property
    def max_delegation_depth(self) -> int:
        """Longest delegation chain accepted (a config reload may change it)."""
        return self.executor.max_delegation_depth

    @max_delegation_depth.setter
    def max_delegation_depth(self, value: int) -> None:
        self.executor.max_delegation_depth = value

    async def start(self, task_group: TaskGroup) -> None:
        """Start the workers, subscribe, and announce ``online``."""
        await self._intake.start(task_group)
        await self._direct.start()
        await self.direct.start()  # <prefix>.agent.<capability>.<agent_id>
        await self.discovery.start()
        await self.status.publish(
            Online(
                agent=self.agent.id,
                ts=time.time(),
                capabilities=self.agent.capability_names,
                max_concurrency=self.limit,
                service=self.agent.kind,
            )
        )
        if self.series is not None:
            self.series.up.set(1)
        log.info("agent %s serving %s", self.agent.id, ", ".join(self.agent.capability_names))

    def snapshot(self) -> dict[str, Any]:
        """The agent's current load, as a ping reply."""
        return {
            "agent": self.agent.id,
            "capabilities": list(self.agent.capability_names),
            "in_flight": self.in_flight,
            "max_concurrency": self.limit,
        }

    def cancel(self, task_id: str, reason: str) -> bool:
        """Cancel a running task by id; True if it was running here."""
        return self.executor.cancel(task_id, reason)

    def cancel_all(self, reason: str) -> int:
        """Cancel every running task (shutdown past the grace period)."""
        return self.executor.cancel_all(reason)

    async def heartbeat(self, interval: float) -> None:
        """Publish one heartbeat with the current load."""
        await self.status.publish(
            Heartbeat(
                agent=self.agent.id,
                ts=time.time(),
                capabilities=self.agent.capability_names,
                in_flight=self.in_flight,
                max_concurrency=self.limit,
                interval=interval,
            )
        )

    async def stop_intake(self) -> None:
        """Stop taking tasks: drain the capability subscriptions (already delivered
        tasks still run), then refuse anything that arrives on the direct address."""
        if self.series is not None:
            self.series.up.set(0)
        await self._intake.stop()

    async def wait_idle(self) -> None:
        """Return when no task is in flight."""
        await self.executor.wait_idle()

    async def close(self, reason: str = "shutdown") -> None:
        """Say ``offline``, stop discovery and the workers."""
        await self._direct.stop()
        await self.direct.stop()
        await self.discovery.stop()
        await self.status.publish(Offline(agent=self.agent.id, ts=time.time(), reason=reason))
        self._intake.close()
        log.info("agent %s offline", self.agent.id)
