"""Runs an agent's durable tasks: pulled from JetStream, recorded in the task
bucket, acknowledged only once their outcome is stored.

Per capability, every replica pulls from one shared durable consumer. A task
is marked ``working`` before it runs and kept alive with "in progress" acks
while it runs, so ``ack_wait`` can stay short and a task whose agent died
moves to another replica quickly. The outcome is written by compare-and-set
on the record's revision: if a second execution (after a redelivery) finds the
task already done, it keeps the first result and only acknowledges. Bad input
(4xx) is terminated at once; a retryable failure is retried with a growing
delay and, after ``max_deliver`` attempts, goes to the dead-letter subject.

A task its caller cancelled (a cancel request, see ``_durable_cancel``) is
recorded ``cancelled`` unrun, or, cancelled while it ran, instead of its result.
"""

from __future__ import annotations

import logging
import time

import anyio
import msgspec
import nats.errors
from anyio.abc import TaskGroup, TaskStatus
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from bus import BadInput, ErrorInfo
from bus.codec import DEADLINE, TASK_ID
from bus.durable import (
    MSG_ID,
    TRANSIENT,
    CorruptRecord,
    DurableNames,
    DurableSettings,
    TaskRecord,
    TaskState,
    TaskStore,
    ensure_consumer,
    validate_durable_task_id,
)

from ._dead_letter import ATTEMPTS, PAYLOAD_OMITTED, DeadLetter, publish_dead_letter
from ._durable_cancel import CancelRequests, recorded_hash
from ._runner import AgentRunner
from ._status import claimed_sender

__all__ = ["ATTEMPTS", "PAYLOAD_OMITTED", "DurableWorker"]

log = logging.getLogger("callboard.durable")

_FETCH_WAIT = 2.0
_FETCH_MORE = 0.05
"""Seconds a pull may wait for more tasks once it has one: fetch(n) holds the
tasks it has received until n have come or its wait ends, and a task held
past ``ack_wait`` is handed out again (run twice)."""
_FETCH_MAX = 64
_COMMIT_PATIENCE = 60.0
_RECORD_OVERHEAD = 4096
"""Bytes a task record adds to its result (ids, times, error), with room to spare."""
_RETRYABLE_CODES = frozenset({408, 429})


def retryable(code: int) -> bool:
    """5xx, timeouts and rate limits may pass on another try; other 4xx never will."""
    return code >= 500 or code in _RETRYABLE_CODES


