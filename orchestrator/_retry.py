"""Retry policy for dispatch: which failures to retry, how long to wait between.

Every attempt keeps the task ID, so an agent can tell a retry from a new task.
By default "no responders", timeouts and 503 (overloaded, draining) are
retried, never a 4xx: bad input stays bad however often it is sent.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable

import anyio
import msgspec

from bus import AgentError, AgentMessage, DispatchError, NoAgentError, TaskTimeout

__all__ = ["NO_RETRY", "RetryPolicy", "send_with_retry"]

log = logging.getLogger("callboard.orchestrator")


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How to retry a failed dispatch.

    Attributes:
        attempts: total tries, the first included (1 = no retry).
        backoff: seconds before the first retry.
        multiplier: growth of the wait per retry.
        max_backoff: cap on the wait.
        jitter: +/- fraction of random spread on each wait, so that callers
            that failed together do not retry together.
        retry_no_agent: retry when nobody serves the capability (yet).
        retry_timeout: retry when an attempt got no reply in time.
        retry_codes: agent error codes to retry.
    """

    attempts: int = 3
    backoff: float = 0.05
    multiplier: float = 2.0
    max_backoff: float = 2.0
    jitter: float = 0.5
    retry_no_agent: bool = True
    retry_timeout: bool = True
    retry_codes: frozenset[int] = frozenset({503})

    def should_retry(self, error: DispatchError) -> bool:
        """Whether ``error`` is worth another attempt under this policy."""
        if isinstance(error, NoAgentError):
            return self.retry_no_agent
        if isinstance(error, TaskTimeout):
            return self.retry_timeout
        if isinstance(error, AgentError):
            return error.code in self.retry_codes
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
    """
    for attempt in range(1, policy.attempts + 1):
        try:
            return await send()
        except DispatchError as exc:
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
