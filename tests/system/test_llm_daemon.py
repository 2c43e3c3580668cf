"""An LLM agent run by the real daemon from TOML, against a model server over HTTP.

The model server is the fake Ollama of ``tests/llm_servers.py`` (Ollama's own
wire format on a real socket); the daemon is ``callboard run`` in its own
process; the tool call crosses NATS to the built-in math agent.
"""

from __future__ import annotations

import functools
import json
import urllib.request
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from llm_servers import Call, FakeOllama, Reply, closed_port_url
from nats.aio.client import Client
from prometheus_client.parser import text_string_to_metric_families
from system_support import Daemon, run_cli, watch_status

from bus import TaskClient, new_agent_suffix
from orchestrator.cli import EXIT_AGENT_ERROR, EXIT_OK

pytestmark = [pytest.mark.system, pytest.mark.anyio]


def llm_agent(agent_id: str, base_url: str, **options: Any) -> dict[str, Any]:
    model = {"provider": "ollama", "model": "llama3.2", "base_url": base_url, "retries": 0}
    return {
        "type": "llm",
        "id": agent_id,
        "options": {"capability": "research", "model": model, **options},
    }


def answer_from_tool_result(body: dict[str, Any]) -> str:
    """The model's second turn: read the math result it was sent back."""
    results = [m for m in body["messages"] if m["role"] == "tool"]
    assert results, f"no tool result in {body['messages']}"
    return f"6*7 is {json.loads(results[-1]['content'])['value']}."


async def test_the_daemon_runs_an_llm_agent_that_calls_math_over_the_bus(
    start_daemon: Callable[..., Daemon],
    prefix: str,
    nc: Client,
    cli_env: dict[str, str],
    callboard_cmd: list[str],
) -> None:
    suffix = new_agent_suffix()
    math_id, llm_id = f"math-{suffix}", f"llm-{suffix}"
    with FakeOllama(models=["llama3.2"]) as server:
        server.script(
            Reply(tool_calls=[Call("math", {"expression": "6*7"})]), answer_from_tool_result
        )
        start_daemon(
            [{"type": "math", "id": math_id}, llm_agent(llm_id, server.url, delegate=["math"])],
            prefix=prefix,
        )
        async with watch_status(nc, prefix) as watch:
            result = await anyio.to_thread.run_sync(
                lambda: run_cli(
                    callboard_cmd,
                    cli_env,
                    ["submit", "--prefix", prefix, "research", '"what is 6*7?"'],
                )
            )
            assert result.returncode == EXIT_OK, result.stderr
            assert json.loads(result.stdout) == "6*7 is 42."
            done = await watch.wait_state("completed", agent=math_id, capability="math")
            accepted = await watch.wait_state("accepted", agent=math_id, task_id=done["task_id"])
            assert accepted["sender"] == llm_id  # the delegated task came from the LLM agent
            await watch.wait_state("completed", agent=llm_id, capability="research")
        first, second = server.chat_requests
    assert [t["function"]["name"] for t in first.body["tools"]] == ["math"]
    schema = first.body["tools"][0]["function"]["parameters"]
    assert "expression" in json.dumps(schema)  # the math agent's declared input schema
    assert second.body["messages"][-1]["role"] == "tool"


async def test_an_unreachable_model_fails_the_task_and_the_daemon_keeps_serving(
    start_daemon: Callable[..., Daemon],
    prefix: str,
    cli_env: dict[str, str],
    callboard_cmd: list[str],
) -> None:
    suffix = new_agent_suffix()
    start_daemon(
        [{"type": "math", "id": f"math-{suffix}"}, llm_agent(f"llm-{suffix}", closed_port_url())],
        prefix=prefix,
    )

    def submit(capability: str, payload: str) -> Any:
        return run_cli(callboard_cmd, cli_env, ["submit", "--prefix", prefix, capability, payload])

    failed = await anyio.to_thread.run_sync(lambda: submit("research", '"hello"'))
    assert failed.returncode == EXIT_AGENT_ERROR, failed.stderr
    assert "503" in failed.stderr and "cannot reach the Ollama server" in failed.stderr
    for capability, payload in (("math", '{"expression": "1+1"}'), ("research", '"again"')):
        again = await anyio.to_thread.run_sync(lambda c=capability, p=payload: submit(c, p))
        expected = EXIT_OK if capability == "math" else EXIT_AGENT_ERROR
        assert again.returncode == expected, again.stderr


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        text: str = response.read().decode()
        return text


def _written_call(expression: str) -> str:
    """A tool call written as text, as small local models answer (Qwen2.5 1.5B did)."""
    call = {"name": "math", "arguments": {"expression": expression}}
    return f"```json\n{json.dumps(call)}\n```"


async def test_the_model_replies_the_agent_corrected_are_counted_in_its_metrics(
    start_daemon: Callable[..., Daemon], prefix: str, nc: Client
) -> None:
    suffix = new_agent_suffix()
    math_id, llm_id, typed_id = f"math-{suffix}", f"llm-{suffix}", f"typed-{suffix}"
    with FakeOllama(models=["llama3.2"]) as server:
        server.script(
            _written_call("6*7"),  # a call as text: run as a call
            _written_call("6*7"),  # the same call again: not run, the model is reminded
            answer_from_tool_result,
            "forty-two",  # off the typed agent's output schema: asked again
            "42",
        )
        typed = llm_agent(typed_id, server.url, output_schema={"type": "integer"})
        typed["options"]["capability"] = "count"
        daemon = await anyio.to_thread.run_sync(
            functools.partial(
                start_daemon,
                [
                    {"type": "math", "id": math_id},
                    llm_agent(llm_id, server.url, delegate=["math"]),
                    typed,
                ],
                prefix=prefix,
                metrics_address="127.0.0.1:0",
            )
        )
        client = TaskClient(nc, prefix=prefix)
        assert (await client.request("research", "what is 6*7?")).payload == "6*7 is 42."
        assert (await client.request("count", "how many?")).payload == 42
        assert server.remaining == 0
    body = await anyio.to_thread.run_sync(_scrape, daemon.metrics_url + "/metrics")
    corrections = {
        (sample.labels["agent"], sample.labels["kind"]): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == "callboard_agent_model_corrections_total"
    }
    # only agents whose model needed correcting have the series, and only those kinds
    assert corrections == {
        (llm_id, "text_tool_calls"): 2,
        (llm_id, "repeated_calls"): 1,
        (typed_id, "output_repairs"): 1,
    }
