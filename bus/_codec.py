"""Maps ``AgentMessage`` to and from NATS headers + JSON body (wire protocol v1).

A task's body is its JSON payload and nothing else; all metadata is optional
and rides in headers, so ``nats req agents.task.math '{"expression": "6*7"}'``
is a complete task. Replies carry the result as the body; error replies follow
the NATS micro convention (``Nats-Service-Error`` / ``-Code`` headers) with a
``{"error": {...}}`` body for clients that only read bodies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from ._cancel_token import CANCEL_HASH
from ._errors import AgentError, BadInput, error_for_code
from ._messages import AgentMessage, ErrorInfo, MessageType

__all__ = [
    "AGENT_ID",
    "CAPABILITY",
    "CHAIN",
    "DEADLINE",
    "ERROR",
    "ERROR_CODE",
    "OPERATION",
    "SENDER",
    "SEQ",
    "TASK_HEADERS",
    "TASK_ID",
    "TRACEPARENT",
    "TaskHeader",
    "decode_json",
    "decode_reply",
    "decode_task",
    "encode_error",
    "encode_json",
    "encode_result",
    "encode_task",
    "error_from_reply",
    "task_headers",
]

TASK_ID = "Agent-Task-Id"
SENDER = "Agent-Sender"
DEADLINE = "Agent-Deadline"
CHAIN = "Agent-Chain"
SEQ = "Agent-Seq"
TRACEPARENT = "traceparent"
AGENT_ID = "Agent-Id"
ERROR = "Nats-Service-Error"
ERROR_CODE = "Nats-Service-Error-Code"
CAPABILITY = "Agent-Capability"
"""On the direct address ``<prefix>.agent.<id>``: which capability a task is for."""
OPERATION = "Agent-Op"
"""On the direct address: ``task`` (default), ``ping`` or ``cancel``."""

_encoder = msgspec.json.Encoder()
_any_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder()


class _ErrorBody(msgspec.Struct):
    error: ErrorInfo


_error_body_decoder = msgspec.json.Decoder(_ErrorBody)

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_TOO_DEEP = "nested too deeply (JSON arrays and objects may nest a few hundred levels)"


def encode_json(value: Any, what: str = "payload") -> bytes:
    """Encode a JSON value, or raise BadInput naming what could not be encoded."""
    try:
        return _encoder.encode(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise BadInput(f"{what} is not JSON-serialisable: {exc}") from exc
    except RecursionError:
        raise BadInput(f"{what} is {_TOO_DEEP}") from None


def decode_json(data: bytes, decoder: msgspec.json.Decoder[Any] | None = None) -> Any:
    """Decode a JSON payload, raising BadInput with the field at fault.

    An empty body decodes to ``None`` (``nats req subject ''`` sends one).
    """
    try:
        if not data:
            return None if decoder is None else decoder.decode(b"null")
        return (decoder or _any_decoder).decode(data)
    except msgspec.ValidationError as exc:
        raise BadInput(f"invalid payload: {exc}") from exc
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise BadInput(
            f"payload is not valid JSON ({exc}); send a UTF-8 JSON document as the message body"
        ) from exc
    except RecursionError:
        raise BadInput(f"payload is {_TOO_DEEP}") from None


class TaskHeader(msgspec.Struct, frozen=True):
    """One header a task carries.

    Attributes:
        field: its keyword in ``task_headers`` / ``task_header_block``.
        name: the NATS header.
        text: its value as header text.
    """

    field: str
    name: str
    text: Callable[[Any], str] = str


TASK_HEADERS: tuple[TaskHeader, ...] = (
    TaskHeader("task_id", TASK_ID),
    TaskHeader("sender", SENDER),
    TaskHeader("deadline_ms", DEADLINE),
    TaskHeader("chain", CHAIN, ",".join),
    TaskHeader("seq", SEQ),
    TaskHeader("traceparent", TRACEPARENT),
    TaskHeader("capability", CAPABILITY),
    TaskHeader("cancel_hash", CANCEL_HASH),
)
"""Every header a task request may carry, in the order they are written: the one
table both header builders (``task_headers`` and ``bus.wire.task_header_block``)
read, so adding a header is one line here (and its reading in ``decode_task``).
``capability`` is for agents of wire revision 1 only (a direct task's capability is
now in its subject); ``cancel_hash`` lets only the caller cancel (``_cancel_token``)."""


def task_headers(**fields: Any) -> dict[str, str]:
    """The headers of a task request, by ``TASK_HEADERS``; None and empty fields
    (``""``, ``()``) are left out.

    Raises:
        TypeError: a field that is not in the table.
    """
    unknown = fields.keys() - _TASK_FIELDS
    if unknown:
        raise TypeError(f"not a task header field: {', '.join(sorted(unknown))}")
    headers = {}
    for header in TASK_HEADERS:
        value = fields.get(header.field)
        if value is None or value == "" or value == ():
            continue
        headers[header.name] = header.text(value)
    return headers


_TASK_FIELDS = frozenset(header.field for header in TASK_HEADERS)


def encode_task(message: AgentMessage) -> tuple[dict[str, str], bytes]:
    """Headers and body of a task message."""
    headers = task_headers(
        task_id=message.task_id,
        sender=message.sender,
        deadline_ms=message.deadline_ms,
        chain=message.chain,
        seq=message.seq,
        traceparent=message.traceparent,
    )
    return headers, encode_json(message.payload)


def _int_header(headers: dict[str, str], name: str) -> int | None:
    raw = headers.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise BadInput(f"header {name} must be an integer, got {raw[:40]!r}") from None
    if not _INT64_MIN <= value <= _INT64_MAX:
        # a deadline past ~1e308 ms would overflow every float computed from it
        raise BadInput(f"header {name} must fit in 64 bits (signed), got {raw[:40]!r}")
    return value


def decode_task(
    headers: dict[str, str] | None,
    data: bytes,
    *,
    task_id: str,
    capability: str,
    receiver: str = "",
    decoder: msgspec.json.Decoder[Any] | None = None,
) -> AgentMessage:
    """Build the ``AgentMessage`` of a received task.

    Args:
        headers: the NATS headers (None when the client sent none).
        data: the body.
        task_id: the task ID already taken from the headers (or freshly made),
            so that an error reply can name it even when decoding fails.
        capability: the capability the task arrived for.
        receiver: the agent id receiving it.
        decoder: validates the payload into the agent's declared input type.

    Raises:
        BadInput: the body is not JSON, has the wrong shape, or a header is malformed.
    """
    try:  # the usual payload: decoded without a call of ours
        payload = (decoder or _any_decoder).decode(data) if data else decode_json(data, decoder)
    except Exception:
        payload = decode_json(data, decoder)  # raises the BadInput that says why
    if not headers:
        return AgentMessage(
            type=MessageType.TASK,
            task_id=task_id,
            id=task_id,
            payload=payload,
            capability=capability,
            receiver=receiver,
        )
    chain_header = headers.get(CHAIN)
    deadline = headers.get(DEADLINE)
    if deadline is not None and deadline.isascii() and deadline.isdigit() and len(deadline) < 19:
        deadline_ms: int | None = int(deadline)  # the usual one, well within 64 bits
    else:
        deadline_ms = _int_header(headers, DEADLINE)
    return AgentMessage(
        type=MessageType.TASK,
        task_id=task_id,
        id=task_id,
        payload=payload,
        sender=headers.get(SENDER) or "anonymous",
        receiver=receiver,
        capability=capability,
        seq=_int_header(headers, SEQ) if SEQ in headers else None,
        deadline_ms=deadline_ms,
        chain=tuple(chain_header.split(",")) if chain_header else (),
        traceparent=headers.get(TRACEPARENT),
    )


def encode_result(result: Any, *, task_id: str, agent_id: str) -> tuple[dict[str, str], bytes]:
    """Headers and body of a success reply."""
    return {TASK_ID: task_id, AGENT_ID: agent_id}, encode_json(result, "the handler's result")


def encode_error(error: ErrorInfo, *, task_id: str, agent_id: str) -> tuple[dict[str, str], bytes]:
    """Headers and body of an error reply (NATS micro convention plus a JSON body)."""
    headers = {
        TASK_ID: task_id,
        AGENT_ID: agent_id,
        ERROR: error.message.replace("\r", " ").replace("\n", " "),
        ERROR_CODE: str(error.code),
    }
    return headers, _encoder.encode(_ErrorBody(error))


def decode_reply(
    headers: dict[str, str] | None, data: bytes, *, task_id: str, capability: str = ""
) -> AgentMessage:
    """Turn a reply into a RESULT or ERROR message; never raises for remote errors."""
    agent = ""
    if headers:
        agent = headers.get(AGENT_ID, "")
        code = headers.get(ERROR_CODE)
        if code is not None:
            return AgentMessage(
                type=MessageType.ERROR,
                task_id=headers.get(TASK_ID, task_id),
                id=task_id,
                sender=agent,
                capability=capability,
                error=_error_info(headers, data, code),
            )
    try:
        result = _any_decoder.decode(data) if data else None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        why = _TOO_DEEP if isinstance(exc, RecursionError) else "not JSON"
        error = ErrorInfo(
            code=502, type="bad_reply", message=f"the agent's reply is {why}: {data[:80]!r}"
        )
        return AgentMessage(
            type=MessageType.ERROR, task_id=task_id, id=task_id, sender=agent, error=error
        )
    return AgentMessage(
        type=MessageType.RESULT,
        task_id=task_id,
        id=task_id,
        payload=result,
        sender=agent,
        capability=capability,
    )


def _error_info(headers: dict[str, str], data: bytes, code_header: str) -> ErrorInfo:
    try:
        return _error_body_decoder.decode(data).error
    except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
        pass
    try:
        code = int(code_header)
    except ValueError:
        code = 500
    return ErrorInfo(code=code, type="agent_failure", message=headers.get(ERROR, "") or "error")


def error_from_reply(message: AgentMessage) -> AgentError:
    """The typed exception for an ERROR reply."""
    error = message.error or ErrorInfo(code=500, type="agent_failure", message="unknown error")
    cls = error_for_code(error.code)
    return cls(
        error.message,
        code=error.code,
        type=error.type,
        agent_id=message.sender or None,
        task_id=message.task_id,
        capability=message.capability or None,
    )
