"""An attacker's review of the dispatch hot path against a real nats-server: what a
legitimate caller (any login that may publish tasks) can do to an agent and to the
other callers through the bytes it controls."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import nats.errors
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats_security_support import DeployCopy, logged_in, make_deploy_copy, secure_server, wait_until

from actors import AgentHost, EchoAgent
from bus import AgentError, ConnectOptions, TaskClient, connect
from bus._inbox import Inbox, inbox_for
from bus.codec import TASK_ID
from orchestrator import Orchestrator

pytestmark = [pytest.mark.system, pytest.mark.anyio]


async def test_a_reply_subject_holding_a_vertical_tab_is_answered_there_and_breaks_nothing(
    nats_url: str, prefix: str
) -> None:
    """The server passes a reply subject holding \\x0b or \\x0c on to the agent. nats-py's
    parser split on them: its ``ProtocolError`` made the agent's connection reconnect
    (and lose the rest of that read); a trailing one was stripped, so the agent
    answered another subject than the one asked. Now each is answered where asked,
    and the requests behind it on the same read are answered too."""
    odd_replies = ["_INBOX.odd\x0b", "_INBOX.o\x0bd\x0cd", "_INBOX.odd\x0c"]
    async with (
        connect(nats_url) as agent_nc,
        AgentHost(agent_nc, [EchoAgent("echo-1")], prefix=prefix, heartbeat_interval=0.2),
        connect(nats_url) as attacker,
        connect(nats_url) as caller_nc,
        Orchestrator(caller_nc, prefix=prefix, name="review") as orch,
    ):
        await orch.registry.wait_for(lambda agents: "echo-1" in {a.id for a in agents})
        answers: dict[str, Msg] = {}
        all_answered = anyio.Event()

        async def on_answer(msg: Msg) -> None:
            answers[msg.subject] = msg
            if len(answers) == len(odd_replies):
                all_answered.set()

        for reply in odd_replies:
            await attacker.subscribe(reply, cb=on_answer)
        await attacker.flush()
        for n, reply in enumerate(odd_replies):
            payload = f'{{"n":{n}}}'.encode()
            headers = {TASK_ID: f"odd-{n}"}
            await attacker.publish(f"{prefix}.task.echo", payload, reply=reply, headers=headers)
        # honest tasks right behind them, in the same reads of the agent's connection
        for n in range(20):
            await attacker.publish(f"{prefix}.task.echo", b"{}", reply=f"_INBOX.fine.{n}")
        await attacker.flush()
        with anyio.fail_after(10):
            await all_answered.wait()
            assert (await orch.request("echo", {"after": True}, timeout=5)).payload == {
                "after": True
            }
        assert sorted(answers) == sorted(odd_replies)
        assert [answers[reply].data for reply in odd_replies] == [
            f'{{"n":{n}}}'.encode() for n in range(len(odd_replies))
        ]
        assert agent_nc.stats["reconnects"] == 0
        assert attacker.stats["reconnects"] == 0


_SILENT = "review.silent"
_BLOCK = b"NATS/1.0\r\n\r\n"


async def _among_ordinary_requests(inbox: Inbox, odd: float) -> tuple[dict[float, float], str]:
    """Requests of 0.4 s, then one of timeout ``odd``, then of 0.3 s (before the
    first's deadline: a timer of its own) and 0.6 s (the shared timer): how long
    each ordinary one took to time out, and how the odd one ended."""
    lapses: dict[float, float] = {}
    odd_outcome = "still waiting when the others were done"
    done = anyio.Event()

    async def ordinary(timeout: float) -> None:
        began = time.monotonic()
        with pytest.raises(nats.errors.TimeoutError):
            await inbox.request(_SILENT, _BLOCK, b"", timeout)
        lapses[timeout] = time.monotonic() - began
        if len(lapses) == 3:
            done.set()

    async def odd_one() -> None:
        nonlocal odd_outcome
        try:
            await inbox.request(_SILENT, _BLOCK, b"", odd)
        except Exception as exc:
            odd_outcome = type(exc).__name__

    async with anyio.create_task_group() as tg:
        tg.start_soon(ordinary, 0.4)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(odd_one)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(ordinary, 0.3)
        tg.start_soon(ordinary, 0.6)
        await done.wait()
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()  # an infinite one waits on
    return lapses, odd_outcome


async def test_odd_request_timeouts_neither_hold_back_nor_hurry_the_others(nats_url: str) -> None:
    """The shared inbox timer and the per-request ones, with a request of timeout 0,
    negative, infinite, 1e308 or NaN among requests of ordinary ones (before and
    after it, in and out of deadline order): each ordinary one times out at its
    deadline, not before and not much after. A NaN timeout is refused: it never
    expired, and on the event loop's timer heap it can hold back every other timer
    of the process (one 50 ms timer had not fired after 3 s, tried by hand)."""
    async with connect(nats_url) as nc, connect(nats_url) as silent:
        await silent.subscribe(_SILENT)  # listens, never answers: no 503
        await silent.flush()
        inbox = inbox_for(nc)
        for odd in (0.0, -1.0, -math.inf, math.inf, 1e308, math.nan):
            with anyio.fail_after(10):
                lapses, odd_outcome = await _among_ordinary_requests(inbox, odd)
            for timeout, lapse in lapses.items():
                # the loop may run a timer up to its clock's resolution early
                assert timeout - 0.001 <= lapse < timeout + 1.0, (odd, timeout, lapse)
            if odd <= 0:
                assert odd_outcome == "TimeoutError", odd
            elif math.isnan(odd):
                assert odd_outcome == "ValueError"
            else:
                assert odd_outcome.startswith("still waiting"), odd
            assert not inbox._waiting and not inbox._deadlines


@asynccontextmanager
async def two_callers(
    nats_url: str, prefix: str
) -> AsyncIterator[tuple[AgentHost, TaskClient, TaskClient]]:
    """An echo agent, its victim caller and an attacker caller, each on its own connection."""
    async with (
        connect(nats_url) as agent_nc,
        AgentHost(agent_nc, [EchoAgent("echo-1")], prefix=prefix, heartbeat_interval=0.2) as host,
        connect(nats_url) as victim_nc,
        connect(nats_url) as attacker_nc,
    ):
        victim = TaskClient(victim_nc, prefix=prefix, sender="victim")
        attacker = TaskClient(attacker_nc, prefix=prefix, sender="attacker")
        yield host, victim, attacker


async def test_a_task_id_taken_by_another_caller_neither_crosses_answers_nor_cancels_the_other(
    nats_url: str, prefix: str
) -> None:
    """Two callers' tasks with one task id (the second caller read it off the status
    stream) on one agent, both waiting in their handlers and one answered at once:
    each caller gets its own answer, on its own inbox, and the second caller's
    cancel of that id (with its own token) stops no task but its own."""
    async with two_callers(nats_url, prefix) as (host, victim, attacker):
        shared = "shared-task-id"
        results: dict[str, object] = {}
        executor = host.runners["echo-1"].executor

        async def victims_task() -> None:
            reply = await victim.request(
                "echo", {"delay_ms": 1500, "who": "victim"}, task_id=shared, timeout=10
            )
            results["victim"] = reply.payload

        async def attackers_waiting_task() -> None:
            try:
                await attacker.request(
                    "echo", {"delay_ms": 5000, "who": "attacker"}, task_id=shared, timeout=10
                )
            except AgentError as exc:
                results["attacker"] = exc.code

        with anyio.fail_after(15):
            async with anyio.create_task_group() as tg:
                tg.start_soon(victims_task)
                await wait_until(lambda: executor.is_running(shared), 5, "the victim's task waits")
                answered_at_once = await attacker.request(
                    "echo", {"who": "attacker"}, task_id=shared, timeout=5
                )
                assert answered_at_once.payload == {"who": "attacker"}
                tg.start_soon(attackers_waiting_task)
                await wait_until(lambda: executor.in_flight == 2, 5, "both tasks wait")
                await attacker.cancel(shared, "the attacker cancels the shared id")
        assert results == {"victim": {"delay_ms": 1500, "who": "victim"}, "attacker": 499}


async def test_a_task_id_taken_by_another_caller_cannot_deny_the_callers_cancel(
    nats_url: str, prefix: str
) -> None:
    """A caller that sends a task under the id of another caller's running task
    (read off the status stream) used to overwrite the cancel hash kept for that
    id: the owner's cancel was then refused and its task ran on. Each waiting task
    now keeps its own caller's hash: the owner's cancel stops its task, and only it."""
    async with two_callers(nats_url, prefix) as (host, victim, attacker):
        shared = "shared-task-id"
        results: dict[str, object] = {}
        executor = host.runners["echo-1"].executor

        async def victims_task() -> None:
            try:
                await victim.request("echo", {"delay_ms": 8000}, task_id=shared, timeout=10)
            except AgentError as exc:
                results["victim"] = exc.code

        async def attackers_task() -> None:
            reply = await attacker.request(
                "echo", {"delay_ms": 1000, "who": "attacker"}, task_id=shared, timeout=10
            )
            results["attacker"] = reply.payload

        with anyio.fail_after(15):
            async with anyio.create_task_group() as tg:
                tg.start_soon(victims_task)
                await wait_until(lambda: executor.is_running(shared), 5, "the victim's task waits")
                tg.start_soon(attackers_task)
                await wait_until(lambda: executor.in_flight == 2, 5, "both tasks wait")
                await victim.cancel(shared, "the owner cancels its task")
        assert results == {"victim": 499, "attacker": {"delay_ms": 1000, "who": "attacker"}}
        assert host.runners["echo-1"].caller_cancels.refused == 0


async def smuggle_a_forged_answer(
    host: AgentHost,
    orch: Orchestrator,
    victim_nc: Client,
    attacker: Client,
    subject: str,
    check: Callable[[Inbox], bool],
) -> None:
    """The reply forgery: while the victim's echo task waits, the attacker publishes
    on ``subject`` (one it may publish on) with the longest reply the server takes,
    holding a \\x0b, and a payload framing a ``MSG`` of a forged answer to the
    victim's pending request (the attacker learns the inbox from any task it is
    sent and guesses the small sid and counter token; here they are read). The
    victim must get the real answer, with no reconnect."""
    await orch.registry.wait_for(lambda agents: "echo-1" in {a.id for a in agents})
    executor = host.runners["echo-1"].executor
    inbox = inbox_for(victim_nc)
    answers: list[object] = []

    async def victims_task() -> None:
        reply = await orch.request("echo", {"delay_ms": 1000, "real": True}, timeout=10)
        answers.append(reply.payload)

    with anyio.fail_after(15):
        async with anyio.create_task_group() as tg:
            tg.start_soon(victims_task)
            await wait_until(lambda: executor.in_flight == 1, 5, "the victim's task waits")
            assert inbox._sub is not None and check(inbox)
            token = next(iter(inbox._waiting))
            forged_answer = b'{"forged":true}'
            smuggled = b"MSG %s%s %d %d\r\n%s\r\nPING" % (
                inbox._prefix.encode(),
                token.encode(),
                inbox._sub._id,
                len(forged_answer),
                forged_answer,
            )
            # the longest PUB line the server takes (4096 bytes after "PUB "): the
            # MSG line it becomes, with the sid, is longer than 4096 bytes
            pub_args = len(f"{subject}  {len(smuggled)}")
            long_reply = "_INBOX.x\x0b" + "r" * (4096 - pub_args - len("_INBOX.x\x0b"))
            await attacker.publish(subject, smuggled, reply=long_reply)
            await attacker.flush()
    assert answers == [{"delay_ms": 1000, "real": True}]
    assert victim_nc.stats["reconnects"] == 0


async def test_a_long_reply_subject_cannot_smuggle_a_forged_answer_to_another_callers_request(
    nats_url: str, prefix: str
) -> None:
    """Reply forgery past every permission, before the parser fix: a status event
    (anyone's, any subject the victim's connection reads) published with a ~4 KB
    reply subject holding a \\x0b reaches the victim as a ``MSG`` line of more than
    4096 bytes that neither our split nor nats-py's regex read; our parser skipped
    it and read its payload as commands, so a ``MSG`` framed in the payload landed
    on the victim's inbox as the answer to its pending request. (The attacker
    learns the inbox from any task it is sent and guesses the small sid and the
    counter token; the test reads them.)"""
    async with (
        connect(nats_url) as agent_nc,
        AgentHost(agent_nc, [EchoAgent("echo-1")], prefix=prefix, heartbeat_interval=0.2) as host,
        connect(nats_url) as victim_nc,
        Orchestrator(victim_nc, prefix=prefix, name="victim") as orch,
        connect(nats_url) as attacker,
    ):
        await smuggle_a_forged_answer(
            host,
            orch,
            victim_nc,
            attacker,
            f"{prefix}.status.evil.heartbeat",
            lambda inbox: len(inbox._waiting) == 1,
        )


@pytest.fixture(scope="module")
def deploy(tmp_path_factory: pytest.TempPathFactory) -> DeployCopy:
    """deploy/nats copied, with secrets from its generator (bcrypt is slow: once)."""
    return make_deploy_copy(tmp_path_factory.mktemp("deploy-nats"))


def _login(url: str, deploy: DeployCopy, user: str) -> ConnectOptions:
    return ConnectOptions(
        servers=(url,),
        connect_attempts=1,
        user=user,
        password=deploy.passwords[user],
        inbox_prefix=deploy.env(user).get("NATS_INBOX_PREFIX"),
    )


async def test_under_the_shipped_permissions_an_agent_login_cannot_forge_the_orchestrators_answers(
    deploy: DeployCopy,
) -> None:
    """The smuggling above needs no permission the shipped configs withhold: an agent
    login may publish its own heartbeats, with any reply subject, and the
    orchestrator reads every agent's heartbeats; it sees the orchestrator's inbox
    on every task it is sent. Run against ``single.conf`` and ``accounts.conf``:
    the math agent's login tries to answer the orchestrator's pending echo task."""
    async with (
        secure_server(deploy.config("single.conf")) as server,
        connect(options=_login(server.url, deploy, "agent-echo")) as agent_nc,
        AgentHost(agent_nc, [EchoAgent("echo-1")], heartbeat_interval=0.2) as host,
        connect(options=_login(server.url, deploy, "orchestrator")) as victim_nc,
        Orchestrator(victim_nc, name="victim") as orch,
        logged_in(server.url, deploy, "agent-math") as (attacker, _),
    ):
        await smuggle_a_forged_answer(
            host,
            orch,
            victim_nc,
            attacker,
            "agents.status.math-1.heartbeat",
            lambda inbox: inbox._prefix.startswith("_INBOX_orchestrator."),
        )
