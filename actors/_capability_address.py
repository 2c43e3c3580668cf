"""An agent's direct addresses, and what it checks before it answers anyone.

Direct tasks arrive on ``<prefix>.agent.<capability>.<agent_id>``, one
subscription per capability: the capability is taken from the subject, which
the server's subscribe permissions bind to the users that may serve it, never
from a header. The older address ``<prefix>.agent.<agent_id>`` still answers
``ping`` and ``cancel``; a task sent there gets a 400 that names the new
subject (wire protocol v1, revision 2: see the README).

Before any request is run or answered its reply subject must be an inbox
(``bus``'s ``ReplyGuard``), and a cancel must present the token whose hash the
task carried (``CallerCancels``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bus import ErrorInfo, Subjects, unsubscribe_all
from bus.codec import OPERATION
from bus.security import CANCEL_TOKEN, ReplyGuard, token_matches

from ._agent import Agent
from ._pool import Running

__all__ = ["CallerCancels", "DirectAddresses", "cancel_answer", "moved_task_error"]

log = logging.getLogger("callboard.security")

Admit = Callable[[str, Msg], Awaitable[None]]
Snapshot = Callable[[], dict[str, Any]]
_encoder = msgspec.json.Encoder()


def moved_task_error(subjects: Subjects, agent_id: str, capability: str) -> ErrorInfo:
    """The 400 for a task sent to the control address (a client of revision 1)."""
    where = (
        subjects.agent_task(capability, agent_id)
        if _valid(subjects, capability, agent_id)
        else f"{subjects.prefix}.agent.<capability>.{agent_id}"
    )
    return ErrorInfo(
        code=400,
        type="bad_input",
        message=(
            f"direct tasks for agent {agent_id} go to {where} (callboard wire protocol v1 "
            "revision 2): the capability is in the subject, so that the server can check "
            "who may serve it; upgrade the client or send to the capability's subject"
        ),
    )


def cancel_answer(allowed: bool, cancelled: bool) -> dict[str, Any]:
    """The answer to ``Agent-Op: cancel``; a refusal says why (a revision-1 client
    sends no token)."""
    if allowed:
        return {"cancelled": cancelled}
    return {
        "cancelled": False,
        "error": "a cancel must carry Agent-Cancel-Token, the token whose hash the task "
        "carried as Agent-Cancel-Hash: only the task's caller can cancel it "
        "(callboard wire protocol v1 revision 2)",
    }


def _valid(subjects: Subjects, capability: str, agent_id: str) -> bool:
    try:
        subjects.agent_task(capability, agent_id)
    except Exception:
        return False
    return True


class DirectAddresses:
    """The capability-bound direct addresses of one agent.

    A ``ping`` there (``Agent-Op: ping``) answers the agent's load and the
    capability's keywords and input schema: an answer proves that a user allowed
    to serve the capability holds the address, which is how the live registry
    confirms what heartbeats and ``$SRV.INFO`` only claim.

    Args:
        nc: the connection.
        subjects: the system's subjects.
        agent: the agent (its id and capability specs).
        admit: the runner's admission (limit, draining, then the worker pool).
        guard: the agent's reply guard.
        snapshot: the agent's current load, as its ping answers it.
    """

    def __init__(
        self,
        nc: Client,
        subjects: Subjects,
        agent: Agent,
        admit: Admit,
        guard: ReplyGuard,
        snapshot: Snapshot,
    ) -> None:
        self._nc = nc
        self._subjects = subjects
        self._agent_id = agent.id
        self._capabilities = agent.capability_names
        self._admit = admit
        self._guard = guard
        self._snapshot = snapshot
        self._specs = {
            spec.name: {"keywords": list(spec.keywords), "input_schema": spec.input_schema()}
            for spec in agent.capability_specs
        }
        self._subs: list[Subscription] = []

    async def start(self) -> None:
        """Subscribe ``<prefix>.agent.<capability>.<agent_id>`` for each capability."""
        for capability in self._capabilities:
            subject = self._subjects.agent_task(capability, self._agent_id)
            self._subs.append(await self._nc.subscribe(subject, cb=self._on_task))

    async def stop(self) -> None:
        """Stop listening."""
        subs, self._subs = self._subs, []
        await unsubscribe_all(subs)

    async def _on_task(self, msg: Msg) -> None:
        parsed = self._subjects.parse_agent_task(msg.subject)
        if parsed is None or not self._guard.allows(msg.reply):
            return
        capability = parsed[0]
        if msg.headers and msg.headers.get(OPERATION) == "ping":
            if msg.reply:
                answer = {**self._snapshot(), "capability": capability, **self._specs[capability]}
                await self._nc.publish(msg.reply, _encoder.encode(answer))
            return
        await self._admit(capability, msg)


class CallerCancels:
    """Which of the tasks running under an id a cancel may stop: those whose
    ``Agent-Cancel-Hash`` its token hashes to (a task's caller chose the id, so
    several callers may use one; each cancels only its own).

    Attributes:
        refused: cancels ignored so far for a missing or wrong token.
        on_refused: called once per refusal (the ``cancel_token`` series); None
            counts only ``refused``.
    """

    __slots__ = ("_logged", "on_refused", "owner", "refused")

    def __init__(self, owner: str, *, on_refused: Callable[[], None] | None = None) -> None:
        self.owner = owner
        self.refused = 0
        self.on_refused = on_refused
        self._logged = False

    def chosen(
        self, task_id: str, headers: dict[str, str] | None, running: Sequence[Running]
    ) -> list[Running]:
        """The tasks of ``running`` (all of id ``task_id``) whose caller's token the
        cancel presents; none: the cancel is counted (and the first one logged)."""
        token = headers.get(CANCEL_TOKEN) if headers else None
        chosen = [task for task in running if token_matches(task.cancel_hash, token)]
        if chosen:
            return chosen
        self.refused += 1
        if self.on_refused is not None:
            self.on_refused()
        if not self._logged:
            self._logged = True
            log.warning(
                "%s ignored a cancel of task %.64r without its caller's token "
                "(a task without Agent-Cancel-Hash cannot be cancelled); "
                "later ones are only counted",
                self.owner,
                task_id,
            )
        return []
