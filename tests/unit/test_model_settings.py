"""``ModelSettings``: where the server is, which key is sent, and what is never shown."""

from __future__ import annotations

import subprocess
import sys

import pytest

from actors.llm.models import DEFAULT_OLLAMA_URL, DEFAULT_OPENAI_URL, ModelSettings, ollama_base_url
from bus import ConfigError


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:11434"),
        ("localhost:1234", "http://localhost:1234"),
        ("gpu-box", "http://gpu-box:11434"),
        ("0.0.0.0", "http://127.0.0.1:11434"),  # the server's bind-all, dialled as loopback
        ("0.0.0.0:8080", "http://127.0.0.1:8080"),
        ("http://example.com", "http://example.com:11434"),
        ("https://example.com", "https://example.com:443"),
        ("https://example.com:8443/", "https://example.com:8443"),
        ("http://proxy:80/ollama/", "http://proxy:80/ollama"),
        ("[::1]:8080", "http://[::1]:8080"),
        ("  127.0.0.1:11434/ ", "http://127.0.0.1:11434"),
    ],
)
def test_ollama_host_forms(host: str, url: str) -> None:
    assert ollama_base_url(host) == url


@pytest.mark.parametrize(
    "host",
    [
        "",
        ":11434",
        "http://",
    ],
)
def test_an_ollama_host_without_a_host_is_a_config_error(host: str) -> None:
    with pytest.raises(ConfigError, match="names no host"):
        ollama_base_url(host)


def test_ollama_resolution_order() -> None:
    plain = ModelSettings(model="llama3.2")
    assert plain.resolved(environ={}).base_url == DEFAULT_OLLAMA_URL
    assert plain.resolved(environ={"OLLAMA_HOST": "gpu:9999"}).base_url == "http://gpu:9999"
    chosen = ModelSettings(model="llama3.2", base_url="box:1")
    assert chosen.resolved(environ={"OLLAMA_HOST": "gpu:9999"}).base_url == "http://box:1"
    # an Ollama model never picks up an OpenAI key
    assert plain.resolved(environ={"OPENAI_API_KEY": "sk-x"}).api_key is None


def test_openai_resolution_order() -> None:
    plain = ModelSettings(model="gpt-4o-mini", provider="openai")
    assert plain.resolved(environ={}).base_url == DEFAULT_OPENAI_URL
    assert plain.resolved(environ={}).api_key is None
    env = {"OPENAI_BASE_URL": "http://llama-cpp:8080/v1/", "OPENAI_API_KEY": "sk-env"}
    resolved = plain.resolved(environ=env)
    assert (resolved.base_url, resolved.api_key) == ("http://llama-cpp:8080/v1", "sk-env")
    chosen = ModelSettings(
        model="m", provider="openai", base_url="http://vllm:8000/v1", api_key="sk-file"
    )
    assert chosen.resolved(environ=env).base_url == "http://vllm:8000/v1"
    assert chosen.resolved(environ=env).api_key == "sk-file"


def test_the_key_variable_is_configurable() -> None:
    settings = ModelSettings(model="m", provider="openai", api_key_env="GROQ_KEY")
    environ = {"OPENAI_API_KEY": "sk-openai", "GROQ_KEY": "gsk-groq"}
    assert settings.resolved(environ=environ).api_key == "gsk-groq"
    assert settings.resolved(environ={"GROQ_KEY": ""}).api_key is None


def test_repr_never_shows_the_key() -> None:
    settings = ModelSettings(model="gpt-4o-mini", provider="openai", api_key="sk-very-secret")
    assert "sk-very-secret" not in repr(settings)
    assert "sk-very-secret" not in str(settings)
    assert "api_key=set" in repr(settings)
    assert "api_key=none" in repr(ModelSettings(model="llama3.2"))


def test_from_mapping_names_the_bad_field() -> None:
    assert ModelSettings.from_mapping({"model": "m", "timeout": 5}).timeout == 5.0
    with pytest.raises(ConfigError, match="temperature"):
        ModelSettings.from_mapping({"model": "m", "temperature": 3})
    with pytest.raises(ConfigError, match="tmeout"):
        ModelSettings.from_mapping({"model": "m", "tmeout": 5})
    with pytest.raises(ConfigError, match="provider"):
        ModelSettings.from_mapping({"model": "m", "provider": "anthropic"})


def test_without_the_llm_extra_the_models_import_and_asking_for_a_client_names_the_extra() -> None:
    """httpx missing: the package (and so every agent and the CLI) still imports."""
    code = (
        "import sys; sys.modules['httpx'] = None\n"
        "from bus import ConfigError\n"
        "from actors.llm.models import ModelSettings, create_model\n"
        "try:\n"
        "    create_model(ModelSettings(model='llama3.2'), environ={})\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "pip install 'callboard[llm]'" in done.stdout
