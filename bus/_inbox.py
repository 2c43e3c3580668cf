"""Request-reply on one connection: a wildcard inbox subscription and a future per request.

nats-py's ``request`` does the same with a 26-character token, a done-callback
and ``asyncio.wait_for`` per call; here a request is a counter token and a
future. The request goes out through ``Wire`` with its header block already framed.

Timeouts share one timer per connection: requests made with the same timeout
(the usual case: the default) expire in the order they were made, so their
deadlines sit in an insertion-ordered dict and one event-loop timer waits for
the earliest. A request whose deadline falls before one already waiting (a
shorter timeout) gets a timer of its own. Either way it is answered with
``TimeoutError`` at its deadline, as ``loop.call_later`` would, without a timer
handle made, pushed on the loop's heap and cancelled per request.

A reply does not pass through a subscription task either: the inbox
subscription has no callback, and nats-py's reader hands each reply straight
to ``on_reply`` (``_natspy.take_over_queue``), which resolves the waiting
future at once. That saves a task switch per reply.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from itertools import count

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from ._natspy import take_over_queue
from ._wire import Wire, wire_for

__all__ = ["Inbox", "inbox_for"]

_STATUS = "Status"
_NO_RESPONDERS = "503"


def _expire(future: asyncio.Future[Msg | None]) -> None:
    if not future.done():
        future.set_result(None)


def _fire(inbox: weakref.ref[Inbox], loop: asyncio.AbstractEventLoop) -> None:
    alive = inbox()  # a weak reference: an armed timer does not keep a connection alive
    if alive is not None:
        alive._expire_due(loop)


_NEVER = float("inf")
_CLOCK_RESOLUTION = time.get_clock_info("monotonic").resolution
"""How early the event loop runs a timer (``BaseEventLoop._clock_resolution``)."""
_REARM_AFTER = 0.001
"""The shared timer waits at least this long for the next deadline: uvloop's timers
count whole milliseconds, so a sooner one could fire early and spin, and deadlines
on the wire are in milliseconds anyway (a timeout fires at most this late)."""


class Inbox:
    """The reply side of one connection's requests. Use ``inbox_for(nc)``."""

    __slots__ = (
        "__weakref__",
        "_deadlines",
        "_latest",
        "_nc",
        "_prefix",
        "_starting",
        "_sub",
        "_timer",
        "_timer_at",
        "_tokens",
        "_waiting",
        "wire",
    )

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self.wire: Wire = wire_for(nc)
        self._prefix = ""
        self._sub: Subscription | None = None
        self._starting: asyncio.Lock | None = None
        self._tokens = count()
        self._waiting: dict[str, asyncio.Future[Msg | None]] = {}
        # the requests the shared timer expires: token -> loop time of its deadline,
        # in the order made, which is deadline order (see the module docstring)
        self._deadlines: dict[str, float] = {}
        self._latest = -_NEVER  # the last deadline in ``_deadlines``
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = _NEVER  # when ``_timer`` fires

    async def _start(self) -> None:
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._sub is not None:
                return
            inbox = self._nc.new_inbox()
            sub = await self._nc.subscribe(inbox + ".*")
            take_over_queue(sub, self.on_reply)
            self._prefix = inbox + "."
            self._sub = sub

    def on_reply(self, msg: Msg) -> None:
        """Hand a reply to the request waiting for it (if it still waits)."""
        future = self._waiting.pop(msg.subject[len(self._prefix) :], None)
        if future is not None and not future.done():
            future.set_result(msg)

    async def request(self, subject: str, headers: bytes, body: bytes, timeout: float) -> Msg:
        """Send one request (``headers`` a ``header_block``) and wait for its reply.

        Raises:
            nats.errors.NoRespondersError: nobody listens on ``subject``.
            nats.errors.TimeoutError: no reply within ``timeout`` seconds.
            nats.errors.Error: what nats-py's ``publish`` raises (closed,
                draining, reconnect buffer full, payload too large).
            ValueError: ``timeout`` is NaN.
        """
        if self._sub is None:
            await self._start()
        token = str(next(self._tokens))
        frame = self.wire.hpub(subject, self._prefix + token, headers, body)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Msg | None] = loop.create_future()
        waiting = self._waiting
        waiting[token] = future
        deadlines = self._deadlines
        when = loop.time() + timeout
        timer = None
        if when >= self._latest:  # in order: the shared timer expires it
            self._latest = deadlines[token] = when
            if when < self._timer_at:
                self._arm(loop, when)
        elif when != when:  # NaN (never in order): on the loop's timer heap it would
            del waiting[token]  # hold back every other timer of the process
            raise ValueError(f"the timeout of a request must be a number, not {timeout}")
        else:
            timer = loop.call_at(when, _expire, future)
        try:
            if self.wire.write_nowait(frame):  # over the buffer's limit: wait for it
                await self.wire.flush()
            msg = await future
        finally:
            if timer is not None:
                timer.cancel()
            waiting.pop(token, None)
            if deadlines.pop(token, None) is not None and not deadlines:
                self._latest = -_NEVER  # none waits: any deadline is in order again
        if msg is None:
            raise nats.errors.TimeoutError
        reply_headers = msg.headers
        if reply_headers and reply_headers.get(_STATUS) == _NO_RESPONDERS:
            raise nats.errors.NoRespondersError
        return msg

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(when, _fire, weakref.ref(self), loop)
        self._timer_at = when

    def _expire_due(self, loop: asyncio.AbstractEventLoop) -> None:
        """The shared timer: expire the requests whose deadline has come, re-arm
        for the next one."""
        self._timer = None
        self._timer_at = _NEVER
        now = loop.time() + _CLOCK_RESOLUTION  # as the loop decides that a timer is due
        deadlines = self._deadlines
        waiting = self._waiting
        while deadlines:
            token = next(iter(deadlines))
            when = deadlines[token]
            if when > now:
                self._arm(loop, max(when, now + _REARM_AFTER))
                return
            del deadlines[token]
            future = waiting.get(token)  # the request pops it when it wakes
            if future is not None and not future.done():
                future.set_result(None)
        self._latest = -_NEVER


_inboxes: weakref.WeakKeyDictionary[Client, Inbox] = weakref.WeakKeyDictionary()


def inbox_for(nc: Client) -> Inbox:
    """The ``Inbox`` of a connection (made on first use)."""
    inbox = _inboxes.get(nc)
    if inbox is None:
        inbox = _inboxes[nc] = Inbox(nc)
    return inbox
