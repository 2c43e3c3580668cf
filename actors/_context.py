"""The context a handler runs in: its task, delegation and progress reports.

It is reached through a context variable (``Agent.context``) so that
``handle(task)`` keeps the original pattern's one-argument signature.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from bus import AgentMessage, CallboardError, TaskClient, dispatch_outcome
from bus.micro import CapabilityInfo, discover_capabilities

__all__ = [
    "DEFAULT_DISCOVERY_WAIT",
    "TaskContext",
    "TaskContexts",
    "bind_task",
    "current_context",
    "unbind_task",
]

DEFAULT_DISCOVERY_WAIT = 0.3
"""Seconds ``TaskContext.capabilities`` listens for ``$SRV.INFO`` replies."""

ProgressSink = Callable[[AgentMessage, str, Any], Awaitable[None]]
DelegationSink = Callable[[str, str], None]
"""Told (capability, outcome) of every delegation: the agent's delegation counter."""
CorrectionSink = Callable[[str, int], None]
"""Told (kind, count) of the model replies a handler corrected: the agent's counter."""


class TaskContexts:
    """What the contexts of one agent's tasks share (its id, client and sinks). A
    ``TaskContext`` is made only when a handler asks for one (most never do): a
    task is bound with ``bind_task`` as ``(contexts, task)``, which costs no call
    and no object of its own."""

    __slots__ = ("agent_id", "client", "on_corrected", "on_delegated", "progress")

    def __init__(
        self,
        agent_id: str,
        client: TaskClient,
        progress: ProgressSink,
        *,
        on_delegated: DelegationSink | None = None,
        on_corrected: CorrectionSink | None = None,
    ) -> None:
        self.agent_id = agent_id
        self.client = client
        self.progress = progress
        self.on_delegated = on_delegated
        self.on_corrected = on_corrected

    def of(self, task: AgentMessage) -> TaskContext:
        """The context of ``task``."""
        return TaskContext(task, self)


class TaskContext:
    """What a handler may do beyond returning: delegate sub-tasks, report progress.

    Attributes:
        task: the task being handled.
    """

    __slots__ = ("_shared", "task")

    def __init__(self, task: AgentMessage, shared: TaskContexts) -> None:
        self.task = task
        self._shared = shared

    @property
    def agent_id(self) -> str:
        """The agent handling the task."""
        return self._shared.agent_id

    async def delegate(self, capability: str, payload: Any, *, timeout: float | None = None) -> Any:
        """Send a sub-task to another capability and return its result.

        The sub-task carries this task's chain plus this agent (so cycles are
        refused with 409) and never gets more time than this task has left.

        Raises:
            DispatchError: the sub-task failed (its subclass says how); if the
                handler lets it propagate, this task fails with the same code.
        """
        on_delegated = self._shared.on_delegated
        try:
            reply = await self._shared.client.request(
                capability,
                payload,
                timeout=timeout,
                chain=(*self.task.chain, self.agent_id),
                deadline_ms=self.task.deadline_ms,
                traceparent=self.task.traceparent,
            )
        except BaseException as exc:
            if on_delegated is not None:
                on_delegated(capability, dispatch_outcome(exc))
            raise
        if on_delegated is not None:
            on_delegated(capability, "ok")
        return reply.payload

    async def capabilities(self, *, wait: float = DEFAULT_DISCOVERY_WAIT) -> list[CapabilityInfo]:
        """The capabilities live on the bus now (this agent's own included).

        Asks every agent host of this prefix over ``$SRV.INFO`` and listens for
        ``wait`` seconds, since nobody knows how many will answer: callers
        that ask often should cache the answer.
        """
        client = self._shared.client
        return await discover_capabilities(client.nc, client.subjects, wait=wait)

    async def progress(self, message: str = "", data: Any = None) -> None:
        """Publish a ``progress`` status event for this task."""
        await self._shared.progress(self.task, message, data)

    def model_corrected(self, kind: str, count: int = 1) -> None:
        """Count model replies this task's handler corrected, in the agent's
        ``callboard_agent_model_corrections_total``: ``kind`` is one of
        ``bus.observability.MODEL_CORRECTIONS`` (the LLM agent's loop reports them).

        Raises:
            ValueError: an unknown ``kind`` (with metrics on).
        """
        on_corrected = self._shared.on_corrected
        if on_corrected is not None:
            on_corrected(kind, count)


_current: ContextVar[tuple[TaskContexts, AgentMessage]] = ContextVar("callboard_task_context")


def current_context() -> TaskContext:
    """The context of the task this coroutine is handling."""
    try:
        contexts, task = _current.get()
    except LookupError:
        raise CallboardError(
            "no task is being handled here: Agent.context is only available inside handle()"
        ) from None
    return contexts.of(task)


bind_task = _current.set
"""Bind ``(contexts, task)`` to the running handler; returns a token for
``unbind_task`` (the context variable's own method: no call of ours per task)."""

unbind_task = _current.reset
"""Undo ``bind_task``."""
