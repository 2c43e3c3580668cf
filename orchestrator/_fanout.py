"""The pipeline scheduler: dispatch steps as their dependencies finish.

One coroutine owns the whole state (what is ready, in flight, resolved), so no
lock is needed: it starts a task per ready step in a task group, up to
``max_concurrency`` at once, always the ready step given first, and each task
reports its outcome back on a memory stream. Failing fast is cancelling that
task group's scope; the error is raised after the group has exited, so callers
get ``StepFailed`` itself, not an exception group. See ``_pipeline`` for the
semantics.

A run that starts (its steps well formed) is reported once when it ends, to
``report`` if given: ok, partial (``partial=True`` with failures) or failed (it
raised, cancellation included), with each step's outcome: ok, failed (its own
error) or skipped (a failed dependency, never started, or abandoned in flight).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from bus import AgentMessage, CallboardError, ErrorInfo, new_task_id

from ._pipeline import (
    PipelineError,
    Step,
    StepFailed,
    StepResult,
    failure_result,
    plan_dependencies,
    resolve_references,
    step_label,
)

__all__ = ["PipelineReport", "Requester", "run_steps"]

PipelineReport = Callable[[str, Sequence[str]], None]
"""Told how a run ended: its outcome and each step's, in step order."""


class Requester(Protocol):
    """What the scheduler sends tasks with (``Orchestrator.request``)."""

    async def __call__(
        self,
        capability: str,
        payload: Any,
        *,
        timeout: float | None = ...,
        task_id: str | None = ...,
        seq: int | None = ...,
    ) -> AgentMessage: ...


class _Outcome(NamedTuple):
    step_index: int
    task_id: str
    elapsed_ms: float
    reply: AgentMessage | None = None
    error: Exception | None = None


async def run_steps(
    request: Requester,
    steps: Sequence[Step],
    *,
    timeout: float | None,
    max_concurrency: int,
    partial: bool,
    report: PipelineReport | None = None,
) -> list[StepResult]:
    """Run a pipeline's steps as their dependencies allow (see ``Orchestrator.run_pipeline``).

    Raises:
        PipelineError: the pipeline is malformed (before anything is dispatched),
            or a reference names a field a result does not have.
        StepFailed: a step failed and ``partial`` is False.
    """
    if max_concurrency < 1:
        raise PipelineError(f"max_concurrency must be at least 1, got {max_concurrency}")
    run = _Run(request, steps, timeout, max_concurrency, partial)
    if report is None:
        return await run.run()
    try:
        results = await run.run()
    except BaseException:
        report("failed", run.step_outcomes())
        raise
    report("ok" if all(r.ok for r in results) else "partial", run.step_outcomes())
    return results


