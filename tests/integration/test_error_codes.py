"""One error tree, one code table, both directions: over a real nats-server, an
error a handler raises comes back to its caller as the same class, code and type.
"""

from __future__ import annotations

import socket
from typing import Any

import anyio
import pytest
from nats.aio.client import Client

from actors import Agent, AgentHost
from bus import (
    WIRE_ERRORS,
    AgentError,
    AgentMessage,
    AgentOverloaded,
    BadInput,
    CallboardError,
    ConfigError,
    ConnectionFailed,
    DeadlineExceeded,
    DispatchError,
    Draining,
    TaskClient,
    TaskError,
    TaskTimeout,
    UsageError,
    connect,
)

pytestmark = pytest.mark.anyio

ERRORS_BY_NAME: dict[str, TaskError] = {
    **{cls.__name__: cls(f"a {cls.__name__} on purpose") for cls in WIRE_ERRORS.values()},
    "Draining": Draining("shutting down on purpose"),
    "Teapot": TaskError("a code of the handler's own", code=418, type="teapot"),
}


class Failing(Agent):
    """Fails every task with the error its payload names."""

    kind = "failing"
    capabilities = ("fail",)

    async def handle(self, task: AgentMessage) -> Any:
        raise ERRORS_BY_NAME[task.payload]


@pytest.mark.parametrize("name", sorted(ERRORS_BY_NAME))
async def test_every_error_code_comes_back_as_the_class_of_its_code(
    nc: Client, prefix: str, name: str
) -> None:
    raised = ERRORS_BY_NAME[name]
    async with AgentHost(nc, [Failing("failing-1")], prefix=prefix):
        client = TaskClient(nc, prefix=prefix)
        with pytest.raises(AgentError) as caught:
            await client.request("fail", name, timeout=10)
    received = caught.value
    assert type(received) is WIRE_ERRORS.get(raised.code, TaskError)
    assert isinstance(received, type(raised)) or isinstance(raised, Draining)
    assert (received.code, received.type, received.message) == (
        raised.code,
        raised.type,
        raised.message,
    )
    assert received.agent_id == "failing-1"
    assert received.capability == "fail"


def test_the_code_table_names_each_code_once_and_by_the_class_that_owns_it() -> None:
    assert all(code == cls.code for code, cls in WIRE_ERRORS.items())
    assert {400, 404, 408, 409, 413, 424, 499, 500, 503} <= WIRE_ERRORS.keys()
    assert WIRE_ERRORS[400] is BadInput
    assert WIRE_ERRORS[503] is AgentOverloaded
    assert issubclass(Draining, AgentOverloaded)


def test_usage_errors_stand_apart_from_remote_ones() -> None:
    assert issubclass(ConfigError, UsageError)
    assert not issubclass(UsageError, DispatchError)
    assert not issubclass(UsageError, AgentError)


async def test_a_timeout_is_also_a_builtin_timeout_error(nc: Client, prefix: str) -> None:
    class Silent(Agent):
        kind = "silent"
        capabilities = ("silent",)

        async def handle(self, task: AgentMessage) -> Any:
            await anyio.sleep_forever()

    async with AgentHost(nc, [Silent("silent-1")], prefix=prefix):
        client = TaskClient(nc, prefix=prefix)
        with pytest.raises(TimeoutError) as caught:
            await client.request("silent", None, timeout=0.2)
    assert isinstance(caught.value, TaskTimeout)
    assert issubclass(DeadlineExceeded, TimeoutError)


async def test_a_connection_failure_is_also_a_builtin_connection_error() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectionError) as caught:
        async with connect(f"nats://127.0.0.1:{port}", connect_timeout=0.5, connect_attempts=1):
            pass
    assert isinstance(caught.value, ConnectionFailed)
    assert isinstance(caught.value, CallboardError)
