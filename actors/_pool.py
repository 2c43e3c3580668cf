"""The agent runner's worker pool: the jobs it hands out, the subscriptions its
workers lead, the cancel scope each worker runs its tasks in, and how a
handler that has already taken its first step is awaited to the end.
"""

from __future__ import annotations

import asyncio
import types
from collections import deque
from collections.abc import Awaitable, Coroutine, Generator
from typing import Any

import anyio
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bus import CapabilitySeries
from bus.wire import take_over_queue

__all__ = ["Intake", "Jobs", "Running", "as_coroutine", "resume"]


class Intake:
    """One capability's subscription, read by whichever worker leads it.

    The subscription has no callback: nats-py queues its messages and the
    leader takes them off that queue directly (``bus.take_over_queue``).
    """

    __slots__ = ("capability", "series", "sub", "taken")

    def __init__(self, capability: str, sub: Subscription, series: CapabilitySeries | None) -> None:
        self.capability = capability
        self.sub = sub
        self.taken = take_over_queue(sub)
        self.series = series

    def stop(self) -> None:
        """Send its leader back to the pool (the subscription is drained or gone)."""
        self.taken.stop()


class Jobs:
    """Work for the pool: tasks admitted on the direct address, and intakes
    whose leader is waiting on its own task and needs a successor.

    A deque and a future per idle worker: a job wakes one worker directly,
    with none of a memory stream's checkpoints.
    """

    __slots__ = ("_items", "_waiters", "closed")

    def __init__(self) -> None:
        self._items: deque[tuple[str, Msg] | Intake] = deque()
        self._waiters: deque[asyncio.Future[tuple[str, Msg] | Intake | None]] = deque()
        self.closed = False

    def put(self, job: tuple[str, Msg] | Intake) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(job)
                return
        self._items.append(job)

    async def get(self) -> tuple[str, Msg] | Intake | None:
        """The next task or intake to lead, or None once closed and empty."""
        if self._items:
            return self._items.popleft()
        if self.closed:
            return None
        waiter: asyncio.Future[tuple[str, Msg] | Intake | None]
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            # cancelled after being handed a task: give it to another worker
            if waiter.done() and not waiter.cancelled():
                job = waiter.result()
                if job is not None:
                    self._items.appendleft(job)
            raise

    def close(self) -> None:
        """Let the workers end once the tasks already admitted have been taken."""
        self.closed = True
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


@types.coroutine
def resume(coro: Coroutine[Any, Any, Any], yielded: Any) -> Generator[Any, Any, Any]:
    """Await ``coro`` from where its first step stopped (``yielded`` is what that
    step yielded): what ``await coro`` would do for the rest of its run."""
    while True:
        try:
            sent = yield yielded
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            try:
                yielded = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration as stop:
                return stop.value


class Running:
    """The cancel scope a task runs in, why it was cancelled, and the task
    itself while it waits (what a worker needs to answer it if cut short).

    A pool worker keeps one scope for task after task (entering an anyio
    scope per task costs more than many a task): a task that waits gets the
    scope's deadline and a place among the tasks ``cancel`` can reach, and
    gives both back when it ends; a scope that cancelled one is replaced.
    ``execute`` (a durable task) gets a scope of its own.
    """

    __slots__ = ("cancel_hash", "cancel_reason", "cancelled", "scope", "task", "time_left")

    def __init__(self, scope: anyio.CancelScope) -> None:
        self.scope = scope
        self.cancel_hash: str | None = None
        """The ``Agent-Cancel-Hash`` of the task while it waits: only its caller cancels it."""
        self.cancel_reason = ""
        self.cancelled = False
        self.task: tuple[str, Msg, str, int] | None = None
        """(capability, message, task id, start in perf_counter ns) while it waits."""
        self.time_left = 0.0


async def as_coroutine(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
