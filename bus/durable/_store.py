"""The task bucket: the records of durable tasks, read, changed by compare-and-set,
and waited on.

A task has two keys (layout 2, see ``DurableNames``): its submission,
``<capability>.<task_id>.submitted``, written once by the submitter, and its
record, ``<capability>.<task_id>``, written by the agents of its capability
from the moment one takes it. Readers believe the record first; a submission
only ever says "submitted", whatever else it holds, so a submitter cannot
write a task's outcome and an agent cannot write another capability's.

A task no agent has taken yet may have a cancel request,
``<capability>.<task_id>.cancel`` (see ``_cancel``): readers show it
``cancelled`` only if the request's token hashes to the hash the submission
was created with (a submission overwritten since proves nothing, and then
nothing is believed); the agent that takes it writes the record ``cancelled``.

Waiting subscribes to the record's own subject, which sees every new revision
as it is stored, and to its cancel request's, and reads the keys now and then as
well, so an update missed while the connection was down is still found.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import anyio
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from .._errors import BadInput, ConfigError, ConnectionFailed
from .._subjects import validate_capability
from ._cancel import (
    CancelRequest,
    cancelled_before_taken,
    decode_cancel_request,
    encode_cancel_request,
    request_matches,
)
from ._names import SUBMITTED_TOKEN, DurableNames
from ._record import CorruptRecord, TaskRecord, TaskState, decode_record, encode_record

__all__ = ["StoredRecord", "TaskStore"]

log = logging.getLogger("callboard.durable")

_KV_OPERATION = "KV-Operation"
_CREATED_AS_FIRST = "Nats-Expected-Last-Subject-Sequence"
"""On a stored revision that was written as its key's first (a create): the
server stored it only because the key had no revision, so nobody overwrote it."""
_FIRST_RECHECK = 1.0
_LAST_RECHECK = 10.0
TRANSIENT = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.ServerError,
    nats.js.errors.NoStreamResponseError,
)
"""Errors of a server that is restarting or unreachable: worth trying again."""


@dataclass(frozen=True)
class StoredRecord:
    """A record as stored, with the revision a compare-and-set must name."""

    record: TaskRecord
    revision: int


@dataclass(frozen=True)
class _Submission:
    """A submission as read, with the cancel hash that may be believed ("" if the
    key was written again since its creation)."""

    record: TaskRecord
    cancel_hash: str


class TaskStore:
    """The records of one system's durable tasks.

    Args:
        nc: the connection (for watching keys).
        js: its JetStream context.
        names: the system's resource names.
    """

    def __init__(self, nc: Client, js: JetStreamContext, names: DurableNames) -> None:
        self.nc = nc
        self.js = js
        self.names = names
        self.stream = f"KV_{names.bucket}"
        self.kv = KeyValue(
            name=names.bucket,
            stream=self.stream,
            pre=f"$KV.{names.bucket}.",
            js=js,
            direct=True,
        )
        self.forged_cancels = 0
        """Cancel requests read whose token did not match the task's hash."""
        self.on_forged: Callable[[], None] | None = None
        """Also told of each forged request counted (the process's refusal series)."""
        self._forged_seen: set[tuple[str, str]] = set()

    async def get(self, capability: str, task_id: str) -> StoredRecord | None:
        """The task's record as its agents keep it, or None if no agent has taken it
        yet (or it expired).

        Raises:
            CorruptRecord: the key holds something that is not this task's record.
        """
        try:
            entry = await self.kv.get(self.names.record_key(capability, task_id))
        except nats.js.errors.KeyNotFoundError:
            return None
        if entry.value is None or entry.revision is None:
            return None
        record = decode_record(
            entry.value, task_id=task_id, capability=capability, revision=entry.revision
        )
        return StoredRecord(record, entry.revision)

    async def read(self, capability: str, task_id: str) -> TaskRecord | None:
        """The task's record, else its submission (as ``submitted``), else None; a
        task still waiting for an agent is ``cancelled`` if its caller cancelled it."""
        stored = await self.get(capability, task_id)
        if stored is not None and stored.record.state != TaskState.SUBMITTED:
            return stored.record
        if stored is not None:  # waiting for a retry: the agent copied the job's hash
            record, cancel_hash = stored.record, stored.record.cancel_hash
        else:
            submission = await self._submission(capability, task_id)
            if submission is None:
                return None
            record, cancel_hash = submission.record, submission.cancel_hash
        request = await self.cancel_request(capability, task_id)
        if request is None:
            return record
        if request_matches(request, cancel_hash):
            return cancelled_before_taken(record, request)
        self.count_forged(capability, task_id, request)
        return record

    async def _submission(self, capability: str, task_id: str) -> _Submission | None:
        """The submission as its submitter created it: any submitter may write the key
        again (or delete it), so a later revision is read only if that one is gone."""
        subject = self.names.key_subject(self.names.submission_key(capability, task_id))
        try:
            msg = await self.js.get_msg(self.stream, subject=subject, direct=True)
        except nats.js.errors.NotFoundError:
            return None
        if not _created_as_first(msg):  # written over since: look for the first
            created = await self._created(capability, task_id)
            if created is not None:
                return _Submission(_as_submission(created), created.cancel_hash)
        if not msg.data or (msg.headers or {}).get(_KV_OPERATION):
            return None
        record = decode_record(
            msg.data, task_id=task_id, capability=capability, revision=msg.seq or 0
        )
        first = _created_as_first(msg)
        return _Submission(_as_submission(record), record.cancel_hash if first else "")

    async def submitted_at(self, capability: str, task_id: str) -> float | None:
        """When the task's submission was made, as the revision its submitter created
        says (not one written over it since): a durable cancel token derives from it
        (see ``DurableTaskClient.cancel_token``). None: no such revision is kept."""
        created = await self._created(capability, task_id)
        return created.submitted_at if created is not None else None

    async def _created(self, capability: str, task_id: str) -> TaskRecord | None:
        """The submission's last revision written as the key's first (the server
        stored it only because the key had none), if one is still kept."""
        found: TaskRecord | None = None
        async for msg in self._revisions(self.names.submission_key(capability, task_id)):
            if not _created_as_first(msg):
                continue
            try:
                found = decode_record(msg.data or b"", task_id=task_id, capability=capability)
            except CorruptRecord:
                continue  # the last created counts: an expired task's may be older
        return found

    async def cancel_request(self, capability: str, task_id: str) -> CancelRequest | None:
        """The last cancel request stored for the task (None: none, or not one)."""
        try:
            entry = await self.kv.get(self.names.cancel_key(capability, task_id))
        except nats.js.errors.KeyNotFoundError:
            return None
        if not entry.value:
            return None
        request = decode_cancel_request(entry.value, task_id)
        if request is None:
            self.count_forged(capability, task_id, None)
        return request

    async def request_cancel(self, capability: str, request: CancelRequest) -> None:
        """Store the caller's cancel request (over any earlier one: the caller's
        wins over a stranger's, which the hash check ignores anyway)."""
        await self.kv.put(
            self.names.cancel_key(capability, request.task_id), encode_cancel_request(request)
        )

    def count_forged(self, capability: str, task_id: str, request: CancelRequest | None) -> None:
        """Count (and log once per token) a cancel request that proves nothing."""
        token = request.token if request is not None else ""
        if (task_id, token) in self._forged_seen:
            return
        if len(self._forged_seen) > 4096:
            self._forged_seen.clear()
        self._forged_seen.add((task_id, token))
        self.forged_cancels += 1
        if self.on_forged is not None:
            self.on_forged()
        log.warning(
            "ignored a cancel request for %s task %s whose token does not match the task's "
            "cancel hash (a forgery, or a caller that is not the task's): the task goes on",
            capability,
            task_id,
        )

    async def submit(self, record: TaskRecord) -> bool:
        """Store a task's submission; False if it has one already."""
        key = self.names.submission_key(record.capability, record.task_id)
        try:  # not kv.create: over another submitter's delete marker, that writes too
            await self.kv.update(key, encode_record(record), last=0)
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        return True

    async def create(self, record: TaskRecord) -> int | None:
        """Store a task's first record; None if it has one already."""
        key = self.names.record_key(record.capability, record.task_id)
        try:
            return await self.kv.create(key, encode_record(record))
        except nats.js.errors.KeyWrongLastSequenceError:
            return None

    async def replace(self, record: TaskRecord, revision: int | None) -> int | None:
        """Store ``record`` if the key is still at ``revision`` (None: has none);
        return the new revision, or None if someone else changed it first."""
        if revision is None:
            return await self.create(record)
        key = self.names.record_key(record.capability, record.task_id)
        try:
            return await self.kv.update(key, encode_record(record), last=revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            return None

    async def find(self, task_id: str) -> str | None:
        """The capability a task was submitted to (None: no such task).

        Raises:
            BadInput: the ID has records under more than one capability.
        """
        for key in (f"*.{task_id}.{SUBMITTED_TOKEN}", f"*.{task_id}"):
            found = {(msg.subject or "").split(".")[2] async for msg in self._revisions(key)}
            # a key published with a literal wildcard ("*.<id>.submitted") names none
            capabilities = {name for name in found if _is_capability(name)}
            if len(capabilities) > 1:
                raise BadInput(
                    f"durable task {task_id} has records under capabilities "
                    f"{', '.join(sorted(capabilities))}: name one as CAPABILITY.{task_id}"
                )
            if capabilities:
                return capabilities.pop()
        return None

    async def history(self, capability: str, task_id: str) -> list[StoredRecord]:
        """Every revision still kept (``history`` in the settings), oldest first:
        the submission, then the record's; one that is not a task record is left
        out (and logged).

        Read one by one ("the key's next revision from sequence N"): nats-py's
        ``KeyValue.history`` may end before the first revision is delivered and
        report none at all (nats-io/nats.py#842).
        """
        revisions: list[StoredRecord] = []
        submission = self.names.submission_key(capability, task_id)
        async for msg in self._revisions(submission):
            seq = msg.seq or 0
            try:
                record = _as_submission(
                    decode_record(
                        msg.data or b"", task_id=task_id, capability=capability, revision=seq
                    )
                )
            except CorruptRecord as exc:
                log.warning("%s; left out of the history", exc.message)
            else:
                revisions.append(StoredRecord(record, seq))
        async for msg in self._revisions(self.names.record_key(capability, task_id)):
            seq = msg.seq or 0
            try:
                record = decode_record(
                    msg.data or b"", task_id=task_id, capability=capability, revision=seq
                )
            except CorruptRecord as exc:
                log.warning("%s; left out of the history", exc.message)
            else:
                revisions.append(StoredRecord(record, seq))
        return revisions

    async def _revisions(self, key: str) -> AsyncIterator[api.RawStreamMsg]:
        """The kept values of the keys ``key`` matches (``*`` a token), oldest first,
        delete markers left out."""
        subject = self.names.key_subject(key)
        seq = 1
        while True:
            try:
                msg = await self.js.get_msg(
                    self.stream, seq=seq, subject=subject, direct=True, next=True
                )
            except nats.js.errors.NotFoundError:
                return
            if msg.data and not (msg.headers or {}).get(_KV_OPERATION):
                yield msg
            seq = (msg.seq or seq) + 1

    async def wait(self, capability: str, task_id: str, timeout: float | None) -> TaskRecord | None:
        """Wait until the task is done; return its record (the last one seen if
        ``timeout`` passes first, None if it has none).

        Raises:
            CorruptRecord: the key held no task record when the wait ended (an
                agent dead-letters a queued task whose record is bad, so a
                waiting reader sees that outcome instead).
        """
        updates, receive = anyio.create_memory_object_stream[bytes | None](64)

        async def on_update(msg: Msg) -> None:
            try:
                updates.send_nowait(msg.data)
            except anyio.WouldBlock:
                pass  # the next read of the key catches up

        async def on_cancel_request(msg: Msg) -> None:
            try:
                updates.send_nowait(None)  # read the task again: it may be cancelled now
            except anyio.WouldBlock:
                pass

        last: TaskRecord | None = None
        failure: Exception | None = None  # of the last read, if it failed
        corrupt: CorruptRecord | None = None  # the last read found no task record
        subject = self.names.key_subject(self.names.record_key(capability, task_id))
        sub = await self.nc.subscribe(subject, cb=on_update)
        cancel_subject = self.names.key_subject(self.names.cancel_key(capability, task_id))
        cancel_sub = await self.nc.subscribe(cancel_subject, cb=on_cancel_request)
        try:
            recheck = _FIRST_RECHECK
            try:
                last = await self.read(capability, task_id)  # once whatever the timeout
            except TRANSIENT as exc:  # the server is restarting: wait for it too
                if timeout is not None and timeout <= 0:
                    raise _unreadable(task_id, exc) from exc
                failure = exc
            except CorruptRecord as exc:
                if timeout is not None and timeout <= 0:
                    raise
                corrupt = exc
            if last is not None and last.done:
                return last
            with anyio.move_on_after(timeout):
                while True:
                    with anyio.move_on_after(recheck):
                        async for data in receive:
                            if data is None:
                                break  # a cancel request: read the task now
                            record = _decode_quietly(data, capability, task_id)
                            if record is not None:
                                last = record
                                if record.done:
                                    return record
                    recheck = min(recheck * 1.5, _LAST_RECHECK)
                    try:
                        current, failure = await self.read(capability, task_id), None
                    except TRANSIENT as exc:
                        log.debug("reading task %s failed for now: %s", task_id, exc)
                        failure = exc
                        continue
                    except CorruptRecord as exc:
                        corrupt = exc
                        continue
                    corrupt = None
                    if current is not None:
                        last = current
                        if last.done:
                            return last
            if corrupt is not None:
                raise corrupt
            if last is None and failure is not None:
                raise _unreadable(task_id, failure)
            return last
        finally:
            updates.close()
            receive.close()
            for each in (sub, cancel_sub):
                try:
                    await each.unsubscribe()
                except nats.errors.Error:
                    pass


def _created_as_first(msg: api.RawStreamMsg) -> bool:
    return bool(msg.data) and (msg.headers or {}).get(_CREATED_AS_FIRST) == "0"


def _is_capability(name: str) -> bool:
    try:
        validate_capability(name)
    except ConfigError:
        return False
    return True


def _as_submission(record: TaskRecord) -> TaskRecord:
    """A submission's record says only that the task was submitted, when and by whom."""
    return TaskRecord(
        task_id=record.task_id,
        capability=record.capability,
        state=TaskState.SUBMITTED,
        submitted_at=record.submitted_at,
        updated_at=record.submitted_at,
        sender=record.sender,
    )


def _unreadable(task_id: str, exc: Exception) -> ConnectionFailed:
    return ConnectionFailed(
        f"could not read durable task {task_id}: JetStream did not answer "
        f"({type(exc).__name__}); the task is not lost - ask again once the server is back"
    )


def _decode_quietly(data: bytes, capability: str, task_id: str) -> TaskRecord | None:
    if not data:
        return None  # a delete or purge marker
    try:
        return decode_record(data, task_id=task_id, capability=capability)
    except CorruptRecord as exc:
        log.warning("%s; ignored", exc.message)
        return None
