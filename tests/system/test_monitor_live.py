"""``callboard monitor`` against a real daemon: ``--metrics`` (the fleet's
``/metrics`` and ``/healthz``), and the live table on a real terminal (tmux).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial

import anyio
import msgspec
import pytest
from nats.aio.client import Client
from prometheus_client.parser import text_string_to_metric_families
from system_support import ROOT, Daemon, Proc, wait_exit, wait_line

from bus import AgentError, TaskClient, new_agent_suffix

pytestmark = [pytest.mark.system, pytest.mark.anyio]

_METRICS_LINE = re.compile(r"callboard monitor metrics on (http://\S+)/metrics")
SCREEN_TIMEOUT = 20.0
"""Seconds the table may take to show what a test waits for (interpreter start included)."""
POLL = 0.1
"""Seconds between two reads of a screen or a scrape while waiting for a change."""
COLUMNS, LINES = 160, 40
"""The size of the test terminal."""


def fetch(url: str) -> tuple[int, bytes]:
    """(status, body) of a GET, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


async def scrape(url: str) -> Samples:
    """Every sample of ``url``/metrics: (name, sorted labels) -> value."""
    status, body = await anyio.to_thread.run_sync(fetch, url + "/metrics")
    assert status == 200, body
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


Samples = Mapping[tuple[str, tuple[tuple[str, str], ...]], float]


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """One sample's value, None if there is no such series."""
    return samples.get((name, tuple(sorted(labels.items()))))


def start_monitor(
    procs: Callable[..., Proc], callboard_cmd: list[str], env: Mapping[str, str], *args: str
) -> tuple[Proc, str]:
    """``callboard monitor ARGS --metrics 127.0.0.1:0`` once it follows: (process, base URL)."""
    proc = procs(
        [*callboard_cmd, "monitor", *args, "--metrics", "127.0.0.1:0"], env=env, name="monitor"
    )
    match = _METRICS_LINE.search(proc.stderr.wait_for(_METRICS_LINE))
    assert match is not None
    proc.stderr.wait_for("following ")  # printed after the metrics line
    return proc, match.group(1)


@pytest.fixture
def small_daemon(start_daemon: Callable[..., Daemon], prefix: str) -> Daemon:
    """A math agent (4 at once) and an echo agent (2 at once), no heartbeat during a test."""
    suffix = new_agent_suffix()
    return start_daemon(
        [
            {"type": "math", "id": f"math-{suffix}", "max_concurrency": 4},
            {"type": "echo", "id": f"echo-{suffix}", "max_concurrency": 2},
        ],
        prefix=prefix,
        heartbeat_interval=60.0,
    )


async def test_monitor_metrics_count_the_tasks_sent_and_pass_promtool(
    small_daemon: Daemon,
    prefix: str,
    nc: Client,
    procs: Callable[..., Proc],
    callboard_cmd: list[str],
    cli_env: dict[str, str],
) -> None:
    math_id, echo_id = small_daemon.agent_ids
    monitor, url = await anyio.to_thread.run_sync(
        partial(start_monitor, procs, callboard_cmd, cli_env, "--prefix", prefix, "--json")
    )
    client = TaskClient(nc, prefix=prefix)
    for n in range(3):
        await client.request("math", {"expression": f"6*{n}"})
    with pytest.raises(AgentError):
        await client.request("math", {"expression": "1/0"})
    bad_task = await client.request("echo", {"n": 1})
    assert bad_task.payload == {"n": 1}
    # --json prints each event as it came; the last one printed is counted by then
    await wait_line(monitor.stdout, lambda line: '"completed"' in line and echo_id in line)
    events = [json.loads(line) for line in monitor.stdout.lines]
    assert [e["state"] for e in events if e["agent"] == math_id][-3:] == [
        *("accepted", "started", "failed"),
    ]

    samples = await scrape(url)
    math = {"agent": math_id, "capability": "math"}
    assert value(samples, "callboard_fleet_tasks_total", **math, outcome="completed") == 3
    assert value(samples, "callboard_fleet_tasks_total", **math, outcome="failed") == 1
    assert value(samples, "callboard_fleet_tasks_failed_total", **math, code="400") == 1
    echo = {"agent": echo_id, "capability": "echo"}
    assert value(samples, "callboard_fleet_tasks_total", **echo, outcome="completed") == 1
    assert value(samples, "callboard_fleet_task_duration_seconds_count", capability="math") == 4
    assert value(samples, "callboard_fleet_status_events_total", state="accepted") == 5
    # found by discovery at start (no heartbeat during the test), with their limits
    assert value(samples, "callboard_fleet_agent_up", agent=math_id) == 1
    assert value(samples, "callboard_fleet_agent_max_concurrency", agent=echo_id) == 2
    assert value(samples, "callboard_fleet_live_agents", capability="echo") == 1
    assert value(samples, "callboard_nats_connected", connection="callboard-monitor") == 1
    assert value(samples, "process_cpu_seconds_total") is not None

    status, body = await anyio.to_thread.run_sync(fetch, url + "/metrics")
    with anyio.fail_after(30):
        checked = await anyio.run_process(["promtool", "check", "metrics"], input=body, check=False)
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()

    status, body = await anyio.to_thread.run_sync(fetch, url + "/healthz")
    assert status == 200, body
    assert msgspec.json.decode(body) == {
        "status": "ok",
        "connected": True,
        "connection": "connected",
        "agents": 2,
    }


