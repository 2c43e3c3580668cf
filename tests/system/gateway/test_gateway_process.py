"""The gateway as a daemon: it refuses to serve HTTP without a token, counts what it
does (and what it refuses from the bus) in /metrics, says it is healthy, and stops on
SIGTERM.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import httpx
import pytest
from gateway_support import GATEWAY_READY, TOKEN_ENV, Mesh, gateway_url, new_token
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from nats.aio.client import Client
from refusal_support import exactly, raw_client, refusals, send_and_confirm, wait_for_refusals
from system_support import Proc

pytestmark = [pytest.mark.anyio, pytest.mark.system]


async def test_without_a_token_the_gateway_does_not_start(
    config: Path, cli_env: dict[str, str], callboard_cmd: list[str], procs: Callable[..., Proc]
) -> None:
    env = {k: v for k, v in cli_env.items() if k != TOKEN_ENV}
    proc = procs([*callboard_cmd, "gateway", str(config)], env=env, name="gateway")
    code = await anyio.to_thread.run_sync(proc.wait)
    assert code == 2
    assert f"set {TOKEN_ENV}" in proc.stderr.text


async def test_metrics_count_calls_and_refusals_and_sigterm_stops_it(
    mesh: Mesh,
    config: Path,
    cli_env: dict[str, str],
    callboard_cmd: list[str],
    procs: Callable[..., Proc],
    nc: Client,
    prefix: str,
    nats_url: str,
) -> None:
    token = new_token()
    proc = procs(
        [*callboard_cmd, "gateway", str(config), "--metrics", "127.0.0.1:0"],
        env={**cli_env, TOKEN_ENV: token},
        name="gateway",
    )
    metrics_line = await anyio.to_thread.run_sync(proc.stderr.wait_for, "gateway metrics on")
    found = re.search(r"on (http://[^ ]+)/metrics", metrics_line)
    assert found is not None
    metrics_url = found.group(1)
    url = gateway_url(await anyio.to_thread.run_sync(proc.stderr.wait_for, GATEWAY_READY))

    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx.AsyncClient(headers=headers, timeout=30) as http,
        streamable_http_client(f"{url}/mcp", http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        assert not (await session.call_tool("math", {"expression": "2+2"})).isError
        assert (await session.call_tool("refuse", {"input": 0})).isError
    async with httpx.AsyncClient(timeout=10) as http:
        refused = await http.get(f"{url}/.well-known/agent-card.json")
        scraped = (await http.get(f"{metrics_url}/metrics")).text
        health = await http.get(f"{metrics_url}/healthz")
    assert refused.status_code == 401
    assert (
        'callboard_gateway_calls_total{capability="math",outcome="ok",protocol="mcp"} 1.0'
        in scraped
    )
    assert "callboard_gateway_tools 3.0" in scraped
    assert 'callboard_gateway_refused_total{reason="unauthorized"} 1.0' in scraped
    assert health.status_code == 200
    assert health.json() == {
        "status": "ok",
        "connected": True,
        "connection": "connected",
        "serving": True,
    }
    # what it refuses from the bus: nothing on the legitimate path, then each attack once
    assert await refusals(metrics_url) == exactly({})
    forged = {"v": 1, "state": "heartbeat", "agent": "math-9", "ts": time.time()}
    await nc.publish(f"{prefix}.status.math-1.heartbeat", json.dumps(forged).encode())
    await nc.publish(f"{prefix}.status.math-1.heartbeat", b"\x00 not an event")
    await nc.publish(f"{prefix}.status.math-1.started", b"\x00 not an event")
    await nc.flush()
    stream = await raw_client(nats_url)
    async with stream:
        malformed = f"PUB {prefix}.status.math-1.online ".encode() + b"\xff 2\r\n{}\r\n"
        await send_and_confirm(stream, malformed)
    expected = {"status_body_mismatch": 1, "malformed_status_event": 2, "malformed_frame": 1}
    assert await wait_for_refusals(metrics_url, expected) == exactly(expected)

    proc.send_signal(signal.SIGTERM)
    assert await anyio.to_thread.run_sync(proc.wait) == 0, proc.stderr.text
