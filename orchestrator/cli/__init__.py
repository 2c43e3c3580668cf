"""The ``callboard`` command line (``python -m orchestrator.cli``)."""

from __future__ import annotations

from ._main import (
    EXIT_AGENT_ERROR,
    EXIT_CONNECTION,
    EXIT_INTERRUPTED,
    EXIT_NO_AGENT,
    EXIT_OK,
    EXIT_PERMISSION,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    build_parser,
    main,
)

__all__ = [
    "EXIT_AGENT_ERROR",
    "EXIT_CONNECTION",
    "EXIT_INTERRUPTED",
    "EXIT_NO_AGENT",
    "EXIT_OK",
    "EXIT_PERMISSION",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "build_parser",
    "main",
]
