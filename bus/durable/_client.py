"""Submitting durable tasks and fetching their results by task ID.

A durable task's submission is first created (if absent) in the task bucket,
then the task is published to the work-queue stream with ``Nats-Msg-Id`` = task
ID. A resubmission of the same ID finds the submission and publishes nothing
once an agent has taken the task; a copy published before that is dropped by
the server's duplicate window, or past it by the agents, whose record names the
one job message that owns the task. The result is read from the record, now or
later, by anyone who knows the ID (or ``CAPABILITY.TASK_ID``).

Only the caller can cancel a task (its cancel token, see ``bus._cancel_token``):
a cancel stores a request that the agent taking a queued task checks, and
broadcasts the token to the agent running it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext

from .._cancel_token import CANCEL_HASH, CANCEL_TOKEN, CancelKeys
from .._codec import TASK_ID, decode_json, encode_json, task_headers
from .._errors import (
    BadInput,
    ConnectionFailed,
    PayloadTooLarge,
    TaskCancelled,
    TaskStillPending,
    UnknownTask,
    error_for_code,
)
from .._ids import new_task_id
from .._subjects import DEFAULT_PREFIX
from ._cancel import CancelRequest
from ._names import DurableNames, split_task_ref, validate_durable_task_id
from ._record import TaskRecord, TaskState
from ._settings import DurableSettings
from ._setup import ensure_durable
from ._store import TRANSIENT, TaskStore

__all__ = ["DEFAULT_SUBMIT_TIMEOUT", "MSG_ID", "DurableTaskClient", "message_size", "result_of"]

log = logging.getLogger("callboard.durable")

MSG_ID = "Nats-Msg-Id"
DEFAULT_SUBMIT_TIMEOUT = 30.0
"""Seconds a submission keeps trying while the server is unreachable."""
_JS_TIMEOUT = 5.0
_IDLE_PULL_GAP = 0.2
"""Seconds between two looks at a consumer: an idle agent renews its pull request at once."""


def message_size(headers: dict[str, str], body: bytes) -> int:
    """Bytes the server counts against ``max_payload``: the header block and the body.

    nats-py checks the body alone; a message over the limit with its headers
    makes the server close the connection (and a JetStream publish wait for an
    acknowledgement that never comes).
    """
    block = 12 + sum(len(k.encode()) + len(v.encode()) + 4 for k, v in headers.items())
    return block + len(body)


class DurableTaskClient:
    """Submits durable tasks and reads their records.

    Args:
        nc: a connected nats-py client.
        prefix: the subject prefix of the system.
        sender: the name put in ``Agent-Sender``.
        settings: used only to create the streams and the bucket if they are
            missing and this user may (the shipped permissions leave that to
            ``callboard setup``); a submitter never changes what exists.
    """

    def __init__(
        self,
        nc: Client,
        *,
        prefix: str = DEFAULT_PREFIX,
        sender: str = "orchestrator",
        settings: DurableSettings | None = None,
    ) -> None:
        self.nc = nc
        self.names = DurableNames(prefix)
        self.sender = sender
        self.settings = settings or DurableSettings()
        self.js: JetStreamContext = nc.jetstream(timeout=_JS_TIMEOUT)
        self.store = TaskStore(nc, self.js, self.names)
        self._ready = False
        self._lock = anyio.Lock()
        self.cancel_keys = CancelKeys()  # security: the orchestrator shares its TaskClient's

    async def ensure_ready(self) -> None:
        """Create the streams and the bucket if they are missing (once per client)."""
        if self._ready:
            return
        async with self._lock:
            if not self._ready:
                await ensure_durable(self.js, self.names, self.settings, update=False)
                self._ready = True

    async def submit(
        self,
        capability: str,
        payload: Any,
        *,
        task_id: str | None = None,
        seq: int | None = None,
        traceparent: str | None = None,
        timeout: float = DEFAULT_SUBMIT_TIMEOUT,
    ) -> TaskRecord:
        """Store a task in the work queue of ``capability``; return its record.

        Submitting an ID again is safe: the existing record is returned and the
        task runs once, for as long as its record is kept. While no agent has
        taken it, the job is published again (the first submitter may have died
        before publishing it); an agent runs one copy and drops the others.

        Raises:
            BadInput: the ID or the payload is malformed, or the ID is taken: a job
                with it is already in the duplicate window (nothing was queued).
            PayloadTooLarge: the payload and its headers are above the server's
                ``max_payload`` (nothing is stored).
            ConnectionFailed: JetStream could not be reached within ``timeout``;
                the task may not have been stored - submit the same ID again.
        """
        task_id = validate_durable_task_id(task_id or new_task_id())
        subject = self.names.job(capability)
        body = encode_json(payload)
        headers = task_headers(
            task_id=task_id, sender=self.sender, seq=seq, traceparent=traceparent
        )
        headers[MSG_ID] = task_id
        now = time.time()
        # security: caller-only cancel, of this submission only
        cancel_hash = self.cancel_keys.hash_of(cancel_name(capability, task_id, now))
        headers[CANCEL_HASH] = cancel_hash
        size = message_size(headers, body)
        if size > self.nc.max_payload:
            raise PayloadTooLarge(
                f"durable task {task_id} is {size} bytes with its headers, above the NATS "
                f"server's max_payload ({self.nc.max_payload}): send a reference to the data "
                "instead"
            )
        record = TaskRecord(
            task_id=task_id,
            capability=capability,
            state=TaskState.SUBMITTED,
            sender=self.sender,
            submitted_at=now,
            updated_at=now,
            cancel_hash=cancel_hash,
        )
        with anyio.fail_after(timeout) if timeout > 0 else anyio.CancelScope():
            try:
                return await self._submit(record, subject, headers, body)
            except TimeoutError:
                pass
        raise ConnectionFailed(
            f"could not store durable task {task_id} within {timeout:g}s: JetStream did not "
            f"answer; submit it again with the same task ID (it will run once)",
        )

    async def _submit(
        self, record: TaskRecord, subject: str, headers: dict[str, str], body: bytes
    ) -> TaskRecord:
        delay = 0.1
        while True:
            try:
                await self.ensure_ready()
                created = await self.store.submit(record)
                if not created:
                    existing = await self.store.read(record.capability, record.task_id)
                    if existing is not None:
                        record = existing
                        if record.state != TaskState.SUBMITTED or record.job:
                            return record  # an agent has it (or had it): never twice
                        headers[CANCEL_HASH] = self.cancel_keys.hash_of(
                            cancel_name(record.capability, record.task_id, record.submitted_at)
                        )  # the job of the submission that is kept, with its hash
                ack = await self.js.publish(subject, body, headers=headers)
                if created and ack.duplicate:
                    raise _taken(record, self.settings.duplicate_window)
                return record
            except nats.errors.MaxPayloadError as exc:
                raise PayloadTooLarge(
                    f"the payload of task {record.task_id} ({len(body)} bytes) is above the "
                    "NATS server's max_payload: send a reference to the data instead"
                ) from exc
            except TRANSIENT as exc:
                log.info("submitting task %s: %s; trying again", record.task_id, exc)
            except nats.js.errors.NoStreamResponseError:
                self._ready = False  # the stream was deleted: create it again
            await anyio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def served(self, capability: str) -> bool | None:
        """Whether an agent takes durable tasks of ``capability`` now.

        An agent that serves them keeps a pull request waiting on its capability's
        consumer, or holds a task unacknowledged. A missing stream or consumer
        means none ever did. One JetStream request when an agent is there; a
        second look, a moment later, before saying there is none (an idle agent
        is between two pull requests for an instant). None: JetStream did not
        say (this login may not ask, or no answer), so nobody should guess.
        """
        for look in range(2):
            if look:
                await anyio.sleep(_IDLE_PULL_GAP)
            try:
                info = await self.js.consumer_info(
                    self.names.tasks_stream, self.names.consumer(capability)
                )
            except nats.js.errors.NotFoundError:
                return False
            except (nats.errors.Error, TimeoutError):
                return None
            if info.num_waiting or info.num_ack_pending:
                return True
        return False

    async def locate(self, task: str, capability: str | None = None) -> tuple[str, str]:
        """``(capability, task_id)`` of ``TASK_ID`` or ``CAPABILITY.TASK_ID``.

        Raises:
            BadInput: the reference is malformed, or the ID is under several capabilities.
            UnknownTask: no task has this ID.
        """
        named, task_id = split_task_ref(task)
        capability = capability or named
        if capability is None:
            await self.ensure_ready()
            capability = await self.store.find(task_id)
            if capability is None:
                raise _unknown(task_id)
        return capability, task_id

    async def record(self, task_id: str, *, capability: str | None = None) -> TaskRecord:
        """The task's record now (``task_id`` may be ``CAPABILITY.TASK_ID``).

        Raises:
            UnknownTask: no record has this ID.
            CorruptRecord: the bucket holds something else under its key.
        """
        capability, task_id = await self.locate(task_id, capability)
        await self.ensure_ready()
        record = await self.store.read(capability, task_id)
        if record is None:
            raise _unknown(task_id)
        return record

    async def wait(
        self, task_id: str, timeout: float | None, *, capability: str | None = None
    ) -> TaskRecord:
        """Wait up to ``timeout`` seconds (None: no limit) for the task to be done.

        Raises:
            UnknownTask: no record has this ID.
            TaskStillPending: it was not done in time (it goes on; ask again later).
            CorruptRecord: the bucket holds something else under its key.
        """
        started = time.monotonic()
        delay = 0.1
        while True:  # as store.wait does, wait out a server that does not answer for now
            try:
                capability, task_id = await self.locate(task_id, capability)
                break
            except TRANSIENT as exc:
                if timeout is not None and time.monotonic() - started + delay > timeout:
                    raise ConnectionFailed(
                        f"could not read durable task {task_id}: JetStream did not answer "
                        f"({type(exc).__name__}); the task is not lost - ask again once the "
                        "server is back"
                    ) from exc
                await anyio.sleep(delay)
                delay = min(delay * 2, 2.0)
        if timeout is not None:
            timeout = max(timeout - (time.monotonic() - started), 0.0)
        await self.ensure_ready()
        record = await self.store.wait(capability, task_id, timeout)
        if record is None:
            raise _unknown(task_id)
        if not record.done:
            raise TaskStillPending(
                f"durable task {task_id} is still {record.state} after {timeout:g}s "
                f"({record.attempts} attempt(s) so far); it is not lost: fetch its result "
                f"later with 'callboard result {task_id} --wait' or Orchestrator.result()",
                task_id=task_id,
                capability=record.capability,
                state=record.state,
            )
        return record

    async def result(
        self, task_id: str, *, timeout: float | None = 0, capability: str | None = None
    ) -> Any:
        """The task's result, waiting up to ``timeout`` seconds for it.

        Raises:
            UnknownTask, TaskStillPending, CorruptRecord: as ``wait``.
            AgentError: it failed or was dead-lettered (a subclass by code).
            TaskCancelled: it was cancelled.
        """
        record = await self.wait(task_id, timeout, capability=capability)
        return result_of(record)

    async def cancel(
        self,
        task_id: str,
        *,
        capability: str | None = None,
        reason: str = "cancelled by the caller",
    ) -> TaskRecord:
        """Cancel a task this caller submitted (its cancel keys); return its record after.

        A queued task (no agent has it) is ``cancelled`` at once: no agent will run it,
        and its record says so when one takes it. A running one is told to stop (the
        broadcast), and its agent records it ``cancelled``; the returned record may
        still say ``working``. A finished task stays as it was (the returned record
        says how it ended). Only this caller's token counts: a cancel of another
        caller's task changes nothing.

        Raises:
            UnknownTask: no task has this ID.
            ConnectionFailed: the request could not be stored (nothing was cancelled).
        """
        capability, task_id = await self.locate(task_id, capability)
        await self.ensure_ready()
        token = await self.cancel_token(capability, task_id)
        if token is None:  # no submission kept: nothing can prove this caller's
            log.warning("durable task %s has no submission left to cancel", task_id)
            return await self.record(task_id, capability=capability)
        request = CancelRequest(
            task_id=task_id, token=token, sender=self.sender, requested_at=time.time()
        )
        try:
            # stored before the record is read: an agent that takes the task after
            # that read checks the request after taking it, so it sees it
            await self.store.request_cancel(capability, request)
        except TRANSIENT as exc:
            raise ConnectionFailed(
                f"could not store the cancel of durable task {task_id}: JetStream did not "
                f"answer ({type(exc).__name__}); cancel it again"
            ) from exc
        headers = {TASK_ID: task_id, CANCEL_TOKEN: token}
        try:  # for the agent running it now, if one is
            await self.nc.publish(self.names.subjects.cancel(), reason.encode(), headers=headers)
        except nats.errors.Error as exc:
            log.info("could not broadcast the cancel of task %s: %s", task_id, exc)
        record = await self.store.read(capability, task_id)
        if record is None:
            raise _unknown(task_id)
        return record

    async def cancel_token(self, capability: str, task_id: str) -> str | None:
        """The token that cancels this caller's task as it is submitted now (None: its
        submission is no longer kept).

        It derives from the submission (``cancel_name``), so the token a cancel
        stores in plain text cancels that task only, never the same ID under another
        capability nor a later task that reuses the ID.
        """
        submitted_at = await self.store.submitted_at(capability, task_id)
        if submitted_at is None:
            return None
        return self.cancel_keys.token(cancel_name(capability, task_id, submitted_at))

    async def history(self, task_id: str, *, capability: str | None = None) -> list[TaskRecord]:
        """Every kept revision of the task's record, oldest first.

        Raises:
            UnknownTask: no record has this ID.
            CorruptRecord: the task's only record is not a task record.
        """
        capability, task_id = await self.locate(task_id, capability)
        await self.ensure_ready()
        revisions = [s.record for s in await self.store.history(capability, task_id)]
        now = await self.store.read(capability, task_id)  # a value not a record says so
        if revisions and now is not None and now.state != revisions[-1].state:
            revisions.append(now)  # cancelled while queued: no agent has written it yet
        return revisions


def cancel_name(capability: str, task_id: str, submitted_at: float) -> str:
    """What a durable task's cancel token and hash derive from: its capability, ID
    and submission time, which its submission keeps."""
    return f"{capability}.{task_id}@{submitted_at!r}"


def result_of(record: TaskRecord) -> Any:
    """The result of a done task, or its failure raised as the typed error."""
    if record.state == TaskState.COMPLETED:
        result = record.result
        return decode_json(b"null" if isinstance(result, msgspec.UnsetType) else bytes(result))
    error = record.error
    code = error.code if error else 500
    message = error.message if error else f"task ended {record.state} without an error"
    if record.state == TaskState.CANCELLED:
        raise TaskCancelled(message, task_id=record.task_id, capability=record.capability)
    if record.state == TaskState.DEAD_LETTERED:
        message = f"dead-lettered after {record.attempts} attempt(s); last error: {message}"
    raise error_for_code(code)(
        message,
        code=code,
        type=error.type if error else "agent_failure",
        agent_id=record.agent or None,
        task_id=record.task_id,
        capability=record.capability,
    )


def _taken(record: TaskRecord, window: float) -> BadInput:
    """A new submission whose job the server dropped: another job with its ID (its
    ``Nats-Msg-Id``) is in the work queue's duplicate window, so none of this task's
    is queued, and the other may run under its ID."""
    return BadInput(
        f"durable task ID {record.task_id} is taken: a job with this ID (Nats-Msg-Id) is "
        f"already in the work queue's duplicate window ({window:g}s; another capability's "
        "task, or another submitter's job), so this one was not queued: submit with "
        "another ID",
        task_id=record.task_id,
        capability=record.capability,
    )


def _unknown(task_id: str) -> UnknownTask:
    return UnknownTask(
        f"no durable task {task_id}: it was never submitted with --durable, or its record "
        "expired (result_ttl in the [durable] settings); check the ID and the --prefix",
        task_id=task_id,
    )
