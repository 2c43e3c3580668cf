"""Live registry, routing free text (no starvation), decomposition, Orchestrator.run."""

from __future__ import annotations

import collections

import msgspec
import pytest
from nats.aio.client import Client

from actors import Agent, AgentHost, Capability, EchoAgent, MathAgent, SummarizeAgent
from actors.builtins import MathInput
from bus import AgentMessage, Subjects
from orchestrator import (
    AgentInfo,
    KeywordRouter,
    LiveRegistry,
    NoRouteError,
    Orchestrator,
    RuleDecomposer,
    payload_from_text,
)

pytestmark = pytest.mark.anyio


class Translator(Agent):
    kind = "translate"
    capabilities = (Capability(name="translate", keywords=("translate", "french")),)

    async def handle(self, task: AgentMessage) -> str:
        return f"fr:{task.payload}"


def info(agent_id: str, capability: str, keywords: tuple[str, ...], **kw: int) -> AgentInfo:
    return AgentInfo(id=agent_id, capabilities=(capability,), keywords={capability: keywords}, **kw)


def test_router_scores_keyword_overlap() -> None:
    router = KeywordRouter()
    agents = [info("m", "math", ("calculate", "compute")), info("s", "summarize", ("summary",))]
    route = router.route("please calculate 6*7", agents)
    assert (route.capability, route.agent_id, route.matched) == ("math", "m", ("calculate",))
    with pytest.raises(NoRouteError, match="live capabilities: math, summarize"):
        router.route("paint a picture", agents)


def test_ties_between_agents_are_broken_round_robin() -> None:
    router = KeywordRouter()
    agents = [info(f"m{i}", "math", ("calculate",), max_concurrency=4) for i in range(3)]
    picked = collections.Counter(router.route("calculate 1", agents).agent_id for _ in range(300))
    assert picked == {"m0": 100, "m1": 100, "m2": 100}


def test_the_less_loaded_agent_wins_among_equals() -> None:
    router = KeywordRouter()
    agents = [
        info("busy", "math", ("calculate",), in_flight=3, max_concurrency=4),
        info("idle", "math", ("calculate",), in_flight=0, max_concurrency=4),
    ]
    assert {router.route("calculate 1", agents).agent_id for _ in range(10)} == {"idle"}


def test_ties_between_capabilities_are_broken_round_robin() -> None:
    router = KeywordRouter()
    agents = [info("a", "alpha", ("go",)), info("b", "beta", ("go",))]
    picked = collections.Counter(router.route("go", agents).capability for _ in range(10))
    assert picked == {"alpha": 5, "beta": 5}


async def test_rule_decomposer_splits_sentences_and_connectives() -> None:
    steps = await RuleDecomposer().decompose(
        "Calculate 6*7. Then summarize 'A. B. C.' and then translate hello, finally echo done"
    )
    assert steps == ["Calculate 6*7", "summarize 'A. B. C.'", "translate hello", "echo done"]


def test_payload_from_text_fills_the_first_required_string_field() -> None:
    schema = msgspec.json.encode(msgspec.json.schema(MathInput)).decode()
    assert payload_from_text("calculate 6*7?", ("calculate",), schema) == {"expression": "6*7"}
    assert payload_from_text("echo: 'hi there'", ("echo",), "{}") == "hi there"


async def test_live_registry_follows_online_heartbeat_and_offline(nc: Client, prefix: str) -> None:
    registry = LiveRegistry(nc, Subjects(prefix))
    await registry.start(discover=False)
    try:
        async with AgentHost(nc, [MathAgent("m-1")], prefix=prefix, heartbeat_interval=0.1):
            (agent,) = await registry.wait_for(
                lambda agents: any(a.keywords.get("math") for a in agents), timeout=5
            )
            assert agent.id == "m-1" and agent.capabilities == ("math",)
            assert agent.max_concurrency == 64
            assert "calculate" in agent.keywords["math"]  # fetched from $SRV.INFO
            await registry.wait_for(lambda agents: agents[0].last_seen > 0, timeout=5)
        assert await registry.wait_for(lambda agents: not agents, timeout=5) == []
    finally:
        await registry.stop()


def test_an_agent_that_misses_heartbeats_drops_out() -> None:
    now = [100.0]
    registry = LiveRegistry(None, Subjects(), heartbeat_timeout=15, clock=lambda: now[0])  # type: ignore[arg-type]
    registry.add(info("m", "math", ()))
    now[0] += 14.9
    assert [a.id for a in registry.live()] == ["m"]
    now[0] += 0.2
    assert registry.live() == []


async def test_routed_tasks_never_starve_an_agent(nc: Client, prefix: str) -> None:
    agents = [EchoAgent(f"e-{i}") for i in range(3)]
    async with AgentHost(nc, agents, prefix=prefix), Orchestrator(nc, prefix=prefix) as orch:
        served: collections.Counter[str] = collections.Counter()
        for _ in range(300):
            route = await orch.route("echo this")
            reply = await orch.request(route.capability, "x", agent_id=route.agent_id)
            served[reply.sender] += 1
    assert sum(served.values()) == 300
    assert min(served.values()) >= 75, served  # no agent below 25%


async def test_run_decomposes_routes_and_aggregates(nc: Client, prefix: str) -> None:
    agents = [MathAgent("m-1"), SummarizeAgent("s-1"), Translator("t-1")]
    async with AgentHost(nc, agents, prefix=prefix), Orchestrator(nc, prefix=prefix) as orch:
        result = await orch.run("Calculate 6*7. Then translate hello")
        assert [s.capability for s in result.steps] == ["math", "translate"]
        assert [s.seq for s in result.steps] == [1, 2]
        assert result.steps[0].result == {"value": 42}
        assert result.steps[1].result == "fr:hello"
        assert result.answer == "[1] math (m-1): 42\n[2] translate (t-1): fr:hello"
        with pytest.raises(NoRouteError):
            await orch.run("paint a picture")


async def test_orchestrator_context_discovers_agents_already_up(nc: Client, prefix: str) -> None:
    async with AgentHost(nc, [MathAgent("m-1"), EchoAgent("e-1")], prefix=prefix):
        async with Orchestrator(nc, prefix=prefix) as orch:
            assert [a.id for a in orch.agents] == ["e-1", "m-1"]
            found = await orch.find_agent("math", refresh=False)
            assert found is not None and found.id == "m-1"
