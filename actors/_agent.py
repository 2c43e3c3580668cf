"""The ``Agent`` base class and the declaration of what it can do.

An agent is an actor: it owns capabilities, and the runtime calls ``handle``
once per task addressed to one of them. Declaring an input type lets the
runtime validate the payload (bad input → 400 naming the field) before the
handler runs, and publish the JSON Schema for discovery.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any, ClassVar

import msgspec

from bus import AgentMessage, ConfigError, new_agent_suffix, validate_agent_id, validate_capability

from ._context import TaskContext, current_context

__all__ = ["DEFAULT_MAX_CONCURRENCY", "DEFAULT_TASK_TIMEOUT", "Agent", "Capability"]

DEFAULT_MAX_CONCURRENCY = 64
"""Tasks one agent runs at once; one more is refused with 503 (overloaded)."""
DEFAULT_TASK_TIMEOUT = 60.0
"""Seconds a task may run when its sender set no ``Agent-Deadline``."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Capability:
    """One capability an agent serves.

    Attributes:
        name: the capability name (one subject token).
        input_type: the payload's type (a msgspec Struct, a builtin type, or Any).
        output_type: the result's type, published as a schema for callers.
        description: what it does, in a sentence (used by routers and LLM tools).
        keywords: words a request may contain when it wants this capability.
    """

    name: str
    input_type: Any = Any
    output_type: Any = Any
    description: str = ""
    keywords: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        validate_capability(self.name)

    def input_schema(self) -> dict[str, Any]:
        """The JSON Schema of the input type ({} for Any)."""
        return _schema(self.input_type)

    def output_schema(self) -> dict[str, Any]:
        """The JSON Schema of the output type ({} for Any)."""
        return _schema(self.output_type)

    def decoder(self) -> msgspec.json.Decoder[Any] | None:
        """A decoder that validates payloads, or None when any JSON is accepted."""
        return None if self.input_type is Any else msgspec.json.Decoder(self.input_type)


def _schema(tp: Any) -> dict[str, Any]:
    if tp is Any:
        return {}
    return msgspec.json.schema(tp)


class Agent:
    """Base class of every agent: subclass it and implement ``handle``.

    Class attributes (override in subclasses):
        kind: the service name in discovery, and the prefix of generated ids.
        capabilities: names or ``Capability`` values this agent serves.
        input_type: default input type for capabilities given as plain names.
        output_type: default output type for capabilities given as plain names.
        description: one sentence on what the agent is for.
        max_concurrency: tasks run at once before refusing with 503.
        default_timeout: seconds a task may run when its sender set no deadline.

    Args:
        agent_id: a unique id on the bus; ``<kind>-<random>`` when None.
        capabilities: override the class's capabilities.
        max_concurrency: override the class's limit.
        default_timeout: override the class's default task timeout.
    """

    kind: ClassVar[str] = "agent"
    capabilities: ClassVar[Sequence[str | Capability]] = ()
    input_type: ClassVar[Any] = Any
    output_type: ClassVar[Any] = Any
    description: ClassVar[str] = ""
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    default_timeout: float = DEFAULT_TASK_TIMEOUT

    def __init__(
        self,
        agent_id: str | None = None,
        *,
        capabilities: Sequence[str | Capability] | None = None,
        max_concurrency: int | None = None,
        default_timeout: float | None = None,
    ) -> None:
        kind = re.sub(r"[^A-Za-z0-9_-]", "-", self.kind) or "agent"
        self.id = validate_agent_id(agent_id or f"{kind}-{new_agent_suffix()}")
        if max_concurrency is not None:
            self.max_concurrency = max_concurrency
        if self.max_concurrency < 1:
            raise ConfigError(f"agent {self.id}: max_concurrency must be at least 1")
        if default_timeout is not None:
            self.default_timeout = default_timeout
        declared = type(self).capabilities if capabilities is None else capabilities
        self.capability_specs: tuple[Capability, ...] = tuple(self._spec(c) for c in declared)
        if not self.capability_specs:
            raise ConfigError(f"agent {self.id} ({type(self).__name__}) declares no capabilities")
        names = [c.name for c in self.capability_specs]
        if len(set(names)) != len(names):
            raise ConfigError(f"agent {self.id} declares a capability twice: {names}")

    def _spec(self, capability: str | Capability) -> Capability:
        """A plain name takes its types from the class: from its one declared
        ``Capability`` if it has one (so a built-in can serve under another
        name), else from the class attributes."""
        if isinstance(capability, Capability):
            return capability
        declared = [c for c in type(self).capabilities if isinstance(c, Capability)]
        if len(declared) == 1:
            return dataclasses.replace(declared[0], name=capability)
        return Capability(
            name=capability,
            input_type=type(self).input_type,
            output_type=type(self).output_type,
            description=type(self).description,
        )

    @property
    def capability_names(self) -> tuple[str, ...]:
        """The names of the capabilities this agent serves."""
        return tuple(c.name for c in self.capability_specs)

    @property
    def context(self) -> TaskContext:
        """The running task's context (delegate, progress); only inside ``handle``."""
        return current_context()

    async def handle(self, task: AgentMessage) -> Any:
        """Answer one task: return the result (any JSON value) or raise.

        Raise ``bus.TaskError`` (or ``BadInput``) to fail with a specific code;
        any other exception becomes a 500 reply and the agent keeps serving.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement handle()")

    async def aclose(self) -> None:
        """Release resources the agent holds (connections to a model server, files).

        The host calls it once the agent has stopped taking tasks and its last
        task has ended; the default does nothing.
        """

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {list(self.capability_names)}>"
