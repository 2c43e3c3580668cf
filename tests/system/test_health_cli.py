"""``callboard health``: the exit code says whether a daemon serves, for probes."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import anyio
import pytest
from nats.aio.client import Client
from system_support import Daemon, run_cli, wait_exit, wait_line, watch_status

from bus import AgentOverloaded, TaskClient, new_agent_suffix
from orchestrator.cli import EXIT_CONNECTION, EXIT_NO_AGENT, EXIT_OK, EXIT_USAGE

pytestmark = [pytest.mark.system, pytest.mark.anyio]

EXIT_UNHEALTHY = 1


async def health(
    callboard_cmd: list[str], env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    """``callboard health ARGS``, off the event loop."""
    return await anyio.to_thread.run_sync(partial(run_cli, callboard_cmd, env, ["health", *args]))


def shown(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


async def start(
    start_daemon: Callable[..., Daemon], agents: Sequence[dict[str, Any]], **kw: Any
) -> Daemon:
    return await anyio.to_thread.run_sync(partial(start_daemon, agents, **kw))


async def test_health_follows_a_daemon_from_serving_to_draining_to_gone(
    start_daemon: Callable[..., Daemon],
    prefix: str,
    nc: Client,
    callboard_cmd: list[str],
    cli_env: dict[str, str],
) -> None:
    echo_id = f"echo-{new_agent_suffix()}"
    daemon = await start(
        start_daemon,
        [{"type": "echo", "id": echo_id}],
        prefix=prefix,
        heartbeat_interval=60.0,
        grace_period=3.0,
        metrics_address="127.0.0.1:0",
    )
    base = daemon.metrics_url

    ok = await health(callboard_cmd, cli_env, "--url", f"{base}/healthz")
    assert ok.returncode == EXIT_OK, shown(ok)
    assert ok.stdout.strip() == f"ok: connected; agents {echo_id} serving"
    # the address form, the bare URL and --json say the same
    address = base.removeprefix("http://")
    as_json = await health(callboard_cmd, cli_env, "--metrics", address, "--json")
    assert as_json.returncode == EXIT_OK, shown(as_json)
    assert json.loads(as_json.stdout) == {
        "status": "ok",
        "connected": True,
        "connection": "connected",
        "agents": {echo_id: "serving"},
        "http_status": 200,
    }
    assert (await health(callboard_cmd, cli_env, "--url", base)).returncode == EXIT_OK

    client = TaskClient(nc, prefix=prefix)
    task_id = f"slow-{new_agent_suffix()}"
    async with watch_status(nc, prefix) as watch, anyio.create_task_group() as tg:

        async def slow_task() -> None:
            # the grace period (3s) cuts it short with a 503: the drain is what is tested
            with pytest.raises(AgentOverloaded):
                await client.request("echo", {"delay_ms": 30000}, task_id=task_id, timeout=20)

        tg.start_soon(slow_task)
        await watch.wait_state("started", task_id=task_id)
        daemon.proc.send_signal(signal.SIGTERM)
        await wait_line(daemon.proc.stderr, "SIGTERM: shutting down")
        draining = await health(callboard_cmd, cli_env, "--url", f"{base}/healthz")
        assert draining.returncode == EXIT_UNHEALTHY, shown(draining)
        assert draining.stdout.startswith("draining: connected;"), shown(draining)

    assert await wait_exit(daemon.proc) == 0, daemon.proc.output()
    gone = await health(callboard_cmd, cli_env, "--url", f"{base}/healthz", "--timeout", "2")
    assert gone.returncode == EXIT_CONNECTION, shown(gone)
    assert "cannot reach" in gone.stderr


async def test_health_pings_agents_over_nats(
    start_daemon: Callable[..., Daemon],
    prefix: str,
    callboard_cmd: list[str],
    cli_env: dict[str, str],
) -> None:
    suffix = new_agent_suffix()
    math_ids = [f"math-{suffix}-1", f"math-{suffix}-2"]
    await start(
        start_daemon,
        [{"type": "math", "id": f"math-{suffix}", "replicas": 2}],
        prefix=prefix,
        heartbeat_interval=60.0,
    )
    common = ("--prefix", prefix)

    ok = await health(callboard_cmd, cli_env, "--agent", math_ids[0], *common)
    assert ok.returncode == EXIT_OK, shown(ok)
    assert ok.stdout.startswith(f"ok: {math_ids[0]} answered in ")

    replicas = await health(callboard_cmd, cli_env, "--capability", "math", "--json", *common)
    assert replicas.returncode == EXIT_OK, shown(replicas)
    answer = json.loads(replicas.stdout)
    assert answer["status"] == "ok"
    assert [a["agent"] for a in answer["agents"]] == math_ids
    assert all(a["capabilities"] == ["math"] and a["rtt_ms"] >= 0 for a in answer["agents"])

    missing = await health(callboard_cmd, cli_env, "--agent", f"nobody-{suffix}", *common)
    assert missing.returncode == EXIT_NO_AGENT, shown(missing)
    assert f"nobody-{suffix}" in missing.stderr
    no_capability = await health(callboard_cmd, cli_env, "--capability", "nothing", *common)
    assert no_capability.returncode == EXIT_NO_AGENT, shown(no_capability)

    unreachable = await health(
        callboard_cmd, cli_env, "--agent", math_ids[0], "-s", "nats://127.0.0.1:1", *common
    )
    assert unreachable.returncode == EXIT_CONNECTION, shown(unreachable)


async def test_health_usage_errors_exit_2(
    callboard_cmd: list[str], cli_env: dict[str, str]
) -> None:
    no_target = await health(callboard_cmd, cli_env)
    assert no_target.returncode == EXIT_USAGE, shown(no_target)
    bad_url = await health(callboard_cmd, cli_env, "--url", "ftp://127.0.0.1/healthz")
    assert bad_url.returncode == EXIT_USAGE, shown(bad_url)
    bad_address = await health(callboard_cmd, cli_env, "--metrics", "not:an:address")
    assert bad_address.returncode == EXIT_USAGE, shown(bad_address)
    helped = await health(callboard_cmd, cli_env, "--help")
    assert helped.returncode == EXIT_OK
    assert "Exit codes: 0 healthy" in " ".join(helped.stdout.split())
