"""callboard from Go: the nats.go programs of ``tests/interop/go`` against real daemons.

- ``client``: tasks with the protocol's headers, the status stream, discovery with
  nats.go's ``micro`` types, against a ``callboard run`` daemon.
- ``agent``: an agent written with nats.go's ``micro`` package (the README's "Write an
  agent in Go"), found by ``callboard agents``, routed to by ``callboard ask`` and run as
  a step of a pipeline between Python agents.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import jsonschema
import pytest
from go_tools import build_go_programs, micro_schemas
from nats.aio.client import Client
from system_support import Daemon, Proc, wait_exit, watch_status

from bus import new_agent_suffix
from bus.micro import collect_replies, service_id
from orchestrator import Orchestrator

pytestmark = pytest.mark.system

RUN_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def go_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built Go programs (``go build`` of tests/interop/go; skips without Go)."""
    return build_go_programs(tmp_path_factory.mktemp("go-programs"))


def run_go_client(go_bin: Path, url: str, prefix: str) -> dict[str, Any]:
    try:
        done = subprocess.run(
            [str(go_bin / "client"), url, prefix],
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the Go client did not finish within {RUN_TIMEOUT:g}s")
    assert done.returncode == 0, done.stderr
    [line] = done.stdout.splitlines()
    out: dict[str, Any] = json.loads(line)
    return out


def _agent_id(service: dict[str, Any]) -> str | None:
    return (service.get("metadata") or {}).get("agent_id")


def test_a_nats_go_client_sends_tasks_watches_status_and_discovers_agents(
    go_bin: Path, start_daemon: Callable[..., Daemon], prefix: str, nats_url: str
) -> None:
    math_id = f"math-{new_agent_suffix()}"
    start_daemon([{"type": "math", "id": math_id}], prefix=prefix, heartbeat_interval=600.0)

    out = run_go_client(go_bin, nats_url, prefix)
    sent = {k: v[0] for k, v in out["sent"].items()}
    task_id = sent["Agent-Task-Id"]

    assert out["ok"]["body"] == {"value": 42}
    assert out["ok"]["headers"] == {"Agent-Task-Id": task_id, "Agent-Id": math_id}
    expected_errors = {
        "bad_input": (400, "bad_input"),
        "expired": (408, "timeout"),
        "cycle": (409, "delegation"),
    }
    for case, (code, kind) in expected_errors.items():
        reply = out[case]
        assert reply["headers"]["Nats-Service-Error-Code"] == str(code), (case, reply)
        assert reply["body"]["error"]["code"] == code, (case, reply)
        assert reply["body"]["error"]["type"].startswith(kind), (case, reply)
        assert reply["headers"]["Agent-Task-Id"].endswith(task_id), (case, reply)
    assert out["no_responders"] is True

    states = [e["body"]["state"] for e in out["events"]]
    assert states == ["accepted", "started", "completed"]
    assert [e["subject"] for e in out["events"]] == [
        f"{prefix}.status.{math_id}.{s}" for s in states
    ]
    accepted = out["events"][0]["body"]
    assert accepted["sender"] == "go-client"
    assert accepted["task_id"] == task_id and accepted["capability"] == "math"

    sid = service_id(math_id, prefix)
    assert [(p["name"], p["id"]) for p in out["ping"] if _agent_id(p) == math_id] == [("math", sid)]
    [info] = [i for i in out["info"] if _agent_id(i) == math_id]
    assert info == out["info_by_id"]
    [endpoint] = info["endpoints"]
    assert (endpoint["subject"], endpoint["queue_group"]) == (f"{prefix}.task.math", "callboard")
    assert (
        "expression"
        in json.loads(endpoint["metadata"]["input_schema"])["$defs"]["MathInput"]["properties"]
    )
    [stats] = [s for s in out["stats"] if _agent_id(s) == math_id]
    [counts] = stats["endpoints"]
    assert (counts["num_requests"], counts["num_errors"]) == (4, 3)  # ok, bad, late, cycle


async def _ping(nc: Client, subject: str) -> dict[str, Any]:
    reply = await nc.request(subject, b"", timeout=RUN_TIMEOUT, headers={"Agent-Op": "ping"})
    answer: dict[str, Any] = json.loads(reply.data)
    return answer


async def _control_address_and_reply_subjects(
    nc: Client, prefix: str, go_id: str, agent: Proc
) -> None:
    """Revision 2 on the Go agent's other subjects: the control address refuses tasks
    (naming the capability address) and cancels, and no subject answers a reply subject
    that is not an inbox."""
    control = f"{prefix}.agent.{go_id}"
    moved = await nc.request(
        control,
        b'{"text": "a b"}',
        timeout=RUN_TIMEOUT,
        headers={"Agent-Op": "task", "Agent-Capability": "wordcount", "Agent-Task-Id": "t-moved"},
    )
    assert moved.headers is not None and moved.headers["Nats-Service-Error-Code"] == "400"
    assert moved.headers["Agent-Task-Id"] == "t-moved"
    assert f"{prefix}.agent.wordcount.{go_id}" in json.loads(moved.data)["error"]["message"]
    cancel_headers = {"Agent-Op": "cancel", "Agent-Task-Id": "t-1", "Agent-Cancel-Token": "x"}
    refused = await nc.request(control, b"", timeout=RUN_TIMEOUT, headers=cancel_headers)
    assert json.loads(refused.data)["cancelled"] is False

    # a forged reply subject (here: its own offline event) is dropped on every subject;
    # the agent handles each subject's messages in order and publishes in order, so the
    # inbox answer that follows would come after anything published to the forged one
    forged = f"{prefix}.status.{go_id}.offline"
    reflected = await nc.subscribe(forged)
    try:
        for subject, body, headers in (
            (f"{prefix}.task.wordcount", b'{"text": "a b"}', {}),
            (f"{prefix}.agent.wordcount.{go_id}", b'{"text": "a b"}', {}),
            (f"{prefix}.agent.wordcount.{go_id}", b"", {"Agent-Op": "ping"}),
            (control, b"", {"Agent-Op": "ping"}),
        ):
            await nc.publish(subject, body, reply=forged, headers=headers)
            answered = await nc.request(subject, body, timeout=RUN_TIMEOUT, headers=headers)
            assert answered.data, subject
            assert reflected.pending_msgs == 0, (subject, reflected.pending_msgs)
    finally:
        await reflected.unsubscribe()
    await anyio.to_thread.run_sync(agent.stderr.wait_for, "is not an inbox")


# --- an agent written in Go --------------------------------------------------------------


@pytest.fixture
def go_agent(
    go_bin: Path, procs: Callable[..., Proc], cli_env: dict[str, str]
) -> Callable[[str, str], Proc]:
    """Start the Go agent (``agent URL PREFIX ID``); wait for its ready line."""

    def start(prefix: str, agent_id: str) -> Proc:
        proc = procs(
            [str(go_bin / "agent"), cli_env["NATS_URL"], prefix, agent_id],
            env=cli_env,
            name=f"go agent {agent_id}",
        )
        proc.stderr.wait_for(f"go agent {agent_id} ready")
        return proc

    return start


async def _callboard(callboard_cmd: list[str], env: dict[str, str], *args: str) -> Ran:
    """Run the CLI without blocking the event loop (the test's connection stays served)."""
    with anyio.fail_after(RUN_TIMEOUT):
        done = await anyio.run_process([*callboard_cmd, *args], env=env, check=False)
    return Ran(done.returncode, done.stdout.decode(), done.stderr.decode())


class Ran(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


@pytest.mark.anyio
async def test_a_nats_go_micro_service_is_an_agent_next_to_python_ones(
    go_agent: Callable[[str, str], Proc],
    start_daemon: Callable[..., Daemon],
    callboard_cmd: list[str],
    cli_env: dict[str, str],
    prefix: str,
    nc: Client,
    tmp_path: Path,
) -> None:
    suffix = new_agent_suffix()
    go_id = f"go-wordcount-{suffix}"
    start_daemon(
        [{"type": "summarize", "id": f"summarize-{suffix}"}, {"type": "math", "id": f"m-{suffix}"}],
        prefix=prefix,
    )
    async with Orchestrator(nc, prefix=prefix) as orchestrator, watch_status(nc, prefix) as watch:
        agent = go_agent(prefix, go_id)
        online = await watch.wait_state("online", agent=go_id)
        # the live registry, up before it, fetches its INFO (found by agent_id metadata,
        # since nats.go chose the service id) for its keywords and schema
        live = await orchestrator.registry.wait_for(
            lambda agents: any(a.id == go_id and a.keywords for a in agents)
        )
        [known] = [a for a in live if a.id == go_id]
        # revision 2: the registry routes to it only once a ping on its capability address
        # answers, with what a Python agent's answer holds
        go_proof = await _ping(nc, f"{prefix}.agent.wordcount.{go_id}")
        python_proof = await _ping(nc, f"{prefix}.agent.math.m-{suffix}")
        [confirmed] = [a for a in await orchestrator.registry.confirmed() if a.id == go_id]
    assert go_proof.keys() == python_proof.keys()
    assert go_proof["keywords"] == ["count", "words", "wordcount"] and go_proof["in_flight"] == 0
    assert go_proof["input_schema"]["required"] == ["text"]
    assert confirmed.capabilities == ("wordcount",)
    assert json.loads(confirmed.input_schemas["wordcount"]) == go_proof["input_schema"]
    assert online["capabilities"] == ["wordcount"] and online["v"] == 1
    assert known.keywords == {"wordcount": ("count", "words", "wordcount")}
    assert known.kind == "wordcount" and known.max_concurrency == 1

    # discovered by `callboard agents`, with its load from a ping on its direct address
    listed = await _callboard(callboard_cmd, cli_env, "agents", "--prefix", prefix, "--json")
    assert listed.returncode == 0, listed.stderr
    [row] = [r for r in json.loads(listed.stdout) if r["agent"] == go_id]
    assert (row["kind"], row["capabilities"], row["in_flight"]) == ("wordcount", ["wordcount"], 0)
    assert row["max_concurrency"] == 1 and row["last_seen"].startswith("just now")

    # routed to by `callboard ask` from its keywords, its payload built from its input schema
    asked = await _callboard(
        callboard_cmd, cli_env, "ask", "--prefix", prefix, "wordcount: one two three four"
    )
    assert asked.returncode == 0, asked.stderr
    assert asked.stdout.strip() == f"[1] wordcount ({go_id}): 4"
    assert f"1. wordcount by {go_id} in " in asked.stderr
    assert asked.stderr.rstrip().endswith(': {"words":4}'), asked.stderr

    await _control_address_and_reply_subjects(nc, prefix, go_id, agent)

    # a bad task gets the protocol's error reply, and the agent goes on serving
    bad = await _callboard(
        callboard_cmd, cli_env, "submit", "wordcount", '{"txt": 1}', "--prefix", prefix
    )
    assert bad.returncode == 1 and "400" in bad.stderr, bad.stderr

    # a step of a pipeline, between Python agents, its result used by the next step
    pipeline = tmp_path / "pipeline.toml"
    pipeline.write_text(
        '[[steps]]\nid = "summary"\ncapability = "summarize"\n'
        'payload = { sentences = 1, text = "Go agents count. Python agents sum." }\n'
        '[[steps]]\nid = "count"\ncapability = "wordcount"\n'
        'payload = { text = "$steps.summary.summary" }\n'
        '[[steps]]\nid = "double"\ncapability = "math"\n'
        'payload = { expression = "${steps.count.words} * 2" }\n'
    )
    ran = await _callboard(
        callboard_cmd, cli_env, "pipeline", str(pipeline), "--prefix", prefix, "--json"
    )
    assert ran.returncode == 0, ran.stderr
    results = json.loads(ran.stdout)["results"]
    summary, count, double = (r["result"] for r in results)
    assert count == {"words": len(summary["summary"].split())} == {"words": 3}, results
    assert double == {"value": 6}
    assert results[1]["agent"] == go_id

    # its $SRV replies, written by nats.go, validate like callboard's own
    schemas = micro_schemas()
    for verb in ("PING", "INFO", "STATS"):
        replies = [json.loads(d) async for d in collect_replies(nc, f"$SRV.{verb}.wordcount")]
        [mine] = [r for r in replies if _agent_id(r) == go_id]
        jsonschema.Draft7Validator(schemas[mine["type"]]).validate(mine)
    [endpoint] = mine["endpoints"]  # STATS: the bad task came on the capability subject
    assert (endpoint["num_errors"], endpoint["queue_group"]) == (1, "callboard")

    # SIGTERM: it says offline and exits 0
    async with watch_status(nc, prefix) as watch:
        agent.send_signal(signal.SIGTERM)
        offline = await watch.wait_state("offline", agent=go_id)
    assert offline["reason"] == "shutdown"
    assert await wait_exit(agent) == 0
