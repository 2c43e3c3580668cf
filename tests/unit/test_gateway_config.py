"""The gateway's config file and how a capability's input schema becomes a tool's."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from actors.builtins._agents import MathInput
from bus import ConfigError
from orchestrator.gateway import load_gateway_config, tool_input_schema


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def test_a_struct_schema_is_inlined_as_the_tools_object_schema() -> None:
    schema, wrapped = tool_input_schema(msgspec.json.schema(MathInput))
    assert not wrapped
    assert schema["type"] == "object"
    assert schema["required"] == ["expression"]
    assert "$defs" in schema  # nested references still resolve


@pytest.mark.parametrize("schema", [{}, {"type": "string"}, {"type": "array"}])
def test_an_input_that_is_not_an_object_is_the_tools_one_argument(schema: dict[str, str]) -> None:
    tool, wrapped = tool_input_schema(schema)
    assert wrapped
    assert tool == {"type": "object", "properties": {"input": schema}, "required": ["input"]}


def test_a_config_lists_what_it_exposes_and_bounds_deadlines(tmp_path: Path) -> None:
    config = load_gateway_config(
        write(
            tmp_path,
            "max_timeout = 60\n[capabilities.math]\n"
            '[capabilities.summarize]\ndescription = "Shorten text."\ntimeout = 5\n',
        )
    )
    assert set(config.capabilities) == {"math", "summarize"}
    assert config.timeout_for("summarize", None) == 5
    assert config.timeout_for("math", None) == 30
    assert config.timeout_for("math", 3600) == 60
    # what a remote caller may send that is no duration: the default, or the bound
    assert config.timeout_for("math", float("nan")) == 30
    assert config.timeout_for("math", float("inf")) == 60
    assert config.timeout_for("math", -1) == 30


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('prefix = "agents"\n', "capabilities"),
        ("[capabilities]\n", "exposes no capabilities"),
        ('[capabilities."a.b"]\n', "invalid capability name"),
        ("[capabilities.math]\nreplica = 2\n", "unknown field"),
        ('http_address = "nowhere"\n[capabilities.math]\n', "invalid metrics address"),
    ],
)
def test_a_bad_config_is_refused_with_its_reason(tmp_path: Path, text: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        load_gateway_config(write(tmp_path, text))


def test_http_needs_a_token_of_16_characters_or_more(tmp_path: Path) -> None:
    config = load_gateway_config(write(tmp_path, "[capabilities.math]\n"))
    with pytest.raises(ConfigError, match="CALLBOARD_GATEWAY_TOKEN"):
        config.token({})
    with pytest.raises(ConfigError, match="at least 16"):
        config.token({"CALLBOARD_GATEWAY_TOKEN": "short"})
    assert config.token({"CALLBOARD_GATEWAY_TOKEN": "x" * 16}) == "x" * 16


def test_durable_is_the_gateways_unless_a_capability_says_otherwise(tmp_path: Path) -> None:
    config = load_gateway_config(
        write(
            tmp_path,
            "durable = true\n[capabilities.math]\n"
            "[capabilities.echo]\ndurable = false\n[capabilities.summarize]\n",
        )
    )
    assert [config.is_durable(name) for name in ("math", "echo", "summarize")] == [
        True,
        False,
        True,
    ]
    assert config.durable_capabilities == ["math", "summarize"]
    plain = load_gateway_config(
        write(tmp_path, "[capabilities.math]\ndurable = true\n[capabilities.echo]\n")
    )
    assert plain.durable_capabilities == ["math"]
