"""``callboard ask`` with the shipped LLM research agent running next to math (issue 16).

The research agent of ``deploy/llm-agents.toml`` lists "what", "why" and "how";
``ask "what is 6*7"`` used to go to it instead of math. Here the daemon runs
math and that research agent (its keywords read from the shipped file, its
model a fake Ollama server), and ``ask`` runs rule-based (``--model ""``).
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from typing import Any

import pytest
from llm_servers import FakeOllama
from system_support import ROOT, Daemon, run_cli

from bus import new_agent_suffix
from orchestrator.cli import EXIT_OK

pytestmark = pytest.mark.system


def shipped_researcher(base_url: str) -> dict[str, Any]:
    """The research agent of ``deploy/llm-agents.toml``, its model at ``base_url``."""
    config = tomllib.loads((ROOT / "deploy" / "llm-agents.toml").read_text())
    (agent,) = [a for a in config["agents"] if a.get("id") == "researcher"]
    options = {k: v for k, v in agent["options"].items() if k != "model"}
    model = {"provider": "ollama", "model": "llama3.2", "base_url": base_url, "retries": 0}
    return {
        "type": "llm",
        "id": f"researcher-{new_agent_suffix()}",
        "options": {**options, "model": model},
    }


def test_ask_sends_arithmetic_to_math_and_questions_to_the_researcher(
    start_daemon: Callable[..., Daemon],
    prefix: str,
    cli_env: dict[str, str],
    callboard_cmd: list[str],
) -> None:
    math_id = f"math-{new_agent_suffix()}"
    with FakeOllama(models=["llama3.2"]) as server:
        server.script("Rayleigh scattering.")
        researcher = shipped_researcher(server.url)
        start_daemon([{"type": "math", "id": math_id}, researcher], prefix=prefix)

        def ask(request: str) -> list[str]:
            done = run_cli(
                callboard_cmd, cli_env, ["ask", "--prefix", prefix, "--model", "", request]
            )
            assert done.returncode == EXIT_OK, done.stderr
            return done.stdout.splitlines()

        assert ask("what is 6*7") == [f"[1] math ({math_id}): 42"]
        assert server.chat_requests == []  # the model was not asked
        assert ask("why is the sky blue") == [
            f"[1] research ({researcher['id']}): Rayleigh scattering."
        ]
        (chat,) = server.chat_requests
    assert chat.body["messages"][-1]["content"] == "why is the sky blue"
