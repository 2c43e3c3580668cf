"""The record of one durable task, kept in the task bucket under its ID.

Every change of state is a new revision of the key, so the bucket's history
of a key is the task's story, and a compare-and-set on the revision is what
keeps a second execution from overwriting the first one's result.
"""

from __future__ import annotations

import enum
import time

import msgspec

from .._errors import DispatchError
from .._messages import ErrorInfo

__all__ = [
    "TERMINAL_STATES",
    "CorruptRecord",
    "TaskRecord",
    "TaskState",
    "decode_record",
    "encode_record",
]


class CorruptRecord(DispatchError):
    """A value in the task bucket is not a task record (or not the one its key names).

    Something other than callboard wrote it (a stray ``nats kv put``, a bug, an
    attacker with write access). Readers report it instead of guessing; an agent
    that finds it for a queued task dead-letters the task.

    Attributes:
        revision: the bucket revision of the bad value (a compare-and-set replaces it).
    """

    code = 500
    type = "corrupt_record"

    def __init__(self, message: str, *, task_id: str, revision: int = 0) -> None:
        super().__init__(message, task_id=task_id)
        self.revision = revision


class TaskState(enum.StrEnum):
    """Where a durable task is."""

    SUBMITTED = "submitted"
    """In the work queue, waiting for an agent (again, after a retryable failure)."""
    WORKING = "working"
    COMPLETED = "completed"
    FAILED = "failed"
    """Failed for good: a 4xx error (bad input is not retried)."""
    CANCELLED = "cancelled"
    DEAD_LETTERED = "dead-lettered"
    """Failed ``max_deliver`` times; a copy is on the dead-letter subject."""


TERMINAL_STATES = frozenset(
    {TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED, TaskState.DEAD_LETTERED}
)


class TaskRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    """State, result or error, attempts, agent and times of one durable task.

    Attributes:
        v: record format version.
        task_id: the task's ID (the key).
        capability: the capability it was sent to.
        state: a ``TaskState`` value.
        sender: who submitted it.
        attempts: deliveries to an agent so far.
        agent: the agent that last worked on it.
        submitted_at: unix seconds of the submission.
        updated_at: unix seconds of this revision.
        result: the result's JSON, as the agent encoded it (completed only).
        error: the last error (failed, dead-lettered, cancelled, and a
            submitted task waiting for its retry).
        job: the stream sequence of the job message that owns the task, once an
            agent has taken it (0: nobody yet). Another copy of the job (a
            resubmission past the duplicate window) is acknowledged unrun.
        cancel_hash: the task's ``Agent-Cancel-Hash`` (hex), against which a cancel
            request's token is checked: the submitter's in a submission, the job
            message's in an agent's record ("": the task cannot be cancelled).
    """

    task_id: str
    capability: str
    state: TaskState
    submitted_at: float
    updated_at: float
    v: int = 1
    sender: str = ""
    attempts: int = 0
    agent: str = ""
    result: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    error: ErrorInfo | None = None
    job: int = 0
    cancel_hash: str = ""

    @property
    def done(self) -> bool:
        """True once the task will change no more."""
        return self.state in TERMINAL_STATES

    def moved_to(self, state: TaskState, **changes: object) -> TaskRecord:
        """A copy in ``state``, stamped now, with other fields changed too."""
        return msgspec.structs.replace(self, state=state, updated_at=time.time(), **changes)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(TaskRecord)


def encode_record(record: TaskRecord) -> bytes:
    return _encoder.encode(record)


def decode_record(
    data: bytes, *, task_id: str | None = None, capability: str | None = None, revision: int = 0
) -> TaskRecord:
    """Decode a record; with ``task_id`` (and ``capability``), the one its key names.

    Raises:
        CorruptRecord: the value is not a task record, or is another task's.
    """
    what = f"durable task {task_id}" if task_id else "a durable task"
    try:
        record = _decoder.decode(data)
    except (msgspec.MsgspecError, RecursionError) as exc:  # nested too deep: msgspec's limit
        raise CorruptRecord(
            f"the record of {what} (revision {revision}) is not a task record ({exc}): "
            "something other than callboard wrote it",
            task_id=task_id or "",
            revision=revision,
        ) from None
    names = (record.task_id, record.capability)
    if (task_id or record.task_id, capability or record.capability) != names:
        raise CorruptRecord(
            f"the record stored for {what} (revision {revision}) says it is task "
            f"{record.task_id[:80]!r} of {record.capability[:80]!r}: something other than "
            "callboard wrote it",
            task_id=task_id or "",
            revision=revision,
        )
    return record
