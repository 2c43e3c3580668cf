"""``create_model``: the client that ``ModelSettings`` ask for.

The HTTP clients need the ``llm`` extra (``pip install 'callboard[llm]'``).
Without it this module still imports, so that the agents and the CLI that
never use a model run without httpx; asking for a client then says what to
install.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from bus import ConfigError

from ._chat import ChatModel
from ._settings import ModelSettings

__all__ = ["create_model"]

_HTTPX_MODULES = ("httpx", "httpx_sse")

_clients: dict[str, Callable[[ModelSettings], ChatModel]] = {}
_missing: ModuleNotFoundError | None = None
try:
    from ._ollama import OllamaModel
    from ._openai import OpenAIModel
except ModuleNotFoundError as exc:
    if exc.name not in _HTTPX_MODULES:
        raise
    _missing = exc
else:
    _clients = {"ollama": OllamaModel, "openai": OpenAIModel}


def create_model(settings: ModelSettings, environ: Mapping[str, str] | None = None) -> ChatModel:
    """A client for ``settings`` (base URL and key resolved from the environment).

    Raises:
        ConfigError: the ``llm`` extra is not installed.
    """
    resolved = settings.resolved(environ)
    client = _clients.get(resolved.provider)
    if client is None:
        raise ConfigError(
            f"the {resolved.provider} model client needs httpx: "
            f"pip install 'callboard[llm]' ({_missing})"
        )
    return client(resolved)
