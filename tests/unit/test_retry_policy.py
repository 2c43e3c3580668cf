"""What ``RetryPolicy()`` retries, and for how long (issue 15.8).

The failover itself is tested on a real cluster in
``tests/system/test_cluster_failover.py``; here, the policy's arithmetic and
classification, which that test cannot pin down (it sees one run's timing).
"""

from __future__ import annotations

import nats.errors
import pytest

from bus import (
    AgentError,
    AgentMessage,
    AgentOverloaded,
    BadInput,
    CallboardError,
    ConfigError,
    ConnectionFailed,
    DeadlineExceeded,
    DelegationError,
    MessageType,
    NoAgentError,
    TaskTimeout,
)
from orchestrator import RetryPolicy
from orchestrator._retry import send_with_retry

pytestmark = pytest.mark.anyio

FAILOVER_SECONDS = 2.0
"""A daemon's reconnection through another node: 0.15-0.2 s measured, 2 s allowed for load."""


def worst_case_waits(policy: RetryPolicy, shortest: bool) -> float:
    """The policy's total wait over all its retries with the jitter at one extreme."""
    spread = 1 - policy.jitter if shortest else 1 + policy.jitter
    return sum(
        min(policy.max_backoff, policy.backoff * policy.multiplier ** (retry - 1)) * spread
        for retry in range(1, policy.attempts)
    )


def test_the_default_keeps_retrying_past_a_slow_failover_and_then_gives_up() -> None:
    policy = RetryPolicy()
    assert worst_case_waits(policy, shortest=True) > FAILOVER_SECONDS
    # ... and a capability that nobody serves is still reported within seconds
    assert worst_case_waits(policy, shortest=False) < 15.0


def caused_by(cause: BaseException) -> ConnectionFailed:
    try:
        raise ConnectionFailed("cannot send task t-1") from cause
    except ConnectionFailed as exc:
        return exc


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (NoAgentError("no responders"), True),
        (TaskTimeout("no reply"), True),
        (DeadlineExceeded("stopped at its deadline", code=408), True),
        (AgentOverloaded("at its limit", code=503), True),
        (caused_by(nats.errors.OutboundBufferLimitError()), True),
        (caused_by(nats.errors.ConnectionClosedError()), False),
        (AgentError("bad input", code=400), False),
        (AgentError("crashed", code=500), False),
        (DelegationError("cycle", code=409), False),
        (BadInput("not JSON"), False),
        (ConfigError("bad flag"), False),
    ],
    ids=lambda value: type(value).__name__ if not isinstance(value, bool) else str(value),
)
def test_the_default_retries_what_cannot_have_run_or_was_lost(
    error: CallboardError, retried: bool
) -> None:
    assert RetryPolicy().should_retry(error) is retried


async def test_a_send_refused_while_reconnecting_is_sent_again() -> None:
    attempts: list[int] = []
    reply = AgentMessage(type=MessageType.RESULT, task_id="t-1", id="t-1", payload=42)

    async def send() -> AgentMessage:
        attempts.append(len(attempts) + 1)
        if len(attempts) == 1:
            raise caused_by(nats.errors.OutboundBufferLimitError())
        return reply

    policy = RetryPolicy(backoff=0.001, jitter=0.0)
    assert await send_with_retry(send, policy, task_id="t-1", on_retry=lambda: None) is reply
    assert attempts == [1, 2]
