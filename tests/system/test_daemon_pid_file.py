"""``callboard run --pid-file``: the README's SIGHUP line, run as written, reloads the daemon."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from system_support import ROOT, STARTUP_TIMEOUT, Proc, daemon_toml, parse_ready_line

from actors import READY_LINE

pytestmark = pytest.mark.system

_RELOADED = "callboard daemon reloaded:"


def _readme_reload_lines() -> tuple[str, str]:
    """The README's two lines: start the daemon with a pid file, then SIGHUP it."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### Reloading the config: SIGHUP", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None, "the SIGHUP section lost its sh block"
    start, signal_line = (line.split("#")[0].strip() for line in block.group(1).splitlines())
    return start, signal_line


def test_the_readme_sighup_line_reloads_the_daemon_named_by_its_pid_file(
    tmp_path: Path, cli_env: dict[str, str], callboard_cmd: list[str], procs: Callable[..., Proc]
) -> None:
    start, signal_line = _readme_reload_lines()
    assert start.endswith("&") and start.startswith("callboard run ")
    flags = start.removeprefix("callboard run ").removesuffix("&").split()
    config = tmp_path / "agents.toml"
    config.write_text(daemon_toml("pidfile", [{"type": "echo", "id": "echo"}]))
    # the README's deploy/agents.toml on this test's prefix; its relative pid file, here
    flags = [str(config), *(str(tmp_path / f) if f.endswith(".pid") else f for f in flags[1:])]
    daemon = procs([*callboard_cmd, "run", *flags], env=cli_env, name="daemon")
    assert parse_ready_line(daemon.stderr.wait_for(READY_LINE, STARTUP_TIMEOUT)) == ["echo"]
    pid_file = tmp_path / "callboard.pid"
    assert pid_file.read_text() == f"{daemon.pid}\n"

    config.write_text(
        daemon_toml("pidfile", [{"type": "echo", "id": "echo"}, {"type": "math", "id": "math"}])
    )
    ran = subprocess.run(["sh", "-c", signal_line], cwd=tmp_path, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    line = daemon.stderr.wait_for(_RELOADED, STARTUP_TIMEOUT)
    assert line.endswith("+1 -0 ~0 agent(s); serving: echo, math"), line

    daemon.stop()
    assert not pid_file.exists(), "the pid file outlived the daemon"


def test_a_pid_file_of_a_running_process_is_refused(
    tmp_path: Path, cli_env: dict[str, str], callboard_cmd: list[str]
) -> None:
    config = tmp_path / "agents.toml"
    config.write_text(daemon_toml("pidfile", [{"type": "echo"}]))
    pid_file = tmp_path / "callboard.pid"
    pid_file.write_text(f"{os.getpid()}\n")  # this test's process: alive
    result = subprocess.run(
        [*callboard_cmd, "run", str(config), "--pid-file", str(pid_file)],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 2, result.stderr
    assert f"names process {os.getpid()}, which is running" in result.stderr
    assert pid_file.read_text() == f"{os.getpid()}\n"
