"""Pipelines: steps, their dependencies, references between them, and results.

A pipeline is a list of steps. A step's payload may use other steps' results
(see ``_references``): ``"$prev"`` / ``"$prev.summary"`` (the step just before
it), ``"$steps.<id>.field"`` (a named or 1-based numbered step), and
``"${prev.summary}"`` inside a longer string.

Dependencies. A step depends on the steps named in its ``after`` list (ids or
1-based positions) and on every step its payload refers to. It is dispatched
once all of its dependencies have succeeded, so a pipeline is a DAG; unknown
names, duplicate ids, ``$prev`` in the first step and cycles are
``PipelineError``s raised before anything is dispatched (``plan_dependencies``).

Concurrency and order. ``run_pipeline(..., max_concurrency=N)`` keeps up to N
steps in flight; among the steps that are ready it always dispatches the one
given first. The default, 1, therefore runs the steps one after another in the
order given (when every dependency points backwards, as references had to
before), exactly as pipelines always ran, so a step that relied on the order
rather than on a reference still finds its predecessors finished. Fan-out is
opt-in: raise ``max_concurrency`` (``--concurrency`` on the command line,
``max_concurrency`` in a pipeline file). Whatever order steps finish in,
results come back in the order the steps were given, each tagged with its
``seq`` (also sent as ``Agent-Seq``).

Failures. By default the first failing step cancels the steps still in flight
(the caller stops waiting, and the task client tells their agents to stop)
and raises ``StepFailed``. With ``partial=True`` every step that can run does,
the result list is complete, a failed step carries its ``error``, and a step
that depends on a failed one is not dispatched and gets a 424
``dependency_failed`` error naming that dependency.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import msgspec

from bus import CallboardError, DispatchError, ErrorInfo

from ._references import (
    MAX_NESTING,
    PipelineError,
    find_references,
    nested_too_deep,
    resolve_references,
)

__all__ = [
    "DEFAULT_PIPELINE_CONCURRENCY",
    "PipelineError",
    "PipelineFile",
    "Step",
    "StepFailed",
    "StepResult",
    "as_step",
    "load_pipeline",
    "plan_dependencies",
    "resolve_references",
]

DEFAULT_PIPELINE_CONCURRENCY = 1
"""Steps in flight at once by default: one, in the order given (raise it to fan out)."""


class Step(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One step of a pipeline.

    Attributes:
        capability: the capability to send it to.
        payload: the task payload; may hold references to other steps' results.
        id: a name other steps can refer to (``$steps.<id>``, ``after``).
        timeout: seconds this step may take (the pipeline's default if None).
        after: ids (or 1-based positions) of steps that must succeed before
            this one is dispatched, in addition to those its payload refers to.
    """

    capability: str
    payload: Any = None
    id: str | None = None
    timeout: float | None = None
    after: tuple[str, ...] = ()


class StepResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What one step produced, tagged with its position.

    Attributes:
        seq: the step's 1-based position in the pipeline.
        capability: the capability it went to.
        step_id: the step's ``id``, if it had one.
        task_id: the task ID it was sent with ("" if it was never sent).
        agent: the agent that answered.
        result: the result, when it succeeded.
        error: the error, when it failed (``partial=True`` runs only).
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


