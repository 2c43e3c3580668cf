"""The executor: runs an agent's handler on one task, for every intake.

An intake (core request-reply in ``_core_intake``, durable pull in
``_durable_worker``) hands a task message to ``Executor``, which decodes and
checks it, publishes ``accepted`` and ``started``, runs the handler within the
task's deadline and where ``cancel`` can reach it, and returns the outcome:
the intake decides how to answer. The executor also counts the tasks in
flight (for admission, load and draining) and records the finished ones.

A handler is stepped by hand: its first step runs at once, and only one that
waits gets a deadline and a place among the tasks ``cancel`` reaches.
"""

from __future__ import annotations

import math
import time
import types
from collections.abc import Coroutine, Mapping
from typing import Any

import anyio
import msgspec
from nats.aio.msg import Msg

from bus import (
    AgentMessage,
    AgentSeries,
    BadInput,
    CallboardError,
    CapabilitySeries,
    Draining,
    ErrorInfo,
    PayloadTooLarge,
    TaskClient,
    TaskError,
)
from bus.codec import decode_task, encode_json
from bus.security import CANCEL_HASH
from bus.wire import Wire

from ._agent import Agent
from ._capability_address import CallerCancels
from ._context import TaskContexts, bind_task, unbind_task
from ._discovery import EndpointCounters
from ._pool import Running, as_coroutine, resume
from ._status import BEGUN, StatusPublisher
from ._tasklog import task_logger

__all__ = ["DEFAULT_MAX_DELEGATION_DEPTH", "DEFAULT_MAX_PAYLOAD", "Executor", "Outcome"]

DEFAULT_MAX_DELEGATION_DEPTH = 8
"""Agents a task may pass through by delegation, the receiving one included."""
DEFAULT_MAX_PAYLOAD = 1024 * 1024
"""Bytes of payload an agent accepts; more is refused with 413."""

_RESULT = "the handler's result"
_encoder = msgspec.json.Encoder()

Outcome = tuple[ErrorInfo | None, str, bytes]
"""What ``Executor.execute`` returns: (error or None, cancel reason or "", result body)."""


