"""The one error tree of callboard, and the one table of wire error codes.

Every error callboard raises is a ``CallboardError``; nats-py's own errors are
translated at the boundary (``raise TaskTimeout(...) from exc``). An agent's
failure crosses the wire as a numeric ``code`` (the ``Nats-Service-Error-Code``)
and a short ``type`` word, and comes back as the class that ``WIRE_ERRORS``
names for its code: a handler that raises ``BadInput`` makes its caller catch
``BadInput``. As anyio and httpx do, a timeout is also a ``TimeoutError`` and
a connection failure also a ``ConnectionError``, so generic handlers work::

    CallboardError
    ├── UsageError               misuse found locally, never an agent's answer
    │   └── ConfigError          a config file, flag or environment variable is wrong
    ├── ConnectionFailed         no NATS server could be reached (a ConnectionError)
    ├── ServerError              the embedded nats-server failed to start or stop
    └── DispatchError            a dispatched task produced no result
        ├── NoAgentError (404)   nobody serves the capability ("no responders")
        ├── UnknownTask (404)    no durable task has that ID (or its record expired)
        ├── TaskTimeout (408)    no reply before the deadline (a TimeoutError)
        │   └── TaskStillPending     a durable task is not done yet (it is not lost)
        └── AgentError           an error reply: raised in a handler, caught by the caller
            └── TaskError (500)  the generic one; a handler may give it any code
                ├── BadInput (400)           the payload or a header is malformed
                ├── UnknownCapability (404)  the agent addressed does not serve it
                ├── DeadlineExceeded (408)   stopped at the deadline (also a TaskTimeout)
                ├── DelegationError (409)    delegation cycle or depth limit
                ├── PayloadTooLarge (413)    the task or its result is above a limit
                ├── DependencyFailed (424)   a task this one needed failed
                ├── TaskCancelled (499)      cancelled before it finished
                └── AgentOverloaded (503)    at its concurrency limit, or draining
                    └── Draining (503)       the agent is shutting down

``WIRE_ERRORS`` maps each code to its class (``error_for_code``); a code not in
it comes back as a ``TaskError`` that keeps the code. Usage errors still carry
the generic 500, so that one raised inside a handler fails the task as an
internal error.
"""

from __future__ import annotations

__all__ = [
    "WIRE_ERRORS",
    "AgentError",
    "AgentOverloaded",
    "BadInput",
    "CallboardError",
    "ConfigError",
    "ConnectionFailed",
    "DeadlineExceeded",
    "DelegationError",
    "DependencyFailed",
    "DispatchError",
    "Draining",
    "NoAgentError",
    "PayloadTooLarge",
    "ServerError",
    "TaskCancelled",
    "TaskError",
    "TaskStillPending",
    "TaskTimeout",
    "UnknownCapability",
    "UnknownTask",
    "UsageError",
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


class UsageError(CallboardError):
    """callboard was used wrongly (a bad argument, a bad file); found locally."""

    type = "usage"


class ConfigError(UsageError):
    """A configuration value is missing or invalid."""

    type = "config"


class ConnectionFailed(CallboardError, ConnectionError):
    """No NATS server could be reached."""

    code = 503
    type = "connection"


class ServerError(CallboardError):
    """The embedded nats-server could not be started or stopped."""

    type = "server"


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


class UnknownTask(DispatchError):
    """No durable task has this ID: never submitted, or its record has expired."""

    code = 404
    type = "unknown_task"


class TaskTimeout(DispatchError, TimeoutError):
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


class AgentError(DispatchError):
    """An error reply: what a handler raises to fail its task, and what its caller catches.

    Attributes:
        agent_id: the agent that answered, when it said so.
    """

    code = 500
    type = "agent_failure"

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        type: str | None = None,
        agent_id: str | None = None,
        task_id: str | None = None,
        capability: str | None = None,
    ) -> None:
        super().__init__(message, task_id=task_id, capability=capability, code=code, type=type)
        self.agent_id = agent_id

    def __str__(self) -> str:
        who = f" from agent {self.agent_id}" if self.agent_id else ""
        return f"{self.message} (error {self.code}{who})"


class TaskError(AgentError):
    """Raised inside a handler to fail the task with a specific code (500 by default)."""


class BadInput(TaskError):
    """The task's payload or headers are malformed; retrying will not help."""

    code = 400
    type = "bad_input"


class UnknownCapability(TaskError):
    """The agent addressed directly does not serve the capability asked for."""

    code = 404
    type = "unknown_capability"


class DeadlineExceeded(TaskError, TaskTimeout):
    """The agent stopped the task at its deadline.

    It is also a ``TaskTimeout``: whether the caller's timer or the agent's
    fired first is a race, and callers should see the same error either way.
    """

    code = 408
    type = "timeout"


class DelegationError(TaskError):
    """A delegation would revisit an agent in its chain, or exceed the depth limit."""

    code = 409
    type = "delegation"


class PayloadTooLarge(TaskError):
    """The task's payload, or its result, is above a limit (the agent's or the server's)."""

    code = 413
    type = "too_large"


class DependencyFailed(TaskError):
    """A task this one depends on failed, so this one was not run."""

    code = 424
    type = "dependency_failed"


class TaskCancelled(TaskError):
    """The task was cancelled before it finished."""

    code = 499
    type = "cancelled"


class AgentOverloaded(TaskError):
    """The agent is at its concurrency limit or draining; another replica may serve."""

    code = 503
    type = "overloaded"


class Draining(AgentOverloaded):
    """The agent is shutting down and will not finish this task (its caller sees a 503)."""

    type = "draining"


WIRE_ERRORS: dict[int, type[TaskError]] = {
    cls.code: cls
    for cls in (
        BadInput,
        UnknownCapability,
        DeadlineExceeded,
        DelegationError,
        PayloadTooLarge,
        DependencyFailed,
        TaskCancelled,
        TaskError,
        AgentOverloaded,
    )
}
"""The class each wire error code comes back as; the codes are the classes' own."""


def error_for_code(code: int) -> type[TaskError]:
    """The class of an error reply with wire code ``code`` (``TaskError`` if none is named)."""
    return WIRE_ERRORS.get(code, TaskError)