class PipelineFile(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A pipeline written as a file: ``{"steps": [...]}`` in JSON, ``[[steps]]`` in TOML.

    Attributes:
        steps: the steps, in order.
        max_concurrency: steps in flight at once (``--concurrency`` overrides it).
    """

    steps: list[Step]
    max_concurrency: Annotated[int, msgspec.Meta(ge=1)] = DEFAULT_PIPELINE_CONCURRENCY


def as_step(step: Step | Mapping[str, Any]) -> Step:
    """Accept a ``Step`` or a plain mapping such as ``{"capability": ..., "payload": ...}``."""
    if isinstance(step, Step):
        return step
    try:
        return msgspec.convert(step, Step)
    except msgspec.ValidationError as exc:
        raise PipelineError(f"invalid pipeline step {dict(step)!r}: {exc}") from exc


def load_pipeline(path: str | Path, text: bytes | None = None) -> PipelineFile:
    """Read and validate a pipeline file (``.toml``, else JSON).

    Args:
        path: the file; its suffix picks the format (``-`` for JSON given as ``text``).
        text: the file's content, when already read (e.g. from stdin).

    Raises:
        PipelineError: the file cannot be read, does not decode, nests deeper
            than ``MAX_NESTING`` levels, or its steps do not form a valid
            pipeline (see ``plan_dependencies``).
    """
    path = Path(path)
    is_toml = path.suffix.lower() == ".toml"
    try:
        data = path.read_bytes() if text is None else text
        if is_toml:
            pipeline = msgspec.toml.decode(data, type=PipelineFile)
        else:
            pipeline = msgspec.json.decode(data, type=PipelineFile)
    except OSError as exc:
        raise PipelineError(f"cannot read pipeline file {str(path)!r}: {exc}") from exc
    except msgspec.DecodeError as exc:
        kind = "TOML" if is_toml else "JSON"
        raise PipelineError(
            f"pipeline file {str(path)!r} is not a valid {kind} pipeline: {exc}"
        ) from exc
    except RecursionError:  # the decoders give up a few hundred levels deeper than the limit
        raise PipelineError(_too_deep(path)) from None
    for seq, step in enumerate(pipeline.steps, 1):
        if nested_too_deep(step.payload):
            raise PipelineError(_too_deep(path, step_label(seq, step)))
    try:
        plan_dependencies(pipeline.steps)
    except PipelineError as exc:
        raise PipelineError(f"pipeline file {str(path)!r}: {exc}") from None
    return pipeline


def _too_deep(path: Path, step: str = "") -> str:
    where = f"{step}: the payload is " if step else ""
    return f"malformed file {str(path)!r}: {where}nested deeper than {MAX_NESTING} levels"


def step_label(seq: int, step: Step) -> str:
    """How messages name a step: ``step 2 'div' (math)``."""
    name = f" {step.id!r}" if step.id else ""
    return f"step {seq}{name} ({step.capability})"


def plan_dependencies(steps: Sequence[Step]) -> list[frozenset[int]]:
    """Check a pipeline's structure and return each step's dependencies.

    Returns:
        For each step, the 0-based indices of the steps it depends on: its
        ``after`` list and every step its payload refers to.

    Raises:
        PipelineError: duplicate ids, an id that is another step's position,
            an unknown name in ``after`` or in a reference, ``$prev`` in the
            first step, or a dependency cycle (the message shows the cycle).
    """
    by_id: dict[str, int] = {}
    for index, step in enumerate(steps):
        if step.id is None:
            continue
        if step.id in by_id:
            raise PipelineError(
                f"steps {by_id[step.id] + 1} and {index + 1} have the same id {step.id!r}: "
                "ids must be unique"
            )
        if step.id.isdigit() and int(step.id) != index + 1:
            raise PipelineError(
                f"{step_label(index + 1, step)}: id {step.id!r} is another step's position; "
                "use a name"
            )
        by_id[step.id] = index

    def find(key: str) -> int | None:
        if key in by_id:
            return by_id[key]
        if key.isdigit() and 1 <= int(key) <= len(steps):
            return int(key) - 1
        return None

    plan: list[frozenset[int]] = []
    for index, step in enumerate(steps):
        label = step_label(index + 1, step)
        deps: set[int] = set()
        for key in step.after:
            found = find(key)
            if found is None:
                raise PipelineError(f"{label}: 'after' names no step {key!r}{_known(by_id)}")
            deps.add(found)
        for root, reference in _references_of(label, step):
            if root == "prev":
                if index == 0:
                    raise PipelineError(
                        f"{label}: {reference!r}: the first step has no previous result"
                    )
                deps.add(index - 1)
                continue
            found = find(root)
            if found is None:
                raise PipelineError(f"{label}: {reference!r} names no step {root!r}{_known(by_id)}")
            deps.add(found)
        if index in deps:
            raise PipelineError(f"{label} depends on itself")
        plan.append(frozenset(deps))
    _check_acyclic(steps, plan)
    return plan


def _references_of(label: str, step: Step) -> list[tuple[str, str]]:
    try:
        return list(find_references(step.payload))
    except PipelineError as exc:  # nested too deep
        raise PipelineError(f"{label}: {exc}") from None


def _known(by_id: Mapping[str, int]) -> str:
    return f" (step ids: {', '.join(sorted(by_id))})" if by_id else " (no step has an id)"


def _check_acyclic(steps: Sequence[Step], plan: Sequence[frozenset[int]]) -> None:
    """Kahn's algorithm; what it cannot order holds a cycle, which is reported."""
    waiting = [len(deps) for deps in plan]
    dependants: list[list[int]] = [[] for _ in plan]
    for index, deps in enumerate(plan):
        for dep in deps:
            dependants[dep].append(index)
    ready = [i for i, count in enumerate(waiting) if count == 0]
    ordered = 0
    while ready:
        done = ready.pop()
        ordered += 1
        for index in dependants[done]:
            waiting[index] -= 1
            if waiting[index] == 0:
                ready.append(index)
    if ordered == len(plan):
        return
    # Every step left over waits on another step left over: walk back until one repeats.
    path: list[int] = []
    node = min(i for i, count in enumerate(waiting) if count > 0)
    while node not in path:
        path.append(node)
        node = min(dep for dep in plan[node] if waiting[dep] > 0)
    cycle = [*path[path.index(node) :], node]
    names = " -> ".join(step_label(i + 1, steps[i]) for i in cycle)
    raise PipelineError(f"the steps' dependencies form a cycle (each waits for the next): {names}")


def failure_result(
    seq: int, step: Step, error: CallboardError, *, task_id: str = "", elapsed_ms: float = 0.0
) -> StepResult:
    """The ``StepResult`` of a step that failed with ``error``."""
    return StepResult(
        seq=seq,
        capability=step.capability,
        step_id=step.id,
        task_id=task_id or getattr(error, "task_id", None) or "",
        agent=getattr(error, "agent_id", None) or "",
        error=ErrorInfo(code=error.code, type=error.type, message=error.message),
        elapsed_ms=elapsed_ms,
    )


class StepFailed(DispatchError):
    """A pipeline step failed; the pipeline stopped there.

    Attributes:
        seq: the failed step's 1-based position.
        step: the step itself.
        cause: the step's own error.
        results: the results of the steps that succeeded, in step order.
        cancelled: positions of the steps that were in flight and were
            abandoned (their replies are no longer awaited).
        result: the failed step's own ``StepResult`` (its ``error``, task ID, time).
    """

    def __init__(
        self,
        seq: int,
        step: Step,
        cause: CallboardError,
        results: list[StepResult],
        *,
        cancelled: Sequence[int] = (),
        result: StepResult | None = None,
    ):
        super().__init__(
            f"pipeline {step_label(seq, step)} failed: {cause}",
            task_id=getattr(cause, "task_id", None),
            capability=step.capability,
            code=cause.code,
            type=cause.type,
        )
        self.seq = seq
        self.step = step
        self.cause = cause
        self.results = results
        self.cancelled = tuple(cancelled)
        self.result = result or failure_result(seq, step, cause)
