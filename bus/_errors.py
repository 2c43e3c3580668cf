"""The one error tree of callboard.

Every error callboard raises is a ``CallboardError``; nats-py's own errors are
translated at the boundary (``raise TaskTimeout(...) from exc``). Errors that can
cross the wire carry a numeric ``code`` (the ``Nats-Service-Error-Code``) and a
short ``type`` word, so a failure on an agent becomes the same typed exception on
the caller's side::

    CallboardError
    ├── ConfigError              a config file, flag or environment variable is wrong
    ├── ConnectionFailed         no NATS server could be reached
    ├── ServerError              the embedded nats-server failed to start or stop
    ├── TaskError (500)          raised by a handler to fail its task with a code
    │   ├── BadInput (400)       the payload or a header is malformed
    │   ├── PayloadTooLarge (413)
    │   └── Draining (503)       the agent is shutting down
    └── DispatchError            a dispatched task produced no result
        ├── NoAgentError (404)   nobody serves the capability ("no responders")
        ├── TaskTimeout (408)    no reply before the deadline
        │   └── TaskStillPending     a durable task is not done yet (it is not lost)
        ├── UnknownTask (404)    no durable task has that ID (or its record expired)
        ├── TaskCancelled (499)  the caller gave up on the task
        └── AgentError           the agent replied with an error (any code)
            ├── DeadlineExceeded (408)  the agent stopped at the deadline (also a TaskTimeout)
            ├── DelegationError (409)   delegation cycle or depth limit
            └── AgentOverloaded (503)   at its concurrency limit, or draining
"""

from __future__ import annotations

__all__ = [
    "AgentError",
    "AgentOverloaded",
    "BadInput",
    "CallboardError",
    "ConfigError",
    "ConnectionFailed",
    "DeadlineExceeded",
    "DelegationError",
    "DispatchError",
    "Draining",
    "NoAgentError",
    "PayloadTooLarge",
    "ServerError",
    "TaskCancelled",
    "TaskError",
    "TaskStillPending",
    "TaskTimeout",
    "UnknownTask",
    "error_for_code",
]


class CallboardError(Exception):
    """Root of every callboard error.

    Attributes:
        code: the wire error code this failure maps to (HTTP-like).
        type: a short machine-readable word for the kind of failure.
    """

    code: int = 500
    type: str = "internal"

    def __init__(self, message: str, *, code: int | None = None, type: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if type is not None:
            self.type = type


class ConfigError(CallboardError):
    """A configuration value is missing or invalid."""

    type = "config"


class ConnectionFailed(CallboardError):
    """No NATS server could be reached."""

    code = 503
    type = "connection"


class ServerError(CallboardError):
    """The embedded nats-server could not be started or stopped."""

    type = "server"


class TaskError(CallboardError):
    """Raised inside a handler to fail the task with a specific code."""

    code = 500
    type = "agent_failure"


class BadInput(TaskError):
    """The task's payload or headers are malformed; retrying will not help."""

    code = 400
    type = "bad_input"


class PayloadTooLarge(TaskError):
    """The task's payload is above the agent's limit."""

    code = 413
    type = "too_large"


class Draining(TaskError):
    """The agent is shutting down and will not finish this task."""

    code = 503
    type = "draining"


class DispatchError(CallboardError):
    """A dispatched task did not produce a result.

    Attributes:
        task_id: the ID of the task that failed, when known.
        capability: the capability it was sent to, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        task_id: str | None = None,
        capability: str | None = None,
        code: int | None = None,
        type: str | None = None,
    ) -> None:
        super().__init__(message, code=code, type=type)
        self.task_id = task_id
        self.capability = capability


class NoAgentError(DispatchError):
    """No agent is subscribed to the capability (NATS "no responders")."""

    code = 404
    type = "no_agent"


class TaskTimeout(DispatchError):
    """No reply arrived before the task's deadline."""

    code = 408
    type = "timeout"


class TaskStillPending(TaskTimeout):
    """A durable task was not done when the caller stopped waiting.

    Unlike a core task it is not lost: it stays queued or running, and its
    result can be fetched later by task ID.

    Attributes:
        state: the task's state when the wait ended (``submitted``, ``working``).
    """

    type = "pending"

    def __init__(self, message: str, *, task_id: str, capability: str | None, state: str) -> None:
        super().__init__(message, task_id=task_id, capability=capability)
        self.state = state


class UnknownTask(DispatchError):
    """No durable task has this ID: never submitted, or its record has expired."""

    code = 404
    type = "unknown_task"


class TaskCancelled(DispatchError):
    """The task was cancelled before it finished."""

    code = 499
    type = "cancelled"


class AgentError(DispatchError):
    """The agent answered with an error reply.

    Attributes:
        agent_id: the agent that answered, when it said so.
    """

    def __init__(
        self,
        message: str,
        *,
        code: int,
        type: str = "agent_failure",
        agent_id: str | None = None,
        task_id: str | None = None,
        capability: str | None = None,
    ) -> None:
        super().__init__(message, task_id=task_id, capability=capability, code=code, type=type)
        self.agent_id = agent_id

    def __str__(self) -> str:
        who = f" from agent {self.agent_id}" if self.agent_id else ""
        return f"{self.message} (error {self.code}{who})"


class DelegationError(AgentError):
    """A delegation would revisit an agent in its chain, or exceed the depth limit."""

    code = 409
    type = "delegation"


class AgentOverloaded(AgentError):
    """The agent is at its concurrency limit or draining; another replica may serve."""

    code = 503
    type = "overloaded"


class DeadlineExceeded(AgentError, TaskTimeout):
    """The agent stopped the task at its deadline.

    It is also a ``TaskTimeout``: whether the caller's timer or the agent's
    fired first is a race, and callers should see the same error either way.
    """

    code = 408
    type = "timeout"


_AGENT_ERRORS_BY_CODE: dict[int, type[AgentError]] = {
    408: DeadlineExceeded,
    409: DelegationError,
    503: AgentOverloaded,
}


def error_for_code(code: int) -> type[AgentError]:
    """The most specific ``AgentError`` class for a wire error code."""
    return _AGENT_ERRORS_BY_CODE.get(code, AgentError)
