"""What callboard checks itself: inbox-only replies, cancel tokens, events bound to subjects."""

from __future__ import annotations

import hashlib

import anyio
import pytest
from prometheus_client import CollectorRegistry

from actors._capability_address import CallerCancels
from actors._pool import Running
from bus import REFUSAL_REASONS, Heartbeat, Offline, RefusalMetrics, Subjects
from bus.security import (
    CANCEL_TOKEN,
    CancelKeys,
    ReplyGuard,
    StatusBinding,
    is_inbox,
    token_matches,
)


@pytest.mark.parametrize("reply", ["_INBOX.abc.1", "_INBOX_agents.x.y", "_INBOX"])
def test_inboxes_are_answered(reply: str) -> None:
    assert is_inbox(reply)
    assert ReplyGuard("a").allows(reply)


@pytest.mark.parametrize(
    "reply",
    [
        "agents.status.math-1.offline",
        "agents.task.echo",
        "$SRV.PING",
        "$JS.API.STREAM.DELETE.X",
        "$KV.B.k",
        "_INBOX.>",
        "_INBOX.x.*",
        "elsewhere",
    ],
)
def test_every_other_reply_subject_is_refused_and_counted(reply: str) -> None:
    registry = CollectorRegistry()
    refusals = RefusalMetrics(registry)
    guard = ReplyGuard("agent a", on_refused=refusals.counter("reply_not_inbox"))
    assert not guard.allows(reply)
    assert not guard.allows(reply)
    assert guard.allows("_INBOX.x.1")
    assert guard.refused == 2
    assert refused(registry, "reply_not_inbox") == 2


def refused(registry: CollectorRegistry, reason: str) -> float | None:
    return registry.get_sample_value("callboard_refused_messages_total", {"reason": reason})


def test_every_refusal_reason_is_exported_from_the_start_at_zero() -> None:
    registry = CollectorRegistry()
    RefusalMetrics(registry)
    assert {reason: refused(registry, reason) for reason in REFUSAL_REASONS} == dict.fromkeys(
        REFUSAL_REASONS, 0.0
    )


@pytest.mark.anyio
async def test_a_cancel_without_the_callers_token_is_counted_and_the_callers_is_not() -> None:
    registry = CollectorRegistry()
    cancels = CallerCancels("agent a", on_refused=RefusalMetrics(registry).counter("cancel_token"))
    keys, others = CancelKeys(), CancelKeys()
    mine, theirs = Running(anyio.CancelScope()), Running(anyio.CancelScope())
    mine.cancel_hash, theirs.cancel_hash = keys.hash_of("t-1"), others.hash_of("t-1")
    running = [mine, theirs]  # two callers' tasks under one id
    assert cancels.chosen("t-1", {CANCEL_TOKEN: keys.token("t-1")}, running) == [mine]
    assert cancels.chosen("t-1", {CANCEL_TOKEN: others.token("t-1")}, running) == [theirs]
    assert cancels.chosen("t-1", {CANCEL_TOKEN: CancelKeys().token("t-1")}, running) == []
    assert cancels.chosen("t-1", None, running) == []
    assert cancels.refused == 2
    assert refused(registry, "cancel_token") == 2


def test_only_the_callers_token_matches_the_hash_its_task_carried() -> None:
    caller, other = CancelKeys(), CancelKeys()
    expected = caller.hash_of("task-1")
    assert token_matches(expected, caller.token("task-1"))
    assert not token_matches(expected, other.token("task-1"))
    assert not token_matches(expected, caller.token("task-2"))
    assert not token_matches(expected, expected)  # the hash is not the token
    assert not token_matches(None, caller.token("task-1"))
    assert not token_matches(expected, None)
    assert not token_matches(expected, "x" * 10_000)


def test_the_hash_a_task_carries_is_blake2b_128_of_its_token() -> None:
    # wire protocol v1: Agent-Cancel-Hash is the hex BLAKE2b-128 of the token
    keys = CancelKeys(b"k" * 32)
    for task_id in ("task-1", "é", "x" * 128):
        token = keys.token(task_id)
        assert keys.hash_of(task_id) == hashlib.blake2b(token.encode(), digest_size=16).hexdigest()
        assert token == hashlib.blake2b(task_id.encode(), key=b"k" * 32, digest_size=16).hexdigest()


def test_an_event_is_believed_only_for_the_agent_and_state_of_its_subject() -> None:
    registry = CollectorRegistry()
    on_rejected = RefusalMetrics(registry).counter("status_body_mismatch")
    binding = StatusBinding(Subjects(), on_rejected=on_rejected)
    beat = Heartbeat(agent="math-1", ts=0.0)
    assert binding.accepts("agents.status.math-1.heartbeat", beat)
    assert not binding.accepts("agents.status.math.heartbeat", beat)
    assert not binding.accepts("agents.status.math-1.offline", beat)
    assert not binding.accepts("agents.status.math-1", Offline(agent="math-1", ts=0.0))
    assert binding.rejected == 3
    assert refused(registry, "status_body_mismatch") == 3
