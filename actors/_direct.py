"""The control address of one agent instance, ``<prefix>.agent.<agent_id>``, and
the broadcast cancel subject.

On the control address, the ``Agent-Op`` header says what a message is: a
``ping``, answered with the agent's load, or a ``cancel`` of the task in
``Agent-Task-Id``, which must carry the caller's ``Agent-Cancel-Token``. A
``task`` (the default) gets a 400 that names its new subject,
``<prefix>.agent.<capability>.<agent_id>`` (``_capability_address``; wire
protocol v1 revision 2). On the cancel subject, every agent stops the task of
that id if it runs there and the token matches. Nothing is answered to a reply
subject that is not an inbox.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bus import ErrorInfo, Subjects, unsubscribe_all
from bus.codec import CAPABILITY, OPERATION, TASK_ID, encode_json
from bus.security import ReplyGuard
from bus.wire import Wire

from ._capability_address import cancel_answer, moved_task_error
from ._core_intake import CoreIntake
from ._executor import Executor
from ._replier import Replier, answerable_id

__all__ = ["DirectAddress"]

_BY_THE_CALLER = "cancelled by the caller"


class DirectAddress:
    """Serves one agent's direct address and the broadcast cancels.

    Args:
        nc: the connection.
        subjects: subject builder of the system.
        executor: runs (and cancels) the agent's tasks.
        intake: admits targeted tasks.
        replier: answers errors.
        snapshot: the agent's load, for a ping.
    """

    def __init__(
        self,
        nc: Client,
        subjects: Subjects,
        executor: Executor,
        intake: CoreIntake,
        replier: Replier,
        snapshot: Callable[[], dict[str, Any]],
        reply_guard: ReplyGuard,
    ) -> None:
        self._nc = nc
        self._subjects = subjects
        self._executor = executor
        self._intake = intake
        self._replier = replier
        self._snapshot = snapshot
        self._agent = executor.agent
        self._wire: Wire = replier.wire
        self._guard = reply_guard
        self._subs: list[Subscription] = []

    async def start(self) -> None:
        """Subscribe the direct address and the cancel subject."""
        nc, subjects = self._nc, self._subjects
        self._subs.append(await nc.subscribe(subjects.agent(self._agent.id), cb=self._on_direct))
        self._subs.append(await nc.subscribe(subjects.cancel(), cb=self._on_cancel))

    async def stop(self) -> None:
        """Unsubscribe both."""
        subs, self._subs = self._subs, []
        await unsubscribe_all(subs)

    async def _on_direct(self, msg: Msg) -> None:
        headers = msg.headers or {}
        operation = headers.get(OPERATION, "task")
        if msg.reply and not self._guard.allows(msg.reply):  # security: no reflection
            return
        if operation == "task":
            capability = headers.get(CAPABILITY, "")
            if capability in self._executor.counters:  # security: tasks moved to agent_task
                error = moved_task_error(self._subjects, self._agent.id, capability)
                await self._replier.reply_error(msg, answerable_id(headers), error)
            elif msg.reply:
                error = ErrorInfo(
                    code=404,
                    type="unknown_capability",
                    message=f"agent {self._agent.id} has no capability {capability[:40]!r}; it "
                    f"serves {', '.join(self._agent.capability_names)} "
                    "(set the Agent-Capability header)",
                )
                await self._replier.reply_error(msg, answerable_id(headers), error)
        elif operation == "ping":
            await self._answer(msg, self._snapshot())
        elif operation == "cancel":
            task_id = headers.get(TASK_ID, "")
            reason = msg.data.decode(errors="replace") or _BY_THE_CALLER
            # security: a running task only by its caller; a task that is not running here
            # (finished, or never was) has nothing to protect, and its caller's late cancel
            # is no refusal to count
            allowed, cancelled = self._executor.cancel_by_caller(task_id, headers, reason)
            await self._answer(msg, cancel_answer(allowed, cancelled))
        elif msg.reply:
            error = ErrorInfo(
                code=400,
                type="bad_input",
                message=f"unknown Agent-Op {operation[:40]!r}: use task, ping, cancel",
            )
            await self._replier.reply_error(msg, answerable_id(headers), error)

    async def _on_cancel(self, msg: Msg) -> None:
        task_id = (msg.headers or {}).get(TASK_ID, "")
        reason = msg.data.decode(errors="replace") or _BY_THE_CALLER
        self._executor.cancel_by_caller(task_id, msg.headers, reason)  # security: its caller only

    async def _answer(self, msg: Msg, value: Any) -> None:
        if msg.reply:
            await self._wire.write(self._wire.pub(msg.reply, encode_json(value)))
