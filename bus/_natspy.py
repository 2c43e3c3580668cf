"""The one seam to nats-py's internals: the only product module that touches
anything private in nats-py.

The hot path needs what nats-py offers no public way to do, and safety needs
nats-py corrected in places; each operation here is guarded by a test in
``tests/unit/test_natspy_seam.py`` (and ``test_wire.py``), and
``tests/unit/test_private_names.py`` fails if any other module reaches a private name:

- ``Outbox``: append framed commands to a connection's outgoing buffer and
  wake its flusher (nats-py's ``publish`` costs ~40 µs a message with headers);
- ``take_over_queue`` and ``Taken``: replace a callback-less subscription's
  queue with a lighter one, or with a function each message is handed to;
- ``use_fast_header_parser``: ``_headers.parse_header_lines`` as nats-py's parser;
- ``NatsClient``: ``MSG``/``HMSG`` parsed by offset and a taken-over
  subscription's messages handed over by a plain call; a malformed message
  costs that message only, never the read loop; no credentials in clear when
  TLS was asked for; backoff between reconnects;
- ``drop_reconnect_buffer`` and ``unread_subscriptions``, for closing.

The installed nats-py is checked at import (``_natspy_range``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, overload

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.protocol.parser import AWAITING_CONTROL_LINE, Parser

from ._handoff import Handoff
from ._headers import FIRST_LINE, PLAIN_BLOCK_MIN, SPACE, STATUS_AT, parse_header_lines
from ._msg_args import msg_args
from ._natspy_range import NATS_PY_RANGE, BadHeaderError, check_nats_py_version

__all__ = [
    "NATS_PY_RANGE",
    "BadHeaderError",
    "NatsClient",
    "Outbox",
    "TLSNotOffered",
    "Taken",
    "check_nats_py_version",
    "drop_reconnect_buffer",
    "parse_header_lines",
    "take_over_queue",
    "unread_subscriptions",
    "use_fast_header_parser",
]

log = logging.getLogger("callboard.bus")


# --- parsing headers fast ---------------------------------------------------


def use_fast_header_parser(nc: Client) -> None:
    """Make ``nc`` parse every header block it receives with ``parse_header_lines``."""
    # nats-py calls its parser through the instance: an instance attribute replaces it
    nc._parse_header_lines = parse_header_lines  # type: ignore[method-assign]


# --- the client, corrected --------------------------------------------------


class TLSNotOffered(nats.errors.Error):
    """The server answered without TLS although the client asked for it."""


class NatsClient(Client):
    """nats-py's client, made safe against malformed traffic and careful with credentials.

    - A message whose subject or reply is not UTF-8, or that nats-py's reader
      raises on, is dropped and counted (in nats-py the error ends the read loop:
      one frame would leave the connection deaf); a malformed header block costs
      only that message its headers.
    - No login over plain TCP when TLS was asked for (nats-py upgrades only if
      the server's INFO says ``tls_required``: a CONNECT with a password would
      go in clear to a server, or a man in the middle, that offers no TLS).
    - The wait before each reconnect pick is ``reconnect_delay(rounds)``, from the
      rounds the whole pool has failed (nats-py waits a fixed time).

    Attributes:
        require_tls: refuse to send CONNECT unless the connection is encrypted.
        reconnect_delay: seconds to wait, given the failed rounds; None keeps
            nats-py's fixed wait.
        malformed_messages: messages dropped, or stripped of their headers,
            because they arrived malformed.
        on_malformed: called once per such message (metrics).
    """

    def __init__(self) -> None:
        super().__init__()
        self.require_tls = False
        self.reconnect_delay: Callable[[int], float] | None = None
        self.malformed_messages = 0
        self.on_malformed: Callable[[], None] | None = None
        use_fast_header_parser(self)
        self._ps = _Parser(self)

    def _malformed(self, what: str, exc: BaseException) -> None:
        self.malformed_messages += 1
        count = self.malformed_messages
        if count & (count - 1) == 0:  # the 1st, 2nd, 4th, 8th...: a flood cannot flood the log
            log.warning("%s (%d malformed message(s) so far): %s", what, count, exc)
        if self.on_malformed is not None:
            self.on_malformed()

    def _build_message(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: dict[str, str] | None
    ) -> Msg | None:
        try:
            msg: Msg = super()._build_message(sid, subject, reply, data, headers)
        except UnicodeDecodeError as exc:
            # nats-py returns early on a message it could not build: dropped, read loop intact
            self._malformed("a message whose subject is not UTF-8 arrived; dropped", exc)
            return None
        return msg

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        if not self._delivered(sid, subject, reply, data, headers):
            await self._undelivered(sid, subject, reply, data, headers)

    async def _undelivered(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        """What ``_delivered`` left: a taken queue's slow consumer (header bytes
        counted, which nats-py does not), else nats-py's own reader."""
        sub: Any = self._subs.get(sid)
        if sub is not None and type(sub._pending_queue) is Taken:
            if _over_bytes(sub, len(data) + len(headers or b"")):
                error = nats.errors.SlowConsumerError(
                    subject=subject.decode(errors="replace"),
                    reply=reply.decode(errors="replace"),
                    sid=sid,
                    sub=sub,
                )
                await self._error_cb(error)  # dropped, as nats-py drops it
                return
        try:
            await super()._process_msg(sid, subject, reply, data, headers)  # type: ignore[arg-type]
        except Exception as exc:  # e.g. JetStream's, on a reply of the wrong form
            self._malformed("a message nats-py could not take arrived; dropped", exc)

    def _delivered(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> bool:
        """Hand a taken-over subscription's message to it, as nats-py's reader would,
        minus JetStream and coroutines; False leaves it to nats-py's reader."""
        sub: Any = self._subs.get(sid)
        queue: Any = sub._pending_queue if sub is not None else None
        kind = type(queue)
        if (kind is not Taken and kind is not _Handed) or sub._max_msgs or sub._jsi or sub._future:
            return False
        size = len(data)
        weight = size + len(headers) if headers else size  # header bytes are memory too
        if kind is Taken and (
            0 < sub._pending_bytes_limit <= sub._pending_size + weight  # _over_bytes, inline
            or 0 < queue._limit <= len(queue._items)  # queue.full(), inline
        ):
            return False  # a slow consumer: dropped and reported by _undelivered
        hdr: dict[str, str] | None = None
        if headers:
            if len(headers) <= PLAIN_BLOCK_MIN or headers[STATUS_AT] == SPACE:
                return False  # an inline status (no responders) or a broken block
            hdr = parse_header_lines(headers[FIRST_LINE:]) or None
        stats = self.stats
        stats["in_msgs"] += 1
        stats["in_bytes"] += size
        sub._received += 1
        try:
            msg: Msg = self.msg_class(
                self, subject.decode(), reply.decode(), data, hdr, None, False, sid
            )
        except UnicodeDecodeError as exc:
            self._malformed("a message whose subject is not UTF-8 arrived; dropped", exc)
            return True
        if kind is Taken:
            sub._pending_size += weight
            queue.put_weighed(msg, weight)
        else:
            queue._on_message(msg)
        return True

    async def _process_headers(self, headers: bytes) -> dict[str, str] | None:
        if headers and len(headers) > PLAIN_BLOCK_MIN and headers[STATUS_AT] != SPACE:
            # the usual block, no inline status: what nats-py returns for it, with
            # neither its slicing and checks nor a coroutine of its own
            return parse_header_lines(headers[FIRST_LINE:]) or None
        try:
            parsed: dict[str, str] | None = await super()._process_headers(headers)
        except Exception as exc:
            self._malformed("a message with a malformed header block arrived; headers dropped", exc)
            return None
        return parsed

    async def _select_next_server(self) -> None:
        if self.reconnect_delay is not None:
            pool = self._server_pool
            failed_rounds = min((srv.reconnects for srv in pool), default=0)
            self.options["reconnect_time_wait"] = self.reconnect_delay(failed_rounds)
        await super()._select_next_server()

    def _connect_command(self) -> bytes:
        server = self._current_server
        encrypted = (
            self._server_info.get("tls_required")
            or self.options.get("tls_handshake_first")
            or (server is not None and server.uri.scheme == "wss")
        )
        if self.require_tls and not encrypted:
            raise TLSNotOffered(
                "nats: the server does not offer TLS, which this client asked for "
                "(tls:// URL, --tls-ca or --tls-cert): not sending credentials in clear"
            )
        command: bytes = super()._connect_command()
        return command


def _over_bytes(sub: Any, weight: int) -> bool:
    """Whether ``weight`` more pending bytes take ``sub`` to its limit (0: none)."""
    return bool(0 < sub._pending_bytes_limit <= sub._pending_size + weight)


class _Parser(Parser):
    """nats-py's parser, but ``MSG`` and ``HMSG`` are read by offset, with no regex
    and no coroutine for a taken-over subscription's message (``_delivered``);
    any other command line goes through nats-py's own ``parse``, one by one."""

    _awaiting = 0  # bytes to finish the message half-read at the buffer's start (appended)

    async def parse(self, data: bytes = b"") -> None:
        if self.state != AWAITING_CONTROL_LINE:  # nats-py's parse left a payload half-read
            await super().parse(data)
            return
        if self.buf:
            self.buf.extend(data)
            if len(self.buf) < self._awaiting:
                return
            data = bytes(self.buf)
        self._awaiting = 0
        nc: NatsClient = self.nc
        pos, end = 0, len(data)
        while pos < end:
            eol = data.find(b"\r\n", pos)
            if eol < 0:
                break  # the rest of the line is still to come
            args = data[pos:eol].split(b" ")  # as the server writes it: see msg_args
            op, n = args[0], len(args)
            if (
                op == b"HMSG"
                and (n == 5 or n == 6)
                and args[-1].isdigit()
                and args[-2].isdigit()
                and args[2].isdigit()
            ):
                hsize = int(args[-2])
            elif op == b"MSG" and (n == 4 or n == 5) and args[-1].isdigit() and args[2].isdigit():
                hsize = 0
            elif odd := msg_args(data[pos:eol]):
                args, n, hsize = odd  # other blanks (tabs, runs of spaces) between them
            else:  # another command (or a malformed one): nats-py's parse, for that line
                self.buf = bytearray(data[pos : eol + 2])
                await super().parse()
                pos = eol + 2
                if self.state != AWAITING_CONTROL_LINE:  # a line nats-py read as MSG
                    self.buf.extend(data[pos:])
                    await super().parse()
                    return
                if self.buf:  # unread (>= 4096 bytes): what follows may be a payload
                    raise nats.errors.ProtocolError("nats: unknown protocol")
                continue
            start = eol + 2
            stop = start + int(args[-1])
            if stop + 2 > end:
                self._awaiting = stop + 2 - pos  # the payload is still to come: this
                break  # line is read again once it has
            sid, subject = int(args[2]), args[1]
            reply = args[3] if n == (6 if op == b"HMSG" else 5) else b""
            headers = data[start : start + hsize] if hsize else None
            payload = data[start + hsize : stop]
            pos = stop + 2
            if not nc._delivered(sid, subject, reply, payload, headers):
                await nc._undelivered(sid, subject, reply, payload, headers)
        self.buf = bytearray(data[pos:])


# --- writing framed commands ------------------------------------------------


class Outbox:
    """Appends framed commands to one connection's outgoing buffer, which nats-py's
    flusher writes: the bytes on the wire are the same commands ``publish``
    sends, and the flusher still batches whatever a loop iteration produced.

    Whatever this cannot handle (a reconnect in progress, a dead flusher, a
    full buffer) goes the way nats-py's own ``publish`` goes.
    """

    __slots__ = ("_kick", "_nc")

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._kick: asyncio.Future[None] | None = None

    def append(self, commands: bytes, messages: int = 1) -> bool:
        """Append ``commands`` (``messages`` messages) and make sure the flusher runs.

        Returns True when the buffer went over its limit and the caller should
        wait for it to be written (``flush``).

        Raises:
            nats.errors.ConnectionClosedError: the connection is closed.
            nats.errors.ConnectionDrainingError: it is draining its publishers.
            nats.errors.OutboundBufferLimitError: it is reconnecting and the
                reconnect buffer is full.
        """
        nc = self._nc
        size, connected = len(commands), nc._status == Client.CONNECTED  # nc.is_connected
        if not connected:
            self._check_state(size)
        nc._pending.append(commands)
        nc._pending_data_size += size
        stats = nc.stats
        stats["out_msgs"] += messages
        stats["out_bytes"] += size
        if not connected and not nc.is_connected:  # but draining its subscriptions
            return False  # reconnecting: written once reconnected
        queue = nc._flush_queue  # kicked even when over the limit: not every caller waits
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
        return 0 < nc._max_pending_size < nc._pending_data_size

    async def flush(self) -> None:
        """Write the buffer now (nats-py's own path, which also restarts a dead flusher)."""
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


# --- reading a subscription's queue directly --------------------------------


class Taken(Handoff):
    """A callback-less subscription's queue, taken over (a ``Handoff``); what it
    holds counts in the subscription's pending bytes, as nats-py's own queue's
    messages do, so that nats-py's slow-consumer limit still holds."""

    __slots__ = ("_sub",)

    def __init__(self, sub: Subscription) -> None:
        super().__init__(sub._pending_msgs_limit)
        self._sub = sub

    def take(self) -> Msg | None:
        """The next message, no longer counted as pending; None when none waits."""
        items = self._items
        if not items:
            return None
        msg, weight = items.popleft()
        self._sub._pending_size -= weight
        if not items and self._drained is not None:
            if not self._drained.done():
                self._drained.set_result(None)
            self._drained = None
        return msg

    def over(self, max_bytes: int, max_messages: int) -> bool:
        """True while more than ``max_bytes`` (payloads and headers) or ``max_messages``
        messages wait in the queue: refused then, before nats-py's own pending
        limits would drop messages unanswered (its client-side slow consumer)."""
        return self._sub._pending_size > max_bytes or len(self._items) > max_messages


@overload
def take_over_queue(sub: Subscription) -> Taken: ...
@overload
def take_over_queue(sub: Subscription, on_message: Callable[[Msg], None]) -> None: ...


def take_over_queue(
    sub: Subscription, on_message: Callable[[Msg], None] | None = None
) -> Taken | None:
    """Read ``sub``'s messages directly (the ``Taken`` returned), or, with
    ``on_message``, have nats-py's reader hand each to it as it arrives, with no
    queue and no task switch in between (the queue then always looks empty to
    ``drain``; None is returned)."""
    if on_message is not None:
        sub._pending_queue = _Handed(sub, on_message)  # type: ignore[assignment]
        return None
    taken = Taken(sub)
    sub._pending_queue = taken  # type: ignore[assignment]
    return taken


class _Handed:
    """What nats-py's reader puts a subscription's messages in, in place of an
    ``asyncio.Queue``, when each goes straight to a function."""

    __slots__ = ("_on_message", "_sub")

    def __init__(self, sub: Subscription, on_message: Callable[[Msg], None]) -> None:
        self._sub = sub
        self._on_message = on_message

    def put_nowait(self, msg: Msg) -> None:
        self._sub._pending_size -= len(msg.data)  # nats-py counted it as queued
        self._on_message(msg)

    def qsize(self) -> int:
        return 0

    def empty(self) -> bool:
        return True

    def full(self) -> bool:
        return False

    def task_done(self) -> None:
        pass

    async def join(self) -> None:
        pass


# --- closing ----------------------------------------------------------------


def drop_reconnect_buffer(nc: Client) -> int:
    """Forget what a disconnected client buffered for the server; the bytes dropped.

    Closing while disconnected, nats-py would write that buffer to the dead
    socket and raise ConnectionResetError.
    """
    size: int = nc._pending_data_size
    nc._pending = []
    nc._pending_data_size = 0
    return size


def unread_subscriptions(nc: Client) -> list[Subscription]:
    """The subscriptions read with ``next_msg``/``messages`` (no callback): a drain
    waits for their queues to be consumed, which nobody may do any more."""
    return [sub for sub in nc._subs.values() if sub._cb is None]
