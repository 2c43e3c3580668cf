"""A real local model on the bus: llama.cpp's llama-server with Qwen2.5-Coder-1.5B-Instruct.

Opt-in (marker ``realmodel``, deselected by the default run)::

    pytest -m realmodel tests/realmodel -s

``deploy/llm/realmodel.sh`` builds llama-server and fetches the model the first
time (10 to 20 minutes on 2 cores, cached under ~/.cache/callboard-realmodel);
later runs start the server in seconds. Everything else is real too: the
session's nats-server, the built-in agents, an LLM agent talking to the server
over HTTP, and ``callboard ask --model`` as a subprocess. ``-s`` shows the
server's timings (tokens/s) at the end.
"""

from __future__ import annotations

import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from cluster_support import free_ports
from nats.aio.client import Client

import actors
from actors import AgentHost, EchoAgent, LLMAgent, MathAgent
from actors.llm.models import ModelSettings, create_model
from bus import TaskClient

pytestmark = [pytest.mark.realmodel, pytest.mark.anyio]

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "llm" / "realmodel.sh"
MODEL_NAME = "qwen2.5-coder-1.5b-instruct"
PREPARE_TIMEOUT = 3600.0
"""Seconds to build llama-server and fetch the model on a cold cache (10 to 20 minutes)."""
LOAD_TIMEOUT = 300.0
"""Seconds for llama-server to load the model."""
ANSWER_TIMEOUT = 900.0
"""Seconds for a whole answer: a 1.5B model on two shared cores takes tens of seconds."""
_TIMINGS = re.compile(r"(prompt eval time|eval time) .*tokens per second\)")


@dataclass(frozen=True)
class LlamaServer:
    """A running llama-server: its OpenAI-compatible base URL and its log."""

    url: str
    log: Path


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """llama-server on a free loopback port, from the script's cached build and model."""
    prepared = subprocess.run(
        [str(SCRIPT), "paths"], capture_output=True, text=True, timeout=PREPARE_TIMEOUT
    )
    assert prepared.returncode == 0, f"{SCRIPT} failed:\n{prepared.stderr[-4000:]}"
    (port,) = free_ports(1)
    log = tmp_path_factory.mktemp("llama-server") / "llama-server.log"
    command = [str(SCRIPT), "serve", str(port), "--alias", MODEL_NAME, "-c", "8192", "-t", "2"]
    with log.open("wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_until_healthy(f"http://127.0.0.1:{port}/health", server, log)
        yield LlamaServer(url=f"http://127.0.0.1:{port}/v1", log=log)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        timings = [line.strip() for line in log.read_text(errors="replace").splitlines()]
        print(f"\nllama-server log: {log}")
        print("\n".join(line for line in timings if _TIMINGS.search(line)))


def _wait_until_healthy(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    """Until ``/health`` says 200 (it is 503 while the model loads); fail if the server exits."""
    deadline = time.monotonic() + LOAD_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            tail = log.read_text(errors="replace")[-4000:]
            pytest.fail(f"llama-server exited with {server.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)  # polling a server that offers no readiness event
    pytest.fail(f"llama-server was not healthy within {LOAD_TIMEOUT:g}s")


async def test_an_llm_agent_answers_1234_times_5678_by_calling_math_over_the_bus(
    nc: Client, prefix: str, llama_server: LlamaServer
) -> None:
    model = create_model(
        ModelSettings(
            model=MODEL_NAME,
            provider="openai",
            base_url=llama_server.url,
            temperature=0,
            max_tokens=512,
            timeout=ANSWER_TIMEOUT,
        )
    )
    llm = LLMAgent("llm-1", model=model, capability="ask", delegate=["math"])
    math = MathAgent("m-1")
    started = time.monotonic()
    async with AgentHost(nc, [math, llm], prefix=prefix) as host:
        with anyio.fail_after(ANSWER_TIMEOUT):
            reply = await TaskClient(nc, prefix=prefix).request(
                "ask", "What is 1234*5678?", timeout=ANSWER_TIMEOUT
            )
        math_tasks = sum(c.num_requests for c in host.runners["m-1"].counters.values())
    await model.aclose()
    print(f"\nllm agent answered in {time.monotonic() - started:.1f}s: {reply.payload!r}")
    assert reply.error is None, reply.error
    assert isinstance(reply.payload, str)
    assert "7006652" in reply.payload.replace(",", "")
    assert math_tasks >= 1  # the number came from the math agent, not from the model's memory


async def test_ask_with_the_model_plans_and_answers_a_two_step_request(
    nc: Client,
    prefix: str,
    cli_env: dict[str, str],
    callboard_cmd: list[str],
    llama_server: LlamaServer,
) -> None:
    request = "calculate 1234*5678 and then echo the result"
    command = [
        *callboard_cmd,
        "--prefix",
        prefix,
        "ask",
        request,
        "--model",
        MODEL_NAME,
        "--provider",
        "openai",
        "--model-url",
        llama_server.url,
        "--model-timeout",
        str(ANSWER_TIMEOUT),
        "--json",
    ]
    started = time.monotonic()
    async with actors.serve(nc, [MathAgent("m-1"), EchoAgent("e-1")], prefix=prefix):
        with anyio.fail_after(ANSWER_TIMEOUT):
            done = await anyio.run_process(command, env=cli_env, check=False)
    elapsed = time.monotonic() - started
    stdout, stderr = done.stdout.decode(), done.stderr.decode()
    print(f"\ncallboard ask --model took {elapsed:.1f}s:\n{stdout}{stderr}")
    assert done.returncode == 0, stderr
    result: dict[str, Any] = msgspec.json.decode(stdout)
    steps = result["steps"]
    assert [s["capability"] for s in steps] == ["math", "echo"]
    assert steps[0]["result"] == {"value": 7006652}
    assert "7006652" in msgspec.json.encode(steps[1]["result"]).decode()
    assert "7006652" in str(result["answer"]).replace(",", "")
