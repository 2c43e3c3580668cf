"""Every ``nats …`` line of the README, run with the real nats CLI (natscli v0.5.0) against
a real nats-server and a real ``callboard run`` daemon, gives what the README says.

The server is this module's own, so the README's lines run exactly as written (prefix
``agents``, bucket ``AGENTS_TASKS``, stream ``AGENTS_DEAD``); only ``--server URL`` is added,
and the CLI runs with a HOME of its own, so it reads no user context.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from go_tools import NATSCLI, nats_cli, nats_env
from system_support import ROOT, STARTUP_TIMEOUT, Proc, daemon_toml, parse_ready_line

from actors import READY_LINE, Agent
from bus import AgentMessage, EmbeddedServer

pytestmark = pytest.mark.system

HERE = Path(__file__).resolve().parent
README = ROOT / "README.md"
CLI_TIMEOUT = 30.0
"""Seconds one nats CLI command may take."""


class AlwaysFails(Agent):
    """Fails every task with an unexpected error (a 500), so durable tasks dead-letter.

    The daemon of this module loads it as ``type = "test_nats_cli:AlwaysFails"``.
    """

    kind = "flaky"
    capabilities = ("flaky",)

    async def handle(self, task: AgentMessage) -> Any:
        raise RuntimeError("fails on purpose")


def readme_nats_lines() -> list[str]:
    """The ``nats …`` command lines of the README's shell code blocks, as written."""
    lines: list[str] = []
    in_shell = False
    pending = ""
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            in_shell = line.strip() in ("```sh", "```bash", "```console")
            continue
        if pending:  # a line continued with a backslash
            pending += " " + line.strip()
        elif in_shell and line.startswith("nats "):
            pending = line
        if pending and not pending.endswith("\\"):
            lines.append(pending)
            pending = ""
        elif pending:
            pending = pending[:-1].rstrip()
    return lines


def readme_line(command: str) -> tuple[list[str], str]:
    """The README line that starts with ``command``: its words and its comment."""
    [line] = [x for x in readme_nats_lines() if x.startswith(command + " ") or x == command]
    words, _, comment = line.partition("#")
    return shlex.split(words), comment.strip()


class Bus:
    """This module's server and daemon, and a way to run nats CLI commands against them."""

    def __init__(self, url: str, home: Path, daemon: Proc, agent_ids: list[str]) -> None:
        self.url = url
        self.env = nats_env(home)
        self.daemon = daemon
        self.agent_ids = agent_ids
        self.nats = nats_cli()

    def argv(self, words: list[str]) -> list[str]:
        assert words[0] == "nats", words
        return [self.nats, "--server", self.url, *words[1:]]

    def run(self, words: list[str]) -> subprocess.CompletedProcess[str]:
        """Run a nats CLI command to its end."""
        try:
            done = subprocess.run(
                self.argv(words),
                capture_output=True,
                text=True,
                env=self.env,
                timeout=CLI_TIMEOUT,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"{shlex.join(words)} did not finish within {CLI_TIMEOUT:g}s")
        assert done.returncode == 0, f"{shlex.join(words)}:\n{done.stdout}\n{done.stderr}"
        return done

    def run_in_terminal(self, words: list[str]) -> str:
        """Run a command that wants a terminal (a pager) on a pseudo-terminal; its output."""
        leader, follower = pty.openpty()
        try:
            proc = subprocess.Popen(
                self.argv(words),
                stdin=follower,
                stdout=follower,
                stderr=follower,
                env=self.env,
                start_new_session=True,
            )
        finally:
            os.close(follower)
        chunks: list[bytes] = []
        try:
            while True:
                ready, _, _ = select.select([leader], [], [], CLI_TIMEOUT)
                assert ready, f"{shlex.join(words)} said nothing for {CLI_TIMEOUT:g}s: {chunks}"
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # EIO: the process closed the terminal
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            assert proc.wait(CLI_TIMEOUT) == 0, b"".join(chunks).decode(errors="replace")
        finally:
            os.close(leader)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")

    def watch(self, words: list[str], name: str) -> Proc:
        """Start a long-running command (``nats sub``); the caller stops it."""
        return Proc(self.argv(words), env=self.env, name=name)

    def callboard(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**self.env, "NATS_URL": self.url}
        return subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=CLI_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )


@pytest.fixture(scope="module")
def bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bus]:
    """A nats-server of this module's own and a daemon: two math agents, echo, a failing agent."""
    nats = nats_cli()  # installs natscli (or skips without Go) before anything starts
    assert nats
    tmp = tmp_path_factory.mktemp("nats-cli")
    with EmbeddedServer(store_dir=str(tmp / "jetstream")) as server:
        config = tmp / "agents.toml"
        config.write_text(
            daemon_toml(
                "agents",
                [
                    {"type": "math", "id": "math", "replicas": 2},
                    {"type": "echo", "id": "echo-1"},
                    {"type": "test_nats_cli:AlwaysFails", "id": "flaky-1"},
                ],
                heartbeat_interval=600.0,
            )
            + '[durable]\nstorage = "memory"\nmax_deliver = 2\nretry_delay = 0.05\n'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("NATS_")}
        env |= {
            "NATS_URL": server.url,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(HERE), str(HERE.parent), env.get("PYTHONPATH")])
            ),
        }
        daemon = Proc(
            [sys.executable, "-m", "orchestrator.cli", "run", str(config)], env=env, name="daemon"
        )
        try:
            ids = parse_ready_line(daemon.stderr.wait_for(READY_LINE, STARTUP_TIMEOUT))
            home = tmp / "home"
            home.mkdir()
            yield Bus(server.url, home, daemon, ids)
        finally:
            daemon.stop()


