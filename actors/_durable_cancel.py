"""The checks a durable worker makes of a task's cancel request, before it runs
the task and before it stores the result.

The request is read after the task is recorded ``working``, so a caller that
read the record before that (and said "cancelled") is never contradicted; and
again before a result is recorded, so a cancel that came while the task ran
ends it ``cancelled`` even if its broadcast came too early to stop it.

Any submitter may write ``<capability>.<task_id>.cancel``; only a request whose
token hashes to the job's ``Agent-Cancel-Hash`` is the caller's (see
``bus.durable._cancel``). Any other is logged and counted in the store
(``TaskStore.forged_cancels``), and the task goes on.
"""

from __future__ import annotations

import logging

from bus._cancel_token import CANCEL_HASH
from bus.durable import TRANSIENT, TaskStore, request_matches

__all__ = ["CancelRequests", "recorded_hash"]

log = logging.getLogger("callboard.durable")

_MAX_HASH = 128
"""Characters of an ``Agent-Cancel-Hash`` worth keeping (a real one has 32)."""


def recorded_hash(headers: dict[str, str]) -> str:
    """The job's ``Agent-Cancel-Hash`` for its record; a value far longer than a hash
    (which no token can match) is left out, so that the record fits with a result."""
    cancel_hash = headers.get(CANCEL_HASH, "")
    return cancel_hash if len(cancel_hash) <= _MAX_HASH else ""


class CancelRequests:
    """Reads and checks the cancel requests of one agent's durable tasks.

    Attributes:
        unchecked: tasks run without their request read (it could not be).
    """

    def __init__(self, store: TaskStore, agent_id: str) -> None:
        self.store = store
        self.agent_id = agent_id
        self.unchecked = 0

    async def by_caller(self, capability: str, task_id: str, headers: dict[str, str]) -> bool:
        """Whether the task's caller asked to cancel it: a stored request whose token
        hashes to the job's ``Agent-Cancel-Hash`` (any other is counted and ignored).

        Raises:
            TRANSIENT errors: the request could not be read.
        """
        request = await self.store.cancel_request(capability, task_id)
        if request is None:
            return False
        if request_matches(request, headers.get(CANCEL_HASH, "")):
            return True
        self.store.count_forged(capability, task_id, request)
        return False

    async def before_run(self, capability: str, task_id: str, headers: dict[str, str]) -> bool:
        """``by_caller``, read once the task is recorded ``working``. A request that
        cannot be read just after that write is most likely one this user may not
        read (an ``accounts.conf`` without the ``….cancel`` grant): logged, counted,
        and the task runs."""
        try:
            return await self.by_caller(capability, task_id, headers)
        except TRANSIENT as exc:
            self.unchecked += 1
            log.warning(
                "agent %s: could not read the cancel request of task %s (%s): it runs "
                "unchecked; may this user read $KV.%s.%s.*.cancel?",
                self.agent_id,
                task_id,
                type(exc).__name__,
                self.store.names.bucket,
                capability,
            )
            return False

    async def after_run(self, capability: str, task_id: str, headers: dict[str, str]) -> bool:
        """``by_caller`` before a result is stored: a cancel that came while the task
        ran, whose broadcast may have come before the runner knew the task. Unreadable
        for now: the result stands."""
        try:
            return await self.by_caller(capability, task_id, headers)
        except TRANSIENT as exc:
            log.info("reading the cancel request of task %s failed: %s", task_id, exc)
            return False
