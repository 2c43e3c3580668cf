"""What callboard checks itself: inbox-only replies, cancel tokens, events bound to subjects."""

from __future__ import annotations

import hashlib

import pytest

from bus import Heartbeat, Offline, Subjects
from bus.security import CancelKeys, ReplyGuard, StatusBinding, is_inbox, token_matches


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
    guard = ReplyGuard("agent a")
    assert not guard.allows(reply)
    assert not guard.allows(reply)
    assert guard.refused == 2


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
    binding = StatusBinding(Subjects())
    beat = Heartbeat(agent="math-1", ts=0.0)
    assert binding.accepts("agents.status.math-1.heartbeat", beat)
    assert not binding.accepts("agents.status.math.heartbeat", beat)
    assert not binding.accepts("agents.status.math-1.offline", beat)
    assert not binding.accepts("agents.status.math-1", Offline(agent="math-1", ts=0.0))
    assert binding.rejected == 3
