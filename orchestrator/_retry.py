"""Retry policy for dispatch: which failures to retry, how long to wait between.

Every attempt keeps the task ID, so an agent can tell a retry from a new task.

``RetryPolicy()`` is sized to outlast the loss of a cluster node (issue 15.8):
when the node the agents are connected to dies, their daemon reconnects through
another node in about 0.15-0.2 s (seconds on a loaded machine), and meanwhile
every task gets "no responders". The default waits 0.1, 0.2, 0.4, 0.8, 1.6, 2
and 2 s between its 8 attempts (each +/-50%), so it keeps trying for 3.5-10.6
s; the old default (3 attempts from 0.05 s) gave up after 75-225 ms.

What it retries is what cannot have run, plus what may have been lost with the
node: "no responders" (nobody had the task), 503 (the agent refused it:
overloaded or draining), a send refused while the caller's own connection is
down (nothing was sent), and a timeout (the request or its reply was lost; the
timed-out attempt is cancelled by task ID first). Never another 4xx nor a 500:
those would fail again.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable

import anyio
import msgspec
import nats.errors

from bus import (
    AgentError,
    AgentMessage,
    CallboardError,
    ConnectionFailed,
    DispatchError,
    NoAgentError,
    TaskTimeout,
)

__all__ = ["NO_RETRY", "RetryPolicy", "send_with_retry"]

log = logging.getLogger("callboard.orchestrator")


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How to retry a failed dispatch (the defaults outlast a cluster node's loss).

    Attributes:
        attempts: total tries, the first included (1 = no retry).
        backoff: seconds before the first retry.
        multiplier: growth of the wait per retry.
        max_backoff: cap on the wait.
        jitter: +/- fraction of random spread on each wait, so that callers
            that failed together do not retry together.
        retry_no_agent: retry when nobody serves the capability (yet).
        retry_timeout: retry when an attempt got no reply in time. The request
            may have been lost, or only the reply: a task whose reply was lost
            runs again, so turn this off for tasks that must not run twice
            (or have the agent skip a task ID it has done, or use durable tasks).
        retry_disconnected: retry a send refused because the caller's own
            connection is reconnecting (its buffer full: nothing was sent).
        retry_codes: agent error codes to retry.
    """

    attempts: int = 8
    backoff: float = 0.1
    multiplier: float = 2.0
    max_backoff: float = 2.0
    jitter: float = 0.5
    retry_no_agent: bool = True
    retry_timeout: bool = True
    retry_disconnected: bool = True
    retry_codes: frozenset[int] = frozenset({503})

    def should_retry(self, error: CallboardError) -> bool:
        """Whether ``error`` is worth another attempt under this policy."""
        if isinstance(error, NoAgentError):
            return self.retry_no_agent
        if isinstance(error, TaskTimeout):  # the agent's 408 too: which timer fires is a race
            return self.retry_timeout
        if isinstance(error, AgentError):
            return error.code in self.retry_codes
        if isinstance(error, ConnectionFailed):
            return self.retry_disconnected and isinstance(
                error.__cause__, nats.errors.OutboundBufferLimitError
            )
        return False

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        base = min(self.max_backoff, self.backoff * self.multiplier ** (retry - 1))
        return max(0.0, base * (1 + random.uniform(-self.jitter, self.jitter)))


NO_RETRY = RetryPolicy(attempts=1)
"""The default: one attempt, failures raised as they come."""


async def send_with_retry(
    send: Callable[[], Awaitable[AgentMessage]],
    policy: RetryPolicy,
    *,
    task_id: str,
    on_retry: Callable[[], None],
) -> AgentMessage:
    """``send()`` until it answers or ``policy`` gives up; ``on_retry`` before each retry.

    Raises:
        DispatchError: the last attempt's error, or the first one not worth retrying.
        ConnectionFailed: likewise, when the caller's own connection refused the send.
    """
    for attempt in range(1, policy.attempts + 1):
        try:
            return await send()
        except (DispatchError, ConnectionFailed) as exc:
            if attempt >= policy.attempts or not policy.should_retry(exc):
                raise
            delay = policy.delay(attempt)
            log.info(
                "task %s attempt %d/%d failed (%s); retrying in %.3fs",
                task_id,
                attempt,
                policy.attempts,
                exc.type,
                delay,
            )
            on_retry()
            await anyio.sleep(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")
