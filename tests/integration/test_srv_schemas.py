"""``$SRV`` conformance: every PING/INFO/STATS reply of an agent host validates against the
official ADR-32 JSON schemas (nats-io/jsm.go ``schemas/micro/v1``, from the Go module proxy),
service ids are unique on a server shared by several prefixes, and a kind that natscli
would reject is refused when the config is read.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any, ClassVar

import anyio
import jsonschema
import pytest
from go_tools import micro_schemas, nats_cli, nats_env
from nats.aio.client import Client

from actors import Agent, AgentHost, EchoAgent, MathAgent, SummarizeAgent
from actors._config import AgentSlot, AgentSpec, build_agent
from bus import AgentError, AgentMessage, ConfigError, Subjects, TaskClient, new_agent_suffix
from bus.micro import collect_replies, service_id
from orchestrator import discover_agents

pytestmark = pytest.mark.anyio

VERBS = ("PING", "INFO", "STATS")


class Resume(Agent):
    """An agent whose kind has letters outside ASCII."""

    kind: ClassVar[str] = "résumé"
    capabilities = ("resume",)

    async def handle(self, task: AgentMessage) -> Any:
        return task.payload


@pytest.fixture(scope="module")
def schemas() -> dict[str, dict[str, Any]]:
    found = micro_schemas()
    assert set(found) == {f"io.nats.micro.v1.{v.lower()}_response" for v in VERBS}
    return found


async def _replies(nc: Client, subject: str, prefix: str) -> list[dict[str, Any]]:
    """The replies to one ``$SRV`` request that come from agents of ``prefix``."""
    replies = [json.loads(data) async for data in collect_replies(nc, subject, wait=0.3)]
    return [r for r in replies if (r.get("metadata") or {}).get("prefix") == prefix]


def _validate(reply: dict[str, Any], schemas: dict[str, dict[str, Any]]) -> None:
    schema = schemas[reply["type"]]
    jsonschema.Draft7Validator(schema).validate(reply)
    if "started" in reply:  # the schema's "date-time" format, which jsonschema leaves unchecked
        assert datetime.datetime.fromisoformat(reply["started"]).tzinfo is not None


async def test_every_srv_reply_validates_against_the_official_schemas(
    nc: Client, prefix: str, schemas: dict[str, dict[str, Any]]
) -> None:
    agents = [MathAgent("math-1"), EchoAgent("echo-1"), SummarizeAgent("summarize-1")]
    async with AgentHost(nc, agents, prefix=prefix):
        client = TaskClient(nc, prefix=prefix)
        await client.request("math", {"expression": "6*7"})
        with pytest.raises(AgentError):
            await client.request("math", {"expression": "1/0"})
        checked = 0
        for verb in VERBS:
            replies = await _replies(nc, f"$SRV.{verb}", prefix)
            assert len(replies) == len(agents), (verb, replies)
            for agent in agents:
                sid = service_id(agent.id, prefix)
                by_name = await _replies(nc, f"$SRV.{verb}.{agent.kind}", prefix)
                by_id = await _replies(nc, f"$SRV.{verb}.{agent.kind}.{sid}", prefix)
                assert [r["id"] for r in by_name] == [r["id"] for r in by_id] == [sid]
                replies += by_name + by_id
            for reply in replies:
                _validate(reply, schemas)
                for endpoint in reply.get("endpoints", []):
                    assert "data" not in endpoint  # omitted, as nats.go does, never null
                checked += 1
        assert checked == 3 * 3 * len(agents)


async def test_agent_ids_stay_unique_services_across_prefixes(
    nc: Client, prefix: str, schemas: dict[str, dict[str, Any]]
) -> None:
    agent_id = f"math-{new_agent_suffix()}"
    other = "agents"  # the default prefix next to the test's own: the same agent id in both
    async with (
        AgentHost(nc, [MathAgent(agent_id)], prefix=prefix),
        AgentHost(nc, [MathAgent(agent_id)], prefix=other),
    ):
        ids = {service_id(agent_id, p) for p in (prefix, other)}
        assert len(ids) == 2
        for sid in ids:
            replies = [json.loads(d) async for d in collect_replies(nc, f"$SRV.PING.math.{sid}")]
            assert len(replies) == 1, replies  # one service answers its own id
            _validate(replies[0], schemas)
            assert replies[0]["metadata"]["agent_id"] == agent_id
        for p in (prefix, other):
            found = await discover_agents(nc, Subjects(p), wait=0.3)
            assert [a.id for a in found if a.id == agent_id] == [agent_id]


async def test_a_kind_outside_the_name_pattern_never_reaches_discovery(
    nc: Client, nats_url: str, prefix: str, schemas: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    spec = AgentSpec(type="test_srv_schemas:Resume", id="resume-1")
    with pytest.raises(ConfigError, match="ASCII letters, digits, '-' and '_'") as refused:
        build_agent(AgentSlot("resume-1", "resume-1", spec))
    assert "résumé" in str(refused.value)

    # Built in Python, without the config check: it is listed under a valid name, and
    # natscli (which stops `micro ls` at the first reply that breaks the schema) lists it.
    async with AgentHost(nc, [Resume("resume-1")], prefix=prefix):
        for verb in VERBS:
            [reply] = await _replies(nc, f"$SRV.{verb}", prefix)
            _validate(reply, schemas)
            assert reply["name"] == "agent"
        with anyio.fail_after(30):
            listed = await anyio.run_process(
                [nats_cli(), "--server", nats_url, "micro", "ls"],
                env=nats_env(tmp_path),
                check=False,
            )
        assert listed.returncode == 0, listed.stderr.decode()
        assert service_id("resume-1", prefix) in listed.stdout.decode()
