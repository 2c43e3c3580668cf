"""The built-in agents: real, offline, and safe with hostile input."""

from __future__ import annotations

import logging
import os
from typing import Annotated, Any, Final

import anyio
import anyio.to_process
import msgspec
from anyio import BrokenWorkerProcess
from anyio.lowlevel import RunVar

from bus import AgentMessage, BadInput

from .._agent import Agent, Capability
from ._expression import ExpressionError, evaluate
from ._summary import SummaryError, summarize

__all__ = [
    "EchoAgent",
    "MathAgent",
    "MathInput",
    "MathOutput",
    "SummarizeAgent",
    "SummarizeInput",
    "SummarizeOutput",
]


class MathInput(msgspec.Struct, forbid_unknown_fields=False):
    """An arithmetic expression: numbers, + - * / // % **, parentheses, unary minus."""

    expression: str


class MathOutput(msgspec.Struct):
    """The value of the expression."""

    value: int | float


class MathAgent(Agent):
    """Evaluates arithmetic safely (from the syntax tree, never ``eval``)."""

    kind = "math"
    capabilities = (
        Capability(
            name="math",
            input_type=MathInput,
            output_type=MathOutput,
            description="Evaluate an arithmetic expression such as 2*(3+4).",
            keywords=(
                *("math", "calculate", "compute", "arithmetic", "evaluate", "sum", "multiply"),
                *("+", "-", "*", "/", "^", "%"),  # an operator between operands: "what is 6*7"
            ),
        ),
    )

    async def handle(self, task: AgentMessage) -> MathOutput:
        """Evaluate ``task.payload.expression``; bad expressions are 400s."""
        payload: MathInput = task.payload
        try:
            return MathOutput(value=evaluate(payload.expression))
        except ExpressionError as exc:
            raise BadInput(str(exc)) from exc


class EchoAgent(Agent):
    """Returns the payload unchanged, after ``delay_ms`` if the payload has it.

    Meant for tests and benchmarks: the delay makes a slow agent on demand.
    """

    kind = "echo"
    capabilities = (
        Capability(
            name="echo",
            description="Return the payload unchanged (after delay_ms milliseconds, if given).",
            keywords=("echo", "repeat", "return", "mirror"),
        ),
    )

    async def handle(self, task: AgentMessage) -> Any:
        """Echo the payload; sleep ``delay_ms`` first if asked to."""
        payload = task.payload
        if isinstance(payload, dict) and "delay_ms" in payload:
            delay = payload["delay_ms"]
            if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
                raise BadInput(f"delay_ms must be a non-negative number, got {_preview(delay)}")
            try:
                seconds = delay / 1000.0
            except OverflowError:  # an integer beyond any float
                raise BadInput(f"delay_ms is too large, got {_preview(delay)}") from None
            await anyio.sleep(seconds)
        return payload


_PREVIEW = 60
"""Characters of a bad input value quoted in an error message."""


def _preview(value: Any) -> str:
    """``repr(value)``, shortened: an error quoting a huge input could outgrow its reply."""
    if isinstance(value, int) and value.bit_length() > 64:  # repr is slow, or refused
        sign = "a negative" if value < 0 else "an"
        return f"{sign} integer of about {value.bit_length() * 0.30103:.0f} digits"
    text = repr(value)
    return text if len(text) <= _PREVIEW else text[: _PREVIEW - 3] + "..."


class SummarizeInput(msgspec.Struct):
    """Text to summarise and how many sentences to keep."""

    text: str
    sentences: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 3


class SummarizeOutput(msgspec.Struct):
    """The extractive summary."""

    summary: str


INLINE_TEXT: Final = 8_000
"""Characters summarised in the event loop itself (a few milliseconds at most);
a longer text goes to a worker process, where it cannot hold the GIL that the
connection's read loop and every other agent of the daemon need."""

log = logging.getLogger("callboard.agent")

_processes: RunVar[anyio.CapacityLimiter] = RunVar("callboard_summarize_processes")


def summarize_processes() -> anyio.CapacityLimiter:
    """The bound on worker processes summarising at once (of this event loop):
    one core is left to the event loop that reads the connection."""
    try:
        return _processes.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(max(1, min(4, (os.cpu_count() or 2) - 1)))
        _processes.set(limiter)
        return limiter


WORKER_FAILURES_TOLERATED: Final = 3
"""Worker processes in a row that may die or fail to start before long texts go
to threads for good."""
_worker_failures = 0


async def _summarize_elsewhere(text: str, sentences: int) -> str:
    """``summarize`` in a worker process; in a thread if the worker dies, and for
    good if they keep dying (a main script without ``if __name__ == "__main__":``
    re-runs in each worker and breaks it, as with ``multiprocessing``)."""
    global _worker_failures
    if _worker_failures < WORKER_FAILURES_TOLERATED:
        try:
            summary = await anyio.to_process.run_sync(
                summarize,
                text,
                sentences,
                cancellable=True,  # a cancel or deadline kills the worker
                limiter=summarize_processes(),
            )
        except BrokenWorkerProcess as exc:
            _worker_failures += 1
            if _worker_failures == WORKER_FAILURES_TOLERATED:
                log.warning(
                    "summarize: %d worker processes in a row died or could not start (%r; "
                    "is the main script guarded by 'if __name__ == \"__main__\":'?): long "
                    "texts are summarised in threads from now on, where they hold the GIL "
                    "that the other agents need",
                    _worker_failures,
                    exc.__cause__ or exc,
                )
        else:
            _worker_failures = 0
            return summary
    return await anyio.to_thread.run_sync(summarize, text, sentences)


class SummarizeAgent(Agent):
    """Extractive summary: keeps the sentences with the most frequent words, in order.

    A long text is summarised in a worker process (``anyio.to_process``, at most
    ``summarize_processes()`` at once): in a thread it would hold the GIL, and a
    flood of them starved the daemon's read loop until the server cut the
    connection of every agent on it as a slow consumer.
    """

    kind = "summarize"
    capabilities = (
        Capability(
            name="summarize",
            input_type=SummarizeInput,
            output_type=SummarizeOutput,
            description="Summarise a text by keeping its most representative sentences.",
            keywords=("summarize", "summarise", "summary", "shorten", "condense", "tldr"),
        ),
    )

    async def handle(self, task: AgentMessage) -> SummarizeOutput:
        """Summarise ``task.payload.text`` to ``sentences`` sentences."""
        payload: SummarizeInput = task.payload
        try:
            if len(payload.text) <= INLINE_TEXT:
                summary = summarize(payload.text, payload.sentences)
            else:
                summary = await _summarize_elsewhere(payload.text, payload.sentences)
        except SummaryError as exc:
            raise BadInput(str(exc)) from exc
        return SummarizeOutput(summary=summary)
