"""OpenAI's Chat Completions wire types, as msgspec Structs.

Only the fields callboard sends or reads; unknown fields in answers are ignored,
so servers that add their own (llama.cpp's ``timings``, vLLM's ``prompt_logprobs``)
decode the same.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = [
    "AnswerMessage",
    "Choice",
    "Chunk",
    "ChunkChoice",
    "Completion",
    "Delta",
    "Error",
    "Function",
    "FunctionDelta",
    "JSONSchema",
    "Message",
    "ModelEntry",
    "ModelList",
    "Request",
    "ResponseFormat",
    "StreamOptions",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolFunction",
    "Usage",
]


class Function(msgspec.Struct, kw_only=True):
    name: str = ""
    # a JSON string by the spec; a few compatible servers send the object
    arguments: str | dict[str, Any] = ""


class ToolCall(msgspec.Struct, kw_only=True):
    id: str = ""
    type: Literal["function"] = "function"
    function: Function


class Message(msgspec.Struct, kw_only=True, omit_defaults=True):
    role: str
    content: str | None = None  # omitted when None: llama.cpp's server refuses a null
    tool_calls: list[ToolCall] = []
    tool_call_id: str | None = None


class ToolFunction(msgspec.Struct, kw_only=True):
    name: str
    description: str
    parameters: dict[str, Any]


class Tool(msgspec.Struct, kw_only=True):
    type: Literal["function"] = "function"
    function: ToolFunction


class JSONSchema(msgspec.Struct, kw_only=True):
    name: str
    schema: dict[str, Any]
    strict: bool


class ResponseFormat(msgspec.Struct, kw_only=True, omit_defaults=True):
    """``json_schema`` (OpenAI, vLLM) or ``json_object`` with a ``schema`` (llama.cpp)."""

    type: Literal["json_schema", "json_object"]
    json_schema: JSONSchema | None = None
    schema: dict[str, Any] | None = None


class StreamOptions(msgspec.Struct, kw_only=True):
    include_usage: bool


class Request(msgspec.Struct, kw_only=True, omit_defaults=True):
    model: str
    messages: list[Message]
    stream: bool
    tools: list[Tool] = []
    temperature: float | None = None
    max_tokens: int | None = None
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None


class Usage(msgspec.Struct, kw_only=True):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class Error(msgspec.Struct, kw_only=True):
    message: str = ""
    code: str | int | None = None


class AnswerMessage(msgspec.Struct, kw_only=True):
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None


class Choice(msgspec.Struct, kw_only=True):
    index: int = 0
    message: AnswerMessage = msgspec.field(default_factory=AnswerMessage)
    finish_reason: str | None = None


class Completion(msgspec.Struct, kw_only=True):
    model: str = ""
    choices: list[Choice] = []
    usage: Usage | None = None
    error: Error | None = None


class FunctionDelta(msgspec.Struct, kw_only=True):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(msgspec.Struct, kw_only=True):
    index: int = 0
    id: str | None = None
    function: FunctionDelta | None = None


class Delta(msgspec.Struct, kw_only=True):
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(msgspec.Struct, kw_only=True):
    index: int = 0
    delta: Delta = msgspec.field(default_factory=Delta)
    finish_reason: str | None = None


class Chunk(msgspec.Struct, kw_only=True):
    model: str = ""
    choices: list[ChunkChoice] = []
    usage: Usage | None = None
    error: Error | None = None


class ModelEntry(msgspec.Struct, kw_only=True):
    id: str = ""


class ModelList(msgspec.Struct, kw_only=True):
    data: list[ModelEntry] = []
