"""Which capabilities on the bus an LLM agent offers its model as tools.

Discovery (``$SRV.INFO``) costs a listening window on every call, too slow
to pay per task; the catalog keeps the last answer for a while (``ttl``) and
shares one discovery between tasks that ask at the same moment.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence

import anyio

from bus.micro import CapabilityInfo

from .._context import DEFAULT_DISCOVERY_WAIT, TaskContext
from ._tools import CapabilityTool, tool_name

__all__ = ["DEFAULT_CATALOG_TTL", "CapabilityCatalog", "capability_tools"]

DEFAULT_CATALOG_TTL = 30.0
"""Seconds a discovered capability catalog is reused before asking the bus again."""


class CapabilityCatalog:
    """The live capabilities, cached for ``ttl`` seconds.

    Args:
        ttl: seconds an answer is reused (0: discover on every call).
        wait: seconds each discovery listens for replies.
    """

    def __init__(
        self, *, ttl: float = DEFAULT_CATALOG_TTL, wait: float = DEFAULT_DISCOVERY_WAIT
    ) -> None:
        self.ttl = ttl
        self.wait = wait
        self._found: list[CapabilityInfo] = []
        self._expires = float("-inf")
        self._lock: anyio.Lock | None = None

    async def get(self, context: TaskContext) -> list[CapabilityInfo]:
        """The capabilities, from the cache or, when it is stale, from the bus."""
        if time.monotonic() < self._expires:
            return self._found
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            if time.monotonic() >= self._expires:  # nobody refreshed while we waited
                self._found = await context.capabilities(wait=self.wait)
                self._expires = time.monotonic() + self.ttl
        return self._found

    def clear(self) -> None:
        """Forget the cached answer; the next ``get`` asks the bus."""
        self._expires = float("-inf")


def capability_tools(
    found: Sequence[CapabilityInfo],
    wanted: Collection[str] | None,
    *,
    exclude: Collection[str] = (),
    taken: Collection[str] = (),
) -> list[CapabilityTool]:
    """One tool per capability (not per agent serving it).

    Args:
        found: the live capabilities (replicas of one appear once each).
        wanted: the capabilities to offer, or None for every live one. A
            wanted capability nobody serves right now is still offered, with
            any input accepted, so the model learns why it fails if it calls it.
        exclude: capabilities never offered (the agent's own).
        taken: tool names already in use; a clash gets a ``_2``-style suffix.
    """
    first: dict[str, CapabilityInfo] = {}
    for capability in found:
        first.setdefault(capability.name, capability)
    names = sorted(first) if wanted is None else list(dict.fromkeys(wanted))
    used = set(taken)
    tools: list[CapabilityTool] = []
    for name in names:
        if name in exclude:
            continue
        tool_id = _unique(tool_name(name), used)
        used.add(tool_id)
        info = first.get(name)
        if info is None:
            tools.append(CapabilityTool(name, name=tool_id))
        else:
            tools.append(CapabilityTool.from_info(info, name=tool_id))
    return tools


def _unique(name: str, used: Collection[str]) -> str:
    if name not in used:
        return name
    for n in range(2, len(used) + 3):
        suffix = f"_{n}"
        candidate = f"{name[: 64 - len(suffix)]}{suffix}"
        if candidate not in used:
            return candidate
    raise AssertionError("unreachable: a free suffix always exists")
