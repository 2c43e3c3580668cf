"""The OpenAI-compatible client: ``POST {base_url}/chat/completions``.

Any server with OpenAI's Chat Completions API will do (api.openai.com,
llama.cpp, vLLM, LM Studio, Ollama's ``/v1``). An assistant's ``tool_calls``
are ``{"id", "type": "function", "function": {"name", "arguments"}}`` with the
arguments as a JSON *string*; a tool result is ``{"role": "tool",
"tool_call_id", "content"}``. A streamed answer is server-sent events, one
``data: {chunk}`` each, whose ``choices[0].delta`` carries a piece of text or
of a tool call (by ``index``: the id and name first, then fragments of the
arguments), then a usage chunk with no choices, then ``data: [DONE]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from . import _openai_wire as wire
from ._chat import ChatMessage, ModelReply, TokenSink, ToolCall, ToolSpec
from ._errors import ModelError, ModelNotFound, ModelResponseError
from ._http import HTTPChatModel, ServerMessage

__all__ = ["OpenAIModel"]

_DONE = "[DONE]"


_completion_decoder = msgspec.json.Decoder(wire.Completion)
_chunk_decoder = msgspec.json.Decoder(wire.Chunk)
_models_decoder = msgspec.json.Decoder(wire.ModelList)


@dataclass
class _PendingCall:
    """A streamed tool call being put together from its deltas."""

    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class OpenAIModel(HTTPChatModel):
    """A ``ChatModel`` served by an OpenAI-compatible Chat Completions API.

    Args:
        settings: resolved settings (``create_model`` resolves them, reading
            ``OPENAI_BASE_URL`` and the key); without a ``base_url``,
            api.openai.com is used and no key is read.
    """

    provider = "openai"
    server_label = "OpenAI-compatible server"
    unreachable_hint = "is the server running, and is base_url (OPENAI_BASE_URL) right?"

    def headers(self) -> dict[str, str]:
        key = self.settings.api_key
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[ToolSpec] = (),
        output_schema: dict[str, Any] | None = None,
        on_token: TokenSink | None = None,
    ) -> ModelReply:
        body = self._body(messages, tools, output_schema)
        if self.settings.stream:
            return await self._chat_streamed(body, on_token)
        response = await self._http.fetch("POST", "/chat/completions", body)
        try:
            answer = _completion_decoder.decode(response.content)
        except msgspec.DecodeError as exc:
            raise self._malformed(exc, response.content) from exc
        if answer.error is not None:
            raise ModelError(f"{self._http.where} failed: {answer.error.message}")
        if not answer.choices:
            raise ModelResponseError(f"{self._http.where} answered with no choices")
        choice = answer.choices[0]
        reason = choice.finish_reason or "stop"
        calls = [
            self._tool_call(call.id, call.function.name, call.function.arguments, reason)
            for call in choice.message.tool_calls or ()
        ]
        # a refusal is the model's answer, in words, instead of the content
        content = choice.message.content or choice.message.refusal or ""
        return self._reply(content, calls, answer.model, reason, answer.usage)

    async def _chat_streamed(self, body: dict[str, Any], on_token: TokenSink | None) -> ModelReply:
        text: list[str] = []
        pending: dict[int, _PendingCall] = {}
        model = ""
        reason: str | None = None
        usage: wire.Usage | None = None
        done = False
        async with self._http.events("/chat/completions", body) as source:
            async for event in source.aiter_sse():
                if event.data.strip() == _DONE:
                    done = True
                    break
                if not event.data.strip():
                    continue
                try:
                    chunk = _chunk_decoder.decode(event.data)
                except msgspec.DecodeError as exc:
                    raise self._malformed(exc, event.data) from exc
                if chunk.error is not None or event.event == "error":
                    said = chunk.error.message if chunk.error is not None else event.data
                    raise ModelError(f"{self._http.where} failed mid-answer: {said}")
                model = chunk.model or model
                usage = chunk.usage or usage
                for choice in chunk.choices:
                    if choice.index != 0:
                        continue
                    reason = choice.finish_reason or reason
                    delta = choice.delta
                    if delta.content:
                        text.append(delta.content)
                        if on_token is not None:
                            await on_token(delta.content)
                    for part in delta.tool_calls or ():
                        call = pending.setdefault(part.index, _PendingCall())
                        call.id = call.id or part.id or ""
                        if part.function is not None:
                            call.name = call.name or part.function.name or ""
                            call.arguments.append(part.function.arguments or "")
        if not done and reason is None:
            raise ModelResponseError(
                f"{self._http.where} ended its answer without a finish_reason or [DONE] "
                f"(truncated after {len(text)} pieces); retry, and see the server's log"
            )
        reason = reason or "stop"
        calls = [
            self._tool_call(call.id, call.name, "".join(call.arguments), reason)
            for _, call in sorted(pending.items())
        ]
        return self._reply("".join(text), calls, model, reason, usage)

    async def check(self) -> None:
        response = await self._http.fetch("GET", "/models", allow=(404,))
        if response.status_code == 404:
            return  # the server lists no models: the first chat call will tell
        try:
            listing = _models_decoder.decode(response.content)
        except msgspec.DecodeError as exc:
            raise self._malformed(exc, response.content) from exc
        served = [entry.id for entry in listing.data]
        if self.settings.model not in served:
            raise ModelNotFound(
                f"{self._http.where} does not serve the model {self.settings.model!r} "
                f"(it serves: {', '.join(served) or 'none'}); check the model name"
            )

    def _body(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec],
        output_schema: dict[str, Any] | None,
    ) -> dict[str, Any]:
        stream = self.settings.stream
        request = wire.Request(
            model=self.settings.model,
            messages=[_wire_message(message) for message in messages],
            stream=stream,
            tools=[
                wire.Tool(
                    function=wire.ToolFunction(
                        name=tool.name, description=tool.description, parameters=tool.parameters
                    )
                )
                for tool in tools
            ],
            temperature=self.settings.temperature,
            max_tokens=self.settings.max_tokens,
            stream_options=wire.StreamOptions(include_usage=True) if stream else None,
            response_format=self._response_format(output_schema),
        )
        # the provider-specific extras go in first, so they cannot undo the request itself
        body: dict[str, Any] = {**self.settings.options, **msgspec.to_builtins(request)}
        return body

    def _response_format(self, schema: dict[str, Any] | None) -> wire.ResponseFormat | None:
        style = self.settings.structured_output
        if schema is None or style == "off":
            return None
        if style == "json_object":
            return wire.ResponseFormat(type="json_object", schema=schema)
        return wire.ResponseFormat(
            type="json_schema",
            json_schema=wire.JSONSchema(name="answer", schema=schema, strict=False),
        )

    def _reply(
        self,
        content: str,
        calls: list[ToolCall],
        model: str,
        reason: str,
        usage: wire.Usage | None,
    ) -> ModelReply:
        return ModelReply(
            message=ChatMessage.assistant(content, calls),
            model=model or self.settings.model,
            finish_reason=reason,
            prompt_tokens=None if usage is None else usage.prompt_tokens,
            completion_tokens=None if usage is None else usage.completion_tokens,
        )

    def _tool_call(
        self, call_id: str, name: str, arguments: str | dict[str, Any], reason: str
    ) -> ToolCall:
        if not name:
            raise ModelResponseError(f"{self._http.where} sent a tool call without a name")
        if isinstance(arguments, str):
            cut = " (the answer was cut short at max_tokens)" if reason == "length" else ""
            try:
                decoded = msgspec.json.decode(arguments) if arguments.strip() else {}
            except msgspec.DecodeError as exc:
                raise ModelResponseError(
                    f"the model called {name!r} with arguments that are not JSON{cut} "
                    f"({exc}): {arguments[:200]!r}"
                ) from exc
            if not isinstance(decoded, dict):
                raise ModelResponseError(
                    f"the model called {name!r} with arguments that are not a JSON object: "
                    f"{arguments[:200]!r}"
                )
            arguments = decoded
        return ToolCall(id=call_id or self.new_call_id(), name=name, arguments=arguments)

    def _malformed(self, exc: msgspec.DecodeError, data: bytes | str) -> ModelResponseError:
        excerpt = data[:200] if isinstance(data, str) else data[:200].decode(errors="replace")
        return ModelResponseError(
            f"{self._http.where} sent a malformed answer ({exc}): {excerpt!r}"
        )

    def _classify(self, status: int, message: ServerMessage) -> ModelError | None:
        said = f"HTTP {status}: {message.text}" if message.text else f"HTTP {status}"
        key_env = self.settings.api_key_env
        if status in (401, 403):
            if not self.settings.api_key:
                return ModelError(f"{self._http.where} wants an API key ({said}); set {key_env}")
            return ModelError(
                f"{self._http.where} refused the API key ({said}); set {key_env} to a valid key"
            )
        text = message.text.lower()
        if message.code == "model_not_found" or (
            status == 404 and ("model" in text and ("not exist" in text or "not found" in text))
        ):
            return ModelNotFound(
                f"{self._http.where} does not serve the model {self.settings.model!r} ({said}); "
                "check the model name, and that the key may use it"
            )
        if status == 429 and message.code == "insufficient_quota":
            # waiting will not refill a quota: fail now instead of retrying
            return ModelError(
                f"{self._http.where} says the quota of the key in {key_env} is used up ({said}); "
                "check the account's plan and billing"
            )
        return None


def _wire_message(message: ChatMessage) -> wire.Message:
    calls = [
        wire.ToolCall(
            id=call.id,
            function=wire.Function(
                name=call.name, arguments=msgspec.json.encode(call.arguments).decode()
            ),
        )
        for call in message.tool_calls
    ]
    # an assistant turn that only calls tools has no content; the key is left out
    # (OpenAI accepts null or absent; llama-cpp-python's server rejects null)
    content = None if calls and not message.content else message.content
    return wire.Message(
        role=message.role,
        content=content,
        tool_calls=calls,
        tool_call_id=message.tool_call_id if message.role == "tool" else None,
    )
