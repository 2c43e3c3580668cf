"""``callboard run`` under a fuzz storm (issue 7, "bad input everywhere").

A real daemon runs every built-in agent (the LLM one against the fake Ollama
server); a seeded-random batch of malformed tasks hits all of them at once. Every
task is answered, bad input with a 4xx; the process lives on and serves; its
``/metrics`` counts each task and each failure by code.
"""

from __future__ import annotations

import random
import re
import signal
import urllib.request
from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Any

import anyio
import msgspec
import nats.errors
import pytest
from llm_servers import FakeOllama
from nats.aio.client import Client
from nats.aio.msg import Msg
from prometheus_client.parser import text_string_to_metric_families
from system_support import Daemon, wait_exit

from bus import Subjects, new_agent_suffix
from bus.codec import CHAIN, DEADLINE, ERROR, ERROR_CODE, OPERATION, SEQ, TASK_ID

pytestmark = [pytest.mark.system, pytest.mark.anyio]

MAX_PAYLOAD = 64 * 1024
REPLY_TIMEOUT = 10.0
BATCH = 400
"""Tasks in the storm: a hundred per agent, on average."""

VALID = {
    "math": b'{"expression": "6*7"}',
    "echo": b'{"ping": 1}',
    "summarize": b'{"text": "One. Two."}',
    "chat": b'"hi"',
}
EXPECTED = {
    "math": {"value": 42},
    "echo": {"ping": 1},
    "summarize": {"summary": "One. Two."},
    "chat": "fuzzed",
}
WRONG_TYPES = {
    "math": [b"{}", b'{"expression": 42}', b'{"expression": null}', b'{"expression": "9**9**9"}'],
    "echo": [b'{"delay_ms": "soon"}', b'{"delay_ms": -1}', b'{"delay_ms": [1]}'],
    "summarize": [b'{"text": 1}', b'{"text": "a", "sentences": 0}', b'{"sentences": "3"}'],
    "chat": [b"42", b"null", b'{"prompt": 1}', b'{"context": "no prompt"}'],
}

Task = tuple[str, bytes, dict[str, str] | None]