class DurableWorker:
    """Feeds one hosted agent the durable tasks of its capabilities.

    Args:
        runner: the agent's runner (its handler, status events, metrics, cancel).
        js: the JetStream context of the host's connection.
        store: the task bucket.
        names: resource names of the system.
        settings: consumer and retry settings.

    Attributes:
        executed: tasks this worker ran to an outcome.
        skipped: deliveries of tasks already done (redeliveries), acknowledged unrun.
        discarded: outcomes not stored because another execution finished first.
        duplicates: copies of a task that another job message owns (a resubmission
            past the duplicate window), acknowledged unrun.
        cancelled_unrun: tasks their caller cancelled before they ran, acknowledged unrun.
        cancels: checks the cancel requests of the tasks it takes (and counts them).
    """

    def __init__(
        self,
        runner: AgentRunner,
        js: JetStreamContext,
        store: TaskStore,
        names: DurableNames,
        settings: DurableSettings,
    ) -> None:
        self.runner = runner
        self.js = js
        self.store = store
        self.names = names
        self.settings = settings
        self.agent_id = runner.agent.id
        self.executed = 0
        self.skipped = 0
        self.discarded = 0
        self.duplicates = 0
        self.cancelled_unrun = 0
        self.cancels = CancelRequests(store, self.agent_id)
        self._slots = anyio.Semaphore(runner.limit)
        self._fetching = anyio.CancelScope()
        self.stopped = anyio.Event()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Bind the consumers, report started, then pull tasks until ``stop``."""
        subs: list[tuple[str, JetStreamContext.PullSubscription]] = []
        try:
            for capability in self.runner.agent.capability_names:
                name = await ensure_consumer(
                    self.js,
                    self.names,
                    capability,
                    self.settings,
                    max_ack_pending=self.settings.max_ack_pending or self.runner.limit,
                )
                sub = await self.js.pull_subscribe_bind(
                    durable=name, stream=self.names.tasks_stream
                )
                subs.append((capability, sub))
            task_status.started()
            async with anyio.create_task_group() as handlers:
                with self._fetching:
                    async with anyio.create_task_group() as loops:
                        for capability, sub in subs:
                            loops.start_soon(self._pull, capability, sub, handlers)
                # before the running tasks end (a draining one goes back to the queue),
                # so that no open pull request of this agent takes it again
                await _unsubscribe(subs)
        finally:
            await _unsubscribe(subs)
            self.stopped.set()

    def stop(self) -> None:
        """Pull no more tasks; those running finish (``run`` returns after them)."""
        self._fetching.cancel()

    async def _pull(
        self, capability: str, sub: JetStreamContext.PullSubscription, handlers: TaskGroup
    ) -> None:
        backoff = 0.1
        while True:
            await self._slots.acquire()
            batch = 1
            while batch < _FETCH_MAX and self._slots.value > 0:
                self._slots.acquire_nowait()
                batch += 1
            msgs: list[Msg] = []
            try:
                # wait for one task only: fetch(n) would hold it back until n came
                msgs = await sub.fetch(1, timeout=_FETCH_WAIT)
                backoff = 0.1
            except TimeoutError:  # nats-py's, or asyncio's that its fetch may raise too
                pass
            except (*TRANSIENT, nats.errors.Error) as exc:
                log.warning("agent %s: pulling %s tasks failed: %s", self.agent_id, capability, exc)
                for _ in range(batch):
                    self._slots.release()
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            for msg in msgs:
                handlers.start_soon(self._handle, capability, msg)
            if msgs and batch > 1:
                more = await _fetch_ready(sub, batch - 1)  # the others waiting now
                for msg in more:
                    handlers.start_soon(self._handle, capability, msg)
                msgs += more
            for _ in range(batch - len(msgs)):
                self._slots.release()

    async def _handle(self, capability: str, msg: Msg) -> None:
        try:
            await self._process(capability, msg)
        except Exception:
            # the task is not acknowledged, so the server hands it out again
            log.exception(
                "agent %s: a durable %s task was left to redelivery", self.agent_id, capability
            )
        finally:
            self._slots.release()

    async def _process(self, capability: str, msg: Msg) -> None:
        meta = msg.metadata
        attempt = meta.num_delivered
        headers = msg.headers or {}
        task_id = headers.get(TASK_ID) or headers.get(MSG_ID) or f"seq-{meta.sequence.stream}"
        try:
            validate_durable_task_id(task_id)
        except BadInput as exc:
            await self._dead_letter(
                capability,
                msg,
                _new_record(f"seq-{meta.sequence.stream}", capability, msg),
                None,
                _info(400, "bad_input", exc.message),
                attempt,
            )
            return
        try:
            stored = await self.store.get(capability, task_id)
        except CorruptRecord as exc:
            record = _new_record(task_id, capability, msg)
            error = _info(500, "corrupt_record", f"{exc.message}; the task was not run")
            await self._dead_letter(capability, msg, record, exc.revision, error, attempt - 1)
            return
        if stored is not None and stored.record.done:
            self.skipped += 1
            log.info(
                "task %s is already %s; redelivery acknowledged unrun", task_id, stored.record.state
            )
            await _settle(msg.ack())
            return
        job = meta.sequence.stream
        if stored is not None and stored.record.job not in (0, job):
            self.duplicates += 1
            log.info(
                "task %s belongs to job %d; its copy %d is acknowledged unrun",
                task_id,
                stored.record.job,
                job,
            )
            await _settle(msg.ack())
            return
        record = stored.record if stored is not None else _new_record(task_id, capability, msg)
        revision = stored.revision if stored is not None else None
        if _expired(headers):
            error = _info(
                408,
                "timeout",
                f"task {task_id} reached its deadline (Agent-Deadline) before an agent took "
                "it; it was not run",
            )
            await self.runner.status.failed(
                task_id, capability, 0.0, error, sender=claimed_sender(headers)
            )
            failed = record.moved_to(TaskState.FAILED, error=error, job=job)
            await self._commit(failed, revision)
            await _settle(msg.term())
            return
        if attempt > self.settings.max_deliver:
            error = _info(
                500,
                "agent_died",
                f"task {task_id} was delivered {attempt - 1} time(s) and no attempt finished: "
                f"the agent running it died each time (last: {record.agent or 'unknown'})",
            )
            await self._dead_letter(capability, msg, record, revision, error, attempt - 1)
            return
        working = record.moved_to(
            TaskState.WORKING,
            attempts=attempt,
            agent=self.agent_id,
            job=job,
            cancel_hash=recorded_hash(headers),
        )
        claimed = await self._commit(working, revision)
        if claimed is None:
            self.skipped += 1
            await _settle(msg.ack())
            return
        if await self.cancels.before_run(capability, task_id, headers):  # unrun: acked
            reason = "cancelled by its caller before it ran"
            error = _info(499, "cancelled", f"task {task_id} was {reason}; it was not run")
            await self._commit(working.moved_to(TaskState.CANCELLED, error=error), claimed)
            await _settle(msg.ack())
            self.cancelled_unrun += 1
            await self.runner.status.cancelled(
                task_id, capability, 0.0, reason, sender=claimed_sender(headers)
            )
            return
        await self._run(capability, msg, working, claimed, attempt)

    async def _run(
        self, capability: str, msg: Msg, working: TaskRecord, revision: int, attempt: int
    ) -> None:
        task_id = working.task_id
        self.runner.executor.task_began()
        started_ns = time.perf_counter_ns()
        try:
            async with anyio.create_task_group() as keep_alive:
                keep_alive.start_soon(self._keep_alive, msg)
                try:
                    error, cancel_reason, body = await self.runner.executor.execute(
                        capability, msg, task_id
                    )
                finally:
                    keep_alive.cancel_scope.cancel()
            elapsed_ns = time.perf_counter_ns() - started_ns
            self.runner.executor.record(capability, elapsed_ns, error)
            self.executed += 1
            await self._settle_outcome(
                capability,
                msg,
                working,
                revision,
                attempt,
                error,
                cancel_reason,
                body,
                elapsed_ns / 1e6,
            )
        finally:
            self.runner.executor.task_ended()

    async def _settle_outcome(
        self,
        capability: str,
        msg: Msg,
        working: TaskRecord,
        revision: int,
        attempt: int,
        error: ErrorInfo | None,
        cancel_reason: str,
        body: bytes,
        elapsed_ms: float,
    ) -> None:
        task_id = working.task_id
        status = self.runner.status
        sender = claimed_sender(msg.headers)
        if error is None and await self.cancels.after_run(capability, task_id, msg.headers or {}):
            cancel_reason = "cancelled by its caller while it ran"
            error = _info(499, "cancelled", f"task {task_id} was {cancel_reason}")
        if error is None and len(body) + _RECORD_OVERHEAD > self.runner.nc.max_payload:
            error = _info(
                413,
                "result_too_large",
                f"the result of task {task_id} ({len(body)} bytes) does not fit in a task "
                "record under the NATS server's max_payload: return a smaller result or a "
                "reference to the data",
            )
        if error is None:
            done = working.moved_to(TaskState.COMPLETED, result=msgspec.Raw(body), error=None)
            if await self._commit(done, revision) is None:
                self.discarded += 1
                log.warning(
                    "task %s was finished by another attempt first; this result is discarded",
                    task_id,
                )
            await _settle(msg.ack())
            await status.completed(task_id, capability, elapsed_ms, sender=sender)
            return
        if cancel_reason == "draining":
            requeued = working.moved_to(TaskState.SUBMITTED, error=error)
            await self._commit(requeued, revision)
            await _settle(msg.nak())
            await status.cancelled(
                task_id, capability, elapsed_ms, "agent draining; task requeued", sender=sender
            )
            return
        if cancel_reason:
            await self._commit(working.moved_to(TaskState.CANCELLED, error=error), revision)
            await _settle(msg.term())
            await status.cancelled(task_id, capability, elapsed_ms, cancel_reason, sender=sender)
            return
        await status.failed(task_id, capability, elapsed_ms, error, sender=sender)
        if not retryable(error.code) or _expired(msg.headers or {}):
            await self._commit(working.moved_to(TaskState.FAILED, error=error), revision)
            await _settle(msg.term())
            return
        if attempt >= self.settings.max_deliver:
            await self._dead_letter(capability, msg, working, revision, error, attempt)
            return
        await self._commit(working.moved_to(TaskState.SUBMITTED, error=error), revision)
        await _settle(msg.nak(delay=self.settings.retry_after(attempt)))

    async def _dead_letter(
        self,
        capability: str,
        msg: Msg,
        record: TaskRecord,
        revision: int | None,
        error: ErrorInfo,
        attempts: int,
    ) -> None:
        """Copy the task to ``<prefix>.dead.<capability>`` with its last error, record
        it ``dead-lettered``, and take it off the work queue.

        A copy too large for ``max_payload`` with the added headers goes without its
        payload (``Agent-Payload-Omitted``); a copy the server will not keep is
        noted in the record's error: the task is dead-lettered either way."""
        note = await publish_dead_letter(
            self.js,
            self.names.dead(capability),
            msg,
            DeadLetter(record.task_id, error, attempts, self.agent_id),
            max_payload=self.runner.nc.max_payload,
            patience=_COMMIT_PATIENCE,
        )
        if note:
            error = _info(error.code, error.type, f"{error.message} ({note})")
        dead = record.moved_to(TaskState.DEAD_LETTERED, error=error, attempts=attempts)
        await self._commit(dead, revision)
        await _settle(msg.term())
        log.warning(
            "task %s dead-lettered after %d attempt(s): %s", record.task_id, attempts, error.message
        )

    async def _commit(self, record: TaskRecord, revision: int | None) -> int | None:
        """Store ``record`` over ``revision``; if another attempt wrote since, store it
        over theirs unless they finished the task (then None: theirs stands)."""
        delay = 0.1
        with anyio.move_on_after(_COMMIT_PATIENCE):
            while True:
                try:
                    stored = await self.store.replace(record, revision)
                    if stored is not None:
                        return stored
                    current = await self.store.get(record.capability, record.task_id)
                except TRANSIENT as exc:
                    log.info("storing task %s failed for now: %s", record.task_id, exc)
                    await anyio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                if current is not None and (
                    current.record.done or current.record.job not in (0, record.job)
                ):
                    return None  # finished, or taken by another copy of the job
                revision = current.revision if current is not None else None
        raise RuntimeError(
            f"could not store the record of task {record.task_id} for {_COMMIT_PATIENCE:g}s"
        )

    async def _keep_alive(self, msg: Msg) -> None:
        """Tell the server the task is still being worked on, every third of ``ack_wait``."""
        while True:
            await anyio.sleep(self.settings.ack_wait / 3)
            await _settle(msg.in_progress())


