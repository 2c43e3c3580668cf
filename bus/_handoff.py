"""A queue one reader takes messages from by a plain call: what a taken-over
subscription's messages wait in (``_natspy.Taken`` adds the subscription's
pending-bytes accounting). A deque and a future: ``asyncio.Queue``'s ``get`` and
``task_done`` cost more than a task of the echo agent's."""

from __future__ import annotations

import asyncio
from collections import deque

from nats.aio.msg import Msg

__all__ = ["Handoff"]


class Handoff:
    """nats-py's reader puts each message in it as in its own ``asyncio.Queue``;
    the one reader takes them (``Taken.take``) and awaits ``wait`` only when
    none is there.

    Args:
        limit: messages it holds at most (0: no limit); beyond, ``put_nowait``
            raises ``QueueFull`` and nats-py drops the message as a slow consumer.
    """

    __slots__ = ("_drained", "_items", "_limit", "_waiter", "stopped")

    def __init__(self, limit: int) -> None:
        self._items: deque[tuple[Msg, int]] = deque()  # and the bytes it counts as pending
        self._limit = limit
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self.stopped = False  # then ``take`` returning None means for good

    def put_nowait(self, msg: Msg) -> None:
        """Queue ``msg`` (nats-py has counted its payload as pending) and wake the reader."""
        if self._limit > 0 and len(self._items) >= self._limit:
            raise asyncio.QueueFull  # nats-py's reader: a slow consumer, dropped
        self.put_weighed(msg, len(msg.data))

    def put_weighed(self, msg: Msg, weight: int) -> None:
        """Queue ``msg``, counted as ``weight`` pending bytes (payload and headers:
        a flood of large header blocks would slip past a payload-only budget)."""
        self._items.append((msg, weight))
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return 0 < self._limit <= len(self._items)

    async def join(self) -> None:
        """Until every message queued has been taken (a drain waits for this)."""
        while self._items:
            if self._drained is None or self._drained.done():
                self._drained = asyncio.get_running_loop().create_future()
            await self._drained

    async def wait(self) -> None:
        """Until a message waits or ``stop`` is called."""
        if self._items or self.stopped:
            return
        waiter = self._waiter
        if waiter is None or waiter.done():
            waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            if self._waiter is waiter:
                self._waiter = None

    def stop(self) -> None:
        """Wake the reader; ``take`` gives None once the queue is empty (the
        subscription is drained or gone)."""
        self.stopped = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
