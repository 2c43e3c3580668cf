"""Cancel requests for durable tasks that no agent has taken yet.

A cancel broadcast reaches only the agent running a task; a task waiting in the
work queue has none. So the caller also stores its cancel token under the
task's key ``<capability>.<task_id>.cancel``, where the agent that takes the task
looks before (and after) running it, and readers look while no agent has it.

Any submitter may write that key, so the request proves nothing by itself: it
counts only if its token hashes to the task's ``Agent-Cancel-Hash``, which only
the caller can do (see ``bus._cancel_token``). An agent checks against the hash
the job message carries; a reader against the one the submission was created
with. A request that does not match is ignored, logged and counted, never believed.
"""

from __future__ import annotations

import time

import msgspec

from .._cancel_token import token_matches
from .._messages import ErrorInfo
from ._record import TaskRecord, TaskState

__all__ = [
    "CancelRequest",
    "cancelled_before_taken",
    "decode_cancel_request",
    "encode_cancel_request",
    "request_matches",
]

_MAX_TOKEN = 64
"""Characters of a token worth checking (a real one has 32)."""


class CancelRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What a canceller stores: which task, its token, who asked and when.

    Attributes:
        task_id: the task to cancel (a request for another is ignored).
        token: the caller's cancel token (``CancelKeys.token``).
        sender: who asked (what its client calls itself; not checked).
        requested_at: unix seconds of the request.
    """

    task_id: str
    token: str
    requested_at: float
    sender: str = ""
    v: int = 1


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(CancelRequest)


def encode_cancel_request(request: CancelRequest) -> bytes:
    return _encoder.encode(request)


def decode_cancel_request(data: bytes, task_id: str) -> CancelRequest | None:
    """The request stored for ``task_id``, or None if the value is none (not JSON,
    another task's, a token of the wrong shape)."""
    try:
        request = _decoder.decode(data)
    except (msgspec.MsgspecError, RecursionError):  # too deeply nested is not JSON to us
        return None
    if request.task_id != task_id or not 0 < len(request.token) <= _MAX_TOKEN:
        return None
    return request


def request_matches(request: CancelRequest | None, cancel_hash: str) -> bool:
    """Whether ``request`` carries the token whose hash the task carries (constant time)."""
    return request is not None and token_matches(cancel_hash, request.token)


def cancelled_before_taken(record: TaskRecord, request: CancelRequest) -> TaskRecord:
    """The record of a queued task its caller cancelled: ``cancelled``, with a 499."""
    error = ErrorInfo(
        code=499,
        type="cancelled",
        message=f"task {record.task_id} was cancelled by its caller before an agent ran it",
    )
    when = max(request.requested_at, record.submitted_at) if request.requested_at else time.time()
    return msgspec.structs.replace(record, state=TaskState.CANCELLED, error=error, updated_at=when)
