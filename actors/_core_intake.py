"""The core intake: request-reply tasks on ``<prefix>.task.<capability>``, run by
a fixed pool of workers.

The pool, created once, runs every task: the hot path creates no task per
message. Each capability's subscription has one *leader* among the workers,
which takes the next message off the subscription's queue, admits it (or
refuses it with 503 at the concurrency limit, or while draining) and runs it
at once. A task that finishes without waiting (most do not wait long, the echo
agent never) costs no hand-off at all; one that waits passes the lead to an
idle worker first, by the same deque of jobs that carries the tasks admitted on
the direct address, so intake never waits for a task. The pool has a worker
per task slot plus one per capability, so there is always a leader to refuse
with 503 at the limit.

A capability whose queue outgrows its budget (``QUEUED_BYTES_BUDGET``,
``QUEUED_MESSAGES_BUDGET``) has what is taken off it refused with 503 too, until
the queue is back under it: a refusal costs a tiny reply, so a flood on one
capability drains fast instead of reaching nats-py's pending limits (where
messages are dropped unanswered) or holding up the other agents of the
connection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Coroutine
from typing import Any

from anyio.abc import TaskGroup
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bus import (
    QUEUE_GROUP,
    BadInput,
    Draining,
    ErrorInfo,
    Subjects,
    TaskError,
    new_task_id,
    validate_task_id,
)
from bus.codec import TASK_ID
from bus.security import ReplyGuard

from ._executor import Executor
from ._pool import Intake, Jobs, Running, resume
from ._replier import Replier

__all__ = ["QUEUED_BYTES_BUDGET", "QUEUED_MESSAGES_BUDGET", "CoreIntake"]

log = logging.getLogger("callboard.agent")

QUEUED_BYTES_BUDGET = 32 * 1024 * 1024
"""Payload bytes a capability's queue may hold before what is taken off it is
refused (a quarter of nats-py's 128 MB pending limit, half the server's 64 MB
for the whole connection)."""
QUEUED_MESSAGES_BUDGET = 20_000
"""Messages a capability's queue may hold before what is taken off it is refused
(nats-py drops beyond 524,288)."""


class CoreIntake:
    """Takes one agent's core tasks off the bus and runs them in a worker pool.

    Args:
        nc: the connection.
        subjects: subject builder of the system.
        executor: runs the tasks.
        replier: answers them.
    """

    queued_bytes_budget = QUEUED_BYTES_BUDGET
    queued_messages_budget = QUEUED_MESSAGES_BUDGET

    def __init__(self, nc: Client, subjects: Subjects, executor: Executor, replier: Replier):
        self._nc = nc
        self._subjects = subjects
        self._executor = executor
        self._replier = replier
        self._agent = executor.agent
        self._jobs = Jobs()
        self._subs: list[Subscription] = []
        self._intakes: list[Intake] = []
        self._accepting = False
        # security: a task is answered only to an inbox (no reflection)
        self.reply_guard = ReplyGuard(f"agent {executor.agent.id}")

    async def start(self, task_group: TaskGroup) -> None:
        """Start the workers and subscribe the capabilities (in one queue group)."""
        executor = self._executor
        for _ in range(executor.limit + len(self._agent.capability_names)):
            task_group.start_soon(self._worker)
        self._accepting = True
        for name in self._agent.capability_names:
            sub = await self._nc.subscribe(self._subjects.task(name), queue=QUEUE_GROUP)
            self._subs.append(sub)
            intake = Intake(name, sub, executor.capability_series.get(name))
            self._intakes.append(intake)
            self._jobs.put(intake)

    async def admit(self, capability: str, msg: Msg) -> None:
        """Run a task on the next idle worker, or refuse it (draining, at the limit)."""
        executor = self._executor
        series = executor.capability_series.get(capability)
        if series is not None:
            series.received.inc()
        if not self._accepting:
            error = Draining(f"agent {self._agent.id} is shutting down")
            await self._replier.refuse(msg, capability, error, "draining")
            return
        if executor.in_flight >= executor.limit:
            await self._replier.refuse(
                msg,
                capability,
                TaskError(
                    f"agent {self._agent.id} is at its concurrency limit ({executor.limit} "
                    "tasks); retry later or run more replicas",
                    code=503,
                    type="overloaded",
                ),
                "overloaded",
            )
            return
        executor.task_began()
        self._jobs.put((capability, msg))

    async def _refuse_backlog(self, intake: Intake, msg: Msg) -> None:
        """Refuse a task of a capability whose queue is over its budget."""
        if intake.series is not None:
            intake.series.received.inc()
        error = TaskError(
            f"agent {self._agent.id} has more {intake.capability!r} tasks queued than it "
            f"takes ({self.queued_messages_budget} tasks or "
            f"{self.queued_bytes_budget // 1_048_576} MiB); retry later or run more replicas",
            code=503,
            type="overloaded",
        )
        await self._replier.refuse(msg, intake.capability, error, "overloaded")

    async def stop(self) -> None:
        """Stop taking tasks: drain the subscriptions (tasks already delivered
        still run), then refuse what is admitted after."""
        subs, self._subs = self._subs, []
        for sub in subs:
            try:
                await sub.drain()  # type: ignore[no-untyped-call]
            except Exception as exc:
                log.debug("drain of %s failed: %s", sub.subject, exc)
        self._accepting = False
        self._stop_leading()

    def close(self) -> None:
        """Let the workers end once the tasks already admitted have been taken."""
        self._stop_leading()
        self._jobs.close()

    def _stop_leading(self) -> None:
        intakes, self._intakes = self._intakes, []
        for intake in intakes:
            intake.stop()

    async def _worker(self) -> None:
        jobs, executor = self._jobs, self._executor
        while True:
            slot = executor.new_slot()
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
                        executor.task_ended()
            if slot.task is not None:
                await self._cut_short(slot)

    async def _lead(self, intake: Intake, slot: Running) -> None:
        """Take ``intake``'s messages and run them, until one waits (then an idle
        worker takes the lead over) or the subscription ends.

        The answers of the tasks it runs through are held and written together
        (``Replier.release``) whenever it stops: the queue is empty, a task
        waits, or it hands the lead over; the flusher would not have sent them
        any earlier."""
        release = self._replier.release
        try:
            await self._lead_holding(intake, slot)
        finally:
            pending = release()
            if pending is not None:  # a full buffer: counted, and the flusher writes it
                pending.close()

    async def _lead_holding(self, intake: Intake, slot: Running) -> None:
        taken, release = intake.taken, self._replier.release
        take, over_budget = taken.take, taken.over
        capability, series, executor = intake.capability, intake.series, self._executor
        while True:
            msg = take()
            if msg is None:
                await _released(release())
                if taken.stopped:
                    return
                try:
                    await taken.wait()
                except BaseException:
                    self._jobs.put(intake)  # cancelled: the lead goes to another worker
                    raise
                continue
            if msg.reply and not self.reply_guard.allows(msg.reply):  # security: no reflection
                continue
            if not (self._accepting and executor.in_flight < executor.limit):
                self._jobs.put(intake)  # refusing may wait on the connection
                await _released(release())  # the answers held go first
                await self.admit(capability, msg)
                return
            if over_budget(self.queued_bytes_budget, self.queued_messages_budget):
                self._jobs.put(intake)
                await _released(release())
                await self._refuse_backlog(intake, msg)
                return
            if series is not None:
                series.received.inc()
            executor.in_flight += 1  # task_began()
            try:
                rest = self._run_nowait(capability, msg, slot, hold=True)
                if rest is None:
                    continue
                try:
                    yielded = rest.send(None)
                except StopIteration:
                    continue
                # the task waits: an idle worker leads while this one finishes it
                self._jobs.put(intake)
                await _released(release())
                await resume(rest, yielded)
                return
            finally:
                executor.task_ended()

    async def _run(self, capability: str, msg: Msg, slot: Running) -> None:
        rest = self._run_nowait(capability, msg, slot)
        if rest is not None:
            await rest

    def _run_nowait(
        self, capability: str, msg: Msg, slot: Running, *, hold: bool = False
    ) -> Coroutine[Any, Any, None] | None:
        """Run a task as far as it goes without waiting: None once it is answered,
        else what is left to await (a handler that waits, an error reply, a full
        buffer). A task costs no coroutine of its own this way. With ``hold``,
        a result's answer waits for ``Replier.release``."""
        started_ns = time.perf_counter_ns()
        headers = msg.headers
        task_id = (headers.get(TASK_ID) if headers else None) or new_task_id()
        try:
            validate_task_id(task_id)
        except BadInput as exc:
            error = ErrorInfo(code=400, type="bad_input", message=exc.message)
            return self._replier.finish(
                capability, msg, new_task_id(), started_ns, error, "", b"", b""
            )
        running = self._executor.execute_in(capability, msg, task_id, slot, started_ns)
        try:
            yielded = running.send(None)
        except StopIteration as done:
            error, cancel_reason, body, begun = done.value
        else:
            return self._finish_waiting(running, yielded, capability, msg, task_id, started_ns)
        if error is None:
            return self._replier.answer(
                capability, msg, task_id, started_ns, body, begun, hold=hold
            )
        return self._replier.finish(
            capability, msg, task_id, started_ns, error, cancel_reason, b"", b""
        )

    async def _finish_waiting(
        self,
        running: Coroutine[Any, Any, tuple[ErrorInfo | None, str, bytes, bytes]],
        yielded: Any,
        capability: str,
        msg: Msg,
        task_id: str,
        started_ns: int,
    ) -> None:
        """The rest of a task whose handler waits on ``yielded``, and its answer."""
        error, cancel_reason, body, begun = await resume(running, yielded)
        await self._replier.finish(
            capability, msg, task_id, started_ns, error, cancel_reason, body, begun
        )

    async def _cut_short(self, slot: Running) -> None:
        """Answer the task whose wait the worker's scope cut short (``cancel``
        or its deadline); the worker has already counted it as ended."""
        assert slot.task is not None
        capability, msg, task_id, started_ns = slot.task
        slot.task = None
        error, cancel_reason = self._executor.cut_short(slot, task_id)
        await self._replier.finish(
            capability, msg, task_id, started_ns, error, cancel_reason, b"", b""
        )


async def _released(pending: Coroutine[Any, Any, None] | None) -> None:
    """Wait for what ``Replier.release`` left to wait for (a full buffer), if anything."""
    if pending is not None:
        await pending
