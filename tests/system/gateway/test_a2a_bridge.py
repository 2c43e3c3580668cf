"""``type = "a2a"``: a capability forwarded to a remote A2A agent, here the gateway's own
A2A server (a real ``callboard gateway`` process) in front of agents on the bus.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import msgspec
import pytest
from gateway_support import Mesh, Running
from nats.aio.client import Client

from actors import AgentHost, build_agents, load_config
from actors.bridges._a2a import A2ABridge
from bus import AgentError, TaskClient

pytestmark = [pytest.mark.anyio, pytest.mark.system]

REMOTE_TOKEN = "CALLBOARD_TEST_REMOTE_TOKEN"


@pytest.fixture
async def bridged(
    gateway: Running, nc: Client, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[TaskClient]:
    """Bridges under a prefix of their own, so the gateway does not see them."""
    monkeypatch.setenv(REMOTE_TOKEN, gateway.token)
    bridges = [
        A2ABridge("remote-math-1", url=gateway.url, capability="remote-math", skill="math",
                  token_env=REMOTE_TOKEN),
        A2ABridge("remote-steps-1", url=gateway.url, capability="remote-steps", skill="steps",
                  token_env=REMOTE_TOKEN),
        A2ABridge("remote-refuse-1", url=gateway.url, capability="remote-refuse", skill="refuse",
                  token_env=REMOTE_TOKEN),
    ]  # fmt: skip
    async with AgentHost(nc, bridges, prefix="bridged"):
        yield TaskClient(nc, prefix="bridged")


async def test_a_bridged_a2a_agent_answers_a_task(bridged: TaskClient) -> None:
    reply = await bridged.request("remote-math", {"expression": "1234*5678"}, timeout=30)
    assert (reply.payload, reply.sender) == ({"value": 7006652}, "remote-math-1")


async def test_the_remote_agents_error_keeps_its_code(bridged: TaskClient) -> None:
    with pytest.raises(AgentError) as refused:
        await bridged.request("remote-refuse", "please", timeout=30)
    assert (refused.value.code, refused.value.type) == (418, "teapot")
    assert refused.value.message == "the answer is no"


async def test_remote_progress_becomes_progress_events_of_the_bridge(
    bridged: TaskClient, nc: Client, mesh: Mesh
) -> None:
    progress = await nc.subscribe("bridged.status.remote-steps-1.progress")
    async with anyio.create_task_group() as tg:
        replies: list[object] = []

        async def ask() -> None:
            reply = await bridged.request("remote-steps", {"count": 1, "hold": True}, timeout=30)
            replies.append(reply.payload)

        tg.start_soon(ask)
        event = msgspec.json.decode((await progress.next_msg(timeout=20)).data)
        while event["message"] != "step 1 of 1":  # "accepted" and "started" come first
            event = msgspec.json.decode((await progress.next_msg(timeout=20)).data)
        mesh.steps.released.set()
    assert replies == [{"done": 1}]


def test_the_daemon_config_builds_an_a2a_bridge(tmp_path: Path) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text(
        '[[agents]]\ntype = "a2a"\nid = "far"\n'
        'options = { url = "http://127.0.0.1:1", capability = "far-math", skill = "math" }\n'
    )
    (agent,) = build_agents(load_config(config))
    assert isinstance(agent, A2ABridge)
    assert agent.capability_names == ("far-math",)
