"""The context a handler runs in: its task, delegation and progress reports.

It is reached through a context variable (``Agent.context``) so that
``handle(task)`` keeps the original pattern's one-argument signature.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from bus import AgentMessage, CallboardError, TaskClient

__all__ = ["TaskContext", "current_context"]

ProgressSink = Callable[[AgentMessage, str, Any], Awaitable[None]]


class TaskContext:
    """What a handler may do beyond returning: delegate sub-tasks, report progress.

    Attributes:
        task: the task being handled.
        agent_id: the agent handling it.
    """

    __slots__ = ("_client", "_progress", "agent_id", "task")

    def __init__(
        self, task: AgentMessage, agent_id: str, client: TaskClient, progress: ProgressSink
    ) -> None:
        self.task = task
        self.agent_id = agent_id
        self._client = client
        self._progress = progress

    async def delegate(self, capability: str, payload: Any, *, timeout: float | None = None) -> Any:
        """Send a sub-task to another capability and return its result.

        The sub-task carries this task's chain plus this agent (so cycles are
        refused with 409) and never gets more time than this task has left.

        Raises:
            DispatchError: the sub-task failed (its subclass says how); if the
                handler lets it propagate, this task fails with the same code.
        """
        reply = await self._client.request(
            capability,
            payload,
            timeout=timeout,
            chain=(*self.task.chain, self.agent_id),
            deadline_ms=self.task.deadline_ms,
            traceparent=self.task.traceparent,
        )
        return reply.payload

    async def progress(self, message: str = "", data: Any = None) -> None:
        """Publish a ``progress`` status event for this task."""
        await self._progress(self.task, message, data)


_current: ContextVar[TaskContext] = ContextVar("callboard_task_context")


def current_context() -> TaskContext:
    """The context of the task this coroutine is handling."""
    try:
        return _current.get()
    except LookupError:
        raise CallboardError(
            "no task is being handled here: Agent.context is only available inside handle()"
        ) from None


def set_context(context: TaskContext) -> object:
    """Install a context for the running handler; returns a token for reset."""
    return _current.set(context)


def reset_context(token: object) -> None:
    """Undo ``set_context``."""
    _current.reset(token)  # type: ignore[arg-type]
