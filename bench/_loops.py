"""Which event loop runs a side: asyncio's own, or uvloop (the ``fast`` extra)."""

from __future__ import annotations

import importlib.metadata
from typing import Any

__all__ = ["LOOPS", "backend_options", "uvloop_version"]

LOOPS = ("asyncio", "uvloop")


def uvloop_version() -> str | None:
    """uvloop's version, or None when it is not installed."""
    try:
        return importlib.metadata.version("uvloop")
    except importlib.metadata.PackageNotFoundError:
        return None


def backend_options(loop: str) -> dict[str, Any]:
    """``anyio.run``'s backend options for ``loop``.

    Raises:
        ValueError: an unknown loop, or uvloop asked for but not installed.
    """
    if loop == "asyncio":
        return {}
    if loop == "uvloop":
        try:
            import uvloop
        except ImportError as exc:
            raise ValueError("uvloop is not installed: pip install 'callboard[fast]'") from exc
        return {"loop_factory": uvloop.new_event_loop}
    raise ValueError(f"unknown event loop {loop!r}: use one of {', '.join(LOOPS)}")