def test_the_readme_names_the_natscli_release_and_every_nats_line_is_tested() -> None:
    assert f"go install {NATSCLI}" in README.read_text()
    tested = {
        'nats req agents.task.math \'{"expression": "6*7"}\'',
        'nats req agents.task.math \'{"expression": "1/0"}\'',
        "nats sub 'agents.status.>'",
        "nats sub 'agents.status.*.failed'",
        "nats micro ls",
        "nats micro info math",
        "nats micro stats math",
        "nats micro ping",
        "nats kv get --raw AGENTS_TASKS math.TASK_ID",
        "nats stream view AGENTS_DEAD",
        "nats context save dev --server nats://127.0.0.1:4222 --select",  # test_cli_nats_context
        "nats kv create AGENTS_TASKS math.job-42.submitted",
        'nats req agents.jobs.math \'{"expression": "6*7"}\' -H Nats-Msg-Id:job-42 '
        "-H Agent-Sender:billing",
        "nats kv get AGENTS_TASKS math.job-42 --raw",
    }
    in_readme = {
        line.partition("#")[0].strip().partition(" '{")[0]
        if "kv create" in line
        else line.partition("#")[0].strip()
        for line in readme_nats_lines()
    }
    assert in_readme == tested


def test_nats_req_prints_the_result_the_readme_shows(bus: Bus) -> None:
    words, comment = readme_line('nats req agents.task.math \'{"expression": "6*7"}\'')
    done = bus.run(words)
    assert comment.startswith("→ ")
    assert done.stdout.strip() == comment.removeprefix("→ ") == '{"value":42}'
    assert re.search(r"Agent-Id: math-[12]$", done.stderr, re.M), done.stderr
    assert re.search(r"Agent-Task-Id: \S+$", done.stderr, re.M), done.stderr


def test_nats_req_shows_an_error_reply_with_its_code(bus: Bus) -> None:
    words, comment = readme_line('nats req agents.task.math \'{"expression": "1/0"}\'')
    assert comment == "→ error reply, code 400"
    done = bus.run(words)
    assert "Nats-Service-Error-Code: 400" in done.stderr
    assert "Nats-Service-Error: division by zero in '1/0'" in done.stderr
    body = json.loads(done.stdout)
    assert body["error"]["code"] == 400
    assert body["error"]["type"] == "bad_input"


def _received(proc: Proc, subject_pattern: str) -> str:
    """Wait for natscli's ``Received on "<subject>"`` line; return the body line after it."""
    proc.stdout.wait_for(re.compile(rf'Received on "{subject_pattern}"'), CLI_TIMEOUT)
    return proc.stdout.wait_for(lambda line: line.startswith("{"), CLI_TIMEOUT)


def test_nats_sub_sees_every_status_event_of_a_task(bus: Bus) -> None:
    words, _ = readme_line("nats sub 'agents.status.>'")
    sub = bus.watch(words, "nats sub all")
    try:
        sub.stderr.wait_for("Subscribing on agents.status.>", CLI_TIMEOUT)
        reply = bus.run(["nats", "req", "agents.task.echo", '{"hello": "go"}'])
        task_id = re.search(r"Agent-Task-Id: (\S+)", reply.stderr)
        assert task_id, reply.stderr
        for state in ("accepted", "started", "completed"):
            event = json.loads(_received(sub, rf"agents\.status\.echo-1\.{state}"))
            assert event["state"] == state
            assert event["task_id"] == task_id.group(1)
            assert event["agent"] == "echo-1"
    finally:
        sub.stop()


def test_nats_sub_on_failed_sees_only_failures(bus: Bus) -> None:
    words, _ = readme_line("nats sub 'agents.status.*.failed'")
    sub = bus.watch(words, "nats sub failed")
    try:
        sub.stderr.wait_for("Subscribing on agents.status.*.failed", CLI_TIMEOUT)
        bus.run(["nats", "req", "agents.task.echo", "{}"])  # completes: not a failure
        reply = bus.run(["nats", "req", "agents.task.math", '{"expression": "2**"}'])
        event = json.loads(_received(sub, r"agents\.status\.math-[12]\.failed"))
        assert event["state"] == "failed"
        assert event["error"]["code"] == 400
        assert f"Agent-Task-Id: {event['task_id']}" in reply.stderr
        # The echo task's events came first on the daemon's one connection: none matched.
        assert not any("echo-1" in line for line in sub.stdout.lines), sub.output()
    finally:
        sub.stop()


