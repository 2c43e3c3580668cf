"""A model that replays a script: deterministic tests of agent loops.

Each ``chat`` call takes the next entry of the script. An entry is a reply
(text, a message, a ``ModelReply``), an error to raise, or a function of the
request that returns one, so a test can answer from what the agent sent
(for example, echo a tool's result back). Every request is recorded.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from ._chat import ChatMessage, ModelReply, TokenSink, ToolCall, ToolSpec
from ._errors import ModelError, ModelResponseError

__all__ = ["ScriptEntry", "ScriptedCall", "ScriptedModel", "tool_call"]


class ScriptedCall(msgspec.Struct, frozen=True, kw_only=True):
    """One request the scripted model received."""

    messages: tuple[ChatMessage, ...]
    tools: tuple[ToolSpec, ...]
    output_schema: dict[str, Any] | None = None


Reply = str | ChatMessage | ModelReply
ScriptEntry = Reply | ModelError | Callable[[ScriptedCall], Reply]

_call_ids = itertools.count(1)


def tool_call(name: str, /, **arguments: Any) -> ToolCall:
    """A tool call with a fresh id: ``tool_call("math", expression="6*7")``."""
    return ToolCall(id=f"call_{next(_call_ids)}", name=name, arguments=arguments)


class ScriptedModel:
    """A ``ChatModel`` that answers from a script, in order.

    Args:
        script: the entries, one per ``chat`` call.
        name: shown in ``name`` (``scripted:<name>``).
        chunk: characters per streamed piece when ``on_token`` is given.

    Attributes:
        calls: every request received, in order.
    """

    def __init__(self, script: Sequence[ScriptEntry], *, name: str = "model", chunk: int = 4):
        self._script = list(script)
        self._name = name
        self._chunk = max(1, chunk)
        self.calls: list[ScriptedCall] = []

    @property
    def name(self) -> str:
        return f"scripted:{self._name}"

    @property
    def remaining(self) -> int:
        """Entries not yet used."""
        return len(self._script) - len(self.calls)

    async def chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[ToolSpec] = (),
        output_schema: dict[str, Any] | None = None,
        on_token: TokenSink | None = None,
    ) -> ModelReply:
        call = ScriptedCall(
            messages=tuple(messages), tools=tuple(tools), output_schema=output_schema
        )
        index = len(self.calls)
        self.calls.append(call)
        if index >= len(self._script):
            raise ModelResponseError(
                f"{self.name} has no more replies: its script has {len(self._script)}, "
                f"this is request {index + 1}"
            )
        entry = self._script[index]
        if isinstance(entry, ModelError):
            raise entry
        reply = _as_reply(entry(call) if callable(entry) else entry, self._name)
        if on_token is not None:
            text = reply.message.content
            for start in range(0, len(text), self._chunk):
                await on_token(text[start : start + self._chunk])
        return reply

    async def check(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


def _as_reply(entry: Reply, model: str) -> ModelReply:
    if isinstance(entry, ModelReply):
        return entry
    message = ChatMessage.assistant(entry) if isinstance(entry, str) else entry
    reason = "tool_calls" if message.tool_calls else "stop"
    return ModelReply(message=message, model=model, finish_reason=reason)
