"""The gateway's health tells the truth: its NATS server is killed (kill -9) and
not restarted; /healthz says 503 while it reconnects, and once its reconnect
attempts are used up the gateway exits with the connection error (5), so that
its supervisor restarts it.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from gateway_support import GATEWAY_READY, TOKEN_ENV, gateway_toml, new_token
from system_support import Proc, wait_exit

from bus import EmbeddedServer
from orchestrator.cli import EXIT_CONNECTION

pytestmark = [pytest.mark.anyio, pytest.mark.system]


@pytest.fixture
async def doomed_server() -> AsyncIterator[EmbeddedServer]:
    """A server of this test alone, which the test kills."""
    server = EmbeddedServer(jetstream=False)
    await anyio.to_thread.run_sync(server.start)
    try:
        yield server
    finally:
        await anyio.to_thread.run_sync(server.stop)


async def healthz(url: str) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.get(f"{url}/healthz")
    return response.status_code, response.json()


async def test_a_killed_server_makes_it_unhealthy_then_ends_it_with_an_error(
    doomed_server: EmbeddedServer,
    tmp_path: Path,
    prefix: str,
    cli_env: dict[str, str],
    callboard_cmd: list[str],
    procs: Callable[..., Proc],
) -> None:
    config = tmp_path / "gateway.toml"
    toml = gateway_toml(prefix, doomed_server.url, ["math"])
    # few reconnect attempts, a second apart: some seconds unhealthy, then gone
    reconnects = "[nats]\nreconnect_wait = 1.0\nmax_reconnect_attempts = 3\n"
    config.write_text(toml.replace("[nats]\n", reconnects))
    proc = procs(
        [*callboard_cmd, "gateway", str(config), "--metrics", "127.0.0.1:0"],
        env={**cli_env, "NATS_URL": doomed_server.url, TOKEN_ENV: new_token()},
        name="gateway",
    )
    line = await anyio.to_thread.run_sync(proc.stderr.wait_for, "gateway metrics on")
    found = re.search(r"on (http://[^ ]+)/metrics", line)
    assert found is not None
    metrics = found.group(1)
    await anyio.to_thread.run_sync(proc.stderr.wait_for, GATEWAY_READY)
    status, body = await healthz(metrics)
    assert (status, body["status"], body["connection"]) == (200, "ok", "connected"), body

    assert doomed_server.pid is not None
    os.kill(doomed_server.pid, signal.SIGKILL)
    with anyio.fail_after(20):
        while status == 200 and proc.alive():
            status, body = await healthz(metrics)
            await anyio.sleep(0.05)  # polling the endpoint, not waiting for a time
    assert status == 503, (body, proc.output())
    assert body["connected"] is False and body["connection"] != "connected", body

    code = await wait_exit(proc, timeout=30)
    assert code == EXIT_CONNECTION, proc.output()
    assert "closed for good" in proc.stderr.text, proc.output()
    assert "gateway stopped" not in proc.stderr.text
