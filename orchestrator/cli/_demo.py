"""``callboard demo``: the whole system in one command, with zero setup.

It starts an embedded nats-server, hosts the built-in agents, runs a small
pipeline through the orchestrator, and prints the status events as they
stream past. (Like the CLI, this is a composition root: the one place where
the agent side and the director side meet.)
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, TextIO

import anyio
import msgspec
from anyio.abc import TaskStatus

from actors import AgentHost, EchoAgent, MathAgent, SummarizeAgent
from bus import EmbeddedServer, Offline, TaskEvent, connect

from .._orchestrator import Orchestrator
from ._common import Subcommands
from ._exit_codes import EXIT_OK
from .monitor import follow_status, format_status

__all__ = ["DEMO_PIPELINE", "cmd_demo", "register", "run_demo"]

DEMO_TEXT = (
    "NATS is a connective technology for distributed systems. "
    "Agents subscribe to the subjects of the capabilities they own. "
    "An orchestrator sends each step of a request to the capability that owns it. "
    "Every agent streams status events, so the whole system can be watched live. "
    "The weather was pleasant on the day this demo was written."
)

DEMO_PIPELINE: list[dict[str, Any]] = [
    {"id": "summary", "capability": "summarize", "payload": {"text": DEMO_TEXT, "sentences": 2}},
    {"id": "answer", "capability": "math", "payload": {"expression": "(17 + 25) * 2 - 42"}},
    {
        "id": "report",
        "capability": "echo",
        "payload": {"summary": "$steps.summary.summary", "answer": "$steps.answer.value"},
    },
]


def register(commands: Subcommands) -> None:
    """Add ``demo`` to the parser."""
    commands.add(
        "demo",
        cmd_demo,
        "start a server and agents, run a pipeline, show the events",
        connects=False,
    )


async def cmd_demo(args: argparse.Namespace) -> int:
    """Run the zero-setup demo."""
    await run_demo()
    return EXIT_OK


async def run_demo(out: TextIO = sys.stdout) -> None:
    """Run the demo and print what happens; raises if any step fails."""
    started = time.perf_counter()
    async with EmbeddedServer() as server, connect(server.url, name="callboard-demo") as nc:
        print(f"embedded nats-server at {server.url}", file=out)
        seen_done: set[str] = set()
        all_done = anyio.Event()
        offline: set[str] = set()
        all_offline = anyio.Event()
        expected: set[str] = set()

        async def watch(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
            ready = task_status.started
            async for _, event, raw in follow_status(nc, "agents.status.>", on_ready=ready):
                print("  [status] " + format_status(event, raw), file=out, flush=True)
                if isinstance(event, Offline):
                    offline.add(event.agent)
                    if len(offline) == len(agents):
                        all_offline.set()
                if isinstance(event, TaskEvent) and event.__struct_config__.tag in (
                    "completed",
                    "failed",
                ):
                    seen_done.add(event.task_id)
                    if expected and expected <= seen_done:
                        all_done.set()

        agents = [MathAgent("math-1"), SummarizeAgent("summarize-1"), EchoAgent("echo-1")]
        async with anyio.create_task_group() as tg:
            await tg.start(watch)
            async with AgentHost(nc, agents, heartbeat_interval=60.0):
                orchestrator = Orchestrator(nc, name="demo")
                found = await orchestrator.discover(wait=0.3)
                print(f"discovered {len(found)} agents via $SRV.INFO:", file=out)
                for agent in found:
                    print(f"  {agent.id:<14} {', '.join(agent.capabilities)}", file=out)
                print("running a 3-step pipeline: summarize -> math -> echo", file=out)
                results = await orchestrator.run_pipeline(DEMO_PIPELINE, timeout=10)
                expected.update(r.task_id for r in results)
                if expected <= seen_done:
                    all_done.set()
                with anyio.move_on_after(2.0):
                    await all_done.wait()
                print("results, in step order:", file=out)
                for r in results:
                    shown = msgspec.json.encode(r.result).decode()
                    print(f"  step {r.seq} {r.capability:<10} by {r.agent}: {shown}", file=out)
            with anyio.move_on_after(2.0):
                await all_offline.wait()
            tg.cancel_scope.cancel()
    print(f"demo finished in {time.perf_counter() - started:.2f}s", file=out)
