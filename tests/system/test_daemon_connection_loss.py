"""A daemon whose NATS connection cannot serve says so, and one whose connection
will not come back ends with an error, so that its supervisor restarts it.

Real faults only: a nats-server with a password in its config file, the password
rewritten and the server reloaded (SIGHUP to its own pid); a server stopped under
a daemon allowed one reconnect attempt.
"""

from __future__ import annotations

import os
import re
import signal
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from system_support import Daemon, Proc, run_cli, wait_exit, wait_line

from bus import EmbeddedServer, new_agent_suffix
from orchestrator.cli import EXIT_CONNECTION

pytestmark = [pytest.mark.system, pytest.mark.anyio]

EXIT_UNHEALTHY = 1
_METRICS_LINE = re.compile(r"callboard daemon metrics on (http://\S+)/metrics")
_AUTH = "authorization {{ user: {user}, password: {password} }}\n"


def fetch(url: str) -> tuple[int, dict[str, Any]]:
    """(status, JSON body) of a GET, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, msgspec.json.decode(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, msgspec.json.decode(exc.read())


@pytest.fixture
async def password_server(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedServer, Path]]:
    """A nats-server that lets in user ``agent`` with password ``first``, and its config."""
    config = tmp_path / "auth.conf"
    config.write_text(_AUTH.format(user="agent", password="first"))
    server = EmbeddedServer(jetstream=False, config_file=str(config))
    await anyio.to_thread.run_sync(server.start)
    try:
        yield server, config
    finally:
        await anyio.to_thread.run_sync(server.stop)


async def start(start_daemon: Callable[..., Daemon], url: str, **settings: Any) -> Daemon:
    return await anyio.to_thread.run_sync(
        partial(
            start_daemon,
            [{"type": "math", "id": f"math-{new_agent_suffix()}"}],
            env={**os.environ, "NATS_URL": url, "PYTHONUNBUFFERED": "1"},
            heartbeat_interval=0.5,
            metrics_address="127.0.0.1:0",
            **settings,
        )
    )


async def test_a_revoked_login_makes_healthz_503_then_ends_the_daemon_with_an_error(
    password_server: tuple[EmbeddedServer, Path],
    start_daemon: Callable[..., Daemon],
    prefix: str,
    callboard_cmd: list[str],
) -> None:
    server, config = password_server
    daemon = await start(
        start_daemon,
        server.url,
        prefix=prefix,
        nats={"user": "agent", "password": "first", "reconnect_wait": 0.5},
    )
    match = _METRICS_LINE.search(daemon.proc.stderr.text)
    assert match, daemon.proc.output()
    healthz = match.group(1) + "/healthz"
    status, body = await anyio.to_thread.run_sync(fetch, healthz)
    assert (status, body.get("connected")) == (200, True), body

    config.write_text(_AUTH.format(user="agent", password="second"))
    assert server.pid is not None
    os.kill(server.pid, signal.SIGHUP)  # the server's own pid: reload, the old login is gone

    await wait_line(daemon.proc.stderr, "Authorization Violation", timeout=15)
    status, body = await anyio.to_thread.run_sync(fetch, healthz)
    assert status == 503, body
    assert (body["status"], body["connected"]) == ("unhealthy", False), body
    assert body.get("connection") in ("refused", "closed"), body
    probe = await anyio.to_thread.run_sync(
        partial(run_cli, callboard_cmd, dict(os.environ), ["health", "--url", healthz])
    )
    assert probe.returncode in (EXIT_UNHEALTHY, EXIT_CONNECTION), probe.stdout + probe.stderr

    # refused again and again: the daemon gives up, non-zero, for systemd/Kubernetes to restart
    code = await wait_exit(daemon.proc, timeout=30)
    assert code == EXIT_CONNECTION, daemon.proc.output()
    assert "refused the login" in daemon.proc.stderr.text, daemon.proc.output()


async def test_a_connection_closed_for_good_ends_the_daemon_with_an_error(
    start_daemon: Callable[..., Daemon], prefix: str
) -> None:
    server = EmbeddedServer(jetstream=False)
    await anyio.to_thread.run_sync(server.start)
    try:
        daemon = await start(
            start_daemon,
            server.url,
            prefix=prefix,
            nats={"reconnect_wait": 0.1, "max_reconnect_attempts": 1},
        )
    finally:
        await anyio.to_thread.run_sync(server.stop)
    # one reconnect attempt allowed, none can succeed: nats-py closes the connection
    code = await wait_exit(daemon.proc, timeout=20)
    assert code == EXIT_CONNECTION, daemon.proc.output()
    assert "closed for good" in daemon.proc.stderr.text
    assert "daemon stopped" not in daemon.proc.stderr.text


async def test_a_revoked_login_ends_the_monitor_serving_metrics_with_an_error(
    password_server: tuple[EmbeddedServer, Path],
    procs: Callable[..., Proc],
    prefix: str,
    callboard_cmd: list[str],
) -> None:
    server, config = password_server
    env = {
        **os.environ,
        "NATS_URL": server.url,
        "NATS_USER": "agent",
        "NATS_PASSWORD": "first",
        "PYTHONUNBUFFERED": "1",
    }
    args = ["monitor", "--prefix", prefix, "--follow", "--metrics", "127.0.0.1:0"]
    monitor = procs([*callboard_cmd, *args], env=env, name="monitor")
    await wait_line(monitor.stderr, "following ", timeout=20)

    config.write_text(_AUTH.format(user="agent", password="second"))
    assert server.pid is not None
    os.kill(server.pid, signal.SIGHUP)

    code = await wait_exit(monitor, timeout=60)
    assert code == EXIT_CONNECTION, monitor.output()
    assert "supervisor restarts it" in monitor.stderr.text, monitor.output()
