"""Wire types: the task message, its error, and the status event family.

These are msgspec Structs so that encoding and validation are one fast pass and
nobody hand-writes ``to_dict``. Status events are one tagged family keyed by
``state``; readers ignore fields they do not know (forward compatibility within
a protocol version).
"""

from __future__ import annotations

import enum
import time
from typing import Any

import msgspec

__all__ = [
    "PROTOCOL_VERSION",
    "Accepted",
    "AgentMessage",
    "AgentState",
    "Cancelled",
    "Completed",
    "ErrorInfo",
    "Failed",
    "Heartbeat",
    "MessageType",
    "Offline",
    "Online",
    "Progress",
    "Started",
    "StatusEvent",
    "TaskEvent",
    "TaskState",
    "now_ms",
]

PROTOCOL_VERSION = 1


def now_ms() -> int:
    """Wall-clock unix time in milliseconds, the unit of ``Agent-Deadline``."""
    return time.time_ns() // 1_000_000


class MessageType(enum.StrEnum):
    """What an ``AgentMessage`` carries."""

    TASK = "task"
    RESULT = "result"
    ERROR = "error"
    STATUS = "status"


class ErrorInfo(msgspec.Struct, frozen=True, kw_only=True):
    """An error as it crosses the wire: the body of an error reply is ``{"error": ErrorInfo}``."""

    code: int
    type: str
    message: str


class AgentMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The typed in-process view of one message (task, result or error).

    On the wire the payload is the JSON body and everything else rides in
    headers (see ``bus.codec``), so a plain ``nats req`` with a JSON body is a
    complete task.

    Attributes:
        type: task, result, error or status.
        task_id: the task this message belongs to (``Agent-Task-Id``).
        payload: the task payload or the result, any JSON value.
        id: the message id; a task's id is its task ID, and its reply reuses it.
        sender: who sent it (``Agent-Sender`` for tasks, ``Agent-Id`` for replies).
        receiver: the capability or agent it was addressed to.
        capability: the capability the task is for.
        seq: the task's position in a pipeline (``Agent-Seq``).
        deadline_ms: unix ms after which nobody waits for the result (``Agent-Deadline``).
        chain: agent ids the task passed through by delegation (``Agent-Chain``).
        traceparent: the W3C trace context, passed through untouched.
        error: set on error replies.
    """

    type: MessageType
    task_id: str
    payload: Any = None
    id: str = ""
    sender: str = "anonymous"
    receiver: str = ""
    capability: str = ""
    seq: int | None = None
    deadline_ms: int | None = None
    chain: tuple[str, ...] = ()
    traceparent: str | None = None
    error: ErrorInfo | None = None

    def time_left(self) -> float | None:
        """Seconds until the deadline (may be negative), or None without one."""
        if self.deadline_ms is None:
            return None
        return (self.deadline_ms - now_ms()) / 1000.0


class AgentState(enum.StrEnum):
    """Lifecycle states of an agent, the last token of its status subjects."""

    ONLINE = "online"
    HEARTBEAT = "heartbeat"
    OFFLINE = "offline"


class TaskState(enum.StrEnum):
    """States a task passes through on one agent."""

    ACCEPTED = "accepted"
    STARTED = "started"
    PROGRESS = "progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StatusEvent(msgspec.Struct, kw_only=True, frozen=True, tag_field="state"):
    """Base of every status event on ``<prefix>.status.<agent_id>.<state>``.

    Every field is always encoded (no ``omit_defaults``): readers can rely on
    ``v`` and on each field of a state being present.

    Attributes:
        agent: the agent id that published it.
        ts: unix time in seconds (float) when it happened.
        v: protocol version.
    """

    agent: str
    ts: float
    v: int = PROTOCOL_VERSION


class Online(StatusEvent, tag="online", frozen=True):
    """The agent started serving."""

    capabilities: tuple[str, ...] = ()
    max_concurrency: int = 0
    service: str = ""
    host: str = ""


class Heartbeat(StatusEvent, tag="heartbeat", frozen=True):
    """Periodic liveness and load, so registries can drop silent agents."""

    capabilities: tuple[str, ...] = ()
    in_flight: int = 0
    max_concurrency: int = 0
    interval: float = 0.0


class Offline(StatusEvent, tag="offline", frozen=True):
    """The agent stopped serving (graceful shutdown)."""

    reason: str = ""


class TaskEvent(StatusEvent, frozen=True):
    """Base of the per-task events."""

    task_id: str
    capability: str = ""
    sender: str = ""


class Accepted(TaskEvent, tag="accepted", frozen=True):
    """The agent took the task off the bus."""


class Started(TaskEvent, tag="started", frozen=True):
    """The handler began running."""


class Progress(TaskEvent, tag="progress", frozen=True):
    """A handler's intermediate report (a message and/or data)."""

    message: str = ""
    data: Any = None


class Completed(TaskEvent, tag="completed", frozen=True):
    """The handler returned a result."""

    elapsed_ms: float = 0.0


class Failed(TaskEvent, tag="failed", frozen=True):
    """The task ended with an error reply."""

    elapsed_ms: float = 0.0
    error: ErrorInfo | None = None


class Cancelled(TaskEvent, tag="cancelled", frozen=True):
    """The task was cancelled before it finished."""

    elapsed_ms: float = 0.0
    reason: str = ""


STATUS_EVENT_TYPES = (
    Online | Heartbeat | Offline | Accepted | Started | Progress | Completed | Failed | Cancelled
)
