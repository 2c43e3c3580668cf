"""Pipeline steps, their results, and references from one step to another.

A step's payload may use earlier results:

- ``"$prev"`` is the previous step's whole result; ``"$prev.summary"`` one field of it;
- ``"$steps.<name>"`` / ``"$steps.<name>.field"`` is the result of the step
  with that ``id`` (or that 1-based position, ``$steps.1.value``);
- inside a longer string, ``"${prev.summary}"`` is replaced by the value as text.

A string that is exactly a reference keeps the value's JSON type; a path that
does not exist is an error that names the step and the reference.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec

from bus import CallboardError, ConfigError, DispatchError, ErrorInfo

__all__ = [
    "PipelineError",
    "Step",
    "StepFailed",
    "StepResult",
    "as_step",
    "resolve_references",
]


class Step(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One step of a pipeline.

    Attributes:
        capability: the capability to send it to.
        payload: the task payload; may hold references to earlier results.
        id: a name other steps can refer to (``$steps.<id>``).
        timeout: seconds this step may take (the orchestrator's default if None).
    """

    capability: str
    payload: Any = None
    id: str | None = None
    timeout: float | None = None


class StepResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What one step produced, tagged with its position.

    Attributes:
        seq: the step's 1-based position in the pipeline.
        capability: the capability it went to.
        step_id: the step's ``id``, if it had one.
        task_id: the task ID it was sent with.
        agent: the agent that answered.
        result: the result, when it succeeded.
        error: the error, when it failed.
        elapsed_ms: wall time of the step.
    """

    seq: int
    capability: str
    step_id: str | None = None
    task_id: str = ""
    agent: str = ""
    result: Any = None
    error: ErrorInfo | None = None
    elapsed_ms: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the step produced a result."""
        return self.error is None


class PipelineError(ConfigError):
    """A pipeline is malformed (unknown reference, bad step)."""


def as_step(step: Step | Mapping[str, Any]) -> Step:
    """Accept a ``Step`` or a plain mapping such as ``{"capability": ..., "payload": ...}``."""
    if isinstance(step, Step):
        return step
    try:
        return msgspec.convert(step, Step)
    except msgspec.ValidationError as exc:
        raise PipelineError(f"invalid pipeline step {dict(step)!r}: {exc}") from exc


_WHOLE = re.compile(r"\$(prev|steps\.[A-Za-z0-9_-]+)((?:\.[A-Za-z0-9_-]+)*)")
_EMBEDDED = re.compile(r"\$\{(prev|steps\.[A-Za-z0-9_-]+)((?:\.[A-Za-z0-9_-]+)*)\}")


def resolve_references(payload: Any, results: Mapping[str, Any], *, prev: str | None) -> Any:
    """Replace references in ``payload`` with values from earlier results.

    Args:
        payload: the step's payload (any JSON value).
        results: earlier results by step id and by 1-based position (as text).
        prev: the key of the previous step in ``results``, or None for the first step.
    """
    if isinstance(payload, str):
        whole = _WHOLE.fullmatch(payload)
        if whole:
            return _lookup(whole.group(1), whole.group(2), results, prev, payload)
        if "${" in payload:
            return _EMBEDDED.sub(
                lambda m: _as_text(_lookup(m.group(1), m.group(2), results, prev, m.group(0))),
                payload,
            )
        return payload
    if isinstance(payload, dict):
        return {k: resolve_references(v, results, prev=prev) for k, v in payload.items()}
    if isinstance(payload, list):
        return [resolve_references(v, results, prev=prev) for v in payload]
    return payload


def _lookup(
    root: str, path: str, results: Mapping[str, Any], prev: str | None, reference: str
) -> Any:
    if root == "prev":
        if prev is None:
            raise PipelineError(f"{reference!r}: the first step has no previous result")
        key = prev
    else:
        key = root.split(".", 1)[1]
    if key not in results:
        raise PipelineError(f"{reference!r}: no earlier step is named {key!r}")
    value = results[key]
    for part in path.split(".")[1:]:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise PipelineError(f"{reference!r}: the result has no field {part!r}")
    return value


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return msgspec.json.encode(value).decode()


class StepFailed(DispatchError):
    """A pipeline step failed; the pipeline stopped there.

    Attributes:
        seq: the failed step's 1-based position.
        step: the step itself.
        cause: the step's own error.
        results: the results of the steps that succeeded before it.
    """

    def __init__(self, seq: int, step: Step, cause: CallboardError, results: list[StepResult]):
        name = f" {step.id!r}" if step.id else ""
        super().__init__(
            f"pipeline step {seq}{name} ({step.capability}) failed: {cause}",
            task_id=getattr(cause, "task_id", None),
            capability=step.capability,
            code=cause.code,
            type=cause.type,
        )
        self.seq = seq
        self.step = step
        self.cause = cause
        self.results = results
