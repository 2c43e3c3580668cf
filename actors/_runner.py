"""Runs one agent on the bus: intake, a worker pool, replies, status, discovery.

A fixed pool of workers, created once, runs every task: the hot path creates
no task per message. Each capability's subscription has one *leader* among
them, which takes the next message off the subscription's queue, admits it
(or refuses it with 503 at the concurrency limit, or while draining) and runs
it at once. A task that finishes without waiting (most do not wait long, the
echo agent never) costs no hand-off at all; one that waits passes the lead to
an idle worker first, by the same deque of jobs that carries tasks for the
direct address, so intake never waits for a task. The pool has a worker per
task slot plus one per capability, so there is always a leader to refuse
with 503 at the limit.

The hot path is plain asyncio where anyio would add cost and nothing else: the
hand-off is a deque and a future per idle worker, and only a handler that
waits gets a deadline (and a place among the tasks ``cancel`` can reach). The
``accepted`` and ``started`` events, the reply and the ``completed`` event are
framed and appended to the connection's buffer (``bus.wire``), in that order,
each its own NATS message.
"""

from __future__ import annotations

import logging
import math
import time
import types
from collections.abc import Coroutine
from typing import Any

import anyio
import nats.errors
from anyio.abc import TaskGroup
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
from bus.security import ReplyGuard
from bus.wire import wire_for

from ._agent import Agent
from ._context import TaskContext, reset_context, set_context
from ._direct import CallerCancels, DirectAddresses, cancel_answer, moved_task_error
from ._discovery import EndpointCounters, ServiceResponder
from ._pool import Intake, Jobs, Running, as_coroutine, resume
from ._status import BEGUN, StatusPublisher
from ._tasklog import log_outcome, task_logger

__all__ = ["DEFAULT_MAX_DELEGATION_DEPTH", "DEFAULT_MAX_PAYLOAD", "AgentRunner"]

log = logging.getLogger("callboard.agent")

DEFAULT_MAX_DELEGATION_DEPTH = 8
"""Agents a task may pass through by delegation, the receiving one included."""
DEFAULT_MAX_PAYLOAD = 1024 * 1024
"""Bytes of payload an agent accepts; more is refused with 413."""

