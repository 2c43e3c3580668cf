"""Submitting durable tasks and fetching their results by task ID.

A durable task is first recorded (``submitted``) in the task bucket, then
published to the work-queue stream with ``Nats-Msg-Id`` = task ID, so a
resubmission of the same ID is dropped by the server's duplicate window and
finds the record it made the first time. The result is read from the record,
now or later, by anyone who knows the ID.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
import msgspec
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext

from .._cancel_token import CANCEL_HASH, CancelKeys
from .._codec import decode_json, encode_json, task_headers
from .._errors import (
    ConnectionFailed,
    PayloadTooLarge,
    TaskCancelled,
    TaskStillPending,
    UnknownTask,
    error_for_code,
)
from .._ids import new_task_id
from .._subjects import DEFAULT_PREFIX
from ._names import DurableNames, validate_durable_task_id
from ._record import TaskRecord, TaskState
from ._settings import DurableSettings
from ._setup import ensure_durable
from ._store import TRANSIENT, TaskStore

__all__ = ["DEFAULT_SUBMIT_TIMEOUT", "MSG_ID", "DurableTaskClient", "result_of"]

log = logging.getLogger("callboard.durable")

MSG_ID = "Nats-Msg-Id"
DEFAULT_SUBMIT_TIMEOUT = 30.0
"""Seconds a submission keeps trying while the server is unreachable."""
_JS_TIMEOUT = 5.0


class DurableTaskClient:
    """Submits durable tasks and reads their records.

    Args:
        nc: a connected nats-py client.
        prefix: the subject prefix of the system.
        sender: the name put in ``Agent-Sender``.
        settings: used only to create the streams and the bucket if no daemon
            has yet (a submitter never changes what exists).
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
        task runs once.

        Raises:
            BadInput: the ID or the payload is malformed.
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
        headers[CANCEL_HASH] = self.cancel_keys.hash_of(task_id)  # security: caller-only cancel
        now = time.time()
        record = TaskRecord(
            task_id=task_id,
            capability=capability,
            state=TaskState.SUBMITTED,
            sender=self.sender,
            submitted_at=now,
            updated_at=now,
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
                if await self.store.create(record) is None:
                    existing = await self.store.get(record.task_id)
                    if existing is not None:
                        record = existing.record
                        if record.state != TaskState.SUBMITTED:
                            return record  # already running or done: never twice
                await self.js.publish(subject, body, headers=headers)
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

    async def record(self, task_id: str) -> TaskRecord:
        """The task's record now.

        Raises:
            UnknownTask: no record has this ID.
        """
        await self.ensure_ready()
        stored = await self.store.get(validate_durable_task_id(task_id))
        if stored is None:
            raise _unknown(task_id)
        return stored.record

    async def wait(self, task_id: str, timeout: float | None) -> TaskRecord:
        """Wait up to ``timeout`` seconds (None: no limit) for the task to be done.

        Raises:
            UnknownTask: no record has this ID.
            TaskStillPending: it was not done in time (it goes on; ask again later).
        """
        await self.ensure_ready()
        record = await self.store.wait(validate_durable_task_id(task_id), timeout)
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

    async def result(self, task_id: str, *, timeout: float | None = 0) -> Any:
        """The task's result, waiting up to ``timeout`` seconds for it.

        Raises:
            UnknownTask, TaskStillPending: as ``wait``.
            AgentError: it failed or was dead-lettered (a subclass by code).
            TaskCancelled: it was cancelled.
        """
        record = await self.wait(task_id, timeout)
        return result_of(record)

    async def history(self, task_id: str) -> list[TaskRecord]:
        """Every kept revision of the task's record, oldest first."""
        await self.ensure_ready()
        return [s.record for s in await self.store.history(validate_durable_task_id(task_id))]


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


def _unknown(task_id: str) -> UnknownTask:
    return UnknownTask(
        f"no durable task {task_id}: it was never submitted with --durable, or its record "
        "expired (result_ttl in the [durable] settings); check the ID and the --prefix",
        task_id=task_id,
    )
