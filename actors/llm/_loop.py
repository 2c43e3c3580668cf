"""The agent loop: ask the model, run the tools it calls, repeat until it answers.

It knows nothing of the bus: messages go in, the answer comes out, and
progress goes to a callback when there is one. ``LLMAgent`` runs it per
task; tests run it with a ``ScriptedModel`` and no server.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import anyio
import msgspec

from bus import CallboardError, ConfigError, TaskCancelled, TaskTimeout, now_ms

from ._errors import ToolError, ToolRoundsExceeded, UnknownTool
from ._output import InvalidOutput, OutputContract
from ._progress import DEFAULT_PROGRESS_INTERVAL, ProgressReport, TokenProgress
from ._text_calls import text_tool_calls
from ._tools import Tool
from .models import ChatMessage, ChatModel, ModelResponseError, ToolCall

__all__ = ["DEFAULT_MAX_TOOL_ROUNDS", "AgentLoop"]

log = logging.getLogger("callboard.llm")

DEFAULT_MAX_TOOL_ROUNDS = 8
"""Model turns with tool calls one task may take before it must answer."""

_DEADLINE_SLACK_MS = 50
"""A sub-task timing out this close to the task's own deadline is the task ending."""

_encoder = msgspec.json.Encoder()
_sorted_encoder = msgspec.json.Encoder(order="sorted")


