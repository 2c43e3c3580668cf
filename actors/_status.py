"""Publishing one agent's status events on ``<prefix>.status.<agent_id>.<state>``.

A failed status publish (a full reconnect buffer, a closed connection) is
logged and swallowed: monitoring must never fail a task.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import msgspec
from nats.aio.client import Client
from prometheus_client import Counter

from bus import (
    Accepted,
    AgentMessage,
    Cancelled,
    Completed,
    ErrorInfo,
    Failed,
    Progress,
    Started,
    StatusEvent,
    Subjects,
    TaskEvent,
)

__all__ = ["StatusPublisher"]

log = logging.getLogger("callboard.status")

_encoder = msgspec.json.Encoder()


class StatusPublisher:
    """Encodes and publishes the status events of one agent.

    Args:
        nc: the connection.
        subjects: subject builder of the system.
        agent_id: the agent whose events these are.
        counters: a counter per state, incremented for each event published
            (the agent's ``status_events`` series), or None to count nothing.
    """

    __slots__ = ("_counters", "_nc", "_prefix", "agent_id", "published")

    def __init__(
        self,
        nc: Client,
        subjects: Subjects,
        agent_id: str,
        *,
        counters: Mapping[str, Counter] | None = None,
    ) -> None:
        self._nc = nc
        self._prefix = subjects.status_prefix(agent_id)
        self._counters = counters
        self.agent_id = agent_id
        self.published = 0

    async def publish(self, event: StatusEvent) -> None:
        """Publish one event on the subject of its state."""
        state: str = event.__struct_config__.tag  # type: ignore[assignment]
        try:
            await self._nc.publish(self._prefix + state, _encoder.encode(event))
        except Exception as exc:
            log.warning("could not publish %s status event of %s: %s", state, self.agent_id, exc)
            return
        self.published += 1
        if self._counters is not None:
            self._counters[state].inc()

    async def task_event(
        self, event_type: type[TaskEvent], task_id: str, capability: str, **fields: Any
    ) -> None:
        """Publish one per-task event of ``event_type`` (Accepted, Completed, ...)."""
        await self.publish(
            event_type(
                agent=self.agent_id,
                ts=time.time(),
                task_id=task_id,
                capability=capability,
                **fields,
            )
        )

    async def accepted(self, task: AgentMessage) -> None:
        """The task was taken off the bus."""
        await self.task_event(Accepted, task.task_id, task.capability, sender=task.sender)

    async def started(self, task: AgentMessage) -> None:
        """The handler began."""
        await self.task_event(Started, task.task_id, task.capability)

    async def progress(self, task: AgentMessage, message: str, data: Any) -> None:
        """A handler's intermediate report."""
        await self.task_event(Progress, task.task_id, task.capability, message=message, data=data)

    async def completed(self, task_id: str, capability: str, elapsed_ms: float) -> None:
        """The handler returned a result."""
        await self.task_event(Completed, task_id, capability, elapsed_ms=round(elapsed_ms, 3))

    async def failed(
        self, task_id: str, capability: str, elapsed_ms: float, error: ErrorInfo
    ) -> None:
        """The task ended with an error reply."""
        await self.task_event(
            Failed, task_id, capability, elapsed_ms=round(elapsed_ms, 3), error=error
        )

    async def cancelled(
        self, task_id: str, capability: str, elapsed_ms: float, reason: str
    ) -> None:
        """The task was cancelled."""
        await self.task_event(
            Cancelled, task_id, capability, elapsed_ms=round(elapsed_ms, 3), reason=reason
        )
