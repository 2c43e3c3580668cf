"""The load generator: a pool of long-lived requester coroutines.

One coroutine per unit of concurrency, each sending its requests one after
another, so ``concurrency`` requests are in flight at every moment and no task
is created per request (creating one costs about as much as a request on the
loopback and would blur the difference being measured). Raw nats-py and
callboard are driven by the very same pool: only ``send`` differs.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import msgspec

from ._stats import RoundResult

__all__ = ["Send", "drive", "echo_payload"]

Send = Callable[[], Awaitable[object]]
"""Sends one request and returns when its reply has arrived (or raises)."""


def echo_payload(size: int, **extra: Any) -> dict[str, Any]:
    """``{"text": "xx…", **extra}``, exactly ``size`` bytes once encoded as compact JSON.

    Raw nats-py sends these very bytes; callboard sends the dict and encodes it.
    """
    empty = len(msgspec.json.encode({"text": "", **extra}))
    if size < empty:
        raise ValueError(f"a payload needs at least {empty} bytes, got {size}")
    return {"text": "x" * (size - empty), **extra}


async def drive(
    send: Send,
    concurrency: int,
    *,
    duration: float | None = None,
    requests: int | None = None,
) -> RoundResult:
    """Send requests from ``concurrency`` coroutines; summarise the round.

    Give either ``duration`` (each coroutine starts requests until then) or
    ``requests`` (each coroutine sends its share, in turn).

    Returns:
        The round's replies, errors, elapsed time (until the last reply) and
        latency percentiles.
    """
    if (duration is None) == (requests is None):
        raise ValueError("give either duration or requests")
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    latencies = array("d")
    record = latencies.append
    errors = 0
    clock = time.perf_counter

    async def worker(share: int, deadline: float) -> None:
        nonlocal errors
        sent = 0
        while sent < share:
            started = clock()
            if started >= deadline:
                return
            sent += 1
            try:
                await send()
            except Exception:
                errors += 1
                continue
            record(clock() - started)

    start = clock()
    async with anyio.create_task_group() as tg:
        for index in range(concurrency):
            if requests is None:
                assert duration is not None
                tg.start_soon(worker, 1 << 62, start + duration)
            else:
                share = requests // concurrency + (1 if index < requests % concurrency else 0)
                tg.start_soon(worker, share, float("inf"))
    elapsed = clock() - start
    return RoundResult.from_latencies(latencies, elapsed=elapsed, errors=errors)
