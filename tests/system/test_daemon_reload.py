"""``callboard run`` reloads its config on SIGHUP: agents come and go, the others serve on."""

from __future__ import annotations

import json
import re
import signal
import urllib.error
import urllib.request
from collections.abc import Callable
from functools import partial
from typing import Any

import anyio
import pytest
from nats.aio.client import Client
from system_support import Daemon, daemon_toml, wait_exit, wait_line, watch_status

from actors._reload import RELOADED_LINE
from bus import NoAgentError, TaskClient, new_agent_suffix

pytestmark = [pytest.mark.system, pytest.mark.anyio]

RELOAD_TIMEOUT = 20.0
"""Seconds a reload may take (the drain of a removed agent included)."""


async def start(
    start_daemon: Callable[..., Daemon], agents: list[dict[str, Any]], **kw: Any
) -> Daemon:
    """``start_daemon`` off the event loop (it blocks until the daemon's ready line)."""
    return await anyio.to_thread.run_sync(partial(start_daemon, agents, **kw))


def healthz(daemon: Daemon) -> tuple[int, bytes]:
    """(status, body) of the daemon's ``/healthz``, at the URL it printed."""
    match = re.search(r"callboard daemon metrics on (http://\S+)/metrics", daemon.proc.stderr.text)
    assert match, daemon.proc.output()
    try:
        with urllib.request.urlopen(f"{match.group(1)}/healthz", timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def reloaded(added: int, removed: int, replaced: int, serving: list[str]) -> re.Pattern[str]:
    """The line a reload prints when it is done."""
    counts = f"+{added} -{removed} ~{replaced} agent(s); serving: {', '.join(sorted(serving))}"
    return re.compile(re.escape(f"{RELOADED_LINE}: {counts}") + "$")


async def test_sighup_adds_removes_and_leaves_the_unchanged_agent_serving(
    start_daemon: Callable[..., Daemon], prefix: str, nc: Client
) -> None:
    suffix = new_agent_suffix()
    a, b, c = f"echo-{suffix}", f"math-{suffix}", f"summarize-{suffix}"
    settings: dict[str, Any] = {"heartbeat_interval": 60.0, "grace_period": 10.0}
    daemon = await start(
        start_daemon,
        [{"type": "echo", "id": a}, {"type": "math", "id": b}],
        prefix=prefix,
        **settings,
    )
    client = TaskClient(nc, prefix=prefix)
    slow_id = f"slow-{suffix}"
    slow: list[Any] = []
    math_results: list[int] = []
    math_errors: list[BaseException] = []

    async def slow_echo() -> None:
        reply = await client.request("echo", {"delay_ms": 2500}, task_id=slow_id, timeout=15)
        slow.append(reply.payload)

    async def stream_math(worker: int) -> None:
        """Math tasks one after another until B is gone; each succeeds or finds no agent."""
        n = 0
        while True:
            n += 1
            try:
                reply = await client.request(
                    "math", {"expression": f"{worker}*1000+{n}"}, timeout=10
                )
            except NoAgentError:
                return
            except Exception as exc:  # the test fails below, showing it
                math_errors.append(exc)
                return
            assert reply.payload == {"value": worker * 1000 + n}
            math_results.append(worker)

    async with watch_status(nc, prefix) as watch:
        with anyio.fail_after(RELOAD_TIMEOUT + 10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(slow_echo)
                for worker in range(4):
                    tg.start_soon(stream_math, worker)
                await watch.wait_state("started", task_id=slow_id)
                await watch.wait_state("completed", agent=b)
                daemon.config.write_text(
                    daemon_toml(
                        prefix,
                        [{"type": "echo", "id": a}, {"type": "summarize", "id": c}],
                        **settings,
                    )
                )
                daemon.proc.send_signal(signal.SIGHUP)
                await wait_line(daemon.proc.stderr, reloaded(1, 1, 0, [a, c]), RELOAD_TIMEOUT)
                offline_b = await watch.wait_state("offline", agent=b)

        # the slow task on A ran through the reload and finished after B had gone
        assert slow == [{"delay_ms": 2500}]
        slow_done = await watch.wait_state("completed", task_id=slow_id)
        assert watch.events.index(offline_b) < watch.events.index(slow_done)
        # every math task B took was answered: none failed, none was dropped
        assert math_errors == [], math_errors
        assert math_results
        taken = {e["task_id"] for e in watch.events if e["agent"] == b and e["state"] == "accepted"}
        done = {e["task_id"] for e in watch.events if e["agent"] == b and e["state"] == "completed"}
        assert taken == done
        assert not [e for e in watch.events if e["agent"] == b and e["state"] == "failed"]
        assert all(
            watch.events.index(e) < watch.events.index(offline_b)
            for e in watch.events
            if e["agent"] == b and e["state"] == "completed"
        )
        with pytest.raises(NoAgentError):
            await client.request("math", {"expression": "6*7"}, timeout=5)
        summary = await client.request(
            "summarize", {"text": "Cats purr. Dogs bark.", "sentences": 1}
        )
        assert summary.sender == c
        # A was never taken down: no offline, no second online
        assert not [
            e for e in watch.events if e["agent"] == a and e["state"] in ("offline", "online")
        ]
        assert [e["agent"] for e in watch.events if e["state"] == "online"] == [c]

        # an invalid file: one error line, and everything still serves
        daemon.config.write_text("prefix = [not toml\n")
        daemon.proc.send_signal(signal.SIGHUP)
        error = await wait_line(daemon.proc.stderr, "config reload failed", RELOAD_TIMEOUT)
        assert "ERROR" in error and "not valid TOML" in error and str(daemon.config) in error
        assert (await client.request("echo", {"still": "here"})).payload == {"still": "here"}
        assert (
            await client.request("summarize", {"text": "One. Two.", "sentences": 1})
        ).sender == c
        assert not [e for e in watch.events if e["state"] == "offline" and e["agent"] != b]

    assert daemon.proc.stderr.text.count("config reload failed") == 1
    assert "SIGHUP unsupported" not in daemon.proc.stderr.text
    daemon.proc.send_signal(signal.SIGTERM)
    assert await wait_exit(daemon.proc) == 0, daemon.proc.output()


async def test_restart_settings_are_warned_about_and_reloads_run_one_after_another(
    start_daemon: Callable[..., Daemon], prefix: str, nc: Client
) -> None:
    suffix = new_agent_suffix()
    a, b, d, e = (f"{name}-{suffix}" for name in ("a", "b", "d", "e"))
    settings: dict[str, Any] = {
        "heartbeat_interval": 60.0,
        "grace_period": 10.0,
        "metrics_address": "127.0.0.1:0",
    }
    daemon = await start(
        start_daemon,
        [{"type": "echo", "id": a}, {"type": "echo", "id": b}],
        prefix=prefix,
        **settings,
    )
    client = TaskClient(nc, prefix=prefix)
    slow_id = f"slow-{suffix}"

    def write(*agents: dict[str, Any]) -> None:
        # a new prefix needs a restart: it is reported and the old one kept
        daemon.config.write_text(daemon_toml(f"{prefix}x", list(agents), **settings))

    async with watch_status(nc, prefix) as watch:
        with anyio.fail_after(RELOAD_TIMEOUT + 10):
            async with anyio.create_task_group() as tg:
                # B is busy for 2s, so its removal keeps the first reload going that long
                tg.start_soon(
                    partial(client.request, task_id=slow_id, timeout=15, agent_id=b),
                    "echo",
                    {"delay_ms": 2000},
                )
                await watch.wait_state("started", task_id=slow_id)
                write(
                    {"type": "echo", "id": a, "max_concurrency": 3},  # replaced
                    {"type": "math", "id": d},  # added; B removed
                )
                daemon.proc.send_signal(signal.SIGHUP)
                warning = await wait_line(
                    daemon.proc.stderr, "config reload ignores", RELOAD_TIMEOUT
                )
                assert "WARNING" in warning and "prefix" in warning, warning
                await wait_line(
                    daemon.proc.stderr, f"replacing agent {a}: its max_concurrency changed"
                )
                # B drains alone: the daemon serves with the others, so it stays healthy
                # (B's removal starts after the "replacing" line: wait for its drain)
                await wait_line(daemon.proc.stderr, "for 1 task(s) in flight", RELOAD_TIMEOUT)
                status, body = await anyio.to_thread.run_sync(healthz, daemon)
                assert status == 200, body
                assert json.loads(body)["agents"][b] == "draining"
                # a second SIGHUP while the first reload waits for B's task
                write(
                    {"type": "echo", "id": a, "max_concurrency": 3},
                    {"type": "math", "id": d},
                    {"type": "summarize", "id": e},
                )
                daemon.proc.send_signal(signal.SIGHUP)
                await wait_line(daemon.proc.stderr, reloaded(1, 1, 1, [a, d]), RELOAD_TIMEOUT)
                await wait_line(daemon.proc.stderr, reloaded(1, 0, 0, [a, d, e]), RELOAD_TIMEOUT)

        b_done = await watch.wait_state("completed", task_id=slow_id)
        assert watch.events.index(b_done) < watch.events.index(
            await watch.wait_state("offline", agent=b)
        )
        online_a = await watch.wait_state("online", agent=a)
        assert online_a["max_concurrency"] == 3
        # the agents serve under the prefix the daemon started with
        assert (await client.request("math", {"expression": "6*7"})).sender == d
        assert (await client.request("echo", {"x": 1})).sender == a
        assert (
            await client.request("summarize", {"text": "A b. C d.", "sentences": 1})
        ).sender == e

    daemon.proc.send_signal(signal.SIGTERM)
    assert await wait_exit(daemon.proc) == 0, daemon.proc.output()
