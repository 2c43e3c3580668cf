"""Names of the JetStream resources of one callboard system (one prefix).

Subjects follow the prefix (``<prefix>.jobs.<capability>``); stream, consumer
and bucket names may not contain dots, so they are the prefix upper-cased
with ``_`` for ``.`` (``agents`` → ``AGENTS_TASKS``).
"""

from __future__ import annotations

import re

from .._errors import BadInput, ConfigError
from .._subjects import DEFAULT_PREFIX, Subjects, validate_capability

__all__ = [
    "CANCEL_TOKEN",
    "SUBMITTED_TOKEN",
    "DurableNames",
    "split_task_ref",
    "validate_durable_task_id",
]

SUBMITTED_TOKEN = "submitted"
"""The last token of a submission's key."""
CANCEL_TOKEN = "cancel"
"""The last token of a cancel request's key."""

_KEY = re.compile(r"[A-Za-z0-9_=-]{1,128}")


def validate_durable_task_id(task_id: str) -> str:
    """A durable task's ID is also its key in the bucket, so it has fewer characters."""
    if not _KEY.fullmatch(task_id):
        raise BadInput(
            f"invalid durable task id {task_id[:40]!r}: use 1-128 letters, digits, '_', '-' "
            "or '=' (it is the task's key in the result bucket)"
        )
    return task_id


def split_task_ref(ref: str) -> tuple[str | None, str]:
    """``(capability, task_id)`` of ``TASK_ID`` or ``CAPABILITY.TASK_ID`` (a record's key)."""
    capability, dot, task_id = ref.rpartition(".")
    if not dot:
        return None, validate_durable_task_id(ref)
    return _capability(capability), validate_durable_task_id(task_id)


def _capability(capability: str) -> str:
    try:
        return validate_capability(capability)
    except ConfigError as exc:
        raise BadInput(exc.message) from None


class DurableNames:
    """Subjects and resource names of durable dispatch for one prefix.

    Attributes:
        tasks_stream: the work-queue stream of tasks (``AGENTS_TASKS``).
        dead_stream: the stream that keeps dead letters (``AGENTS_DEAD``).
        status_stream: the stream that keeps status events (``AGENTS_STATUS``).
        bucket: the key-value bucket of task records (``AGENTS_TASKS``).
    """

    __slots__ = ("bucket", "dead_stream", "prefix", "status_stream", "subjects", "tasks_stream")

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        self.subjects = Subjects(prefix)
        self.prefix = prefix
        base = prefix.replace(".", "_").upper()
        self.tasks_stream = f"{base}_TASKS"
        self.dead_stream = f"{base}_DEAD"
        self.status_stream = f"{base}_STATUS"
        self.bucket = f"{base}_TASKS"

    def job(self, capability: str) -> str:
        """``<prefix>.jobs.<capability>``: where durable tasks of a capability wait."""
        return f"{self.prefix}.jobs.{validate_capability(capability)}"

    def all_jobs(self) -> str:
        return f"{self.prefix}.jobs.>"

    def dead(self, capability: str) -> str:
        """``<prefix>.dead.<capability>``: tasks that used up their attempts."""
        return f"{self.prefix}.dead.{validate_capability(capability)}"

    def all_dead(self) -> str:
        return f"{self.prefix}.dead.>"

    def consumer(self, capability: str) -> str:
        """The durable pull consumer that every replica of a capability shares."""
        return validate_capability(capability)

    def record_key(self, capability: str, task_id: str) -> str:
        """``<capability>.<task_id>``: the task's record, written by the agents of its
        capability only (``$KV.<bucket>.<capability>.*`` is what their users may write)."""
        return f"{validate_capability(capability)}.{task_id}"

    def submission_key(self, capability: str, task_id: str) -> str:
        """``<capability>.<task_id>.submitted``: the submitter's first record of a task,
        a key no agent user may write and whose record no submitter may overwrite."""
        return f"{self.record_key(capability, task_id)}.{SUBMITTED_TOKEN}"

    def cancel_key(self, capability: str, task_id: str) -> str:
        """``<capability>.<task_id>.cancel``: the caller's request to cancel a queued task,
        written by submitters; it counts only if its token hashes to the task's
        ``Agent-Cancel-Hash``."""
        return f"{self.record_key(capability, task_id)}.{CANCEL_TOKEN}"

    def key_subject(self, key: str) -> str:
        """The subject a revision of ``key`` is stored on (``$KV.<bucket>.<key>``)."""
        return f"$KV.{self.bucket}.{key}"