def fuzz_batch(rng: random.Random, size: int) -> list[Task]:
    """``size`` malformed tasks (capability, body, headers), all drawn from ``rng``."""
    capabilities = sorted(VALID)

    def random_bytes(capability: str) -> Task:
        return capability, b"\x00" + rng.randbytes(rng.randrange(1, 300)), None

    def truncated(capability: str) -> Task:
        valid = VALID[capability]
        return capability, valid[: rng.randrange(1, len(valid) - 1)], None

    def flipped(capability: str) -> Task:
        body = bytearray(VALID[capability])
        body[rng.randrange(len(body))] = rng.choice(b'\xff\x00{["\\')
        return capability, bytes(body), None

    def deep(capability: str) -> Task:
        depth = rng.randrange(2_000, 20_000)
        return capability, b"[" * depth + b"]" * depth, None

    def huge_number(capability: str) -> Task:
        number = rng.choice([b"1" + b"0" * 400, b"1e999", b"-1e999", b"NaN", b"9" * 5000])
        return capability, b'{"expression": ' + number + b', "text": ' + number + b"}", None

    def wrong_type(capability: str) -> Task:
        return capability, rng.choice(WRONG_TYPES[capability]), None

    def invalid_utf8(capability: str) -> Task:
        return capability, b'{"expression": "\xed\xa0\x80", "text": "\xff"}', None

    def oversized(capability: str) -> Task:
        return capability, b'"' + b"x" * MAX_PAYLOAD + b'"', None

    def bad_header(capability: str) -> Task:
        headers = rng.choice(
            [
                {TASK_ID: "x" * rng.randrange(129, 50_000)},
                {TASK_ID: "has space"},
                {DEADLINE: rng.choice(["soon", "1" + "0" * 400, "-1", "1.5"])},
                {SEQ: "first"},
                {CHAIN: ",".join("a" * 8 for _ in range(rng.randrange(8, 5_000)))},
            ]
        )
        return capability, VALID[capability], headers

    kinds = [
        random_bytes,
        truncated,
        flipped,
        deep,
        huge_number,
        wrong_type,
        invalid_utf8,
        oversized,
        bad_header,
    ]
    return [rng.choice(kinds)(rng.choice(capabilities)) for _ in range(size)]


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_a_daemon_answers_a_fuzz_storm_keeps_serving_and_counts_it(
    start_daemon: Callable[..., Daemon], prefix: str, nc: Client
) -> None:
    suffix = new_agent_suffix()
    ids = {capability: f"{capability}-{suffix}" for capability in VALID}
    with FakeOllama(default="fuzzed") as model_server:
        model = {"provider": "ollama", "model": "llama3.2", "base_url": model_server.url}
        agents: list[dict[str, Any]] = [
            {"type": "math", "id": ids["math"]},
            {"type": "echo", "id": ids["echo"]},
            {"type": "summarize", "id": ids["summarize"]},
            {"type": "llm", "id": ids["chat"], "options": {"model": {**model, "retries": 0}}},
        ]
        daemon = await anyio.to_thread.run_sync(
            partial(
                start_daemon,
                agents,
                prefix=prefix,
                heartbeat_interval=60.0,
                max_payload=MAX_PAYLOAD,
                metrics_address="127.0.0.1:0",
            )
        )
        subjects = Subjects(prefix)
        batch = fuzz_batch(random.Random(7), BATCH)
        sent: Counter[str] = Counter()
        results: Counter[str] = Counter()
        errors: Counter[tuple[str, int]] = Counter()
        failures: list[str] = []
        limiter = anyio.CapacityLimiter(16)

        async def send(capability: str, body: bytes, headers: dict[str, str] | None) -> None:
            what = f"{capability} {body[:60]!r} {str(headers)[:60]}"
            async with limiter:
                sent[capability] += 1
                try:
                    msg = await nc.request(
                        subjects.task(capability), body, timeout=REPLY_TIMEOUT, headers=headers
                    )
                except nats.errors.TimeoutError:
                    failures.append(f"no reply to {what}")
                    return
            reply_headers = msg.headers or {}
            if ERROR_CODE not in reply_headers:
                results[capability] += 1
                return
            code = int(reply_headers[ERROR_CODE])
            errors[capability, code] += 1
            body_error = msgspec.json.decode(msg.data)["error"]
            if not (400 <= code < 500 and body_error["code"] == code and reply_headers[ERROR]):
                failures.append(f"{what} was answered {code}: {body_error['message']}")

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for task in batch:
                    tg.start_soon(send, *task)
        assert not failures, "\n".join(failures)
        assert sum(errors.values()) > BATCH * 0.9, (results, errors)  # bad input is refused

        assert daemon.proc.alive(), daemon.proc.output()
        for capability, body in VALID.items():
            msg = await nc.request(subjects.task(capability), body, timeout=REPLY_TIMEOUT)
            assert msgspec.json.decode(msg.data) == EXPECTED[capability], msg.data
            results[capability] += 1
            sent[capability] += 1

        match = re.search(r"metrics on (http://\S+)/metrics", daemon.proc.stderr.text)
        assert match, daemon.proc.output()
        samples = await anyio.to_thread.run_sync(scrape, match.group(1) + "/metrics")

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    for capability, agent_id in ids.items():
        labels = {"agent": agent_id, "capability": capability}
        assert value("callboard_agent_tasks_received_total", **labels) == sent[capability]
        assert value("callboard_agent_tasks_completed_total", **labels) == results[capability]
        for (errored, code), count in errors.items():
            if errored == capability:
                failed = value("callboard_agent_tasks_failed_total", **labels, code=str(code))
                assert failed == count, (capability, code)
        assert value("callboard_agent_up", agent=agent_id, kind=_kind(capability)) == 1

    daemon.proc.send_signal(signal.SIGTERM)
    assert await wait_exit(daemon.proc) == 0, daemon.proc.output()


def _kind(capability: str) -> str:
    return "llm" if capability == "chat" else capability


async def answered_quickly(
    nc: Client, subject: str, body: bytes, headers: dict[str, str] | None = None
) -> Msg | None:
    """The reply, or None if none came within 3 s or nobody listens any more."""
    try:
        return await nc.request(subject, body, timeout=3.0, headers=headers)
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
        return None


@pytest.mark.parametrize("request_kind", ["an echo at the server's limit", "a huge Agent-Op"])
async def test_a_reply_over_max_payload_leaves_the_daemon_serving(
    start_daemon: Callable[..., Daemon], prefix: str, nc: Client, request_kind: str
) -> None:
    echo_id = f"echo-{new_agent_suffix()}"
    daemon = await anyio.to_thread.run_sync(
        partial(
            start_daemon, [{"type": "echo", "id": echo_id}], prefix=prefix, heartbeat_interval=60.0
        )
    )
    subjects = Subjects(prefix)
    if request_kind == "a huge Agent-Op":
        answer = await answered_quickly(
            nc, subjects.agent(echo_id), b"", {OPERATION: "x" * 600_000}
        )
    else:  # the agent accepts up to the server's limit; its reply adds headers
        body = b'"' + b"x" * (nc.max_payload - 2) + b'"'
        answer = await answered_quickly(nc, subjects.task("echo"), body)
    still_serving = await answered_quickly(nc, subjects.task("echo"), b'"still there?"')
    assert daemon.proc.alive(), daemon.proc.output()
    assert answer is not None, f"{request_kind} was never answered"
    assert 400 <= int((answer.headers or {}).get(ERROR_CODE, "0")) < 500, answer.headers
    assert still_serving is not None, "the daemon no longer serves"
