"""Following the status stream: decoding events and printing one line each."""

from __future__ import annotations

import datetime
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext

from bus import STATUS_EVENT_TYPES, Failed, StatusEvent, Subjects, TaskEvent
from bus.durable import DurableNames, replay_status

__all__ = [
    "decode_status",
    "follow_status",
    "format_status",
    "replay_and_follow_status",
    "status_subject",
]

_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(STATUS_EVENT_TYPES)
_fallback: msgspec.json.Decoder[Any] = msgspec.json.Decoder()


def decode_status(data: bytes) -> StatusEvent | dict[str, Any] | None:
    """A status event; a plain dict for a state this version does not know; None if not JSON."""
    try:
        event: StatusEvent = _decoder.decode(data)
        return event
    except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
        pass  # RecursionError: nested past msgspec's limit (a publisher's choice)
    try:
        raw = _fallback.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    return raw if isinstance(raw, dict) else None


def status_subject(subjects: Subjects, agent: str | None, state: str | None) -> str:
    """The subject that selects events of one agent and/or one state (server-side filter)."""
    if agent is None and state is None:
        return subjects.all_status()
    agent_token = subjects.status_prefix(agent) if agent else f"{subjects.prefix}.status.*."
    return agent_token + (state or "*")


async def follow_status(
    nc: Client,
    subject: str,
    *,
    on_ready: Callable[[], None] | None = None,
    prepare: Callable[[], Awaitable[None]] | None = None,
) -> AsyncGenerator[tuple[str, StatusEvent | dict[str, Any] | None, bytes], None]:
    """Yield ``(subject, event, raw bytes)`` for every status message, forever.

    ``on_ready`` is called once the server has confirmed the subscription, so a
    caller can say "following" only when no event can be missed any more.
    ``prepare``, if given, is awaited just before: a discovery, say, whose
    snapshot the events received meanwhile (held until it is done) then update.
    """
    sub = await nc.subscribe(subject)
    await nc.flush()
    if prepare is not None:
        await prepare()
    if on_ready is not None:
        on_ready()
    try:
        async for msg in sub.messages:
            yield msg.subject, decode_status(msg.data), msg.data
    finally:
        await sub.unsubscribe()


async def replay_and_follow_status(
    nc: Client,
    subjects: Subjects,
    subject: str,
    *,
    since: float,
    on_ready: Callable[[], None] | None = None,
    on_no_history: Callable[[str], None] | None = None,
) -> AsyncGenerator[tuple[str, StatusEvent | dict[str, Any] | None, bytes], None]:
    """Like ``follow_status``, but first the events kept in the status stream
    since unix time ``since`` (one ordered consumer: no gap, no repeat).

    Without a status stream there is nothing to replay: ``on_no_history`` is
    told why (before ``on_ready``) and the live events follow alone.
    """
    names = DurableNames(subjects.prefix)
    js = nc.jetstream()
    missing = await _no_history(js, names)
    if missing is not None:
        if on_no_history is not None:
            on_no_history(missing)
        async with aclosing(follow_status(nc, subject, on_ready=on_ready)) as live:
            async for item in live:
                yield item
        return
    replay = replay_status(js, names, subject, since=since, follow=True)
    async with aclosing(replay):
        if on_ready is not None:
            on_ready()
        async for msg in replay:
            yield msg.subject, decode_status(msg.data), msg.data


async def _no_history(js: JetStreamContext, names: DurableNames) -> str | None:
    """Why no status event is kept for ``names``' prefix (None: its stream exists)."""
    try:
        await js.stream_info(names.status_stream)
    except nats.js.errors.NotFoundError:
        return (
            f"prefix {names.prefix!r} has no status stream {names.status_stream} (it is created "
            "by 'callboard setup' or by a daemon with a [durable] section, and keeps events "
            "only while status_max_age > 0)"
        )
    except (nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError):
        return "the NATS server has no JetStream (start it with -js), so it keeps no events"
    return None


def format_status(event: StatusEvent | dict[str, Any] | None, raw: bytes = b"") -> str:
    """One readable line: time, agent, state, capability, task, timing, error."""
    if event is None:
        return f"(not JSON) {raw[:120]!r}"
    if isinstance(event, dict):
        ts = event.get("ts", 0.0)
        agent, state = event.get("agent", "?"), event.get("state", "?")
        return f"{_clock(ts)}  {agent:<24} {state:<10} {msgspec.json.encode(event).decode()}"
    state = event.__struct_config__.tag
    parts = [f"{_clock(event.ts)}  {event.agent:<24} {state!s:<10}"]
    if isinstance(event, TaskEvent):
        parts.append(f"{event.capability:<12} task={event.task_id}")
        elapsed = getattr(event, "elapsed_ms", None)
        if elapsed:
            parts.append(f"{elapsed:.1f}ms")
        if isinstance(event, Failed) and event.error is not None:
            parts.append(f"error {event.error.code} {event.error.type}: {event.error.message}")
        message = getattr(event, "message", "")
        if message:
            parts.append(message)
    else:
        for field in ("capabilities", "in_flight", "max_concurrency", "reason"):
            value = getattr(event, field, None)
            if value not in (None, "", ()):
                shown = ",".join(value) if isinstance(value, tuple) else value
                parts.append(f"{field}={shown}")
    return " ".join(parts)


def _clock(ts: float) -> str:
    try:
        return datetime.datetime.fromtimestamp(float(ts)).strftime("%H:%M:%S.%f")[:-3]
    except (TypeError, ValueError, OverflowError, OSError):
        return "??:??:??.???"
