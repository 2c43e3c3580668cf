"""Answering a core task: the reply or error reply to the caller's inbox, and
the task's final status event.

A result goes out with whatever of ``accepted`` and ``started`` is still
unwritten and with ``completed``, in that order, in one write to the
connection's buffer (each its own NATS message). A result the server would
refuse (above ``max_payload``, which would also cost the agent its
connection) becomes a 413.
"""

from __future__ import annotations

import time
from collections.abc import Coroutine
from typing import Any

import nats.errors
from nats.aio.msg import Msg

from bus import BadInput, CallboardError, ErrorInfo, new_task_id, validate_task_id
from bus.codec import TASK_ID
from bus.wire import ReplyFrames, Wire

from ._executor import Executor
from ._status import BEGUN, StatusPublisher, claimed_sender
from ._tasklog import log_outcome, task_logger

__all__ = ["HELD_TASKS", "Replier", "answerable_id"]

HELD_TASKS = 64
"""Answers ``answer`` holds at most before it writes them (``release``)."""
_FINISHED = ("completed",)
_ALL_STATES = (*BEGUN, *_FINISHED)


class Replier:
    """Answers one agent's core tasks.

    Args:
        executor: the agent's executor (what is counted and recorded).
        status: publishes its status events.
        wire: its connection's wire.
    """

    __slots__ = (
        *("_agent_id", "_executor", "_frames", "_status", "wire"),
        *("_held", "_held_begun", "_held_ids", "_held_messages"),
    )

    def __init__(self, executor: Executor, status: StatusPublisher, wire: Wire) -> None:
        self._executor = executor
        self._status = status
        self.wire = wire
        self._agent_id = executor.agent.id
        self._frames = ReplyFrames(wire, self._agent_id)
        self._held: list[bytes] = []
        self._held_ids: list[str] = []
        self._held_begun = 0
        self._held_messages = 0

    async def finish(
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
        """Record a task, then answer it and publish its final event."""
        if error is None:
            pending = self.answer(capability, msg, task_id, started_ns, body, begun)
            if pending is not None:
                await pending
            return
        elapsed_ns = time.perf_counter_ns() - started_ns
        elapsed_ms = elapsed_ns / 1e6
        self._executor.record(capability, elapsed_ns, error)
        await self.reply_error(msg, task_id, error)
        sender = claimed_sender(msg.headers)
        if cancel_reason:
            await self._status.cancelled(
                task_id, capability, elapsed_ms, cancel_reason, sender=sender
            )
        else:
            await self._status.failed(task_id, capability, elapsed_ms, error, sender=sender)
        log_outcome(self._agent_id, task_id, capability, error, cancel_reason)

    def answer(
        self,
        capability: str,
        msg: Msg,
        task_id: str,
        started_ns: int,
        body: bytes,
        begun: bytes,
        *,
        hold: bool = False,
    ) -> Coroutine[Any, Any, None] | None:
        """``finish`` of a task that returned ``body``, without a coroutine of its
        own: what is left to await (a full buffer, a result too large), or None.
        With ``hold``, the reply and events wait for ``release``, which writes
        those of many tasks in one go."""
        elapsed_ns = time.perf_counter_ns() - started_ns
        self._executor.record(capability, elapsed_ns, None)
        status = self._status
        frames = status.completed_frame(
            task_id, capability, elapsed_ns, claimed_sender(msg.headers)
        )
        if msg.reply:
            try:
                frames = self._frames.result(msg.reply, task_id, body) + frames
            except nats.errors.MaxPayloadError:
                elapsed_ms = elapsed_ns / 1e6
                return self._reply_too_large(msg, task_id, capability, len(body), elapsed_ms, begun)
        if hold:
            if begun:
                self._held.append(begun)
                self._held_begun += 1
                self._held_messages += 2
            self._held.append(frames)
            self._held_messages += 2
            self._held_ids.append(task_id)
            return self.release() if len(self._held_ids) >= HELD_TASKS else None
        states = _ALL_STATES if begun else _FINISHED
        try:
            full = self.wire.write_nowait(begun + frames if begun else frames, len(states) + 1)
        except Exception as exc:
            task_logger(self._agent_id, task_id).warning("its reply was lost: %s", exc)
            status.lost(exc, *states)
            return None
        if full:
            return self._flushed(task_id, states)
        status.sent(*states)
        return None

    def release(self) -> Coroutine[Any, Any, None] | None:
        """Write the answers ``answer`` held, in one append, and count their events
        (as written once in the buffer): what is left to await (a full buffer), or None."""
        ids = self._held_ids
        if not ids:
            return None
        held, begun, messages = self._held, self._held_begun, self._held_messages
        self._held, self._held_ids, self._held_begun, self._held_messages = [], [], 0, 0
        try:
            full = self.wire.write_nowait(b"".join(held), messages)
        except Exception as exc:
            for task_id in ids:
                task_logger(self._agent_id, task_id).warning("its reply was lost: %s", exc)
            self._status.lost(exc, *_ALL_STATES)
            return None
        self._status.sent_tasks(begun, len(ids))
        return self.wire.flush() if full else None

    async def _flushed(self, task_id: str, states: tuple[str, ...]) -> None:
        """Wait for the buffer a reply went over the limit of to be written."""
        try:
            await self.wire.flush()
        except Exception as exc:
            task_logger(self._agent_id, task_id).warning("its reply was lost: %s", exc)
            self._status.lost(exc, *states)
        else:
            self._status.sent(*states)

    async def refuse(self, msg: Msg, capability: str, error: CallboardError, reason: str) -> None:
        """Answer a task that will not run; ``reason`` is its ``rejected`` label."""
        executor = self._executor
        series = executor.capability_series.get(capability)
        if series is not None:
            series.rejected[reason].inc()
        task_id = answerable_id(msg.headers or {})
        info = ErrorInfo(code=error.code, type=error.type, message=error.message)
        executor.counters[capability].record(0, info.message)
        await self.reply_error(msg, task_id, info)
        await self._status.failed(
            task_id, capability, 0.0, info, sender=claimed_sender(msg.headers)
        )

    async def reply_error(self, msg: Msg, task_id: str, error: ErrorInfo) -> None:
        """An error reply, if the task has a reply subject."""
        if msg.reply:
            try:
                await self.wire.write(self._frames.error(msg.reply, task_id, error))
            except Exception as exc:
                task_logger(self._agent_id, task_id).warning("its error reply was lost: %s", exc)

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
                await self.wire.write(begun, len(BEGUN))
                self._status.sent(*BEGUN)
            except Exception as exc:
                self._status.lost(exc, *BEGUN)
        error = ErrorInfo(
            code=413,
            type="result_too_large",
            message=f"the result of task {task_id} ({size} bytes) is above the NATS server's "
            f"max_payload ({self.wire.max_payload} bytes): return a smaller result or a "
            "reference to the data",
        )
        task_logger(self._agent_id, task_id, capability).warning("%s", error.message)
        await self.reply_error(msg, task_id, error)
        await self._status.failed(
            task_id, capability, elapsed_ms, error, sender=claimed_sender(msg.headers)
        )


def answerable_id(headers: dict[str, str]) -> str:
    """The task ID to answer a refused task under: its own if valid, else a new one
    (an invalid one may be too long to send back)."""
    task_id = headers.get(TASK_ID)
    if task_id:
        try:
            return validate_task_id(task_id)
        except BadInput:
            pass
    return new_task_id()
