"""Support for the gateway and bridge tests: agents whose progress and cancellation
a test can see and steer, a gateway config, and the gateway started as the real CLI.

The agents run in the test's own process (an ``AgentHost`` on the test's event
loop), so a test can wait on what they saw; the gateway is a real
``callboard gateway`` process.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import msgspec

from actors import Agent, AgentHost, Capability
from bus import AgentMessage, TaskError

GATEWAY_READY = "callboard gateway ready"
TOKEN_ENV = "CALLBOARD_GATEWAY_TOKEN"


def new_token() -> str:
    return secrets.token_hex(16)


class StepsInput(msgspec.Struct, forbid_unknown_fields=True):
    """Report ``count`` progress events, then hold until released (or cancelled)."""

    count: int
    hold: bool = False


class StepsAgent(Agent):
    """Reports progress; a test releases it, or cancels its task and sees the cancel arrive.

    Attributes:
        released: set by the test to let a held task finish.
        cancelled: set when a task of this agent was cancelled while it held.
    """

    kind = "steps"
    capabilities = (
        Capability(
            name="steps",
            input_type=StepsInput,
            description="Reports progress steps, then answers how many it did.",
            keywords=("steps", "progress"),
        ),
    )

    def __init__(self, agent_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(agent_id, **kwargs)
        self.released = anyio.Event()
        self.cancelled = anyio.Event()

    async def handle(self, task: AgentMessage) -> Any:
        payload = msgspec.convert(task.payload, StepsInput)
        for n in range(1, payload.count + 1):
            await self.context.progress(f"step {n} of {payload.count}", {"step": n})
        if payload.hold:
            try:
                await self.released.wait()
            except anyio.get_cancelled_exc_class():
                self.cancelled.set()
                raise
        return {"done": payload.count}


class RefusingAgent(Agent):
    """Always fails with its own code: the caller must see code, type and message."""

    kind = "refuse"
    capabilities = (Capability(name="refuse", description="Always says no."),)

    async def handle(self, task: AgentMessage) -> Any:
        raise TaskError("the answer is no", code=418, type="teapot")


@dataclass
class Mesh:
    """The agents behind a gateway under test."""

    host: AgentHost
    steps: StepsAgent


@dataclass
class Running:
    """A running gateway process: where it serves, and its token."""

    url: str
    token: str
    proc: Any


def gateway_toml(prefix: str, nats_url: str, exposed: Sequence[str], **settings: Any) -> str:
    """A gateway config exposing ``exposed`` (its other settings as keyword arguments)."""
    lines = [f'prefix = "{prefix}"', 'http_address = "127.0.0.1:0"']
    lines += [f"{k} = {_toml(v)}" for k, v in settings.items()]
    lines += ["[nats]", f'url = "{nats_url}"']
    for name in exposed:
        lines.append(f"[capabilities.{name}]")
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def write_gateway_config(path: Path, prefix: str, nats_url: str, exposed: Sequence[str]) -> Path:
    path.write_text(gateway_toml(prefix, nats_url, exposed))
    return path


def gateway_url(ready_line: str) -> str:
    """``http://127.0.0.1:PORT`` from the gateway's ready line."""
    found = re.search(r"MCP on (http://[^ ]+)/mcp", ready_line)
    assert found is not None, ready_line
    return found.group(1)