async def _unsubscribe(subs: list[tuple[str, JetStreamContext.PullSubscription]]) -> None:
    with anyio.CancelScope(shield=True):
        while subs:
            _, sub = subs.pop()
            try:
                await sub.unsubscribe()
            except nats.errors.Error:
                pass


async def _fetch_ready(sub: JetStreamContext.PullSubscription, count: int) -> list[Msg]:
    """Up to ``count`` tasks that are waiting now, after at most ``_FETCH_MORE`` seconds;
    a failure here only leaves them for the next pull."""
    try:
        return await sub.fetch(count, timeout=_FETCH_MORE)
    except TimeoutError:  # nats-py's, or asyncio's that its fetch may raise too
        return []
    except (*TRANSIENT, nats.errors.Error) as exc:
        log.debug("pulling more tasks failed: %s", exc)
        return []


async def _settle(ack: object) -> None:
    """Await an ack, nak, term or progress signal; a lost one only means a redelivery,
    which the record makes harmless."""
    try:
        await ack  # type: ignore[misc]
    except nats.errors.Error as exc:
        log.info("an acknowledgement was lost (%s); the task may be delivered again", exc)


def _new_record(task_id: str, capability: str, msg: Msg) -> TaskRecord:
    """The record of a task published straight to the stream (no submitter made one)."""
    headers = msg.headers or {}
    submitted = msg.metadata.timestamp.timestamp()
    return TaskRecord(
        task_id=task_id,
        capability=capability,
        state=TaskState.SUBMITTED,
        sender=claimed_sender(headers),  # cut short: the record must fit with a result
        submitted_at=submitted,
        updated_at=submitted,
    )


def _expired(headers: dict[str, str]) -> bool:
    """True if the task's ``Agent-Deadline`` has passed: nobody waits for it any more
    (a malformed deadline is left to the runner, which answers it with a 400)."""
    try:
        deadline_ms = int(headers.get(DEADLINE) or 0)
    except ValueError:
        return False
    return 0 < deadline_ms <= time.time() * 1000


def _info(code: int, type: str, message: str) -> ErrorInfo:
    return ErrorInfo(code=code, type=type, message=message)
