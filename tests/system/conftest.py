"""Fixtures of the system tests: processes stopped by PID at teardown, daemons
started from a config file and awaited by their ready line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from system_support import (
    STARTUP_TIMEOUT,
    Daemon,
    Proc,
    daemon_toml,
    parse_ready_line,
)

from actors import READY_LINE
from bus import new_agent_suffix


@pytest.fixture
def procs() -> Iterator[Callable[..., Proc]]:
    """Start processes that are stopped (SIGTERM, then SIGKILL) when the test ends."""
    started: list[Proc] = []

    def spawn(
        args: Sequence[str], *, env: Mapping[str, str], name: str = "", **kwargs: Any
    ) -> Proc:
        proc = Proc(args, env=env, name=name or " ".join(args[-2:]), **kwargs)
        started.append(proc)
        return proc

    yield spawn
    errors: list[BaseException] = []
    for proc in reversed(started):
        try:
            proc.stop()
        except BaseException as exc:  # stop the others before reporting it
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def start_daemon(
    tmp_path: Path,
    cli_env: dict[str, str],
    callboard_cmd: list[str],
    procs: Callable[..., Proc],
) -> Callable[..., Daemon]:
    """Start ``callboard run`` on a config of the given agents; wait for its ready line.

    Keyword settings go to the top of the config (``grace_period``, ``max_payload``,
    ``heartbeat_interval``, ``nats={...}``); ``env`` replaces the CLI environment.
    """
    counter = 0

    def start(
        agents: Sequence[Mapping[str, Any]],
        *,
        prefix: str,
        env: Mapping[str, str] | None = None,
        **settings: Any,
    ) -> Daemon:
        nonlocal counter
        counter += 1
        config = tmp_path / f"daemon-{counter}.toml"
        config.write_text(daemon_toml(prefix, agents, **settings))
        proc = procs(
            [*callboard_cmd, "run", str(config)],
            env=cli_env if env is None else env,
            name=f"daemon-{counter}",
        )
        ids = parse_ready_line(proc.stderr.wait_for(READY_LINE, STARTUP_TIMEOUT))
        return Daemon(proc=proc, agent_ids=ids, config=config)

    return start


@pytest.fixture
def daemon(start_daemon: Callable[..., Daemon], prefix: str) -> Daemon:
    """A daemon with one math, one echo and one summarize agent (ids in ``agent_ids``)."""
    suffix = new_agent_suffix()
    return start_daemon(
        [
            {"type": "math", "id": f"math-{suffix}"},
            {"type": "echo", "id": f"echo-{suffix}"},
            {"type": "summarize", "id": f"summarize-{suffix}"},
        ],
        prefix=prefix,
        heartbeat_interval=60.0,
    )
