"""``callboard server``: a real nats-server in the foreground, stopped cleanly by SIGTERM."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable

import anyio
import pytest
from nats.aio.msg import Msg
from system_support import Proc, wait_exit, wait_line

from bus import connect

pytestmark = pytest.mark.system

_LISTENING = re.compile(r"^nats-server listening on (nats://127\.0\.0\.1:(\d+)) \(pid (\d+)\)$")


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@pytest.mark.anyio
async def test_server_serves_and_stops_with_its_child_on_sigterm(
    procs: Callable[..., Proc], cli_env: dict[str, str], callboard_cmd: list[str]
) -> None:
    env = {k: v for k, v in cli_env.items() if k != "NATS_URL"}
    proc = procs([*callboard_cmd, "server", "--port", "0"], env=env, name="callboard server")
    line = await wait_line(proc.stdout, _LISTENING, timeout=20)
    match = _LISTENING.match(line)
    assert match is not None
    url, port, server_pid = match.group(1), int(match.group(2)), int(match.group(3))
    assert port > 0
    assert server_pid != proc.pid
    try:
        assert _pid_exists(server_pid)

        async with connect(url, name="system-test") as nc:
            sub = await nc.subscribe("ping.server-test", cb=_answer)
            with anyio.fail_after(5):
                reply = await nc.request("ping.server-test", b"hello", timeout=5)
            await sub.unsubscribe()
        assert reply.data == b"pong: hello"

        proc.send_signal(signal.SIGTERM)
        assert await wait_exit(proc) == 0, proc.output()
        assert not _pid_exists(server_pid), "the nats-server child outlived `callboard server`"
    finally:
        # Never leak the child server, even when an assertion above failed.
        if _pid_exists(server_pid):
            os.kill(server_pid, signal.SIGKILL)


async def _answer(msg: Msg) -> None:
    await msg.respond(b"pong: " + msg.data)
