"""The ``/metrics`` and ``/healthz`` server against idle connections: a daemon
with a file limit of 128 keeps answering its health probe, and keeps the file
descriptors its NATS connection needs to come back after a server restart."""

from __future__ import annotations

import signal
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from functools import partial
from typing import Any

import anyio
import msgspec
import pytest
from system_support import Daemon, wait_exit, wait_line

from bus import EmbeddedServer, TaskClient, connect, new_agent_suffix

pytestmark = [pytest.mark.system, pytest.mark.anyio]

FILE_LIMIT = 128
IDLE_CONNECTIONS = 126
"""As many as the issue's reproduction: one thread each, before, and no file left."""


@pytest.fixture
def callboard_cmd() -> list[str]:
    """The CLI in a process whose file limit (soft and hard) is ``FILE_LIMIT``."""
    limit = (
        "import resource, runpy, sys; "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({FILE_LIMIT}, {FILE_LIMIT})); "
        "sys.argv[0] = 'callboard'; "
        "runpy.run_module('orchestrator.cli', run_name='__main__')"
    )
    return [sys.executable, "-c", limit]


def fetch(url: str, timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
    """(status, JSON body) of a GET, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, msgspec.json.decode(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, msgspec.json.decode(exc.read())


def idle_connections(port: int, count: int) -> Iterator[socket.socket]:
    """Open ``count`` TCP connections that never send a byte."""
    for _ in range(count):
        yield socket.create_connection(("127.0.0.1", port), timeout=5)


async def test_idle_connections_neither_silence_healthz_nor_starve_the_nats_reconnect(
    start_daemon: Callable[..., Daemon], prefix: str, cli_env: dict[str, str]
) -> None:
    first = EmbeddedServer(jetstream=False)
    await anyio.to_thread.run_sync(first.start)
    second: EmbeddedServer | None = None
    math_id = f"math-{new_agent_suffix()}"
    try:
        port, url = first.port, first.url
        daemon = await anyio.to_thread.run_sync(
            partial(
                start_daemon,
                [{"type": "math", "id": math_id}],
                prefix=prefix,
                env={**cli_env, "NATS_URL": url},
                nats={"reconnect_wait": 0.2},
                heartbeat_interval=600.0,
                metrics_address="127.0.0.1:0",
            )
        )
        healthz = daemon.metrics_url + "/healthz"
        metrics_port = int(healthz.rsplit(":", 1)[1].split("/")[0])
        with ExitStack() as held:
            for sock in idle_connections(metrics_port, IDLE_CONNECTIONS):
                held.enter_context(sock)
            # the probe comes after every idle connection, and is answered at once
            status, body = await anyio.to_thread.run_sync(fetch, healthz)
            assert (status, body["status"]) == (200, "ok"), body

            await anyio.to_thread.run_sync(first.stop)
            await wait_line(daemon.proc.stderr, "disconnected from NATS", timeout=10)
            second = EmbeddedServer(port=port, jetstream=False)
            await anyio.to_thread.run_sync(second.start)
            await wait_line(daemon.proc.stderr, "reconnected to NATS", timeout=20)
            assert "Too many open files" not in daemon.proc.stderr.text, daemon.proc.output()

            with anyio.fail_after(15):
                async with connect(url, name="limits-test") as nc:
                    reply = await TaskClient(nc, prefix=prefix).request(
                        "math", {"expression": "6*7"}, timeout=5
                    )
            assert (reply.payload, reply.sender) == ({"value": 42}, math_id)
            status, body = await anyio.to_thread.run_sync(fetch, healthz)
            assert (status, body["connected"]) == (200, True), body

        daemon.proc.send_signal(signal.SIGTERM)
        assert await wait_exit(daemon.proc) == 0, daemon.proc.output()
    finally:
        for server in (second, first):
            if server is not None:
                await anyio.to_thread.run_sync(server.stop)
