"""The reference: plain nats-py request-reply with a bytes echo responder.

The responder publishes each request's body back to its reply subject and
does nothing else; the requester sends already encoded JSON bytes and reads
the reply as bytes. That is the floor callboard is measured against: the same
payload over the same server, with none of callboard's work (codec, headers,
status events, metrics, task bookkeeping).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from ._load import Send

__all__ = ["RAW_QUEUE", "RAW_SUBJECT", "connect_raw", "raw_responder", "raw_sender"]

RAW_SUBJECT = "bench.raw.echo"
RAW_QUEUE = "bench"
"""Raw replicas share load in one queue group, as callboard's replicas do."""
REQUEST_TIMEOUT = 30.0


@asynccontextmanager
async def connect_raw(url: str, name: str) -> AsyncIterator[Client]:
    """A plain nats-py connection, drained on exit."""
    nc = await nats.connect(url, name=name)
    try:
        yield nc
    finally:
        await nc.drain()


@asynccontextmanager
async def raw_responder(nc: Client, *, hold: float = 0.0) -> AsyncIterator[None]:
    """Echo every request on ``RAW_SUBJECT`` for the duration of the block.

    Args:
        nc: the connection.
        hold: seconds to keep each request before answering (the memory
            section's "in flight"); 0 answers at once, from the callback.
    """
    async with anyio.create_task_group() as tg:

        async def reply_later(msg: Msg) -> None:
            await anyio.sleep(hold)
            await nc.publish(msg.reply, msg.data)

        async def echo(msg: Msg) -> None:
            await nc.publish(msg.reply, msg.data)

        async def echo_held(msg: Msg) -> None:
            tg.start_soon(reply_later, msg)

        sub = await nc.subscribe(RAW_SUBJECT, queue=RAW_QUEUE, cb=echo_held if hold else echo)
        await nc.flush()
        try:
            yield
        finally:
            await sub.unsubscribe()
            tg.cancel_scope.cancel()


def raw_sender(nc: Client, body: bytes) -> Send:
    """One raw request of ``body`` (the reply's bytes are not decoded)."""
    return functools.partial(nc.request, RAW_SUBJECT, body, timeout=REQUEST_TIMEOUT)
