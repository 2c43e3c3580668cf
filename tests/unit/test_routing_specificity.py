"""Specific keywords win over generic ones: "what is 6*7" is math, not research (issue 16).

The research agent of ``deploy/llm-agents.toml`` lists "what", "why" and "how"
to catch questions; with it running, ``ask "what is 6*7"`` used to go to it.
The capabilities here are the built-ins' own and the shipped research agent's.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import msgspec
import pytest

from actors.builtins import EchoAgent, MathAgent, MathInput, SummarizeAgent
from orchestrator import AgentInfo, KeywordRouter, NoRouteError, payload_from_text

ROOT = Path(__file__).resolve().parents[2]
PROMPT_SCHEMA = '{"type":"object","properties":{"prompt":{"type":"string"}},"required":["prompt"]}'


def shipped_research_keywords() -> tuple[str, ...]:
    config = tomllib.loads((ROOT / "deploy" / "llm-agents.toml").read_text())
    (research,) = [a for a in config["agents"] if a.get("id") == "researcher"]
    return tuple(research["options"]["keywords"])


def built_in(agent_id: str, agent: MathAgent | EchoAgent | SummarizeAgent) -> AgentInfo:
    (capability,) = agent.capabilities
    return AgentInfo(
        id=agent_id,
        capabilities=(capability.name,),
        keywords={capability.name: capability.keywords},
        input_schemas={
            capability.name: msgspec.json.encode(msgspec.json.schema(MathInput)).decode()
        }
        if capability.name == "math"
        else {},
    )


AGENTS = [
    built_in("m", MathAgent("m")),
    built_in("e", EchoAgent("e")),
    built_in("s", SummarizeAgent("s")),
    AgentInfo(
        id="researcher",
        capabilities=("research",),
        keywords={"research": shipped_research_keywords()},
        input_schemas={"research": PROMPT_SCHEMA},
    ),
]
MATH_SCHEMA = AGENTS[0].input_schemas["math"]


def test_the_shipped_research_agent_still_lists_question_words() -> None:
    """The case this guards: a catch-all agent next to specific ones."""
    assert {"what", "why", "how"} <= set(shipped_research_keywords())


@pytest.mark.parametrize(
    ("text", "capability", "payload"),
    [
        ("what is 6*7", "math", {"expression": "6*7"}),
        ("What's 2 ^ 10?", "math", {"expression": "2 ^ 10"}),
        ("how much is (1 + 2) * 3", "math", {"expression": "(1 + 2) * 3"}),
        ("please calculate 6*7", "math", {"expression": "6*7"}),
        ("what is the capital of France?", "research", {"prompt": "what is the capital of France"}),
        ("why is the sky blue", "research", {"prompt": "why is the sky blue"}),
        ("explain why 6*7 is 42", "research", {"prompt": "why 6*7 is 42"}),
        ("summarize the notes of 2024-05-01", "summarize", "the notes of 2024-05-01"),
        ("echo what is new", "echo", "what is new"),
    ],
)
def test_the_capability_with_the_most_specific_match_wins(
    text: str, capability: str, payload: object
) -> None:
    router = KeywordRouter()
    for _ in range(4):  # never a coin toss: no round-robin tie between capabilities
        route = router.route(text, AGENTS)
        assert route.capability == capability, route
    schema = next(a for a in AGENTS if capability in a.capabilities).input_schemas.get(
        capability, "{}"
    )
    assert payload_from_text(text, route.matched, schema) == payload


def test_an_operator_between_words_is_no_arithmetic() -> None:
    router = KeywordRouter()
    with pytest.raises(NoRouteError):
        router.route("paint a well-known picture, black/white", AGENTS[:3])