class Executor:
    """Runs one agent's tasks, whichever intake they came from.

    Args:
        agent: the agent whose handler runs.
        client: the task client its handlers delegate with.
        status: publishes its status events.
        wire: its connection's wire (the begun events are written there).
        counters: ``$SRV.STATS`` counters per capability.
        series: its Prometheus series, or None.
        max_delegation_depth: longest delegation chain accepted.
        max_payload: largest payload accepted, in bytes.

    Attributes:
        in_flight: tasks admitted and not yet finished, over every intake.
        limit: the agent's concurrency limit.
    """

    def __init__(
        self,
        agent: Agent,
        client: TaskClient,
        status: StatusPublisher,
        wire: Wire,
        counters: Mapping[str, EndpointCounters],
        series: AgentSeries | None,
        *,
        max_delegation_depth: int = DEFAULT_MAX_DELEGATION_DEPTH,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
    ) -> None:
        self.agent = agent
        # security: only the caller, with the token whose hash the task carried, cancels it
        self.caller_cancels = CallerCancels(f"agent {agent.id}")
        self.client = client
        self.status = status
        self.counters = counters
        self.series = series
        self.capability_series: Mapping[str, CapabilitySeries] = (
            series.capabilities if series is not None else {}
        )
        self.max_delegation_depth = max_delegation_depth
        self.max_payload = max_payload
        self.limit = agent.max_concurrency
        self.in_flight = 0
        self._wire = wire
        self._decoders = {c.name: c.decoder() for c in agent.capability_specs}
        self._scope_class: type[anyio.CancelScope] | None = None
        self._unsent = b""
        self._running: dict[str, list[Running]] = {}
        """The tasks waiting in a handler, by id (callers choose ids: one may be shared)."""
        self._idle: anyio.Event | None = None
        self._contexts = TaskContexts(
            agent.id,
            client,
            self._progress,
            on_delegated=series.delegated if series is not None else None,
            on_corrected=series.model_corrected if series is not None else None,
        )

    # --- in flight ----------------------------------------------------------

    def task_began(self) -> None:
        """Count one more task in flight (an intake admitted it)."""
        self.in_flight += 1

    def task_ended(self) -> None:
        """Count a task as finished; the last one wakes ``wait_idle``."""
        self.in_flight -= 1
        if self.in_flight == 0 and self._idle is not None:
            # made only when someone waits: most tasks end with none waiting
            self._idle.set()
            self._idle = None

    async def wait_idle(self) -> None:
        """Return when no task is in flight."""
        if self.in_flight == 0:
            return
        if self._idle is None:
            self._idle = anyio.Event()
        await self._idle.wait()

    def record(self, capability: str, elapsed_ns: int, error: ErrorInfo | None) -> None:
        """Count a finished task in ``$SRV.STATS`` and the Prometheus series."""
        self.counters[capability].record(elapsed_ns, error.message if error else None)
        series = self.capability_series.get(capability)
        if series is not None:
            series.finished(elapsed_ns / 1e9, error.code if error else None)

    # --- running ------------------------------------------------------------

    async def execute(self, capability: str, msg: Msg, task_id: str) -> Outcome:
        """Run the handler on one task message in a cancel scope of its own;
        publish its ``accepted`` and ``started`` events. Publishes no reply and no
        final event, and counts nothing: the intake decides how to answer."""
        error, cancel_reason, body, begun = await self.execute_in(capability, msg, task_id)
        if begun:
            self._write_begun(begun)
        return error, cancel_reason, body

    def new_slot(self) -> Running:
        """A fresh cancel scope for a pool worker."""
        if self._scope_class is None:
            # the event loop's own class: constructing it directly skips anyio's
            # look-up of the running backend on every scope
            self._scope_class = type(anyio.CancelScope())
        return Running(self._scope_class())

    def cut_short(self, slot: Running, task_id: str) -> tuple[ErrorInfo, str]:
        """The error (and cancel reason) of the task ``slot``'s scope cut short."""
        if slot.cancelled:
            error, reason, _ = self.cancellation_error(task_id, slot.cancel_reason)
            return error, reason
        return self.deadline_error(task_id, slot.time_left), ""

    async def execute_in(
        self,
        capability: str,
        msg: Msg,
        task_id: str,
        slot: Running | None = None,
        started_ns: int = 0,
    ) -> tuple[ErrorInfo | None, str, bytes, bytes]:
        """``execute`` in a pool worker's ``slot``, whose scope (entered before any
        of its tasks) a cancel or deadline unwinds to: the worker answers such a
        task (``cut_short``). The ``accepted`` and ``started`` events of a handler
        that answered without waiting come back unwritten (the last item), for
        the caller to write ahead of the reply in one go. Without a slot: in a
        scope of its own, for ``execute``."""
        # the begun events wait in _unsent: the first step of a handler runs with
        # no other task in between, and they are written before it first waits,
        # before its first progress event, or before its failure
        try:
            task = self._decode(capability, msg, task_id)
            try:
                self._unsent = self.status.begun_frames(task)
            except Exception as exc:  # a sender name above the server's max_payload
                self.status.lost(exc, *BEGUN)
            try:
                deadline_ms = task.deadline_ms  # task.time_left(), without two calls
                if deadline_ms is None:
                    time_left = self.agent.default_timeout
                else:
                    time_left = (deadline_ms - time.time_ns() // 1_000_000) / 1000.0
                if time_left <= 0:
                    raise TaskError(
                        f"task {task_id} arrived after its deadline; nobody waits for it any more",
                        code=408,
                        type="timeout",
                    )
                token = bind_task((self._contexts, task))
                try:
                    handling = self.agent.handle(task)
                    if type(handling) is not types.CoroutineType:
                        handling = as_coroutine(handling)
                    if slot is not None:
                        # the first step here, inline: most handlers answer in it
                        began = time.monotonic()
                        try:
                            yielded = handling.send(None)
                        except StopIteration as done:
                            result = done.value
                        else:
                            # security: caller-only cancel. A cancel is read only once the
                            # handler waits (it is_running from here on): a task answered in
                            # its first step needs no hash kept
                            slot.cancel_hash = cancel_hash_of(msg.headers)
                            job = (capability, msg, started_ns)
                            result = await self._wait(
                                handling, yielded, began, task_id, time_left, slot, job
                            )
                    else:
                        # the scope is entered before the handler starts, so that
                        # the scopes the handler enters nest inside it
                        running = self.new_slot()
                        running.cancel_hash = cancel_hash_of(msg.headers)  # caller-only cancel
                        with running.scope:
                            result = await self._handle(handling, task_id, time_left, running)
                        if running.scope.cancelled_caught:
                            if running.cancelled:
                                return (
                                    *self.cancellation_error(task_id, running.cancel_reason),
                                    b"",
                                )
                            error = self.deadline_error(task_id, time_left)
                            return error, "", b"", b""
                finally:
                    unbind_task(token)
                try:  # the usual result: encoded without a call of ours
                    body = _encoder.encode(result)
                except Exception:
                    body = encode_json(result, _RESULT)  # raises the BadInput that says why
                begun, self._unsent = self._unsent, b""
                return None, "", body, begun
            finally:
                if self._unsent:
                    self._flush_begun()
        except BadInput as exc:
            if exc.message.startswith(_RESULT):
                return ErrorInfo(code=500, type="bad_result", message=exc.message), "", b"", b""
            return ErrorInfo(code=exc.code, type=exc.type, message=exc.message), "", b"", b""
        except CallboardError as exc:
            return ErrorInfo(code=exc.code, type=exc.type, message=exc.message), "", b"", b""
        except Exception as exc:
            task_logger(self.agent.id, task_id, capability).exception("%s crashed", self.agent.id)
            message = f"agent {self.agent.id} failed: {type(exc).__name__}: {exc}"
            return ErrorInfo(code=500, type="agent_failure", message=message), "", b"", b""

    async def _handle(
        self,
        handling: Coroutine[Any, Any, Any],
        task_id: str,
        time_left: float,
        running: Running,
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
        return await self._wait(handling, yielded, began, task_id, time_left, running)

    async def _wait(
        self,
        handling: Coroutine[Any, Any, Any],
        yielded: Any,
        began: float,
        task_id: str,
        time_left: float,
        running: Running,
        job: tuple[str, Msg, int] | None = None,
    ) -> Any:
        """The rest of a handler whose first step (begun at ``began``, monotonic)
        waits on ``yielded``: with a deadline, and reachable by ``cancel``."""
        self._flush_begun()
        scope = running.scope
        scope.deadline = anyio.current_time() + time_left - (time.monotonic() - began)
        running.time_left = time_left
        if job is not None:
            running.task = (job[0], job[1], task_id, job[2])
        waiting = self._running.get(task_id)
        if waiting is None:
            self._running[task_id] = [running]
        else:  # another caller's task of the same id: each is cancelled by its own caller
            waiting.append(running)
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
            waiting = self._running.get(task_id)
            if waiting is not None and running in waiting:
                waiting.remove(running)
                if not waiting:
                    del self._running[task_id]
            running.cancel_hash = None
            if not scope.cancel_called:
                scope.deadline = math.inf

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

    # --- the begun events ---------------------------------------------------

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

    # --- stopping tasks -----------------------------------------------------

    def deadline_error(self, task_id: str, time_left: float) -> ErrorInfo:
        """The 408 of a task stopped at its deadline."""
        return ErrorInfo(
            code=408,
            type="timeout",
            message=f"task {task_id} ran past its deadline ({time_left:.3g}s) on agent "
            f"{self.agent.id} and was stopped",
        )

    def cancellation_error(self, task_id: str, reason: str) -> tuple[ErrorInfo, str, bytes]:
        """The error of a cancelled task (503 when the agent drains), its reason, no body."""
        error: TaskError
        if reason == "draining":
            error = Draining(
                f"agent {self.agent.id} shut down before task {task_id} finished; retry it"
            )
        else:
            error = TaskError(f"task {task_id} was cancelled: {reason}", code=499, type="cancelled")
        info = ErrorInfo(code=error.code, type=error.type, message=error.message)
        return info, reason or "cancelled", b""

    def is_running(self, task_id: str) -> bool:
        """True while a task of that id waits in a handler here."""
        return task_id in self._running

    def cancel(self, task_id: str, reason: str) -> bool:
        """Cancel the running tasks of an id, whoever their callers; True if one ran here."""
        waiting = self._running.get(task_id)
        if not waiting:
            return False
        for running in list(waiting):
            _cancel(running, reason)
        return True

    def cancel_by_caller(
        self, task_id: str, headers: dict[str, str] | None, reason: str
    ) -> tuple[bool, bool]:
        """Cancel the running tasks of ``task_id`` whose caller's token the cancel
        (``headers``) presents: (allowed, cancelled). A task not running here has
        nothing to protect: allowed, not cancelled, and no refusal is counted."""
        waiting = self._running.get(task_id)
        if not waiting:
            return True, False
        chosen = self.caller_cancels.chosen(task_id, headers, waiting)
        for running in chosen:
            _cancel(running, reason)
        return bool(chosen), bool(chosen)

    def cancel_all(self, reason: str) -> int:
        """Cancel every running task (shutdown past the grace period)."""
        running = list(self._running)
        for task_id in running:
            self.cancel(task_id, reason)
        return len(running)


def _cancel(running: Running, reason: str) -> None:
    running.cancel_reason = reason
    running.cancelled = True
    running.scope.cancel()


def cancel_hash_of(headers: dict[str, str] | None) -> str | None:
    """The ``Agent-Cancel-Hash`` a task carried (None: nobody may cancel it)."""
    return headers.get(CANCEL_HASH) if headers else None
