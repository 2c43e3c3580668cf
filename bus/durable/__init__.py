"""Durable dispatch on JetStream: tasks that survive agents, callers and servers.

A task goes to the work-queue stream ``<PREFIX>_TASKS`` on
``<prefix>.jobs.<capability>``; agents of the capability share one pull
consumer; every change of the task's state is a revision of its record in the
``<PREFIX>_TASKS`` bucket, where the result waits for whoever asks by ID.
"""

from __future__ import annotations

from ._cancel import CancelRequest, decode_cancel_request, request_matches
from ._client import (
    DEFAULT_SUBMIT_TIMEOUT,
    MSG_ID,
    DurableTaskClient,
    message_size,
    result_of,
)
from ._names import DurableNames, split_task_ref, validate_durable_task_id
from ._record import (
    TERMINAL_STATES,
    CorruptRecord,
    TaskRecord,
    TaskState,
    decode_record,
    encode_record,
)
from ._replay import replay_status
from ._settings import DurableSettings
from ._setup import ensure_consumer, ensure_durable, stream_configs
from ._store import TRANSIENT, StoredRecord, TaskStore

__all__ = [
    "DEFAULT_SUBMIT_TIMEOUT",
    "MSG_ID",
    "TERMINAL_STATES",
    "TRANSIENT",
    "CancelRequest",
    "CorruptRecord",
    "DurableNames",
    "DurableSettings",
    "DurableTaskClient",
    "StoredRecord",
    "TaskRecord",
    "TaskState",
    "TaskStore",
    "decode_cancel_request",
    "decode_record",
    "encode_record",
    "ensure_consumer",
    "ensure_durable",
    "message_size",
    "replay_status",
    "request_matches",
    "result_of",
    "split_task_ref",
    "stream_configs",
    "validate_durable_task_id",
]
