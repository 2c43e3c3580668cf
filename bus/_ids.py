"""Task IDs: unique, short, cheap to make on the hot path.

A task ID is a random prefix of 12 characters (fresh in each process, and
again in a forked child) and a counter of 10 hex digits that starts at a
random point: 22 characters of [0-9A-Za-z], like a NUID, for a fraction of
a NUID's cost (and of a ``uuid4``'s).
"""

from __future__ import annotations

import os
import re
import secrets
import string

from nats.nuid import NUID

from ._errors import BadInput

__all__ = ["new_agent_suffix", "new_task_id", "validate_task_id"]

_nuid = NUID()
_TASK_ID = re.compile(r"[\x21-\x7e]{1,128}")
_ALPHABET = string.digits + string.ascii_letters
_COUNTER_END = 16**10


class _TaskIds:
    __slots__ = ("count", "prefix")

    def __init__(self) -> None:
        self.prefix = ""
        self.count = 0
        self.reseed()

    def reseed(self) -> None:
        self.prefix = "".join(secrets.choice(_ALPHABET) for _ in range(12))
        self.count = secrets.randbelow(16**9)


_ids = _TaskIds()
os.register_at_fork(after_in_child=_ids.reseed)


def new_task_id() -> str:
    """A new, unique task ID (22 characters of [0-9A-Za-z])."""
    ids = _ids
    count = ids.count = ids.count + 1
    if count >= _COUNTER_END:
        ids.reseed()
        count = ids.count
    return f"{ids.prefix}{count:010x}"


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
