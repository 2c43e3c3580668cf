"""Publishing one agent's status events on ``<prefix>.status.<agent_id>.<state>``.

A failed status publish (a full reconnect buffer, a closed connection) is
logged and swallowed: monitoring must never fail a task.

The runner's hot path does not await a publish per event: it frames the
events (``frame``, by ``bus.wire.EventFrames``) and writes them together with
the reply in one append to the connection's buffer (``bus.wire_for``), in
order, each still its own NATS message on its own subject; ``sent`` counts
them once written.

Every task event carries the task's ``sender``: what its ``Agent-Sender`` header
claims (``"anonymous"`` without one), cut to ``MAX_SENDER`` characters. It is a
claim, not an identity: any client may put any name there.
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
from bus.codec import SENDER
from bus.wire import EventFrames, Wire, wire_for

__all__ = ["BEGUN", "MAX_SENDER", "StatusPublisher", "claimed_sender", "rounded_ms"]

log = logging.getLogger("callboard.status")

_encoder = msgspec.json.Encoder()

BEGUN = ("accepted", "started")
"""The states of ``StatusPublisher.begun_frames``."""
MAX_SENDER = 256
"""Characters of a claimed sender name kept in a status event (the header may be
as large as the server's max_payload; the event must still fit)."""


_EXACT_NS = 10**15
"""Below this (11.6 days) a duration in ns divided by 1e6 is within 1e-6 ms of
its exact value, so rounding its integer rounds the float the same way."""


def rounded_ms(elapsed_ns: int) -> float:
    """``round(elapsed_ns / 1e6, 3)``, the same float, at a quarter of its cost
    (``round`` to digits goes through a decimal string); a tie (an exact half
    microsecond) or a huge duration is left to ``round``."""
    if 0 <= elapsed_ns < _EXACT_NS and elapsed_ns % 1000 != 500:
        return (elapsed_ns + 500) // 1000 / 1000
    return round(elapsed_ns / 1e6, 3)


def claimed_sender(headers: Mapping[str, str] | None) -> str:
    """The sender a task message claims (``Agent-Sender``), as its events show it."""
    return ((headers.get(SENDER) if headers else None) or "anonymous")[:MAX_SENDER]


class StatusPublisher:
    """Encodes and publishes the status events of one agent.

    Args:
        nc: the connection.
        subjects: subject builder of the system.
        agent_id: the agent whose events these are.
        counters: a counter per state, incremented for each event published
            (the agent's ``status_events`` series), or None to count nothing.
    """

    __slots__ = ("_counters", "_frames", "_wire", "agent_id", "published")

    def __init__(
        self,
        nc: Client,
        subjects: Subjects,
        agent_id: str,
        *,
        counters: Mapping[str, Counter] | None = None,
    ) -> None:
        self._wire: Wire = wire_for(nc)
        self._frames = EventFrames(self._wire, subjects.status_prefix(agent_id))
        self._counters = counters
        self.agent_id = agent_id
        self.published = 0

    async def publish(self, event: StatusEvent) -> None:
        """Publish one event on the subject of its state."""
        state: str = event.__struct_config__.tag  # type: ignore[assignment]
        try:
            await self._wire.write(self.frame(event))
        except Exception as exc:
            self.lost(exc, state)
            return
        self.sent(state)

    def frame(self, event: StatusEvent) -> bytes:
        """The ``PUB`` command of one event, ready for ``Wire.write``.

        Raises:
            nats.errors.MaxPayloadError: the event is above the server's limit.
        """
        state: str = event.__struct_config__.tag  # type: ignore[assignment]
        return self._frames.event(state, _encoder.encode(event))

    def sent(self, *states: str) -> None:
        """Count events of ``states`` as published (the caller wrote their frames)."""
        self.published += len(states)
        if self._counters is not None:
            for state in states:
                self._counters[state].inc()

    def sent_tasks(self, begun: int, finished: int) -> None:
        """Count the events of ``finished`` tasks answered with a result, ``begun``
        of them with their ``accepted`` and ``started`` too: one ``inc`` a state."""
        self.published += 2 * begun + finished
        counters = self._counters
        if counters is not None:
            if begun:
                counters["accepted"].inc(begun)
                counters["started"].inc(begun)
            counters["completed"].inc(finished)

    def lost(self, exc: BaseException, *states: str) -> None:
        """Log events that could not be written."""
        log.warning(
            "could not publish %s status event of %s: %s", "+".join(states), self.agent_id, exc
        )

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

    def begun_frames(self, task: AgentMessage) -> bytes:
        """The ``accepted`` and ``started`` events of ``task``, framed (count them
        with ``sent(*BEGUN)`` once written)."""
        accepted = _encoder.encode(
            Accepted(
                agent=self.agent_id,
                ts=time.time(),
                task_id=task.task_id,
                capability=task.capability,
                sender=task.sender[:MAX_SENDER],
            )
        )
        return self._frames.begun(accepted)  # started: the same but for its state

    def completed_frame(
        self, task_id: str, capability: str, elapsed_ns: int, sender: str = ""
    ) -> bytes:
        """The ``completed`` event, framed (``sender`` from ``claimed_sender``)."""
        event = Completed(
            agent=self.agent_id,
            ts=time.time(),
            task_id=task_id,
            capability=capability,
            sender=sender,
            elapsed_ms=rounded_ms(elapsed_ns),
        )
        return self.frame(event)

    async def accepted(self, task: AgentMessage) -> None:
        """The task was taken off the bus."""
        await self.task_event(
            Accepted, task.task_id, task.capability, sender=task.sender[:MAX_SENDER]
        )

    async def started(self, task: AgentMessage) -> None:
        """The handler began."""
        await self.task_event(
            Started, task.task_id, task.capability, sender=task.sender[:MAX_SENDER]
        )

    async def progress(self, task: AgentMessage, message: str, data: Any) -> None:
        """A handler's intermediate report."""
        await self.task_event(
            Progress,
            task.task_id,
            task.capability,
            sender=task.sender[:MAX_SENDER],
            message=message,
            data=data,
        )

    async def completed(
        self, task_id: str, capability: str, elapsed_ms: float, *, sender: str = ""
    ) -> None:
        """The handler returned a result (``sender`` from ``claimed_sender``)."""
        await self.task_event(
            Completed, task_id, capability, sender=sender, elapsed_ms=round(elapsed_ms, 3)
        )

    async def failed(
        self,
        task_id: str,
        capability: str,
        elapsed_ms: float,
        error: ErrorInfo,
        *,
        sender: str = "",
    ) -> None:
        """The task ended with an error reply (``sender`` from ``claimed_sender``)."""
        await self.task_event(
            Failed, task_id, capability, sender=sender, elapsed_ms=round(elapsed_ms, 3), error=error
        )

    async def cancelled(
        self, task_id: str, capability: str, elapsed_ms: float, reason: str, *, sender: str = ""
    ) -> None:
        """The task was cancelled (``sender`` from ``claimed_sender``)."""
        await self.task_event(
            Cancelled,
            task_id,
            capability,
            sender=sender,
            elapsed_ms=round(elapsed_ms, 3),
            reason=reason,
        )
