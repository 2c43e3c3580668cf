"""Which model to use and how to reach it: one value object for every client.

The daemon TOML (an agent's ``model`` table), the environment
(``OLLAMA_HOST``, ``OPENAI_BASE_URL``, ``OPENAI_API_KEY``) and CLI flags all
fill ``ModelSettings``; ``create_model`` (``_factory``) turns it into a client.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec

from bus import ConfigError

__all__ = [
    "DEFAULT_MODEL_TIMEOUT",
    "DEFAULT_OLLAMA_URL",
    "DEFAULT_OPENAI_URL",
    "ModelSettings",
    "ollama_base_url",
]

DEFAULT_OLLAMA_URL = "http://127.0.0.1:11434"
DEFAULT_OPENAI_URL = "https://api.openai.com/v1"
DEFAULT_MODEL_TIMEOUT = 120.0
"""Seconds to wait for the model's answer (or, streaming, between two chunks)."""

Provider = Literal["ollama", "openai"]


class ModelSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A model and how to call it.

    Attributes:
        model: the model name (``llama3.2``, ``gpt-4o-mini``, ...).
        provider: ``ollama`` (``/api/chat``) or ``openai`` (any server with the
            OpenAI-compatible ``/v1/chat/completions``: llama.cpp, vLLM, LM Studio, ...).
        base_url: the server; defaults to ``OLLAMA_HOST`` / ``OPENAI_BASE_URL``,
            then to the local Ollama / api.openai.com.
        api_key: the bearer key; prefer ``api_key_env`` so no secret sits in a file.
        api_key_env: the environment variable holding the key.
        temperature: sampling temperature; the server's default when None.
        max_tokens: longest answer; the server's default when None.
        timeout: seconds to wait for an answer, or between two streamed chunks.
        connect_timeout: seconds to wait for the connection.
        retries: further attempts after a connection error, a timeout, a 5xx or
            a 429 (with backoff and jitter, honouring ``Retry-After``).
        retry_backoff: seconds before the first retry; doubles each time.
        stream: stream the answer (tokens become progress events).
        structured_output: how an OpenAI-compatible server is asked for JSON that
            follows a schema: ``json_schema`` (OpenAI, vLLM), ``json_object`` with
            a ``schema`` (llama-cpp-python's server), or ``off`` (the agent still
            validates the answer). Ollama always gets its ``format``.
        options: provider-specific fields passed through (Ollama's ``options``
            such as ``num_ctx``; extra request fields for OpenAI servers).
    """

    model: str
    provider: Provider = "ollama"
    base_url: str | None = None
    api_key: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    timeout: Annotated[float, msgspec.Meta(gt=0)] = DEFAULT_MODEL_TIMEOUT
    connect_timeout: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    retries: Annotated[int, msgspec.Meta(ge=0, le=20)] = 2
    retry_backoff: Annotated[float, msgspec.Meta(ge=0)] = 0.5
    stream: bool = True
    structured_output: Literal["json_schema", "json_object", "off"] = "json_schema"
    options: dict[str, Any] = msgspec.field(default_factory=dict)

    @classmethod
    def from_mapping(cls, fields: Mapping[str, Any]) -> ModelSettings:
        """Validated settings from a config table; errors name the bad field."""
        try:
            return msgspec.convert(dict(fields), cls)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"invalid model settings: {exc}") from exc

    def resolved(self, environ: Mapping[str, str] | None = None) -> ModelSettings:
        """These settings with ``base_url`` and ``api_key`` filled from the environment."""
        env = os.environ if environ is None else environ
        base_url = self.base_url
        api_key = self.api_key
        if self.provider == "ollama":
            base_url = ollama_base_url(base_url or env.get("OLLAMA_HOST") or DEFAULT_OLLAMA_URL)
        else:
            base_url = (base_url or env.get("OPENAI_BASE_URL") or DEFAULT_OPENAI_URL).rstrip("/")
            api_key = api_key or env.get(self.api_key_env) or None
        return msgspec.structs.replace(self, base_url=base_url, api_key=api_key)

    def __repr__(self) -> str:
        key = "set" if self.api_key else "none"
        return f"ModelSettings({self.provider}:{self.model} at {self.base_url}, api_key={key})"


def ollama_base_url(host: str) -> str:
    """``OLLAMA_HOST`` as Ollama reads it: ``host``, ``host:port`` or a URL.

    The scheme defaults to http and the port to 11434, as in Ollama's own client.
    """
    value = host.strip()
    if "://" not in value:
        value = f"http://{value}"
    value = value.rstrip("/")
    parts = urlsplit(value)
    if not parts.hostname:
        raise ConfigError(f"OLLAMA_HOST {host!r} names no host: use e.g. 127.0.0.1:11434")
    hostname = parts.hostname
    if hostname == "0.0.0.0":  # the server's bind-all address; a client dials loopback
        hostname = "127.0.0.1"
    if ":" in hostname:
        hostname = f"[{hostname}]"
    port = parts.port or (443 if parts.scheme == "https" and ":" not in parts.netloc else 11434)
    return f"{parts.scheme}://{hostname}:{port}{parts.path}"
