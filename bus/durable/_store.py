"""The task bucket: one record per durable task, read, changed by compare-and-set,
and waited on.

Waiting subscribes to the key's own subject (``$KV.<bucket>.<task_id>``),
which sees every new revision as it is stored, and reads the key now and then
as well, so an update missed while the connection was down is still found.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import anyio
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from .._errors import ConnectionFailed
from ._names import DurableNames
from ._record import CorruptRecord, TaskRecord, decode_record, encode_record

__all__ = ["StoredRecord", "TaskStore"]

log = logging.getLogger("callboard.durable")

_KV_OPERATION = "KV-Operation"
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
        self.kv = KeyValue(
            name=names.bucket,
            stream=f"KV_{names.bucket}",
            pre=f"$KV.{names.bucket}.",
            js=js,
            direct=True,
        )

    async def get(self, task_id: str) -> StoredRecord | None:
        """The current record, or None if there is none (never submitted, or expired).

        Raises:
            CorruptRecord: the key holds something that is not this task's record.
        """
        try:
            entry = await self.kv.get(task_id)
        except nats.js.errors.KeyNotFoundError:
            return None
        if entry.value is None or entry.revision is None:
            return None
        record = decode_record(entry.value, task_id=task_id, revision=entry.revision)
        return StoredRecord(record, entry.revision)

    async def create(self, record: TaskRecord) -> int | None:
        """Store a first record; None if the task already has one."""
        try:
            return await self.kv.create(record.task_id, encode_record(record))
        except nats.js.errors.KeyWrongLastSequenceError:
            return None

    async def replace(self, record: TaskRecord, revision: int | None) -> int | None:
        """Store ``record`` if the key is still at ``revision`` (None: has none);
        return the new revision, or None if someone else changed it first."""
        if revision is None:
            return await self.create(record)
        try:
            return await self.kv.update(record.task_id, encode_record(record), last=revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            return None

    async def history(self, task_id: str) -> list[StoredRecord]:
        """Every revision still kept (``history`` in the settings), oldest first;
        a revision that is not a task record is left out (and logged).

        Read one by one ("the key's next revision from sequence N"): nats-py's
        ``KeyValue.history`` may end before the first revision is delivered and
        report none at all (nats-io/nats.py#842).
        """
        subject = self.names.key_subject(task_id)
        revisions: list[StoredRecord] = []
        seq = 1
        while True:
            try:
                msg = await self.js.get_msg(
                    f"KV_{self.names.bucket}", seq=seq, subject=subject, direct=True, next=True
                )
            except nats.js.errors.NotFoundError:
                return revisions
            if msg.data and not (msg.headers or {}).get(_KV_OPERATION):  # not a delete
                try:
                    record = decode_record(msg.data, task_id=task_id, revision=msg.seq or 0)
                except CorruptRecord as exc:
                    log.warning("%s; left out of the history", exc.message)
                else:
                    revisions.append(StoredRecord(record, msg.seq or 0))
            seq = (msg.seq or seq) + 1

    async def wait(self, task_id: str, timeout: float | None) -> TaskRecord | None:
        """Wait until the task is done; return its record (the last one seen if
        ``timeout`` passes first, None if it has none).

        Raises:
            CorruptRecord: the key held no task record when the wait ended (an
                agent dead-letters a queued task whose record is bad, so a
                waiting reader sees that outcome instead).
        """
        updates, receive = anyio.create_memory_object_stream[bytes](64)

        async def on_update(msg: Msg) -> None:
            try:
                updates.send_nowait(msg.data)
            except anyio.WouldBlock:
                pass  # the next read of the key catches up

        last: TaskRecord | None = None
        failure: Exception | None = None  # of the last read, if it failed
        corrupt: CorruptRecord | None = None  # the last read found no task record
        sub = await self.nc.subscribe(self.names.key_subject(task_id), cb=on_update)
        try:
            recheck = _FIRST_RECHECK
            try:
                stored = await self.get(task_id)  # read once whatever the timeout: 0 asks "now?"
            except TRANSIENT as exc:  # the server is restarting: wait for it too
                if timeout is not None and timeout <= 0:
                    raise _unreadable(task_id, exc) from exc
                stored, failure = None, exc
            except CorruptRecord as exc:
                if timeout is not None and timeout <= 0:
                    raise
                stored, corrupt = None, exc
            last = stored.record if stored is not None else None
            if last is not None and last.done:
                return last
            with anyio.move_on_after(timeout):
                while True:
                    with anyio.move_on_after(recheck):
                        async for data in receive:
                            record = _decode_quietly(data, task_id)
                            if record is not None:
                                last = record
                                if record.done:
                                    return record
                    recheck = min(recheck * 1.5, _LAST_RECHECK)
                    try:
                        stored, failure = await self.get(task_id), None
                    except TRANSIENT as exc:
                        log.debug("reading task %s failed for now: %s", task_id, exc)
                        failure = exc
                        continue
                    except CorruptRecord as exc:
                        corrupt = exc
                        continue
                    corrupt = None
                    if stored is not None:
                        last = stored.record
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
            try:
                await sub.unsubscribe()
            except nats.errors.Error:
                pass


def _unreadable(task_id: str, exc: Exception) -> ConnectionFailed:
    return ConnectionFailed(
        f"could not read durable task {task_id}: JetStream did not answer "
        f"({type(exc).__name__}); the task is not lost - ask again once the server is back"
    )


def _decode_quietly(data: bytes, task_id: str) -> TaskRecord | None:
    if not data:
        return None  # a delete or purge marker
    try:
        return decode_record(data, task_id=task_id)
    except CorruptRecord as exc:
        log.warning("%s; ignored", exc.message)
        return None
