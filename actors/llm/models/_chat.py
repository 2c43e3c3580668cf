"""The chat model interface every model client implements.

Agents and the orchestrator talk to a language model through ``ChatModel``:
a list of ``ChatMessage`` and the ``ToolSpec`` of the tools it may call go
in, one ``ModelReply`` comes out. The types are provider-neutral; each client
maps them to its wire format (Ollama's ``/api/chat``, OpenAI's
``/v1/chat/completions``) and back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import msgspec

__all__ = [
    "ChatMessage",
    "ChatModel",
    "ModelReply",
    "Role",
    "TokenSink",
    "ToolCall",
    "ToolSpec",
]

Role = Literal["system", "user", "assistant", "tool"]

TokenSink = Callable[[str], Awaitable[None]]
"""Called with each piece of text as a streaming model produces it."""


class ToolCall(msgspec.Struct, frozen=True, kw_only=True):
    """One call the model asks for.

    Attributes:
        id: the provider's call id (generated when the provider gives none),
            echoed in the tool message that answers it.
        name: the tool's name.
        arguments: the arguments, already decoded from JSON.
    """

    id: str
    name: str
    arguments: dict[str, Any] = msgspec.field(default_factory=dict)


class ChatMessage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One message of a conversation.

    Attributes:
        role: system, user, assistant or tool.
        content: the text (for a tool message, the tool's result as JSON text).
        tool_calls: the calls an assistant message asks for.
        tool_call_id: for a tool message, the call it answers.
        name: for a tool message, the tool's name (Ollama wants it).
    """

    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None

    @classmethod
    def system(cls, content: str) -> ChatMessage:
        return cls(role="system", content=content)

    @classmethod
    def user(cls, content: str) -> ChatMessage:
        return cls(role="user", content=content)

    @classmethod
    def assistant(cls, content: str = "", tool_calls: Sequence[ToolCall] = ()) -> ChatMessage:
        return cls(role="assistant", content=content, tool_calls=tuple(tool_calls))

    @classmethod
    def tool(cls, call: ToolCall, content: str) -> ChatMessage:
        return cls(role="tool", content=content, tool_call_id=call.id, name=call.name)


class ToolSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A tool the model may call, as every provider describes one.

    Attributes:
        name: ``^[A-Za-z0-9_-]{1,64}$``, the name the model calls it by.
        description: what it does, for the model to decide when to call it.
        parameters: the JSON Schema of its arguments (an object schema).
    """

    name: str
    description: str = ""
    parameters: dict[str, Any] = msgspec.field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )


class ModelReply(msgspec.Struct, frozen=True, kw_only=True):
    """What one chat call returned.

    Attributes:
        message: the assistant's message (text, tool calls, or both).
        model: the model that answered, as the server named it.
        finish_reason: why it stopped (``stop``, ``tool_calls``, ``length``, ...).
        prompt_tokens: tokens read, when the server reports it.
        completion_tokens: tokens written, when the server reports it.
    """

    message: ChatMessage
    model: str = ""
    finish_reason: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@runtime_checkable
class ChatModel(Protocol):
    """A language model that chats and calls tools.

    Implementations translate every failure into a ``ModelError`` subclass
    (unreachable → ``ModelUnavailable``, not pulled → ``ModelNotFound``,
    malformed or truncated → ``ModelResponseError``, rate limited →
    ``ModelRateLimited``), so a handler never sees an HTTP library's error.
    """

    @property
    def name(self) -> str:
        """``provider:model``, for logs and errors."""
        ...

    async def chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[ToolSpec] = (),
        output_schema: dict[str, Any] | None = None,
        on_token: TokenSink | None = None,
    ) -> ModelReply:
        """One model turn.

        Args:
            messages: the conversation so far.
            tools: tools the model may call in this turn.
            output_schema: a JSON Schema the answer must follow (structured output).
            on_token: stream the answer, passing each piece of text as it comes.
        """
        ...

    async def check(self) -> None:
        """Verify the server is reachable and the model exists; raise ``ModelError`` if not."""
        ...

    async def aclose(self) -> None:
        """Release connections; idempotent."""
        ...
