"""The values a command's arguments hold: JSON, durations, durable task IDs.

Each is a parse function that raises ``ConfigError`` (a usage error, exit code 2)
and, for argparse, a ``type`` that turns it into argparse's own usage error.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

import msgspec

from bus import CallboardError, ConfigError
from bus.durable import split_task_ref

__all__ = ["durable_task_id", "duration", "parse_duration", "parse_json"]


def parse_json(text: str, what: str) -> Any:
    """``text`` decoded, or a usage error that shows how to quote JSON for the shell."""
    try:
        return msgspec.json.decode(text.encode())
    except msgspec.DecodeError as exc:
        raise ConfigError(
            f"{what} is not valid JSON ({exc}): quote it for the shell, e.g. "
            '\'{"expression": "6*7"}\''
        ) from exc


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h|d)")
_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}


def parse_duration(text: str) -> float:
    """Seconds in a plain number (``90``, ``0.5``) or a Go duration (``5s``, ``500ms``,
    ``1m30s``, ``2h``; ``1d`` too), as the ``nats`` CLI takes them.
    """
    spec = text.strip()
    try:
        return _non_negative(float(spec))
    except ValueError:
        pass
    parts = list(_DURATION_PART.finditer(spec))
    if not spec or not parts or "".join(p.group(0) for p in parts) != spec:
        raise ConfigError(
            f"invalid duration {text!r}: write seconds (90, 0.5) or a Go duration "
            "(500ms, 5s, 1m30s, 2h, 1d)"
        )
    return sum(float(p.group(1)) * _UNITS[p.group(2)] for p in parts)


def _non_negative(seconds: float) -> float:
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError(seconds)
    return seconds


def durable_task_id(text: str) -> str:
    """A durable task's ID as an argparse ``type``: a malformed one is a usage error,
    not a question to the server.
    """
    try:
        split_task_ref(text)  # TASK_ID, or CAPABILITY.TASK_ID (a record's key)
        return text
    except CallboardError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def duration(text: str) -> float:
    """``parse_duration`` as an argparse ``type``: a bad one is a usage error naming it."""
    try:
        return parse_duration(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None
