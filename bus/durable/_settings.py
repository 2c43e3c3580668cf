"""Settings of durable (JetStream) dispatch, as the daemon config's ``[durable]``.

Every value has a default that suits one server on one machine; a cluster
raises ``replicas``. The same settings are applied idempotently by every
daemon at start-up, so the last daemon started wins a changed limit.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

__all__ = ["DurableSettings"]


class DurableSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """How the streams, consumers and the task bucket are configured.

    Attributes:
        storage: ``file`` (survives a server restart) or ``memory``.
        replicas: copies of each stream in a JetStream cluster (1, 3 or 5).
        task_max_age: seconds a task may wait in the work queue for an agent.
        result_ttl: seconds a task's record (state, result, error) is kept.
        history: records kept per task in the bucket (each state change is one).
        ack_wait: seconds without an ack or a "working" signal after which the
            server hands a task to another replica; a running task signals
            every third of it, so a crashed agent's task moves on this quickly.
        max_deliver: attempts before a task that keeps failing with a retryable
            error (5xx, 408) goes to the dead-letter subject.
        retry_delay: seconds before the first retry; doubled per attempt.
        status_max_age: seconds of status events kept for replay
            (``callboard monitor --since``, ``callboard history``); 0 keeps none.
        max_bytes: upper bound on each stream's size; -1 is unlimited.
        max_ack_pending: tasks the shared consumer of a capability hands out
            before any is acknowledged, over all its replicas; None is the
            agent's ``max_concurrency``. With N replicas set N times that, or
            they cannot all be busy (each never runs more than its own
            ``max_concurrency``).
        duplicate_window: seconds in which the server drops a second job with
            the same task ID (``Nats-Msg-Id``) unstored. Past it, the task's
            record still keeps a resubmitted task from running twice; the
            window only saves the copy a trip to an agent.
    """

    storage: Literal["file", "memory"] = "file"
    replicas: Annotated[int, msgspec.Meta(ge=1, le=5)] = 1
    task_max_age: Annotated[float, msgspec.Meta(gt=0)] = 7 * 24 * 3600.0
    result_ttl: Annotated[float, msgspec.Meta(gt=0)] = 24 * 3600.0
    history: Annotated[int, msgspec.Meta(ge=1, le=64)] = 16
    ack_wait: Annotated[float, msgspec.Meta(ge=1)] = 30.0
    max_deliver: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 5
    retry_delay: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    status_max_age: Annotated[float, msgspec.Meta(ge=0)] = 24 * 3600.0
    max_bytes: Annotated[int, msgspec.Meta(ge=-1)] = -1
    max_ack_pending: Annotated[int, msgspec.Meta(ge=1)] | None = None
    duplicate_window: Annotated[float, msgspec.Meta(ge=0.1)] = 120.0

    def retry_after(self, attempt: int) -> float:
        """Seconds before retrying after failed attempt number ``attempt`` (1-based)."""
        delay: float = self.retry_delay * 2.0 ** max(attempt - 1, 0)
        return min(delay, self.ack_wait * 10)
