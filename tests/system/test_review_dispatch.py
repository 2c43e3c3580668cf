"""An attacker's review of the dispatch hot path against a real nats-server: what a
legitimate caller (any login that may publish tasks) can do to an agent and to the
other callers through the bytes it controls."""

from __future__ import annotations

import anyio
import pytest
from nats.aio.msg import Msg

from actors import AgentHost, EchoAgent
from bus import connect
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
