"""The exit codes of every ``callboard`` command, in one table.

====  ==========================================================
0     success
1     the agent answered with an error (its code is printed);
      for ``health``: the daemon answered that it is unhealthy
2     usage error: bad flags, bad JSON, bad config file
3     no agent serves the capability
4     timeout: no reply before the deadline
5     cannot connect to NATS (or, for ``health``, to the daemon's /healthz)
6     permission denied: the server's permissions do not let this login use
      a subject the command needs (it says which)
130   interrupted (Ctrl-C)
141   the reader of stdout left (``callboard monitor | head``), as SIGPIPE would
====  ==========================================================

A script reads the kind of failure from the code, so an error class maps to
one code here (``exit_code_for``) and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping

from bus import (
    CallboardError,
    ConfigError,
    ConnectionFailed,
    NoAgentError,
    TaskTimeout,
    UnknownTask,
)

from .._pipeline import StepFailed
from .._router import NoRouteError
from ._permissions import PermissionDenied

__all__ = [
    "EXIT_AGENT_ERROR",
    "EXIT_BROKEN_PIPE",
    "EXIT_CONNECTION",
    "EXIT_INTERRUPTED",
    "EXIT_NO_AGENT",
    "EXIT_OK",
    "EXIT_PERMISSION",
    "EXIT_TIMEOUT",
    "EXIT_UNHEALTHY",
    "EXIT_USAGE",
    "exit_code_for",
    "exit_code_of_error_type",
    "exit_codes_epilog",
    "health_exit_codes_epilog",
]

EXIT_OK = 0
EXIT_AGENT_ERROR = 1
EXIT_UNHEALTHY = EXIT_AGENT_ERROR
"""``health``: ``/healthz`` answered, but not 200 (draining, disconnected, no agent)."""
EXIT_USAGE = 2
EXIT_NO_AGENT = 3
EXIT_TIMEOUT = 4
EXIT_CONNECTION = 5
EXIT_PERMISSION = 6
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

_MEANINGS: Mapping[int, str] = {
    EXIT_OK: "ok",
    EXIT_AGENT_ERROR: "agent error (health: unhealthy)",
    EXIT_USAGE: "usage",
    EXIT_NO_AGENT: "no agent",
    EXIT_TIMEOUT: "timeout",
    EXIT_CONNECTION: "cannot connect",
    EXIT_PERMISSION: "permission denied (the server's permissions for this login)",
    EXIT_INTERRUPTED: "interrupted",
}

_HEALTH_MEANINGS: Mapping[int, str] = {
    EXIT_OK: "healthy (or the agents answered)",
    EXIT_UNHEALTHY: (
        "unhealthy (/healthz said 503: draining, disconnected (reconnecting, the login "
        "refused, the connection closed for good) or no agent serving)"
    ),
    EXIT_USAGE: "usage error",
    EXIT_NO_AGENT: "no such agent or capability",
    EXIT_TIMEOUT: "no answer within --timeout",
    EXIT_CONNECTION: "cannot reach the daemon's /healthz or NATS",
    EXIT_PERMISSION: "this login may not ping agents (--agent, --capability)",
}

_BY_ERROR_CLASS: tuple[tuple[type[CallboardError], int], ...] = (
    (NoRouteError, EXIT_NO_AGENT),
    (NoAgentError, EXIT_NO_AGENT),
    (UnknownTask, EXIT_NO_AGENT),
    (TaskTimeout, EXIT_TIMEOUT),  # before AgentError: DeadlineExceeded is both
    (ConnectionFailed, EXIT_CONNECTION),
    (PermissionDenied, EXIT_PERMISSION),
    (ConfigError, EXIT_USAGE),
)
"""First match wins; anything else is the agent's (or the task's) own error."""

_BY_ERROR_TYPE: Mapping[str, int] = {
    "no_agent": EXIT_NO_AGENT,
    "timeout": EXIT_TIMEOUT,
    "connection": EXIT_CONNECTION,
    "bad_reference": EXIT_USAGE,
}
"""A failed step's ``ErrorInfo.type`` (``pipeline --partial`` reports data, not exceptions)."""


def exit_code_for(exc: CallboardError) -> int:
    """The exit code that tells a script what kind of failure ``exc`` is."""
    if isinstance(exc, StepFailed):
        exc = exc.cause
    return next((code for kind, code in _BY_ERROR_CLASS if isinstance(exc, kind)), EXIT_AGENT_ERROR)


def exit_code_of_error_type(error_type: str) -> int:
    """The exit code of a failed step reported as data, by its error type."""
    return _BY_ERROR_TYPE.get(error_type, EXIT_AGENT_ERROR)


def exit_codes_epilog() -> str:
    """The exit codes as the ``callboard --help`` epilog."""
    return _epilog(_MEANINGS)


def health_exit_codes_epilog() -> str:
    """What each exit code means for ``callboard health`` (its ``--help`` epilog)."""
    return _epilog(_HEALTH_MEANINGS)


def _epilog(meanings: Mapping[int, str]) -> str:
    """A table, one code a line (for a parser with ``RawDescriptionHelpFormatter``)."""
    return "Exit codes:\n" + "\n".join(f"  {code:<4} {text}" for code, text in meanings.items())
