"""Per-task status events, relayed to the outside caller waiting on that task.

The gateway listens to the ``accepted``, ``started`` and ``progress`` events of
every agent and hands each to the call that waits for its task id. What an
event says about its sender is a claim: it is relayed only when the subject it
came on (which the server binds to the publishing user) names the agent the
body names, and that agent serves the task's capability now.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bus import Accepted, Progress, Started, Subjects, unsubscribe_all

from .._live import LiveRegistry
from ._metrics import GatewayMetrics

__all__ = ["RELAYED_STATES", "RelayedEvent", "TaskEvents"]

log = logging.getLogger("callboard.gateway")

RelayedEvent = Accepted | Started | Progress
"""The task events a caller is told of (the outcome comes as the reply)."""
RELAYED_STATES = ("accepted", "started", "progress")
_BACKLOG = 64
"""Events buffered per call; a caller slower than its task loses the excess (counted)."""
_decoder = msgspec.json.Decoder(RelayedEvent)
_STATES: dict[type[msgspec.Struct], str] = {
    Accepted: "accepted",
    Started: "started",
    Progress: "progress",
}


class _Watch:
    __slots__ = ("capability", "send")

    def __init__(self, capability: str, send: MemoryObjectSendStream[RelayedEvent]) -> None:
        self.capability = capability
        self.send = send


class TaskEvents:
    """Routes task events to the calls waiting for them, by task id.

    Args:
        nc: the connection.
        subjects: the system's subjects.
        registry: who serves what now (an event from anyone else is dropped).
        metrics: counts dropped events; None counts nothing.
    """

    def __init__(
        self,
        nc: Client,
        subjects: Subjects,
        registry: LiveRegistry,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.nc = nc
        self.subjects = subjects
        self.registry = registry
        self.metrics = metrics
        self._watches: dict[str, _Watch] = {}
        self._subs: list[Subscription] = []

    async def start(self) -> None:
        """Subscribe to the relayed states of every agent."""
        for state in RELAYED_STATES:
            subject = self.subjects.status_of_state(state)
            self._subs.append(await self.nc.subscribe(subject, cb=self._on_event))

    async def stop(self) -> None:
        """Stop listening."""
        subs, self._subs = self._subs, []
        await unsubscribe_all(subs)

    @contextmanager
    def watch(
        self, task_id: str, capability: str
    ) -> Iterator[MemoryObjectReceiveStream[RelayedEvent]]:
        """The events of one task, for the duration of the block."""
        send, receive = anyio.create_memory_object_stream[RelayedEvent](_BACKLOG)
        self._watches[task_id] = _Watch(capability, send)
        try:
            with receive:
                yield receive
        finally:
            self._watches.pop(task_id, None)
            send.close()

    def _drop(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.dropped_events.labels(reason).inc()

    async def _on_event(self, msg: Msg) -> None:
        parsed = self.subjects.parse_status(msg.subject)
        if parsed is None:
            return
        try:
            event = _decoder.decode(msg.data)
        except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
            log.debug("ignoring a malformed task event on %s", msg.subject)
            if self.metrics is not None:
                self.metrics.refusals.count("malformed_status_event")
            return
        watch = self._watches.get(event.task_id)
        if watch is None:
            return
        agent_id, state = parsed
        serving = {a.id for a in self.registry.serving(watch.capability)}
        if event.agent != agent_id or state != _STATES[type(event)] or agent_id not in serving:
            log.debug("dropping a task event for %s from %s", event.task_id, agent_id)
            self._drop("spoofed")
            return
        if event.capability and event.capability != watch.capability:
            self._drop("spoofed")
            return
        try:
            watch.send.send_nowait(event)
        except anyio.WouldBlock:
            self._drop("backlog")
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass
