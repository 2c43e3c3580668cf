"""Framing: every NATS protocol command callboard writes itself is built here.

The hot path frames its messages (``HPUB``/``PUB``, the same bytes nats-py's
``publish`` sends) and appends them to the connection's outgoing buffer
through the seam (``_natspy.Outbox``), skipping ``publish``'s per-call regex
checks and flusher future: about 40 µs a message with headers against a few.
The frames:

- a task: ``task_header_block``, from the one table of task headers
  (``bus._codec.TASK_HEADERS``), so a new header is one edit there, and
  ``PlainTaskHeaders``, the same block for the usual task, from a template
  of that table made once per client;
- a reply and an error reply: ``ReplyFrames``;
- a status event: ``EventFrames``;
- anything else: ``Wire.hpub`` / ``Wire.pub`` with ``header_block``.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Mapping
from typing import Any, Protocol

import nats.errors
from nats.aio.client import Client

from ._codec import AGENT_ID, TASK_HEADERS, TASK_ID, encode_error
from ._messages import ErrorInfo
from ._natspy import BadHeaderError, Outbox, parse_header_lines, use_fast_header_parser

__all__ = [
    "BadHeaderError",
    "EventFrames",
    "PlainTaskHeaders",
    "ReplyFrames",
    "Wire",
    "header_block",
    "parse_header_lines",
    "task_header_block",
    "wire_for",
]

_KEY = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""The header key nats-py accepts (its ``_HEADER_KEY_RE``)."""
_known_keys: set[str] = set()
_MAX_KNOWN_KEYS = 1024


def _header_value(value: str) -> str:
    """``value`` stripped, its CR and LF turned into spaces (so it cannot end the block)."""
    value = value.strip()
    if "\r" in value or "\n" in value:  # rare: str.translate would cost µs on every value
        value = value.replace("\r", " ").replace("\n", " ")
    return value