class AgentLoop:
    """A model, the tools it may call, and the rules of one conversation.

    Args:
        model: the language model.
        tools: the tools it may call; names must be unique.
        max_tool_rounds: model turns with tool calls allowed before the
            answer; one more turn that still calls tools fails the task.
        output: the shape the final answer must have; free text when None.
        progress_interval: least seconds between two streamed-text events.

    Attributes:
        text_tool_calls: replies whose tool calls came written as text (see
            ``_text_calls``), run as calls; counted since the loop was made.
        repeated_calls: replies that only repeated calls already answered in
            the same task; they are not run again, the model is told to answer
            from the results it has (it still counts as a tool round).
        output_repairs: answers off the declared output shape, after which
            the model was asked once more (a second one fails the task).
    """

    def __init__(
        self,
        model: ChatModel,
        tools: Sequence[Tool] = (),
        *,
        max_tool_rounds: int = DEFAULT_MAX_TOOL_ROUNDS,
        output: OutputContract | None = None,
        progress_interval: float = DEFAULT_PROGRESS_INTERVAL,
    ) -> None:
        self.model = model
        self.tools: dict[str, Tool] = {}
        for tool in tools:
            if tool.name in self.tools:
                raise ConfigError(f"two tools are named {tool.name!r}; give one another name")
            self.tools[tool.name] = tool
        self.max_tool_rounds = max_tool_rounds
        self.output = output
        self.progress_interval = progress_interval
        self.text_tool_calls = 0
        self.repeated_calls = 0
        self.output_repairs = 0

    async def run(
        self,
        messages: Sequence[ChatMessage],
        *,
        report: ProgressReport | None = None,
        deadline_ms: int | None = None,
    ) -> Any:
        """Converse until the model answers without calling tools; return the answer.

        Args:
            messages: the conversation so far (system prompt and request).
            report: publishes progress events; none are sent when None.
            deadline_ms: the task's deadline (unix ms): a tool timing out at
                it ends the task instead of being reported to the model.

        Returns:
            The answer's text, or its decoded value when an output is declared.

        Raises:
            ModelError: the model failed, or answered twice off the declared shape.
            ToolRoundsExceeded: the model was still calling tools at the limit.
        """
        history = list(messages)
        specs = [tool.spec() for tool in self.tools.values()]
        schema = self.output.schema if self.output is not None else None
        stream = TokenProgress(report, self.progress_interval) if report is not None else None
        tool_rounds = 0
        repaired = False
        turn = 0
        answered: dict[str, str] = {}  # call (name and arguments) -> its successful result
        while True:
            turn += 1
            if stream is not None:
                stream.start_turn(turn)
            reply = await self.model.chat(
                history,
                tools=specs,
                output_schema=schema,
                on_token=stream.on_token if stream is not None else None,
            )
            if stream is not None:
                await stream.flush()
            message = reply.message
            if not message.tool_calls and (written := text_tool_calls(message.content, self.tools)):
                # the model wrote its calls as text: run them as the calls they are
                self.text_tool_calls += 1
                log.info("model %s wrote %d tool call(s) as text", self.model.name, len(written))
                message = ChatMessage.assistant(tool_calls=written)
            history.append(message)
            if message.tool_calls:
                if tool_rounds >= self.max_tool_rounds:
                    raise self._rounds_exceeded(message.tool_calls)
                tool_rounds += 1
                keys = [_call_key(call) for call in message.tool_calls]
                if all(key in answered for key in keys):
                    # small models ask again for what they already have, round after
                    # round: say so instead of running the calls again
                    self.repeated_calls += 1
                    history[-1] = ChatMessage.user(_repeat_reminder(keys, answered))
                    continue
                results = await self._run_calls(message.tool_calls, turn, report, deadline_ms)
                history.extend(
                    ChatMessage.tool(call, content)
                    for call, content in zip(message.tool_calls, results, strict=True)
                )
                answered.update(
                    (key, content)
                    for key, content in zip(keys, results, strict=True)
                    if not content.startswith('{"error":')
                )
                continue
            if self.output is None:
                return message.content
            try:
                return self.output.parse(message.content)
            except InvalidOutput as exc:
                if repaired:
                    raise ModelResponseError(
                        f"model {self.model.name} twice answered off the declared output "
                        f"schema; last time: {exc}"
                    ) from None
                repaired = True
                self.output_repairs += 1
                history.append(
                    ChatMessage.user(
                        f"Your answer is not valid: {exc}. Answer again with only the JSON "
                        "value, matching the required schema."
                    )
                )

    def _rounds_exceeded(self, calls: Sequence[ToolCall]) -> ToolRoundsExceeded:
        names = ", ".join(sorted({c.name for c in calls}))
        return ToolRoundsExceeded(
            f"model {self.model.name} was still calling tools ({names}) after "
            f"{self.max_tool_rounds} rounds: raise max_tool_rounds, describe the tools "
            "better, or tell the model in the system prompt when to stop and answer"
        )

    async def _run_calls(
        self,
        calls: Sequence[ToolCall],
        turn: int,
        report: ProgressReport | None,
        deadline_ms: int | None,
    ) -> list[str]:
        """Run one reply's calls concurrently; results in call order."""
        if len(calls) == 1:
            return [await self._call(calls[0], turn, report, deadline_ms)]
        results = [""] * len(calls)
        ending: list[Exception] = []
        async with anyio.create_task_group() as tg:

            async def run(index: int, call: ToolCall) -> None:
                try:
                    results[index] = await self._call(call, turn, report, deadline_ms)
                except Exception as exc:  # the task is ending: stop the others too
                    ending.append(exc)
                    tg.cancel_scope.cancel()

            for index, call in enumerate(calls):
                tg.start_soon(run, index, call)
        if ending:
            raise ending[0]
        return results

    async def _call(
        self, call: ToolCall, turn: int, report: ProgressReport | None, deadline_ms: int | None
    ) -> str:
        """One tool call's result as JSON text; a failure becomes an error result."""
        if report is not None:
            await report(
                f"calling {call.name}",
                {"round": turn, "tool": call.name, "call_id": call.id, "arguments": call.arguments},
            )
        try:
            tool = self.tools.get(call.name)
            if tool is None:
                known = ", ".join(self.tools) or "none"
                raise UnknownTool(f"there is no tool named {call.name!r}; the tools are: {known}")
            value = await tool.invoke(dict(call.arguments))
            try:
                return _encoder.encode(value).decode()
            except (TypeError, ValueError) as exc:
                raise ToolError(
                    f"tool {call.name} returned a value that is not JSON: {exc}"
                ) from None
        except Exception as exc:
            if _ends_task(exc, deadline_ms):
                raise
            log.info("tool call %s failed, told the model: %s", call.name, exc)
            return _error_result(exc)


def _call_key(call: ToolCall) -> str:
    """A call's identity: its tool and its arguments, as canonical JSON."""
    return _sorted_encoder.encode([call.name, call.arguments]).decode()


def _repeat_reminder(keys: Sequence[str], answered: dict[str, str]) -> str:
    """The user turn that replaces a reply of calls whose results the model already has."""
    lines = [
        "You already made these tool calls in this conversation; their results were:",
        *(f"- {key} -> {answered[key]}" for key in dict.fromkeys(keys)),
        "Answer my request now from these results, in words, without calling a tool again.",
    ]
    return "\n".join(lines)


def _ends_task(exc: Exception, deadline_ms: int | None) -> bool:
    """Whether a tool's failure is this task ending (so it must propagate)."""
    if isinstance(exc, TaskCancelled):
        return True
    if isinstance(exc, TaskTimeout) and deadline_ms is not None:
        return now_ms() >= deadline_ms - _DEADLINE_SLACK_MS
    return False


def _error_result(exc: Exception) -> str:
    if isinstance(exc, CallboardError):
        error = {"code": exc.code, "type": exc.type, "message": exc.message}
    else:
        error = {"code": 500, "type": "tool_failure", "message": f"{type(exc).__name__}: {exc}"}
    return _encoder.encode({"error": error}).decode()