async def test_a_stopped_agent_goes_down_then_its_series_are_deleted(
    small_daemon: Daemon,
    prefix: str,
    procs: Callable[..., Proc],
    callboard_cmd: list[str],
    cli_env: dict[str, str],
) -> None:
    math_id, _ = small_daemon.agent_ids
    args = ("--prefix", prefix, "--follow", "--forget-after", "2")
    monitor, url = await anyio.to_thread.run_sync(
        partial(start_monitor, procs, callboard_cmd, cli_env, *args)
    )
    small_daemon.proc.send_signal(signal.SIGTERM)
    assert await wait_exit(small_daemon.proc) == 0
    await wait_line(monitor.stdout, re.compile(rf"{re.escape(math_id)}\s+offline"))
    samples = await scrape(url)
    assert value(samples, "callboard_fleet_agent_up", agent=math_id) == 0
    assert value(samples, "callboard_fleet_live_agents", capability="math") == 0
    # two seconds later (one sweep a second) the agent's series are gone; the
    # capability stays, at 0, for the alert that says nobody serves it
    with anyio.fail_after(SCREEN_TIMEOUT):
        while value(samples, "callboard_fleet_agent_up", agent=math_id) is not None:
            await anyio.sleep(POLL)
            samples = await scrape(url)
    assert not [key for key in samples if ("agent", math_id) in key[1]]
    assert value(samples, "callboard_fleet_live_agents", capability="math") == 0


# --- the live table on a real terminal --------------------------------------------------------


@dataclass
class Terminal:
    """A tmux session of its own (its own server socket) running one command."""

    socket: str
    target: str

    async def tmux(self, *args: str) -> str:
        result = await anyio.run_process(["tmux", "-L", self.socket, *args], check=True)
        return result.stdout.decode(errors="replace")

    async def screen(self) -> str:
        """What the terminal shows now (lines it wrapped joined again: a JSON event is one)."""
        return await self.tmux("capture-pane", "-p", "-J", "-t", self.target)

    async def wait_for(self, predicate: Callable[[str], bool], what: str) -> str:
        """The screen, once ``predicate`` holds for it; fails with the last screen."""
        shown = ""
        try:
            with anyio.fail_after(SCREEN_TIMEOUT):
                while True:  # the screen changes in another process: read it until it fits
                    shown = await self.screen()
                    if predicate(shown):
                        return shown
                    await anyio.sleep(POLL)
        except TimeoutError:
            pytest.fail(f"the terminal never showed {what}; it shows:\n{shown}")


Launch = Callable[[list[str]], Awaitable[Terminal]]


@pytest.fixture
async def terminal(cli_env: dict[str, str]) -> AsyncIterator[Launch]:
    """Run a command in a 160x40 tmux terminal; that tmux server is killed after the test.

    The command's exit code is shown after it (``EXIT=n``), and the pane stays.
    """
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    socket = f"callboard-test-{new_agent_suffix()}"
    env = {k: v for k, v in cli_env.items() if k != "TMUX"}
    started = False

    async def launch(command: list[str]) -> Terminal:
        nonlocal started
        shell = f"{shlex.join(command)}; echo EXIT=$?; sleep 600"
        size = ["-x", str(COLUMNS), "-y", str(LINES)]
        await anyio.run_process(
            ["tmux", "-L", socket, "new-session", "-d", *size, "-s", "t", "-c", str(ROOT), shell],
            env=env,
        )
        started = True
        return Terminal(socket, "t")

    try:
        yield launch
    finally:
        if started:
            await anyio.run_process(["tmux", "-L", socket, "kill-server"], check=False)