def test_nats_micro_ls_lists_every_agent(bus: Bus) -> None:
    words, _ = readme_line("nats micro ls")
    out = bus.run(words).stdout
    for agent_id in ("math-1", "math-2", "echo-1", "flaky-1"):
        assert agent_id in out, out
    echo_row = r"│ echo +│ \d+\.\d+\.\d+ +│ echo-1 +│ Returns the payload unchanged"
    assert re.search(echo_row, out), out
    assert re.search(r"│ math +│ +│ math-1 +│ Evaluates arithmetic", out), out
    assert "Meant for tests" not in out  # one line per agent: its docstring's summary


def test_nats_micro_info_shows_the_capability_endpoint(bus: Bus) -> None:
    words, _ = readme_line("nats micro info math")
    out = bus.run(words).stdout
    assert re.search(r"Service: math \(math-[12]\)", out), out
    assert "Subject: agents.task.math" in out
    assert "Queue Group: callboard" in out
    assert re.search(r"agent_id: math-[12]", out), out
    assert "keywords: math,calculate" in out
    assert "null" not in out  # no empty "endpoint specific statistics"


def _stats_totals(table: str) -> tuple[int, int]:
    """(requests, errors) of the totals row of ``nats micro stats``."""
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in table.splitlines()]
    [totals] = [r for r in rows if len(r) == 7 and r[0] == "" and r[2].isdigit()]
    return int(totals[2]), int(totals[4])


def test_nats_micro_stats_counts_requests_and_errors(bus: Bus) -> None:
    words, _ = readme_line("nats micro stats math")
    requests, errors = _stats_totals(bus.run(words).stdout)
    bus.run(["nats", "req", "agents.task.math", '{"expression": "1+1"}'])
    bus.run(["nats", "req", "agents.task.math", '{"expression": "2+2"}'])
    bus.run(["nats", "req", "agents.task.math", '{"expression": "nope"}'])
    out = bus.run(words).stdout
    assert _stats_totals(out) == (requests + 3, errors + 1), out
    assert re.search(r"│ math-1 +│ math +│ \d+ +│ callboard", out), out
    assert re.search(r"│ math-2 +│ math +│ \d+ +│ callboard", out), out


def test_nats_micro_ping_reaches_every_agent(bus: Bus) -> None:
    words, _ = readme_line("nats micro ping")
    out = bus.run(words).stdout
    for kind, agent_id in (("math", "math-1"), ("math", "math-2"), ("echo", "echo-1")):
        assert re.search(rf"^{kind} +{agent_id} +rtt=", out, re.M), out


def test_nats_kv_get_reads_a_durable_tasks_record(bus: Bus) -> None:
    submitted = bus.callboard("submit", "math", '{"expression": "6*7"}', "--durable", "--no-wait")
    assert submitted.returncode == 0, submitted.stderr
    task_id = json.loads(submitted.stdout)["task_id"]
    waited = bus.callboard("result", task_id, "--wait")
    assert waited.returncode == 0, waited.stderr
    words, _ = readme_line("nats kv get --raw AGENTS_TASKS math.TASK_ID")
    record = json.loads(bus.run([w.replace("TASK_ID", task_id) for w in words]).stdout)
    assert record["task_id"] == task_id
    assert record["state"] == "completed"
    assert record["result"] == {"value": 42}
    assert record["agent"] in ("math-1", "math-2")


def test_nats_stream_view_shows_a_dead_letter_with_its_error(bus: Bus) -> None:
    failed = bus.callboard("submit", "flaky", '{"n": 1}', "--durable", "--timeout", "20")
    assert failed.returncode == 1, failed.stderr
    assert "dead-lettered after 2 attempt(s)" in failed.stderr
    words, _ = readme_line("nats stream view AGENTS_DEAD")
    out = bus.run_in_terminal(words)
    assert "Subject: agents.dead.flaky" in out, out
    assert "Nats-Service-Error-Code: 500" in out
    assert "Agent-Attempts: 2" in out
    assert '{"n":1}' in out


def test_a_durable_task_submitted_and_read_with_the_nats_cli_alone(bus: Bus) -> None:
    """The README's "Durable records for other clients" lines, as written: the
    submission key, the job with its Nats-Msg-Id, then the record."""
    create, _ = readme_line("nats kv create AGENTS_TASKS math.job-42.submitted")
    created = bus.run(create)
    assert created.returncode == 0, created.stderr
    submit, _ = readme_line("nats req agents.jobs.math")
    submitted = bus.run(submit)
    assert json.loads(submitted.stdout) == {"stream": "AGENTS_TASKS", "seq": ANY_INT}, submitted
    waited = bus.callboard("result", "math.job-42", "--wait")
    assert waited.returncode == 0, waited.stderr
    assert json.loads(waited.stdout) == {"value": 42}
    get, _ = readme_line("nats kv get AGENTS_TASKS math.job-42 --raw")
    record = json.loads(bus.run(get).stdout)
    assert record["task_id"] == "job-42"
    assert record["state"] == "completed"
    assert record["sender"] == "billing"
    assert record["result"] == {"value": 42}


class _AnyInt:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, int) and not isinstance(other, bool)

    def __repr__(self) -> str:
        return "<any int>"


ANY_INT = _AnyInt()
