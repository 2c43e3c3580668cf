"""Fixtures of the gateway tests: agents in the test's process on a real bus, and
``callboard gateway`` as a real process in front of them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import pytest
from gateway_support import (
    GATEWAY_READY,
    TOKEN_ENV,
    Mesh,
    RefusingAgent,
    Running,
    StepsAgent,
    gateway_url,
    new_token,
    write_gateway_config,
)
from nats.aio.client import Client
from system_support import Proc

from actors import AgentHost, EchoAgent, MathAgent

EXPOSED = ("math", "steps", "refuse", "summarize")
"""What the gateway exposes: summarize has no agent at first, echo is live but not exposed."""


@pytest.fixture
async def mesh(nc: Client, prefix: str) -> AsyncIterator[Mesh]:
    steps = StepsAgent("steps-1")
    agents = [MathAgent("math-1"), steps, RefusingAgent("refuse-1"), EchoAgent("echo-1")]
    async with AgentHost(nc, agents, prefix=prefix) as host:
        yield Mesh(host, steps)


@pytest.fixture
def config(tmp_path: Path, prefix: str, nats_url: str) -> Path:
    return write_gateway_config(tmp_path / "gateway.toml", prefix, nats_url, EXPOSED)


@pytest.fixture
async def gateway(
    mesh: Mesh,
    config: Path,
    cli_env: dict[str, str],
    callboard_cmd: list[str],
    procs: Callable[..., Proc],
) -> Running:
    token = new_token()
    env = {**cli_env, TOKEN_ENV: token}
    proc = procs([*callboard_cmd, "gateway", str(config)], env=env, name="gateway")
    line = await anyio.to_thread.run_sync(proc.stderr.wait_for, GATEWAY_READY)
    return Running(gateway_url(line), token, proc)