def row_of(screen: str, agent: str) -> list[str]:
    """The cells of an agent's row (agent, capabilities, state, in flight, tasks/s,
    errors, p50, p99), or [] while it is not shown."""
    for line in screen.splitlines():
        cells = line.split()
        if cells and cells[0] == agent:
            return cells
    return []


async def test_the_live_table_shows_the_agents_then_their_tasks(
    small_daemon: Daemon,
    prefix: str,
    nc: Client,
    terminal: Launch,
    callboard_cmd: list[str],
) -> None:
    math_id, echo_id = small_daemon.agent_ids
    term = await terminal([*callboard_cmd, "monitor", "--prefix", prefix])

    # the agents were up before the monitor: discovery puts them in the table
    screen = await term.wait_for(
        lambda s: (
            row_of(s, math_id)[:4] == [math_id, "math", "online", "0/4"]
            and row_of(s, echo_id)[:4] == [echo_id, "echo", "online", "0/2"]
        ),
        "both agents online and idle",
    )
    header = screen.splitlines()[0]
    assert header.startswith(f"callboard monitor {prefix} ")
    assert "2 agent(s): 2 online" in header and "in flight 0/6" in header
    assert "\x1b" not in screen and all(len(line) < COLUMNS for line in screen.splitlines())

    client = TaskClient(nc, prefix=prefix)
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(client.request, "echo", {"delay_ms": 1500}, timeout=20))
        await term.wait_for(lambda s: row_of(s, echo_id)[3:4] == ["1/2"], "the echo task in flight")
        for n in range(5):
            await client.request("math", {"expression": f"{n}+1"})
        with pytest.raises(AgentError):
            await client.request("math", {"expression": "1/0"})
    screen = await term.wait_for(
        lambda s: row_of(s, math_id)[5:6] == ["16.7%"] and row_of(s, echo_id)[3:4] == ["0/2"],
        "1 failure in 6 math tasks, and the echo task done",
    )
    math_row, echo_row = row_of(screen, math_id), row_of(screen, echo_id)
    assert float(math_row[4]) > 0 and math_row[6].endswith("ms"), math_row
    assert float(echo_row[4]) > 0 and echo_row[6].endswith("s") and echo_row[5] == "0.0%"
    assert echo_row[6] == echo_row[7]  # one task: p50 = p99, about 1.5 s
    assert 1.5 <= float(echo_row[6].removesuffix("s")) < 3, echo_row

    # Ctrl-C gives the terminal back (the table was on the alternate screen)
    await term.tmux("send-keys", "-t", term.target, "C-c")
    screen = await term.wait_for(lambda s: "EXIT=" in s, "the monitor exiting")
    assert "EXIT=130" in screen
    assert f"following {prefix}.status.> (Ctrl-C to stop)" in screen
    assert "AGENT" not in screen


@pytest.mark.parametrize("flag", ["--follow", "--json"])
async def test_on_a_terminal_follow_and_json_print_one_line_per_event(
    flag: str,
    small_daemon: Daemon,
    prefix: str,
    nc: Client,
    terminal: Launch,
    callboard_cmd: list[str],
) -> None:
    math_id, _ = small_daemon.agent_ids
    term = await terminal([*callboard_cmd, "monitor", "--prefix", prefix, flag])
    await term.wait_for(lambda s: "following " in s, "the following line")
    task_id = f"tty-{new_agent_suffix()}"
    await TaskClient(nc, prefix=prefix).request("math", {"expression": "6*7"}, task_id=task_id)
    screen = await term.wait_for(lambda s: s.count(task_id) == 3, "the task's three events")
    lines = [line for line in screen.splitlines() if task_id in line]
    if flag == "--json":
        events = [json.loads(line) for line in lines]
        assert [e["state"] for e in events] == ["accepted", "started", "completed"]
        assert {e["agent"] for e in events} == {math_id}
    else:
        assert [line.split()[2] for line in lines] == ["accepted", "started", "completed"]
    assert "AGENT" not in screen
