"""Runs one agent on the bus: intake, a worker pool, replies, status, discovery.

nats-py awaits a subscription's callback one message at a time, so the
callback only admits the task (or refuses it with 503 at the concurrency
limit) and hands it to a fixed pool of ``max_concurrency`` workers. The pool
is created once, so the hot path creates no task per message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bus import (
    QUEUE_GROUP,
    AgentMessage,
    AgentMetrics,
    AgentSeries,
    BadInput,
    CallboardError,
    CapabilitySeries,
    Draining,
    ErrorInfo,
    Heartbeat,
    Offline,
    Online,
    PayloadTooLarge,
    Subjects,
    TaskClient,
    TaskError,
    new_task_id,
    unsubscribe_all,
    validate_task_id,
)
from bus.codec import (
    AGENT_ID,
    CAPABILITY,
    OPERATION,
    TASK_ID,
    decode_task,
    encode_error,
    encode_json,
)

from ._agent import Agent
from ._context import TaskContext, reset_context, set_context
from ._discovery import EndpointCounters, ServiceResponder
from ._status import StatusPublisher
from ._tasklog import log_outcome, task_logger

__all__ = ["DEFAULT_MAX_DELEGATION_DEPTH", "DEFAULT_MAX_PAYLOAD", "AgentRunner"]

log = logging.getLogger("callboard.agent")

DEFAULT_MAX_DELEGATION_DEPTH = 8
"""Agents a task may pass through by delegation, the receiving one included."""
DEFAULT_MAX_PAYLOAD = 1024 * 1024
"""Bytes of payload an agent accepts; more is refused with 413."""

_Job = tuple[str, Msg]
_RESULT = "the handler's result"
_encoder = msgspec.json.Encoder()


class _Running:
    """A task a worker is running: its cancel scope and why it was cancelled."""

    __slots__ = ("cancel_reason", "scope")

    def __init__(self, scope: anyio.CancelScope) -> None:
        self.scope = scope
        self.cancel_reason = ""


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
        self.max_delegation_depth = max_delegation_depth
        self.max_payload = max_payload
        self.limit = agent.max_concurrency
        self.in_flight = 0
        self.series: AgentSeries | None = None
        self._series: dict[str, CapabilitySeries] = {}
        if metrics is not None:
            self.series = metrics.bind(agent.id, agent.kind, agent.capability_names, self.limit)
            self.series.read_in_flight(lambda: self.in_flight)
            self._series = self.series.capabilities
        counters = self.series.status_events if self.series is not None else None
        self.status = StatusPublisher(nc, subjects, agent.id, counters=counters)
        self.counters = {name: EndpointCounters() for name in agent.capability_names}
        self.discovery = ServiceResponder(nc, agent, subjects, self.counters)
        self._decoders = {c.name: c.decoder() for c in agent.capability_specs}
        self._send: MemoryObjectSendStream[_Job]
        self._receive: MemoryObjectReceiveStream[_Job]
        self._send, self._receive = anyio.create_memory_object_stream[_Job](self.limit)
        self._task_subs: list[Subscription] = []
        self._direct_sub: Subscription | None = None
        self._cancel_sub: Subscription | None = None
        self._running: dict[str, _Running] = {}
        self._idle = anyio.Event()
        self._idle.set()
        self._accepting = False

    async def start(self, task_group: TaskGroup) -> None:
        """Start the workers, subscribe, and announce ``online``."""
        for _ in range(self.limit):
            task_group.start_soon(self._worker, self._receive.clone())
        self._receive.close()
        self._accepting = True
        for name in self.agent.capability_names:
            sub = await self.nc.subscribe(
                self.subjects.task(name), queue=QUEUE_GROUP, cb=self._intake_for(name)
            )
            self._task_subs.append(sub)
        self._direct_sub = await self.nc.subscribe(
            self.subjects.agent(self.agent.id), cb=self._on_direct
        )
        self._cancel_sub = await self.nc.subscribe(self.subjects.cancel(), cb=self._on_cancel)
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

    def _intake_for(self, capability: str) -> Callable[[Msg], Awaitable[None]]:
        async def intake(msg: Msg) -> None:
            await self._admit(capability, msg)

        return intake

    async def _admit(self, capability: str, msg: Msg) -> None:
        series = self._series.get(capability)
        if series is not None:
            series.received.inc()
        if not self._accepting:
            error = Draining(f"agent {self.agent.id} is shutting down")
            await self._refuse(msg, capability, error, "draining")
            return
        if self.in_flight >= self.limit:
            await self._refuse(
                msg,
                capability,
                TaskError(
                    f"agent {self.agent.id} is at its concurrency limit ({self.limit} tasks); "
                    "retry later or run more replicas",
                    code=503,
                    type="overloaded",
                ),
                "overloaded",
            )
            return
        self.task_began()
        self._send.send_nowait((capability, msg))

    async def _refuse(self, msg: Msg, capability: str, error: CallboardError, reason: str) -> None:
        """Answer a task that will not run; ``reason`` is its ``rejected`` label."""
        series = self._series.get(capability)
        if series is not None:
            series.rejected[reason].inc()
        task_id = (msg.headers or {}).get(TASK_ID) or new_task_id()
        info = ErrorInfo(code=error.code, type=error.type, message=error.message)
        self.counters[capability].record(0, info.message)
        await self._reply_error(msg, task_id, info)
        await self.status.failed(task_id, capability, 0.0, info)

    async def _worker(self, jobs: MemoryObjectReceiveStream[_Job]) -> None:
        async with jobs:
            async for capability, msg in jobs:
                try:
                    await self._run(capability, msg)
                finally:
                    self.task_ended()

    def task_began(self) -> None:
        """Count one more task in flight (core or durable), for load and draining."""
        if self.in_flight == 0:
            self._idle = anyio.Event()
        self.in_flight += 1

    def task_ended(self) -> None:
        """Count a task as finished; the last one wakes ``wait_idle``."""
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def _run(self, capability: str, msg: Msg) -> None:
        started_ns = time.perf_counter_ns()
        headers = msg.headers
        task_id = (headers.get(TASK_ID) if headers else None) or new_task_id()
        error: ErrorInfo | None = None
        cancel_reason = ""
        try:
            validate_task_id(task_id)
        except BadInput as exc:
            task_id = new_task_id()
            error = ErrorInfo(code=400, type="bad_input", message=exc.message)
        if error is None:
            error, cancel_reason, body = await self.execute(capability, msg, task_id)
        elapsed_ns = time.perf_counter_ns() - started_ns
        elapsed_ms = elapsed_ns / 1e6
        self.record(capability, elapsed_ns, error)
        if error is None:
            await self._reply(msg, task_id, body)
            await self.status.completed(task_id, capability, elapsed_ms)
            return
        await self._reply_error(msg, task_id, error)
        if cancel_reason:
            await self.status.cancelled(task_id, capability, elapsed_ms, cancel_reason)
        else:
            await self.status.failed(task_id, capability, elapsed_ms, error)
        log_outcome(self.agent.id, task_id, capability, error, cancel_reason)

    def record(self, capability: str, elapsed_ns: int, error: ErrorInfo | None) -> None:
        """Count a finished task in ``$SRV.STATS`` and the Prometheus series."""
        self.counters[capability].record(elapsed_ns, error.message if error else None)
        series = self._series.get(capability)
        if series is not None:
            series.finished(elapsed_ns / 1e9, error.code if error else None)

    async def execute(
        self, capability: str, msg: Msg, task_id: str
    ) -> tuple[ErrorInfo | None, str, bytes]:
        """Run the handler on one task message (core or durable); publish its
        ``accepted`` and ``started`` events; return (error, cancel reason, result body).
        Publishes no reply and no final event: the caller decides how to answer."""
        running = _Running(anyio.CancelScope())
        try:
            task = self._decode(capability, msg, task_id)
            await self.status.accepted(task)
            await self.status.started(task)
            time_left = task.time_left()
            if time_left is None:
                time_left = self.agent.default_timeout
            if time_left <= 0:
                raise TaskError(
                    f"task {task_id} arrived after its deadline; nobody waits for it any more",
                    code=408,
                    type="timeout",
                )
            self._running[task_id] = running
            context = TaskContext(
                task,
                self.agent.id,
                self.client,
                self.status.progress,
                on_delegated=self.series.delegated if self.series is not None else None,
            )
            token = set_context(context)
            try:
                with running.scope, anyio.move_on_after(time_left) as deadline:
                    result = await self.agent.handle(task)
            finally:
                reset_context(token)
            if running.scope.cancelled_caught:
                return self._cancellation_error(task_id, running.cancel_reason)
            if deadline.cancelled_caught:
                raise TaskError(
                    f"task {task_id} ran past its deadline ({time_left:.3g}s) on agent "
                    f"{self.agent.id} and was stopped",
                    code=408,
                    type="timeout",
                )
            return None, "", encode_json(result, _RESULT)
        except BadInput as exc:
            if exc.message.startswith(_RESULT):
                return _error(500, "bad_result", exc.message), "", b""
            return _error(exc.code, exc.type, exc.message), "", b""
        except CallboardError as exc:
            return _error(exc.code, exc.type, exc.message), "", b""
        except Exception as exc:
            task_logger(self.agent.id, task_id, capability).exception("%s crashed", self.agent.id)
            message = f"agent {self.agent.id} failed: {type(exc).__name__}: {exc}"
            return _error(500, "agent_failure", message), "", b""
        finally:
            if self._running.get(task_id) is running:
                del self._running[task_id]

    def _decode(self, capability: str, msg: Msg, task_id: str) -> AgentMessage:
        if len(msg.data) > self.max_payload:
            raise PayloadTooLarge(
                f"payload of {len(msg.data)} bytes is above agent {self.agent.id}'s limit of "
                f"{self.max_payload} bytes; send a smaller payload or a reference to the data"
            )
        task = decode_task(
            msg.headers,
            msg.data,
            task_id=task_id,
            capability=capability,
            receiver=self.agent.id,
            decoder=self._decoders[capability],
        )
        if self.agent.id in task.chain:
            path = " -> ".join((*task.chain, self.agent.id))
            raise TaskError(
                f"delegation cycle: task {task_id} would revisit agent {self.agent.id} ({path})",
                code=409,
                type="delegation_cycle",
            )
        if len(task.chain) >= self.max_delegation_depth:
            raise TaskError(
                f"delegation too deep: task {task_id} has passed through {len(task.chain)} "
                f"agents, the limit is {self.max_delegation_depth}",
                code=409,
                type="delegation_depth",
            )
        return task

    def _cancellation_error(self, task_id: str, reason: str) -> tuple[ErrorInfo, str, bytes]:
        error: TaskError
        if reason == "draining":
            error = Draining(
                f"agent {self.agent.id} shut down before task {task_id} finished; retry it"
            )
        else:
            error = TaskError(f"task {task_id} was cancelled: {reason}", code=499, type="cancelled")
        return _error(error.code, error.type, error.message), reason or "cancelled", b""

    async def _reply(self, msg: Msg, task_id: str, body: bytes) -> None:
        if msg.reply:
            try:
                await self.nc.publish(
                    msg.reply, body, headers={TASK_ID: task_id, AGENT_ID: self.agent.id}
                )
            except Exception as exc:
                task_logger(self.agent.id, task_id).warning("its reply was lost: %s", exc)

    async def _reply_error(self, msg: Msg, task_id: str, error: ErrorInfo) -> None:
        if msg.reply:
            headers, body = encode_error(error, task_id=task_id, agent_id=self.agent.id)
            try:
                await self.nc.publish(msg.reply, body, headers=headers)
            except Exception as exc:
                task_logger(self.agent.id, task_id).warning("its error reply was lost: %s", exc)

    async def _on_direct(self, msg: Msg) -> None:
        """The direct address: a targeted task, a ping, or a cancel."""
        headers = msg.headers or {}
        operation = headers.get(OPERATION, "task")
        if operation == "task":
            capability = headers.get(CAPABILITY, "")
            if capability in self.counters:
                await self._admit(capability, msg)
            elif msg.reply:
                error = _error(
                    404,
                    "unknown_capability",
                    f"agent {self.agent.id} has no capability {capability!r}; it serves "
                    f"{', '.join(self.agent.capability_names)} (set the Agent-Capability header)",
                )
                await self._reply_error(msg, headers.get(TASK_ID) or new_task_id(), error)
        elif operation == "ping":
            await self._answer(msg, self.snapshot())
        elif operation == "cancel":
            task_id = headers.get(TASK_ID, "")
            reason = msg.data.decode(errors="replace") or "cancelled by the caller"
            await self._answer(msg, {"cancelled": self.cancel(task_id, reason)})
        elif msg.reply:
            error = _error(
                400, "bad_input", f"unknown Agent-Op {operation!r}: use task, ping, cancel"
            )
            await self._reply_error(msg, headers.get(TASK_ID) or new_task_id(), error)

    async def _on_cancel(self, msg: Msg) -> None:
        """A broadcast cancel: stop the task if it runs here."""
        task_id = (msg.headers or {}).get(TASK_ID, "")
        if task_id in self._running:
            self.cancel(task_id, msg.data.decode(errors="replace") or "cancelled by the caller")

    async def _answer(self, msg: Msg, value: Any) -> None:
        if msg.reply:
            await self.nc.publish(msg.reply, encode_json(value))

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
        running = self._running.get(task_id)
        if running is None:
            return False
        running.cancel_reason = reason
        running.scope.cancel()
        return True

    def cancel_all(self, reason: str) -> int:
        """Cancel every running task (shutdown past the grace period)."""
        running = list(self._running.items())
        for task_id, _ in running:
            self.cancel(task_id, reason)
        return len(running)

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
        subs, self._task_subs = self._task_subs, []
        for sub in subs:
            try:
                await sub.drain()  # type: ignore[no-untyped-call]
            except Exception as exc:
                log.debug("drain of %s failed: %s", sub.subject, exc)
        self._accepting = False

    async def wait_idle(self) -> None:
        """Return when no task is in flight."""
        await self._idle.wait()

    async def close(self, reason: str = "shutdown") -> None:
        """Say ``offline``, stop discovery and the workers."""
        await unsubscribe_all(s for s in (self._direct_sub, self._cancel_sub) if s is not None)
        self._direct_sub = self._cancel_sub = None
        await self.discovery.stop()
        await self.status.publish(Offline(agent=self.agent.id, ts=time.time(), reason=reason))
        self._send.close()
        log.info("agent %s offline", self.agent.id)


def _error(code: int, type: str, message: str) -> ErrorInfo:
    return ErrorInfo(code=code, type=type, message=message)
