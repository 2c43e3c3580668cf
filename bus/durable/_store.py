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
import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from ._names import DurableNames
from ._record import TaskRecord, decode_record, encode_record

__all__ = ["StoredRecord", "TaskStore"]

log = logging.getLogger("callboard.durable")

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
        """The current record, or None if there is none (never submitted, or expired)."""
        try:
            entry = await self.kv.get(task_id)
        except nats.js.errors.KeyNotFoundError:
            return None
        if entry.value is None or entry.revision is None:
            return None
        return StoredRecord(decode_record(entry.value), entry.revision)

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
        """Every revision still kept (``history`` in the settings), oldest first."""
        try:
            entries = await self.kv.history(task_id)
        except nats.js.errors.NoKeysError:
            return []
        return [
            StoredRecord(decode_record(e.value), e.revision or 0)
            for e in entries
            if e.value and e.operation is None
        ]

    async def wait(self, task_id: str, timeout: float | None) -> TaskRecord | None:
        """Wait until the task is done; return its record (the last one seen if
        ``timeout`` passes first, None if it has none)."""
        updates, receive = anyio.create_memory_object_stream[bytes](64)

        async def on_update(msg: Msg) -> None:
            try:
                updates.send_nowait(msg.data)
            except anyio.WouldBlock:
                pass  # the next read of the key catches up

        last: TaskRecord | None = None
        sub = await self.nc.subscribe(self.names.key_subject(task_id), cb=on_update)
        try:
            recheck = _FIRST_RECHECK
            stored = await self.get(task_id)  # read once whatever the timeout: 0 asks "now?"
            last = stored.record if stored is not None else None
            if last is not None and last.done:
                return last
            with anyio.move_on_after(timeout):
                while True:
                    with anyio.move_on_after(recheck):
                        async for data in receive:
                            record = _decode_quietly(data)
                            if record is not None:
                                last = record
                                if record.done:
                                    return record
                    recheck = min(recheck * 1.5, _LAST_RECHECK)
                    stored = await self._get_quietly(task_id)
                    if stored is not None:
                        last = stored.record
                        if last.done:
                            return last
            return last
        finally:
            updates.close()
            receive.close()
            try:
                await sub.unsubscribe()
            except nats.errors.Error:
                pass

    async def _get_quietly(self, task_id: str) -> StoredRecord | None:
        try:
            return await self.get(task_id)
        except TRANSIENT as exc:
            log.debug("reading task %s failed for now: %s", task_id, exc)
            return None


def _decode_quietly(data: bytes) -> TaskRecord | None:
    if not data:
        return None  # a delete or purge marker
    try:
        return decode_record(data)
    except msgspec.MsgspecError:
        log.warning("task bucket holds a value that is not a task record; ignored")
        return None