class _Run:
    """The state of one pipeline run, owned by the coroutine in ``run``."""

    def __init__(
        self,
        request: Requester,
        steps: Sequence[Step],
        timeout: float | None,
        max_concurrency: int,
        partial: bool,
    ) -> None:
        self.request = request
        self.steps = steps
        self.timeout = timeout
        self.limit = max_concurrency
        self.partial = partial
        self.deps = plan_dependencies(steps)
        self.dependants: list[list[int]] = [[] for _ in steps]
        for index, deps in enumerate(self.deps):
            for dep in deps:
                self.dependants[dep].append(index)
        self.waiting = [len(deps) for deps in self.deps]
        self.ready = [index for index, count in enumerate(self.waiting) if count == 0]
        heapq.heapify(self.ready)
        self.results: list[StepResult | None] = [None] * len(steps)
        self.values: dict[str, Any] = {}
        self.in_flight: set[int] = set()
        self.resolved = 0
        self.failure: BaseException | None = None
        self.failed_index: int | None = None  # the step that stopped a fail-fast run

    async def run(self) -> list[StepResult]:
        # Each step reports at most once, so a buffer of len(steps) never blocks a sender.
        send, receive = anyio.create_memory_object_stream[_Outcome](max(len(self.steps), 1))
        with send, receive:
            async with anyio.create_task_group() as tg:
                while self.resolved < len(self.steps) and self.failure is None:
                    while self.ready and len(self.in_flight) < self.limit and self.failure is None:
                        index = heapq.heappop(self.ready)
                        payload = self._payload(index)
                        if payload is not _UNRESOLVED:
                            self.in_flight.add(index)
                            tg.start_soon(self._dispatch, index, payload, send.clone())
                    if self.failure is not None or self.resolved == len(self.steps):
                        break
                    outcome = await receive.receive()
                    self.in_flight.discard(outcome.step_index)
                    self._settle(outcome)
                tg.cancel_scope.cancel()
        if self.failure is not None:
            raise self.failure
        return [result for result in self.results if result is not None]

    def step_outcomes(self) -> list[str]:
        """Each step's outcome label (ok, failed, skipped), in step order."""
        outcomes = []
        for index, result in enumerate(self.results):
            if result is None:
                outcomes.append("failed" if index == self.failed_index else "skipped")
            elif result.error is None:
                outcomes.append("ok")
            else:
                skipped = result.error.type == "dependency_failed"
                outcomes.append("skipped" if skipped else "failed")
        return outcomes

    def _payload(self, index: int) -> Any:
        """The step's payload with its references resolved, or ``_UNRESOLVED``."""
        try:
            prev = str(index) if index > 0 else None
            return resolve_references(self.steps[index].payload, self.values, prev=prev)
        except PipelineError as exc:
            message = f"{step_label(index + 1, self.steps[index])}: {exc}"
            if self.partial:
                error = PipelineError(message, code=400, type="bad_reference")
                self._fail(index, failure_result(index + 1, self.steps[index], error))
            else:
                self.failure = PipelineError(message)
                self.failed_index = index
            return _UNRESOLVED

    async def _dispatch(
        self, index: int, payload: Any, send: MemoryObjectSendStream[_Outcome]
    ) -> None:
        step = self.steps[index]
        task_id = new_task_id()
        started = time.perf_counter()
        with send:
            try:
                reply = await self.request(
                    step.capability,
                    payload,
                    timeout=step.timeout if step.timeout is not None else self.timeout,
                    task_id=task_id,
                    seq=index + 1,
                )
            except Exception as exc:  # settled (and re-raised if not a step failure) by run()
                send.send_nowait(_Outcome(index, task_id, _since(started), error=exc))
            else:
                send.send_nowait(_Outcome(index, task_id, _since(started), reply=reply))

    def _settle(self, outcome: _Outcome) -> None:
        index, step = outcome.step_index, self.steps[outcome.step_index]
        error = outcome.error
        if error is not None and not isinstance(error, CallboardError):
            self.failure = error
            self.failed_index = index
        elif error is not None:
            result = failure_result(
                index + 1, step, error, task_id=outcome.task_id, elapsed_ms=outcome.elapsed_ms
            )
            if self.partial:
                self._fail(index, result)
                return
            succeeded = [r for r in self.results if r is not None]
            cancelled = sorted(i + 1 for i in self.in_flight)
            failed = StepFailed(
                index + 1, step, error, succeeded, cancelled=cancelled, result=result
            )
            failed.__cause__ = error
            self.failure = failed
            self.failed_index = index
        else:
            assert outcome.reply is not None
            self._succeed(index, outcome.reply, outcome.task_id, outcome.elapsed_ms)

    def _succeed(self, index: int, reply: AgentMessage, task_id: str, elapsed_ms: float) -> None:
        step = self.steps[index]
        self.results[index] = StepResult(
            seq=index + 1,
            capability=step.capability,
            step_id=step.id,
            task_id=task_id,
            agent=reply.sender,
            result=reply.payload,
            elapsed_ms=elapsed_ms,
        )
        self.resolved += 1
        self.values[str(index + 1)] = reply.payload
        if step.id:
            self.values[step.id] = reply.payload
        for dependant in self.dependants[index]:
            self.waiting[dependant] -= 1
            if self.waiting[dependant] == 0 and self.results[dependant] is None:
                heapq.heappush(self.ready, dependant)

    def _fail(self, index: int, result: StepResult) -> None:
        """Record a failed step, and fail every step that depends on it, transitively."""
        self.results[index] = result
        self.resolved += 1
        failed = [index]
        while failed:
            dep = failed.pop()
            reason = step_label(dep + 1, self.steps[dep])
            for dependant in self.dependants[dep]:
                if self.results[dependant] is not None:
                    continue
                step = self.steps[dependant]
                self.results[dependant] = StepResult(
                    seq=dependant + 1,
                    capability=step.capability,
                    step_id=step.id,
                    error=ErrorInfo(
                        code=424,
                        type="dependency_failed",
                        message=f"depends on {reason}, which failed",
                    ),
                )
                self.resolved += 1
                failed.append(dependant)


_UNRESOLVED: Any = object()


def _since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
