"""The gateway under the shipped permissions (deploy/nats): logged in as its own
``gateway`` user it serves the capabilities that user may reach, with no violation,
and the server refuses it any other task subject.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import anyio
import httpx
import pytest
from a2a.types import TaskQueryParams, TaskState
from gateway_support import GATEWAY_READY, TOKEN_ENV, Running, gateway_url, new_token
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from nats_security_support import (
    DeployCopy,
    cli_env_for,
    logged_in,
    make_deploy_copy,
    secure_server,
    violations_in_log,
)
from system_support import Proc
from test_gateway_a2a import a2a_client, final_task
from test_gateway_a2a import message as a2a_message

from actors import AgentHost, MathAgent
from bus.durable import DurableNames, DurableSettings, ensure_durable

pytestmark = [pytest.mark.anyio, pytest.mark.system]


@pytest.fixture(scope="module")
def deploy(tmp_path_factory: pytest.TempPathFactory) -> DeployCopy:
    return make_deploy_copy(tmp_path_factory.mktemp("deploy-nats"))


async def test_the_gateway_user_serves_its_capabilities_and_nothing_else(
    deploy: DeployCopy,
    tmp_path: Path,
    callboard_cmd: list[str],
    procs: Callable[..., Proc],
) -> None:
    async with secure_server(deploy.config("single.conf")) as server:
        config = tmp_path / "gateway.toml"
        config.write_text(
            'http_address = "127.0.0.1:0"\n'
            f'[nats]\nurl = "{server.url}"\nuser = "gateway"\n'
            f'password = "{deploy.passwords["gateway"]}"\ninbox_prefix = "_INBOX_gateway"\n'
            "[capabilities.math]\n"
        )
        token = new_token()
        env = {**cli_env_for(server.url, deploy, None), TOKEN_ENV: token}
        async with (
            logged_in(server.url, deploy, "agents", inbox_prefix="_INBOX_agents") as (agents, _),
            AgentHost(agents, [MathAgent("math")], prefix="agents"),
            logged_in(server.url, deploy, "gateway", inbox_prefix="_INBOX_gateway") as (
                intruder,
                violations,
            ),
        ):
            proc = procs([*callboard_cmd, "gateway", str(config)], env=env, name="gateway")
            line = await anyio.to_thread.run_sync(proc.stderr.wait_for, GATEWAY_READY)
            assert "tools: math" in line
            headers = {"Authorization": f"Bearer {token}"}
            async with (
                httpx.AsyncClient(headers=headers, timeout=30) as http,
                streamable_http_client(f"{gateway_url(line)}/mcp", http_client=http) as (r, w, _),
                ClientSession(r, w) as session,
            ):
                await session.initialize()
                result = await session.call_tool("math", {"expression": "6*7"})
            assert result.structuredContent == {"value": 42}

            # the user itself cannot reach a capability it was not given
            await intruder.publish("agents.task.research", b"{}")
            await violations.wait_for("publish", "agents.task.research")
    log = violations_in_log(server)
    assert all("agents.task.research" in line for line in log), log
    assert "violation" not in proc.stderr.text.lower(), proc.stderr.text


async def test_the_gateway_user_runs_durable_a2a_tasks_and_reads_no_other_records(
    deploy: DeployCopy,
    tmp_path: Path,
    callboard_cmd: list[str],
    procs: Callable[..., Proc],
) -> None:
    """math is durable in the gateway's config: the gateway user submits it and reads its
    record with no violation; the record of a capability it does not expose stays closed."""
    settings = DurableSettings(storage="memory", ack_wait=5, retry_delay=0.1)
    shutil.rmtree(deploy.root / "jetstream" / "single", ignore_errors=True)
    async with secure_server(deploy.config("single.conf")) as server:
        async with logged_in(server.url, deploy, "setup") as (setup_nc, _):
            js = setup_nc.jetstream(timeout=10)
            await ensure_durable(js, DurableNames("agents"), settings, update=True)
        config = tmp_path / "gateway.toml"
        config.write_text(
            'http_address = "127.0.0.1:0"\ndurable = true\n'
            f'[nats]\nurl = "{server.url}"\nuser = "gateway"\n'
            f'password = "{deploy.passwords["gateway"]}"\ninbox_prefix = "_INBOX_gateway"\n'
            "[capabilities.math]\n"
        )
        token = new_token()
        env = {**cli_env_for(server.url, deploy, None), TOKEN_ENV: token}
        async with (
            logged_in(server.url, deploy, "agents", inbox_prefix="_INBOX_agents") as (agents, _),
            AgentHost(agents, [MathAgent("math")], prefix="agents", durable=settings),
            logged_in(server.url, deploy, "gateway", inbox_prefix="_INBOX_gateway") as (
                intruder,
                violations,
            ),
        ):
            proc = procs([*callboard_cmd, "gateway", str(config)], env=env, name="gateway")
            line = await anyio.to_thread.run_sync(proc.stderr.wait_for, GATEWAY_READY)
            running = Running(gateway_url(line), token, proc)
            async with a2a_client(running, streaming=False) as (_card, client):
                with anyio.fail_after(30):
                    task = await final_task(client, a2a_message("math", {"expression": "6*7"}))
                    stored = await client.get_task(TaskQueryParams(id=task.id))
            assert task.status.state == TaskState.completed, task
            assert stored.status.state == TaskState.completed, stored
            assert (stored.metadata or {}).get("durable") is True

            # the user itself may not read the records of a capability it does not expose
            subject = "$JS.API.DIRECT.GET.KV_AGENTS_TASKS.$KV.AGENTS_TASKS.echo.x"
            await intruder.publish(subject, b"")
            await violations.wait_for("publish", subject)
    log = violations_in_log(server)
    assert all("AGENTS_TASKS.echo" in line for line in log), log
    assert "violation" not in proc.stderr.text.lower(), proc.stderr.text
