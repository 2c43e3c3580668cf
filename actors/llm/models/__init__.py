"""Language model clients: the transport between an agent and a model server.

``ChatModel`` is the interface; ``create_model(ModelSettings(...))`` gives an
Ollama (``/api/chat``) or OpenAI-compatible (``/v1/chat/completions``) client,
and ``ScriptedModel`` replays a script for tests. The HTTP clients need the
``llm`` extra; this package imports without it.
"""

from __future__ import annotations

from ._chat import ChatMessage, ChatModel, ModelReply, Role, TokenSink, ToolCall, ToolSpec
from ._errors import (
    ModelError,
    ModelNotFound,
    ModelRateLimited,
    ModelResponseError,
    ModelUnavailable,
)
from ._factory import create_model
from ._scripted import ScriptedCall, ScriptedModel, ScriptEntry, tool_call
from ._settings import (
    DEFAULT_MODEL_TIMEOUT,
    DEFAULT_OLLAMA_URL,
    DEFAULT_OPENAI_URL,
    ModelSettings,
    ollama_base_url,
)

__all__ = [
    "DEFAULT_MODEL_TIMEOUT",
    "DEFAULT_OLLAMA_URL",
    "DEFAULT_OPENAI_URL",
    "ChatMessage",
    "ChatModel",
    "ModelError",
    "ModelNotFound",
    "ModelRateLimited",
    "ModelReply",
    "ModelResponseError",
    "ModelSettings",
    "ModelUnavailable",
    "Role",
    "ScriptEntry",
    "ScriptedCall",
    "ScriptedModel",
    "TokenSink",
    "ToolCall",
    "ToolSpec",
    "create_model",
    "ollama_base_url",
    "tool_call",
]