def header_block(headers: Mapping[str, str]) -> bytes:
    """The ``NATS/1.0`` header block of ``headers``, as nats-py's ``publish`` builds it.

    Keys are stripped (empty ones skipped) and must be HTTP tokens; values are
    stripped and their CR/LF turned into spaces, so no value can end the block.

    Raises:
        BadHeaderError: a key is not a token (``nats.errors.BadHeaderError`` in nats-py 2.16).
    """
    lines = ["NATS/1.0"]
    for name, value in headers.items():
        key = name.strip()
        if not key:
            continue
        if key not in _known_keys:
            if not _KEY.fullmatch(key):
                raise BadHeaderError(key)
            if len(_known_keys) < _MAX_KNOWN_KEYS:
                _known_keys.add(key)
        lines.append(f"{key}: {_header_value(value)}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode()


for _header in TASK_HEADERS:  # the table's names are keys nats-py accepts
    header_block({_header.name: ""})


def task_header_block(**fields: Any) -> bytes:
    """The header block of a task: ``header_block(task_headers(**fields))``,
    built straight from the table (its keys are known to be valid).

    Args:
        **fields: values by ``TaskHeader.field`` (``task_id``, ``sender``, ...);
            None, empty ones and fields not given are left out.
    """
    lines = ["NATS/1.0"]
    for header in TASK_HEADERS:
        value = fields.get(header.field)
        if value is None or value == "" or value == ():
            continue
        lines.append(f"{header.name}: {_header_value(header.text(value))}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode()


_PER_TASK_FIELDS = ("task_id", "deadline_ms", "cancel_hash")
"""The fields of a plain task that change from task to task, in table order."""


class PlainTaskHeaders:
    """The header block of one sender's plain tasks, templated once from ``TASK_HEADERS``.

    A plain task (no chain, seq or traceparent: what ``dispatch`` sends) differs
    from the sender's others only in its task id, deadline and cancel hash, so
    its block is the table's lines with those three left as slots: one string
    format per task instead of a walk over the table.

    Args:
        sender: the ``Agent-Sender`` of every task (left out when empty).
    """

    __slots__ = ("_template", "sender")

    def __init__(self, sender: str) -> None:
        self.sender = sender
        lines = ["NATS/1.0"]
        slots = []
        for header in TASK_HEADERS:
            if header.field in _PER_TASK_FIELDS:
                slots.append(header.field)
                lines.append(f"{header.name}: %s")
            elif header.field == "sender" and sender:
                text = _header_value(header.text(sender))
                lines.append(f"{header.name}: {text.replace('%', '%%')}")
        if tuple(slots) != _PER_TASK_FIELDS:
            raise AssertionError(f"TASK_HEADERS holds the per-task fields in order {slots}")
        lines.append("\r\n")
        self._template = "\r\n".join(lines)

    def block(self, task_id: str, deadline_ms: int, cancel_hash: str) -> bytes:
        """``task_header_block(task_id=..., sender=..., deadline_ms=..., cancel_hash=...)``.

        ``deadline_ms`` and ``cancel_hash`` are header-safe by type (an int, hex
        digits); ``task_id`` is cleaned as every header value is.
        """
        return (self._template % (_header_value(task_id), deadline_ms, cancel_hash)).encode()


class Append(Protocol):
    """``Wire.write_nowait``'s signature."""

    def __call__(self, commands: bytes, messages: int = 1, /) -> bool: ...


class Wire:
    """Frames commands and appends them to one connection's outgoing buffer.

    Use ``wire_for(nc)``: one per connection.
    """

    __slots__ = ("__weakref__", "_outbox", "nc", "write_nowait")

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self._outbox = Outbox(nc)
        self.write_nowait: Append = self._outbox.append
        """Append framed commands (``messages`` messages, 1 by default) to the
        buffer and make sure the flusher will run; True when the buffer went
        over its limit and the caller should wait for it to be written
        (``flush``; ``write`` does both). The outbox's own method, so that a
        write costs one call.

        Raises:
            nats.errors.ConnectionClosedError: the connection is closed.
            nats.errors.ConnectionDrainingError: it is draining its publishers.
            nats.errors.OutboundBufferLimitError: it is reconnecting and the
                reconnect buffer is full.
        """
        # every message with headers that reaches this connection is parsed fast
        use_fast_header_parser(nc)

    @property
    def max_payload(self) -> int:
        """The server's limit on one message (headers included)."""
        return self.nc.max_payload

    def hpub(self, subject: str, reply: str, headers: bytes, payload: bytes) -> bytes:
        """An ``HPUB`` command (``headers`` from ``header_block``).

        Raises:
            nats.errors.MaxPayloadError: headers and payload are above the server's limit.
        """
        size = len(payload)
        hsize = len(headers)
        if hsize + size > self.nc.max_payload:  # the server counts headers too
            raise nats.errors.MaxPayloadError
        head = (
            f"HPUB {subject} {reply} {hsize} {hsize + size}\r\n"
            if reply
            else (f"HPUB {subject} {hsize} {hsize + size}\r\n")
        )
        return b"".join((head.encode(), headers, payload, b"\r\n"))

    def pub(self, subject: str, payload: bytes) -> bytes:
        """A ``PUB`` command without a reply subject.

        Raises:
            nats.errors.MaxPayloadError: the payload is above the server's limit.
        """
        size = len(payload)
        if size > self.nc.max_payload:
            raise nats.errors.MaxPayloadError
        return b"".join((f"PUB {subject} {size}\r\n".encode(), payload, b"\r\n"))

    async def write(self, commands: bytes, messages: int = 1) -> None:
        """``write_nowait``, then wait for the flush if the buffer is over its limit."""
        if self.write_nowait(commands, messages):
            await self._outbox.flush()

    async def flush(self) -> None:
        """Write the buffer now (after ``write_nowait`` returned True)."""
        await self._outbox.flush()


_wires: weakref.WeakKeyDictionary[Client, Wire] = weakref.WeakKeyDictionary()


def wire_for(nc: Client) -> Wire:
    """The ``Wire`` of a connection (made on first use)."""
    wire = _wires.get(nc)
    if wire is None:
        wire = _wires[nc] = Wire(nc)
    return wire


class ReplyFrames:
    """The replies of one agent: a result or an error, to a request's inbox.

    Args:
        wire: the agent's connection's wire.
        agent_id: put in every reply's ``Agent-Id``.
    """

    __slots__ = ("_fixed", "_head", "_nc", "_tail", "agent_id", "wire")

    def __init__(self, wire: Wire, agent_id: str) -> None:
        self.wire = wire
        self.agent_id = agent_id
        self._nc = wire.nc
        # the header block is fixed but for the task id: framed once, by hand
        self._head = f"NATS/1.0\r\n{TASK_ID}: ".encode()
        self._tail = f"\r\n{AGENT_ID}: {_header_value(agent_id)}\r\n\r\n".encode()
        self._fixed = len(self._head) + len(self._tail)

    def result(self, reply: str, task_id: str, body: bytes) -> bytes:
        """A success reply (``task_id`` already valid: printable ASCII, no spaces).

        Raises:
            nats.errors.MaxPayloadError: the result is above the server's limit.
        """
        task = task_id.encode()
        hsize = self._fixed + len(task)
        size = hsize + len(body)
        if size > self._nc.max_payload:  # the server counts headers too
            raise nats.errors.MaxPayloadError
        return b"HPUB %s %d %d\r\n%s%s%s%s\r\n" % (
            reply.encode(),
            *(hsize, size, self._head, task, self._tail, body),
        )

    def error(self, reply: str, task_id: str, error: ErrorInfo) -> bytes:
        """An error reply: ``Nats-Service-Error`` headers and a ``{"error": ...}`` body.

        Raises:
            nats.errors.MaxPayloadError: the error is above the server's limit.
        """
        headers, body = encode_error(error, task_id=task_id, agent_id=self.agent_id)
        return self.wire.hpub(reply, "", header_block(headers), body)


_STARTED = b'{"state":"started"'
_ACCEPTED = b'{"state":"accepted"'


class EventFrames:
    """``PUB`` commands on one agent's status subjects, ``<prefix>.status.<id>.<state>``.

    Args:
        wire: the agent's connection's wire.
        subject_prefix: ``<prefix>.status.<agent_id>.`` (``Subjects.status_prefix``).
    """

    __slots__ = ("_accepted", "_heads", "_nc", "_prefix", "_started", "wire")

    def __init__(self, wire: Wire, subject_prefix: str) -> None:
        self.wire = wire
        self._nc = wire.nc
        self._prefix = subject_prefix
        self._heads: dict[str, bytes] = {}
        self._accepted = self._head("accepted")
        self._started = self._head("started")

    def _head(self, state: str) -> bytes:
        head = self._heads.get(state)
        if head is None:
            head = self._heads[state] = f"PUB {self._prefix}{state} ".encode()
        return head

    def event(self, state: str, body: bytes) -> bytes:
        """The event of ``state`` (a JSON body).

        Raises:
            nats.errors.MaxPayloadError: the event is above the server's limit.
        """
        if len(body) > self._nc.max_payload:
            raise nats.errors.MaxPayloadError
        head = self._heads.get(state) or self._head(state)
        return b"%s%d\r\n%s\r\n" % (head, len(body), body)

    def begun(self, accepted: bytes) -> bytes:
        """The ``accepted`` event (its encoded body), then the ``started`` event,
        which is the same but for the state the encoding puts first.

        Raises:
            nats.errors.MaxPayloadError: the events are above the server's limit.
        """
        size = len(accepted)
        if size > self._nc.max_payload:
            raise nats.errors.MaxPayloadError
        if not accepted.startswith(_ACCEPTED):
            raise ValueError(f"not an accepted event: {accepted[:40]!r}")
        # a join: two thirds of the cost of one bytes format with the same parts
        return b"".join(
            (
                *(self._accepted, b"%d\r\n" % size, accepted, b"\r\n"),
                *(self._started, b"%d\r\n" % (size - 1), _STARTED, accepted[len(_ACCEPTED) :]),
                b"\r\n",
            )
        )
