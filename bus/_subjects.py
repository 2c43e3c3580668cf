"""Every subject callboard uses is built and validated here, and nowhere else.

Capability names and agent ids are single NATS subject tokens; the prefix
(``agents`` by default) may have several dot-separated tokens so that several
systems can share one NATS account.
"""

from __future__ import annotations

import re
from functools import lru_cache

from ._errors import ConfigError

__all__ = [
    "DEFAULT_PREFIX",
    "QUEUE_GROUP",
    "Subjects",
    "validate_agent_id",
    "validate_capability",
]

DEFAULT_PREFIX = "agents"
QUEUE_GROUP = "callboard"
"""The queue group every replica of a capability joins, so each task reaches one."""

_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,128}")
_PREFIX = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


def _validate_token(value: str, what: str) -> str:
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise ConfigError(
            f"invalid {what} {value!r}: use 1-128 letters, digits, '-' or '_' "
            "(it becomes one NATS subject token, so no dots, spaces or wildcards)"
        )
    return value


def validate_capability(name: str) -> str:
    """Return ``name`` if it is a valid capability name, else raise ConfigError."""
    return _validate_token(name, "capability name")


def validate_agent_id(agent_id: str) -> str:
    """Return ``agent_id`` if it is a valid agent id, else raise ConfigError."""
    return _validate_token(agent_id, "agent id")


class Subjects:
    """Builds the subjects of one callboard system (one prefix).

    Args:
        prefix: the first token(s) of every subject, ``agents`` by default.
    """

    __slots__ = ("_status_prefix", "_task_prefix", "prefix")

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
            raise ConfigError(
                f"invalid subject prefix {prefix!r}: use dot-separated tokens of letters, "
                "digits, '-' or '_' (for example 'agents' or 'team1.agents')"
            )
        self.prefix = prefix
        self._task_prefix = f"{prefix}.task."
        self._status_prefix = f"{prefix}.status."

    def __repr__(self) -> str:
        return f"Subjects({self.prefix!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Subjects) and other.prefix == self.prefix

    def __hash__(self) -> int:
        return hash(self.prefix)

    def task(self, capability: str) -> str:
        """``<prefix>.task.<capability>``: where tasks for a capability are sent."""
        return _cached_join(self._task_prefix, capability, "capability name")

    def agent(self, agent_id: str) -> str:
        """``<prefix>.agent.<agent_id>``: one agent instance's control address
        (ping and cancel; a task sent here is refused with a pointer to
        ``agent_task``, see the README's wire protocol)."""
        return f"{self.prefix}.agent.{validate_agent_id(agent_id)}"

    def agent_task(self, capability: str, agent_id: str) -> str:
        """``<prefix>.agent.<capability>.<agent_id>``: where one agent instance takes
        tasks of one capability directly.

        The capability is in the subject so that the server's subscribe
        permissions bind it: a user that may not serve a capability cannot
        listen here, whatever its agents say about themselves.
        """
        return (
            f"{self.prefix}.agent.{validate_capability(capability)}.{validate_agent_id(agent_id)}"
        )

    def parse_agent_task(self, subject: str) -> tuple[str, str] | None:
        """``(capability, agent_id)`` of a direct task subject, or None if it is not one."""
        head = f"{self.prefix}.agent."
        if not subject.startswith(head):
            return None
        rest = subject[len(head) :].split(".")
        if len(rest) != 2:
            return None
        return rest[0], rest[1]

    def owns(self, subject: str) -> bool:
        """Whether ``subject`` is inside this system's prefix (``<prefix>.…``)."""
        return subject.startswith(f"{self.prefix}.")

    def status(self, agent_id: str, state: str) -> str:
        """``<prefix>.status.<agent_id>.<state>``: one agent's status events of one state."""
        return (
            f"{self._status_prefix}{validate_agent_id(agent_id)}.{_validate_token(state, 'state')}"
        )

    def status_prefix(self, agent_id: str) -> str:
        """``<prefix>.status.<agent_id>.``: prepend to a state to get its subject."""
        return f"{self._status_prefix}{validate_agent_id(agent_id)}."

    def cancel(self) -> str:
        """``<prefix>.cancel``: "stop task X", heard by every agent.

        A broadcast, because the caller cannot know which replica of a queue
        group took the task; cancels are rare, so every agent listening costs little.
        """
        return f"{self.prefix}.cancel"

    def all_status(self) -> str:
        """``<prefix>.status.>``: the whole status stream."""
        return f"{self._status_prefix}>"

    def status_of_state(self, state: str) -> str:
        """``<prefix>.status.*.<state>``: every agent's events of one state."""
        return f"{self._status_prefix}*.{_validate_token(state, 'state')}"

    def capability_of(self, subject: str) -> str | None:
        """The capability of a task subject, or None if it is not one."""
        if subject.startswith(self._task_prefix):
            return subject[len(self._task_prefix) :]
        return None

    def parse_status(self, subject: str) -> tuple[str, str] | None:
        """``(agent_id, state)`` of a status subject, or None if it is not one."""
        if not subject.startswith(self._status_prefix):
            return None
        rest = subject[len(self._status_prefix) :].split(".")
        if len(rest) != 2:
            return None
        return rest[0], rest[1]


@lru_cache(maxsize=4096)
def _cached_join(prefix: str, token: str, what: str) -> str:
    return prefix + _validate_token(token, what)
