"""Log records about one task, carrying its ``task_id``, ``agent`` and
``capability`` as fields (``extra``).

The CLI's log formats show them (a ``[task <id>]`` prefix in text, fields in
JSON), so a log line can be joined with the task's status events and its
caller's error. Only what goes wrong is logged: a task that succeeds, or
fails by its caller's mistake (4xx, reported in its reply and status events),
formats nothing.
"""

from __future__ import annotations

import logging

from bus import ErrorInfo

__all__ = ["log_outcome", "task_logger"]

log = logging.getLogger("callboard.agent")


def task_logger(
    agent_id: str, task_id: str, capability: str | None = None
) -> logging.LoggerAdapter[logging.Logger]:
    """A logger whose records carry the task's fields; create it only to log."""
    fields = {"task_id": task_id, "agent": agent_id}
    if capability is not None:
        fields["capability"] = capability
    return logging.LoggerAdapter(log, fields)


def log_outcome(
    agent_id: str, task_id: str, capability: str, error: ErrorInfo, cancel_reason: str
) -> None:
    """Log a task that ended in an error, if it is news to whoever runs the agent.

    The agent's own failures (5xx), the tasks a shutdown or reload cut short
    among them, are warnings; a caller's cancel is an info line; a caller's
    mistake (4xx) is not logged.
    """
    if error.code < 500 and not cancel_reason:
        return
    level = logging.WARNING if error.code >= 500 else logging.INFO
    outcome = "cancelled" if cancel_reason else "failed"
    task_logger(agent_id, task_id, capability).log(
        level, "%s task %s with %d: %s", capability, outcome, error.code, error.message
    )
