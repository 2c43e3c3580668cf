"""The record of one durable task, kept in the task bucket under its ID.

Every change of state is a new revision of the key, so the bucket's history
of a key is the task's story, and a compare-and-set on the revision is what
keeps a second execution from overwriting the first one's result.
"""

from __future__ import annotations

import enum
import time

import msgspec

from .._messages import ErrorInfo

__all__ = ["TERMINAL_STATES", "TaskRecord", "TaskState", "decode_record", "encode_record"]


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


def decode_record(data: bytes) -> TaskRecord:
    """Decode a record; a value nobody could have written is a bug, reported as such."""
    return _decoder.decode(data)
