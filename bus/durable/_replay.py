"""Reading back the status events kept in the status stream.

An ordered consumer (ephemeral, flow-controlled, restarted by nats-py on a
gap) delivers the kept events from a start time and then the new ones as
they are published, so a late monitor sees the history first and then goes on
live without a gap between the two.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncGenerator

import anyio
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from .._errors import ConfigError
from ._names import DurableNames

__all__ = ["replay_status"]

_IDLE = 1.0
"""Seconds without a message after which a bounded replay has read everything."""


async def replay_status(
    js: JetStreamContext,
    names: DurableNames,
    subject: str,
    *,
    since: float | None,
    follow: bool,
) -> AsyncGenerator[Msg, None]:
    """Yield the kept status messages on ``subject`` from unix time ``since``
    (None: all kept), then, if ``follow``, new ones forever.

    Raises:
        ConfigError: there is no status stream (no daemon runs with ``[durable]``,
            or ``status_max_age`` is 0).
    """
    try:
        info = await js.stream_info(names.status_stream)
    except nats.js.errors.NotFoundError:
        raise ConfigError(
            f"no status history on prefix {names.prefix!r}: the stream {names.status_stream} "
            "does not exist; run the daemons with a [durable] section (status_max_age > 0)"
        ) from None
    if not follow and not info.state.messages:
        return
    config = api.ConsumerConfig()
    policy = api.DeliverPolicy.ALL
    if since is not None:
        policy = api.DeliverPolicy.BY_START_TIME
        config.opt_start_time = datetime.datetime.fromtimestamp(since, tz=datetime.UTC)
    sub = await js.subscribe(
        subject,
        stream=names.status_stream,
        ordered_consumer=True,
        deliver_policy=policy,
        config=config,
        idle_heartbeat=5.0,
    )
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=None if follow else _IDLE)
            except nats.errors.TimeoutError:
                if follow:
                    continue
                return
            yield msg
            if not follow and msg.metadata.num_pending == 0:
                return
    finally:
        with anyio.CancelScope(shield=True):
            try:
                await sub.unsubscribe()
            except nats.errors.Error:
                pass
