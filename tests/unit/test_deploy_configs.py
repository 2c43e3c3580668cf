"""The daemon configs shipped in deploy/ load and build the agents they promise."""

from __future__ import annotations

from pathlib import Path

from actors import LLMAgent
from actors._config import build_agents, load_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_the_example_daemon_config_builds_its_agents() -> None:
    agents = build_agents(load_config(DEPLOY / "agents.toml"))
    assert sorted(a.id for a in agents if a.id.startswith("math")) == ["math-1", "math-2"]
    assert {c for a in agents for c in a.capability_names} == {"math", "summarize", "echo"}


def test_the_llm_config_runs_a_planner_and_a_researcher_against_ollama() -> None:
    config = load_config(DEPLOY / "llm-agents.toml")
    agents = {a.id: a for a in build_agents(config)}
    assert set(agents) == {"math", "summarize", "researcher", "planner"}
    researcher, planner = agents["researcher"], agents["planner"]
    assert isinstance(researcher, LLMAgent) and isinstance(planner, LLMAgent)
    assert researcher.capability_names == ("research",)
    assert planner.capability_names == ("plan",)
    for spec in config.agents:
        if spec.type == "llm":
            assert spec.options["model"]["provider"] == "ollama"
            assert spec.options["model"]["model"] == "llama3.2"