_RESULT = "the handler's result"
_FINISHED = ("completed",)


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
        self._wire = wire_for(nc)
        self._reply_head = f"NATS/1.0\r\n{TASK_ID}: "
        self._reply_tail = f"\r\n{AGENT_ID}: {agent.id}\r\n\r\n"
        self.counters = {name: EndpointCounters() for name in agent.capability_names}
        self.discovery = ServiceResponder(nc, agent, subjects, self.counters)
        # security: reply guard, caller-only cancels, capability-bound direct addresses
        self.reply_guard = ReplyGuard(f"agent {agent.id}")
        self.caller_cancels = CallerCancels(f"agent {agent.id}")
        self.direct = DirectAddresses(
            nc, subjects, agent, self._admit, self.reply_guard, self.snapshot
        )
        self.discovery.reply_guard = self.reply_guard
        self._decoders = {c.name: c.decoder() for c in agent.capability_specs}
        self._jobs = Jobs()
        self._scope_class: type[anyio.CancelScope] | None = None
        self._unsent = b""
        self._task_subs: list[Subscription] = []
        self._intakes: list[Intake] = []
        self._direct_sub: Subscription | None = None
        self._cancel_sub: Subscription | None = None
        self._running: dict[str, Running] = {}
        self._idle: anyio.Event | None = None
        self._accepting = False

    async def start(self, task_group: TaskGroup) -> None:
        """Start the workers, subscribe, and announce ``online``."""
        for _ in range(self.limit + len(self.agent.capability_names)):
            task_group.start_soon(self._worker)
        self._accepting = True
        for name in self.agent.capability_names:
            sub = await self.nc.subscribe(self.subjects.task(name), queue=QUEUE_GROUP)
            self._task_subs.append(sub)
            intake = Intake(name, sub, self._series.get(name))
            self._intakes.append(intake)
            self._jobs.put(intake)
        self._direct_sub = await self.nc.subscribe(
            self.subjects.agent(self.agent.id), cb=self._on_direct
        )
        self._cancel_sub = await self.nc.subscribe(self.subjects.cancel(), cb=self._on_cancel)
        await self.direct.start()  # security: <prefix>.agent.<capability>.<agent_id>
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

    async def _lead(self, intake: Intake, slot: Running) -> None:
        """Take ``intake``'s messages and run them, until one waits (then an idle
        worker takes the lead over) or the subscription ends."""
        queue, sub, capability, series = intake.queue, intake.sub, intake.capability, intake.series
        while True:
            try:
                msg = await queue.get()
            except BaseException:
                self._jobs.put(intake)  # cancelled: the lead goes to another worker
                raise
            if msg is None:
                return
            sub._pending_size -= len(msg.data)
            queue.task_done()
            if msg.reply and not self.reply_guard.allows(msg.reply):  # security: no reflection
                continue
            if not (self._accepting and self.in_flight < self.limit):
                self._jobs.put(intake)  # refusing may wait on the connection
                await self._admit(capability, msg)
                return
            if series is not None:
                series.received.inc()
            self.task_began()
            run = self._run(capability, msg, slot)
            try:
                try:
                    yielded = run.send(None)
                except StopIteration:
                    continue
                # the task waits: an idle worker leads while this one finishes it
                self._jobs.put(intake)
                await resume(run, yielded)
                return
            finally:
                self.task_ended()

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
        self._jobs.put((capability, msg))

    async def _refuse(self, msg: Msg, capability: str, error: CallboardError, reason: str) -> None:
        """Answer a task that will not run; ``reason`` is its ``rejected`` label."""
        series = self._series.get(capability)
        if series is not None:
            series.rejected[reason].inc()
        task_id = _answerable_id(msg.headers or {})
        info = ErrorInfo(code=error.code, type=error.type, message=error.message)
        self.counters[capability].record(0, info.message)
        await self._reply_error(msg, task_id, info)
        await self.status.failed(task_id, capability, 0.0, info)

    async def _worker(self) -> None:
        jobs = self._jobs
        scope_class = self._cancel_scope_class()
        while True:
            slot = Running(scope_class())
            with slot.scope:
                # a scope that cancelled a task is not used again: a new one
                while not slot.scope.cancel_called:
                    job = await jobs.get()
                    if job is None:
                        return
                    if isinstance(job, Intake):
                        await self._lead(job, slot)
                        continue
                    try:
                        await self._run(*job, slot)
                    finally:
                        self.task_ended()
            if slot.task is not None:
                await self._cut_short(slot)

    def task_began(self) -> None:
        """Count one more task in flight (core or durable), for load and draining."""
        self.in_flight += 1

    def task_ended(self) -> None:
        """Count a task as finished; the last one wakes ``wait_idle``."""
        self.in_flight -= 1
        if self.in_flight == 0 and self._idle is not None:
            # made only when someone waits: most tasks end with none waiting
            self._idle.set()
            self._idle = None

    async def _run(self, capability: str, msg: Msg, slot: Running) -> None:
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
        body = begun = b""
        if error is None:
            error, cancel_reason, body, begun = await self._execute(
                capability, msg, task_id, slot, started_ns
            )
        await self._finish(capability, msg, task_id, started_ns, error, cancel_reason, body, begun)

    async def _cut_short(self, slot: Running) -> None:
        """Answer the task whose wait the worker's scope cut short (``cancel``
        or its deadline); the worker has already counted it as ended."""
        assert slot.task is not None
        capability, msg, task_id, started_ns = slot.task
        slot.task = None
        if slot.cancelled:
            error, cancel_reason, _ = self._cancellation_error(task_id, slot.cancel_reason)
        else:
            error, cancel_reason = self._deadline_error(task_id, slot.time_left), ""
        await self._finish(capability, msg, task_id, started_ns, error, cancel_reason, b"", b"")

    async def _finish(
        self,
        capability: str,
        msg: Msg,
        task_id: str,
        started_ns: int,
        error: ErrorInfo | None,
        cancel_reason: str,
        body: bytes,
        begun: bytes,
    ) -> None:
        """Count a task, then answer it and publish its final event."""
        elapsed_ns = time.perf_counter_ns() - started_ns
        elapsed_ms = elapsed_ns / 1e6
        self.record(capability, elapsed_ns, error)
        if error is None:
            await self._reply(msg, task_id, capability, body, elapsed_ms, begun)
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
        error, cancel_reason, body, begun = await self._execute(capability, msg, task_id)
        if begun:
            self._write_begun(begun)
        return error, cancel_reason, body

    async def _execute(
        self,
        capability: str,
        msg: Msg,
        task_id: str,
        slot: Running | None = None,
        started_ns: int = 0,
    ) -> tuple[ErrorInfo | None, str, bytes, bytes]:
        """``execute``, but the ``accepted`` and ``started`` events of a handler
        that answered without waiting come back unwritten (the last item), for
        the caller to write ahead of the reply in one go.

        Until then they wait in ``_unsent``: the first step of a handler runs
        with no other task in between, and they are written before it first
        waits, before its first progress event, or before its failure."""
        try:
            task = self._decode(capability, msg, task_id)
            self.caller_cancels.remember(task_id, msg.headers)  # security: caller-only cancel
            try:
                self._unsent = self.status.begun_frames(task)
            except Exception as exc:  # a sender name above the server's max_payload
                self.status.lost(exc, *BEGUN)
            try:
                time_left = task.time_left()
                if time_left is None:
                    time_left = self.agent.default_timeout
                if time_left <= 0:
                    raise TaskError(
                        f"task {task_id} arrived after its deadline; nobody waits for it any more",
                        code=408,
                        type="timeout",
                    )
                context = TaskContext(
                    task,
                    self.agent.id,
                    self.client,
                    self._progress,
                    on_delegated=self.series.delegated if self.series is not None else None,
                )
                token = set_context(context)
                try:
                    handling = self.agent.handle(task)
                    if type(handling) is not types.CoroutineType:
                        handling = as_coroutine(handling)
                    if slot is not None:
                        # in a pool worker, whose scope (entered before any of its
                        # tasks) a cancel or deadline unwinds to: _cut_short answers
                        job = (capability, msg, started_ns)
                        result = await self._handle(handling, task_id, time_left, slot, job)
                    else:
                        # the scope is entered before the handler starts, so that
                        # the scopes the handler enters nest inside it
                        running = Running(self._cancel_scope_class()())
                        with running.scope:
                            result = await self._handle(handling, task_id, time_left, running)
                        if running.scope.cancelled_caught:
                            if running.cancelled:
                                return (
                                    *self._cancellation_error(task_id, running.cancel_reason),
                                    b"",
                                )
                            error = self._deadline_error(task_id, time_left)
                            return error, "", b"", b""
                finally:
                    reset_context(token)
                body = encode_json(result, _RESULT)
                begun, self._unsent = self._unsent, b""
                return None, "", body, begun
            finally:
                self.caller_cancels.forget(task_id)  # security: caller-only cancel
                self._flush_begun()
        except BadInput as exc:
            if exc.message.startswith(_RESULT):
                return _error(500, "bad_result", exc.message), "", b"", b""
            return _error(exc.code, exc.type, exc.message), "", b"", b""
        except CallboardError as exc:
            return _error(exc.code, exc.type, exc.message), "", b"", b""
        except Exception as exc:
            task_logger(self.agent.id, task_id, capability).exception("%s crashed", self.agent.id)
            message = f"agent {self.agent.id} failed: {type(exc).__name__}: {exc}"
            return _error(500, "agent_failure", message), "", b"", b""

    async def _handle(
        self,
        handling: Coroutine[Any, Any, Any],
        task_id: str,
        time_left: float,
        running: Running,
        job: tuple[str, Msg, int] | None = None,
    ) -> Any:
        """Run a handler in ``running``'s scope (entered by the caller): its first
        step at once, then, if it waits, with a deadline and reachable by ``cancel``."""
        began = time.monotonic()
        try:
            yielded = handling.send(None)
        except StopIteration as done:
            # answered without waiting: nothing could cancel it or time it out,
            # so it needed no deadline and no registration
            return done.value
        self._flush_begun()
        scope = running.scope
        scope.deadline = anyio.current_time() + time_left - (time.monotonic() - began)
        running.time_left = time_left
        if job is not None:
            running.task = (job[0], job[1], task_id, job[2])
        self._running[task_id] = running
        try:
            result = await resume(handling, yielded)
        except BaseException as exc:
            # kept only for a wait this scope cut short: the worker answers it
            if not (scope.cancel_called and isinstance(exc, anyio.get_cancelled_exc_class())):
                running.task = None
            raise
        else:
            running.task = None
            return result
        finally:
            if self._running.get(task_id) is running:
                del self._running[task_id]
            if not scope.cancel_called:
                scope.deadline = math.inf

    def _deadline_error(self, task_id: str, time_left: float) -> ErrorInfo:
        return _error(
            408,
            "timeout",
            f"task {task_id} ran past its deadline ({time_left:.3g}s) on agent "
            f"{self.agent.id} and was stopped",
        )

    def _cancel_scope_class(self) -> type[anyio.CancelScope]:
        """The event loop's own CancelScope class: constructing it directly skips
        anyio's look-up of the running backend on every scope."""
        if self._scope_class is None:
            self._scope_class = type(anyio.CancelScope())
        return self._scope_class

    def _flush_begun(self) -> None:
        """Write the ``accepted`` and ``started`` events still waiting, if any."""
        if self._unsent:
            begun, self._unsent = self._unsent, b""
            self._write_begun(begun)

    def _write_begun(self, frames: bytes) -> None:
        try:
            self._wire.write_nowait(frames, 2)
        except Exception as exc:
            self.status.lost(exc, *BEGUN)
        else:
            self.status.sent(*BEGUN)

    async def _progress(self, task: AgentMessage, message: str, data: Any) -> None:
        self._flush_begun()
        await self.status.progress(task, message, data)

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

    async def _reply(
        self, msg: Msg, task_id: str, capability: str, body: bytes, elapsed_ms: float, begun: bytes
    ) -> None:
        """The ``accepted`` and ``started`` events if still unwritten (``begun``),
        the result, then the ``completed`` event: in that order, in one write."""
        status = self.status
        frames = status.completed_frame(task_id, capability, elapsed_ms)
        if msg.reply:
            try:
                headers = f"{self._reply_head}{task_id}{self._reply_tail}".encode()
                frames = self._wire.hpub(msg.reply, "", headers, body) + frames
            except nats.errors.MaxPayloadError:
                await self._reply_too_large(msg, task_id, capability, len(body), elapsed_ms, begun)
                return
        states = (*BEGUN, *_FINISHED) if begun else _FINISHED
        try:
            await self._wire.write(begun + frames if begun else frames, len(states) + 1)
        except Exception as exc:
            task_logger(self.agent.id, task_id).warning("its reply was lost: %s", exc)
            status.lost(exc, *states)
        else:
            status.sent(*states)

    async def _reply_too_large(
        self,
        msg: Msg,
        task_id: str,
        capability: str,
        size: int,
        elapsed_ms: float,
        begun: bytes,
    ) -> None:
        """A result the server would refuse (it would also drop the connection):
        the caller gets a 413 instead, and the task counts as failed."""
        if begun:
            try:
                await self._wire.write(begun, len(BEGUN))
                self.status.sent(*BEGUN)
            except Exception as exc:
                self.status.lost(exc, *BEGUN)
        error = _error(
            413,
            "result_too_large",
            f"the result of task {task_id} ({size} bytes) is above the NATS server's "
            f"max_payload ({self.nc.max_payload} bytes): return a smaller result or a "
            "reference to the data",
        )
        task_logger(self.agent.id, task_id, capability).warning("%s", error.message)
        await self._reply_error(msg, task_id, error)
        await self.status.failed(task_id, capability, elapsed_ms, error)

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
        if msg.reply and not self.reply_guard.allows(msg.reply):  # security: no reflection
            return
        if operation == "task":
            capability = headers.get(CAPABILITY, "")
            if capability in self.counters:  # security: tasks moved to agent_task subjects
                error = moved_task_error(self.subjects, self.agent.id, capability)
                await self._reply_error(msg, _answerable_id(headers), error)
            elif msg.reply:
                error = _error(
                    404,
                    "unknown_capability",
                    f"agent {self.agent.id} has no capability {capability[:40]!r}; it serves "
                    f"{', '.join(self.agent.capability_names)} (set the Agent-Capability header)",
                )
                await self._reply_error(msg, _answerable_id(headers), error)
        elif operation == "ping":
            await self._answer(msg, self.snapshot())
        elif operation == "cancel":
            task_id = headers.get(TASK_ID, "")
            reason = msg.data.decode(errors="replace") or "cancelled by the caller"
            allowed = self.caller_cancels.allows(task_id, headers)  # security: caller only
            await self._answer(
                msg, cancel_answer(allowed, allowed and self.cancel(task_id, reason))
            )
        elif msg.reply:
            error = _error(
                400, "bad_input", f"unknown Agent-Op {operation[:40]!r}: use task, ping, cancel"
            )
            await self._reply_error(msg, _answerable_id(headers), error)

    async def _on_cancel(self, msg: Msg) -> None:
        """A broadcast cancel: stop the task if it runs here."""
        task_id = (msg.headers or {}).get(TASK_ID, "")
        if task_id in self._running and self.caller_cancels.allows(task_id, msg.headers):
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
        running.cancelled = True
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
        self._stop_leading()

    def _stop_leading(self) -> None:
        intakes, self._intakes = self._intakes, []
        for intake in intakes:
            intake.stop()

    async def wait_idle(self) -> None:
        """Return when no task is in flight."""
        if self.in_flight == 0:
            return
        if self._idle is None:
            self._idle = anyio.Event()
        await self._idle.wait()

    async def close(self, reason: str = "shutdown") -> None:
        """Say ``offline``, stop discovery and the workers."""
        await unsubscribe_all(s for s in (self._direct_sub, self._cancel_sub) if s is not None)
        self._direct_sub = self._cancel_sub = None
        await self.direct.stop()  # security: capability-bound direct addresses
        await self.discovery.stop()
        await self.status.publish(Offline(agent=self.agent.id, ts=time.time(), reason=reason))
        self._stop_leading()
        self._jobs.close()
        log.info("agent %s offline", self.agent.id)


def _error(code: int, type: str, message: str) -> ErrorInfo:
    return ErrorInfo(code=code, type=type, message=message)


def _answerable_id(headers: dict[str, str]) -> str:
    """The task ID to answer a refused task under: its own if valid, else a new one
    (an invalid one may be too long to send back)."""
    task_id = headers.get(TASK_ID)
    if task_id:
        try:
            return validate_task_id(task_id)
        except BadInput:
            pass
    return new_task_id()
