"""The hot path's share of the wire: header blocks, framed messages written
straight into a nats-py connection's outgoing buffer, and a faster parser for
the header blocks that come in.

nats-py's ``publish`` validates every header key with a regex, builds the
block byte by byte and kicks its flusher through a fresh future on each call:
about 40 µs for a message with headers against 16 without. callboard's hot
path frames its messages itself (the header keys are its own constants, the
subjects come from ``Subjects``) and appends them to the same buffer nats-py's
flusher writes, so the bytes on the wire are the same ``HPUB``/``PUB``
commands and the flusher still batches whatever a loop iteration produced.

This relies on private parts of nats-py's ``Client`` (``_pending``,
``_pending_data_size``, ``_max_pending_size``, ``_flush_queue``,
``_flusher_task``, ``_flush_pending``, ``_status``, ``_max_payload``,
``_parse_header_lines``); ``tests/unit/test_wire.py`` guards each of them.
Whatever the fast path cannot handle (a reconnect in progress, a dead flusher,
a full buffer) goes the way nats-py's own ``publish`` goes.
"""

from __future__ import annotations

import asyncio
import re
import weakref
from collections.abc import Mapping

import nats.errors
from nats.aio.client import Client

__all__ = ["Wire", "header_block", "parse_header_lines", "wire_for"]

_KEY = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""The header key nats-py accepts (its ``_HEADER_KEY_RE``)."""
_NEWLINES = str.maketrans({"\r": " ", "\n": " "})
_known_keys: set[str] = set()
_MAX_KNOWN_KEYS = 1024
_WHITESPACE = re.compile(r"[\t\n\x0b\x0c\r\x1c-\x1f ]")
"""What ``str.isspace`` is true of in ASCII (a key is ASCII)."""
_ASCII_SPACE = " \t\n\r\x0b\x0c"
"""What ``bytes.strip`` strips."""
_clean_keys: set[str] = set()


def header_block(headers: Mapping[str, str]) -> bytes:
    """The ``NATS/1.0`` header block of ``headers``, as nats-py's ``publish`` builds it.

    Keys are stripped (empty ones skipped) and must be HTTP tokens; values are
    stripped and their CR/LF turned into spaces, so no value can end the block.

    Raises:
        nats.errors.BadHeaderError: a key is not a token.
    """
    lines = ["NATS/1.0"]
    for name, value in headers.items():
        key = name.strip()
        if not key:
            continue
        if key not in _known_keys:
            if not _KEY.fullmatch(key):
                raise nats.errors.BadHeaderError(key)
            if len(_known_keys) < _MAX_KNOWN_KEYS:
                _known_keys.add(key)
        lines.append(f"{key}: {value.strip().translate(_NEWLINES)}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode()


def parse_header_lines(raw: bytes) -> dict[str, str]:
    """nats-py's ``Client._parse_header_lines``, at a fraction of its cost.

    Same result for every input: lines without a colon, names that are not
    ASCII or hold whitespace are skipped; values are stripped and decoded as
    UTF-8 with replacement. An all-ASCII block (the usual one) is decoded once
    and split as text.
    """
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return _parse_header_bytes(raw)
    out: dict[str, str] = {}
    for line in text.split("\r\n"):
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue
        key = name.strip(_ASCII_SPACE)
        if key not in _clean_keys:
            if _WHITESPACE.search(key):
                continue
            if len(_clean_keys) < _MAX_KNOWN_KEYS:
                _clean_keys.add(key)
        out[key] = value.strip(_ASCII_SPACE)
    return out


def _parse_header_bytes(raw: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in raw.split(b"\r\n"):
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        try:
            key = name.strip().decode("ascii")
        except UnicodeDecodeError:
            continue
        if _WHITESPACE.search(key):
            continue
        out[key] = value.strip().decode("utf-8", "replace")
    return out


class Wire:
    """Frames messages and appends them to one connection's outgoing buffer.

    Use ``wire_for(nc)``: one per connection.
    """

    __slots__ = ("__weakref__", "_kick", "_nc")

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._kick: asyncio.Future[None] | None = None
        # every message with headers that reaches this connection is parsed by it
        nc._parse_header_lines = parse_header_lines  # type: ignore[method-assign]

    def hpub(self, subject: str, reply: str, headers: bytes, payload: bytes) -> bytes:
        """An ``HPUB`` command (``headers`` from ``header_block``).

        Raises:
            nats.errors.MaxPayloadError: headers and payload are above the server's limit.
        """
        size = len(payload)
        hsize = len(headers)
        if hsize + size > self._nc._max_payload:  # the server counts headers too
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
        if size > self._nc._max_payload:
            raise nats.errors.MaxPayloadError
        return b"".join((f"PUB {subject} {size}\r\n".encode(), payload, b"\r\n"))

    def write_nowait(self, commands: bytes, messages: int = 1) -> bool:
        """Append framed commands to the buffer and make sure the flusher will run.

        Returns True when the buffer went over its limit and the caller should
        wait for it to be written (``write`` does).

        Raises:
            nats.errors.ConnectionClosedError: the connection is closed.
            nats.errors.ConnectionDrainingError: it is draining its publishers.
            nats.errors.OutboundBufferLimitError: it is reconnecting and the
                reconnect buffer is full.
        """
        nc = self._nc
        if nc._status != Client.CONNECTED:
            self._check_state(len(commands))
        nc._pending.append(commands)
        nc._pending_data_size += len(commands)
        stats = nc.stats
        stats["out_msgs"] += messages
        stats["out_bytes"] += len(commands)
        if not nc.is_connected:
            return False
        limit = nc._max_pending_size
        if limit > 0 and nc._pending_data_size > limit:
            return True
        queue = nc._flush_queue
        if queue is not None and queue.empty():
            flusher = nc._flusher_task
            if flusher is None or flusher.done():
                return True
            kick = self._kick
            if kick is None:
                # the flusher only resolves what it is kicked with, and nobody
                # awaits this one: a single done future serves every kick
                kick = self._kick = asyncio.get_running_loop().create_future()
                kick.set_result(None)
            queue.put_nowait(kick)
        return False

    async def write(self, commands: bytes, messages: int = 1) -> None:
        """``write_nowait``, then wait for the flush if the buffer is over its limit."""
        if self.write_nowait(commands, messages):
            await self._nc._flush_pending(force_flush=True)

    def _check_state(self, size: int) -> None:
        nc = self._nc
        if nc.is_closed:
            raise nats.errors.ConnectionClosedError
        if nc.is_draining_pubs:
            raise nats.errors.ConnectionDrainingError
        if not nc.is_connected and (
            nc._max_pending_size <= 0 or size + nc._pending_data_size > nc._max_pending_size
        ):
            raise nats.errors.OutboundBufferLimitError


_wires: weakref.WeakKeyDictionary[Client, Wire] = weakref.WeakKeyDictionary()


def wire_for(nc: Client) -> Wire:
    """The ``Wire`` of a connection (made on first use)."""
    wire = _wires.get(nc)
    if wire is None:
        wire = _wires[nc] = Wire(nc)
    return wire
