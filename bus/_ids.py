"""Task IDs: unique, short, cheap to make on the hot path.

A NUID (the NATS unique id: a random prefix plus a sequence) costs a fraction of
a ``uuid4`` and is already what nats-py uses for inboxes.
"""

from __future__ import annotations

import re

from nats.nuid import NUID

from ._errors import BadInput

__all__ = ["new_agent_suffix", "new_task_id", "validate_task_id"]

_nuid = NUID()
_TASK_ID = re.compile(r"[\x21-\x7e]{1,128}")


def new_task_id() -> str:
    """A new, unique task ID (22 characters of [0-9A-Za-z])."""
    return _nuid.next().decode()


def new_agent_suffix() -> str:
    """A short random suffix that makes an agent id unique on the bus."""
    return _nuid.next().decode()[-8:].lower()


def validate_task_id(task_id: str) -> str:
    """Return ``task_id`` if it is 1-128 printable ASCII characters without spaces."""
    if not _TASK_ID.fullmatch(task_id):
        raise BadInput(
            f"invalid task id {task_id[:40]!r}: use 1-128 printable ASCII characters, no spaces"
        )
    return task_id
