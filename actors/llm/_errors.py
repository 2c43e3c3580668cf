"""Errors of the LLM agent loop.

A failed tool call is not the task's failure: the loop sends the error back
to the model as the tool's result, so the model can correct its arguments or
try another way. Only the round limit fails the task from here (model
errors come from ``actors.llm.models``)::

    TaskError
    ├── ToolRoundsExceeded (500)      the model was still calling tools at the limit
    └── ToolError (500)               a tool call failed; fed back to the model
        ├── ToolArgumentsError (400)  the arguments do not fit the tool's parameters
        ├── UnknownTool (404)         the model called a tool it was not given
        └── ToolUnavailable (503)     the tool cannot run here (no task to delegate from)
"""

from __future__ import annotations

from bus import TaskError

__all__ = [
    "ToolArgumentsError",
    "ToolError",
    "ToolRoundsExceeded",
    "ToolUnavailable",
    "UnknownTool",
]


class ToolRoundsExceeded(TaskError):
    """The model kept calling tools for more rounds than the agent allows."""

    code = 500
    type = "tool_rounds_exceeded"


class ToolError(TaskError):
    """A tool call failed; the model sees this as the call's result."""

    code = 500
    type = "tool_failure"


class ToolArgumentsError(ToolError):
    """The model's arguments do not match the tool's parameters."""

    code = 400
    type = "bad_arguments"


class UnknownTool(ToolError):
    """The model called a tool by a name it was not given."""

    code = 404
    type = "unknown_tool"


class ToolUnavailable(ToolError):
    """The tool cannot run in this place (a bus tool outside a running task)."""

    code = 503
    type = "tool_unavailable"
