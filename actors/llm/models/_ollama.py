"""The Ollama client: ``POST /api/chat``, streamed as NDJSON or answered whole.

The wire format is Ollama's own (``docs/api.md``, "Generate a chat
completion", and the tool-calling docs): messages carry ``role`` and
``content``; an assistant's ``tool_calls`` are ``{"function": {"name",
"arguments"}}`` with the arguments as a JSON *object* and no id; a tool
result is ``{"role": "tool", "tool_name", "content"}``. A streamed answer is
one JSON object per line, ``{"message": {...}, "done": false}``, ending with
``done: true`` and the token counts; tool calls come whole, in any line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import msgspec

from ._chat import ChatMessage, ModelReply, TokenSink, ToolCall, ToolSpec
from ._errors import ModelError, ModelNotFound, ModelResponseError
from ._http import HTTPChatModel, ServerMessage

__all__ = ["OllamaModel"]


class _Function(msgspec.Struct, kw_only=True):
    name: str = ""
    # the API sends an object; some models' templates yield a JSON string
    arguments: dict[str, Any] | str = msgspec.field(default_factory=dict)


class _ToolCall(msgspec.Struct, kw_only=True, omit_defaults=True):
    function: _Function
    id: str | None = None  # newer servers may name calls; older ones never do


class _Message(msgspec.Struct, kw_only=True, omit_defaults=True):
    role: str
    content: str
    tool_calls: list[_ToolCall] = []
    tool_name: str | None = None


class _ToolFunction(msgspec.Struct, kw_only=True):
    name: str
    description: str
    parameters: dict[str, Any]


class _Tool(msgspec.Struct, kw_only=True):
    type: Literal["function"] = "function"
    function: _ToolFunction


class _Request(msgspec.Struct, kw_only=True, omit_defaults=True):
    model: str
    messages: list[_Message]
    stream: bool
    tools: list[_Tool] = []
    format: dict[str, Any] | None = None
    options: dict[str, Any] = {}


class _ReplyMessage(msgspec.Struct, kw_only=True):
    content: str = ""
    tool_calls: list[_ToolCall] | None = None


class _Reply(msgspec.Struct, kw_only=True):
    """The whole answer, or one line of a streamed one."""

    model: str = ""
    message: _ReplyMessage | None = None
    done: bool = False
    done_reason: str = ""
    prompt_eval_count: int | None = None
    eval_count: int | None = None
    error: str | None = None


class _Tag(msgspec.Struct, kw_only=True):
    name: str = ""
    model: str = ""


class _Tags(msgspec.Struct, kw_only=True):
    models: list[_Tag] = []


_reply_decoder = msgspec.json.Decoder(_Reply)
_tags_decoder = msgspec.json.Decoder(_Tags)


class OllamaModel(HTTPChatModel):
    """A ``ChatModel`` served by Ollama's native API.

    Args:
        settings: resolved settings (``create_model`` resolves them); without a
            ``base_url``, the local default is used, not ``OLLAMA_HOST``.
    """

    provider = "ollama"
    server_label = "Ollama server"
    unreachable_hint = "is `ollama serve` running?"

    async def chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[ToolSpec] = (),
        output_schema: dict[str, Any] | None = None,
        on_token: TokenSink | None = None,
    ) -> ModelReply:
        request = self._request(messages, tools, output_schema)
        if not request.stream:
            response = await self._http.fetch("POST", "/api/chat", request)
            answer = self._decode(response.content)
            if answer.error is not None:
                raise ModelError(f"{self._http.where} failed: {answer.error}")
            return self._reply(answer, answer.message or _ReplyMessage(), [])

        text: list[str] = []
        calls: list[_ToolCall] = []
        async with self._http.stream("POST", "/api/chat", request) as response:
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                chunk = self._decode(line)
                if chunk.error is not None:
                    raise ModelError(f"{self._http.where} failed mid-answer: {chunk.error}")
                if chunk.message is not None:
                    if chunk.message.content:
                        text.append(chunk.message.content)
                        if on_token is not None:
                            await on_token(chunk.message.content)
                    calls.extend(chunk.message.tool_calls or ())
                if chunk.done:
                    return self._reply(chunk, _ReplyMessage(content="".join(text)), calls)
        raise ModelResponseError(
            f"{self._http.where} ended its answer before saying it was done "
            f"(truncated after {len(text)} pieces); retry, and see the server's log"
        )

    async def check(self) -> None:
        response = await self._http.fetch("GET", "/api/tags")
        try:
            tags = _tags_decoder.decode(response.content)
        except msgspec.DecodeError as exc:
            raise ModelResponseError(
                f"{self._http.where} sent a malformed model list ({exc}); "
                "is base_url an Ollama server?"
            ) from exc
        pulled = {_tagged(name) for tag in tags.models for name in (tag.name, tag.model) if name}
        if _tagged(self.settings.model) not in pulled:
            have = ", ".join(sorted(tag.name for tag in tags.models)) or "none"
            raise ModelNotFound(
                f"the model {self.settings.model!r} is not pulled on {self._http.where} "
                f"(it has: {have}); run `ollama pull {self.settings.model}`"
            )

    def _request(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec],
        output_schema: dict[str, Any] | None,
    ) -> _Request:
        options = dict(self.settings.options)
        if self.settings.temperature is not None:
            options["temperature"] = self.settings.temperature
        if self.settings.max_tokens is not None:
            options["num_predict"] = self.settings.max_tokens
        return _Request(
            model=self.settings.model,
            messages=[_wire_message(message) for message in messages],
            stream=self.settings.stream,
            tools=[
                _Tool(
                    function=_ToolFunction(
                        name=tool.name, description=tool.description, parameters=tool.parameters
                    )
                )
                for tool in tools
            ],
            format=output_schema,
            options=options,
        )

    def _decode(self, data: bytes | str) -> _Reply:
        try:
            return _reply_decoder.decode(data)
        except msgspec.DecodeError as exc:
            excerpt = data[:200] if isinstance(data, str) else data[:200].decode(errors="replace")
            raise ModelResponseError(
                f"{self._http.where} sent a malformed answer ({exc}): {excerpt!r}"
            ) from exc

    def _reply(self, last: _Reply, message: _ReplyMessage, calls: list[_ToolCall]) -> ModelReply:
        tool_calls = [self._tool_call(call) for call in [*calls, *(message.tool_calls or ())]]
        reason = last.done_reason or "stop"
        if tool_calls and reason == "stop":  # Ollama says "stop" after tool calls too
            reason = "tool_calls"
        return ModelReply(
            message=ChatMessage.assistant(message.content, tool_calls),
            model=last.model or self.settings.model,
            finish_reason=reason,
            prompt_tokens=last.prompt_eval_count,
            completion_tokens=last.eval_count,
        )

    def _tool_call(self, call: _ToolCall) -> ToolCall:
        name = call.function.name
        if not name:
            raise ModelResponseError(f"{self._http.where} sent a tool call without a name")
        arguments = call.function.arguments
        if isinstance(arguments, str):
            text = arguments
            try:
                decoded = msgspec.json.decode(text) if text.strip() else {}
            except msgspec.DecodeError as exc:
                raise ModelResponseError(
                    f"the model called {name!r} with arguments that are not JSON "
                    f"({exc}): {text[:200]!r}"
                ) from exc
            if not isinstance(decoded, dict):
                raise ModelResponseError(
                    f"the model called {name!r} with arguments that are not a JSON object: "
                    f"{text[:200]!r}"
                )
            arguments = decoded
        return ToolCall(id=call.id or self.new_call_id(), name=name, arguments=arguments)

    def _classify(self, status: int, message: ServerMessage) -> ModelError | None:
        text = message.text.lower()
        if status == 404 and "model" in text and "not found" in text:
            return ModelNotFound(
                f"the model {self.settings.model!r} is not pulled on {self._http.where} "
                f"({message.text}); run `ollama pull {self.settings.model}`"
            )
        return None


def _wire_message(message: ChatMessage) -> _Message:
    return _Message(
        role=message.role,
        content=message.content,
        tool_calls=[
            _ToolCall(function=_Function(name=call.name, arguments=call.arguments))
            for call in message.tool_calls
        ],
        tool_name=message.name if message.role == "tool" else None,
    )


def _tagged(name: str) -> str:
    """``llama3.2`` as Ollama lists it, ``llama3.2:latest``; a registry port is no tag."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"
