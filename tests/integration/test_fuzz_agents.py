"""Bad input everywhere (issue 7): every built-in agent, hosted on a real server,
answers a storm of malformed tasks with a 4xx error reply and goes on serving.

The storm is sent with raw nats-py (``nc.request`` with any bytes and headers) and,
for header blocks nats-py would never write, over a plain TCP socket speaking the
NATS protocol by hand: nothing on the sending side cleans the input. Bad input is
the sender's fault, so its answer is a 4xx; a 5xx, a missing reply or an agent
that stops serving is a bug.
"""

from __future__ import annotations

import contextlib
import random
import string
from collections.abc import AsyncIterator, Callable, Collection, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio
import msgspec
import nats.errors
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llm_servers import FakeOllama
from nats.aio.client import Client
from nats.aio.msg import Msg

from actors import Agent, AgentHost
from actors.builtins import BUILTIN_AGENTS
from bus import BadInput, ErrorInfo, Subjects, new_agent_suffix, now_ms, validate_task_id
from bus import connect as bus_connect
from bus.codec import (
    AGENT_ID,
    CAPABILITY,
    CHAIN,
    DEADLINE,
    ERROR,
    ERROR_CODE,
    OPERATION,
    SENDER,
    SEQ,
    TASK_ID,
    TRACEPARENT,
)

pytestmark = pytest.mark.anyio

MAX_PAYLOAD = 256 * 1024
"""The agents' payload limit in these tests: above 100k levels of nesting (200 KB),
so those reach the decoder, and below the server's 1 MB, so a 413 is reachable."""
REPLY_TIMEOUT = 10.0
"""Seconds a request may wait for its reply: far above any honest answer here."""
CONCURRENCY = 16
"""Requests in flight at once during a storm: below every agent's concurrency
limit, so a 503 "overloaded" can only mean a bug."""

FUZZ = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    # one fleet serves every example: surviving them all in a row is the point
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

VALID = {
    "math": b'{"expression": "6*7"}',
    "echo": b'{"ping": 1}',
    "summarize": b'{"text": "One. Two."}',
    "chat": b'"hi"',
}
"""A valid task for each built-in capability..."""
EXPECTED = {
    "math": {"value": 42},
    "echo": {"ping": 1},
    "summarize": {"summary": "One. Two."},
    "chat": "fuzzed",
}
"""...and its result (the fake model answers every chat with "fuzzed")."""
CAPABILITIES = sorted(VALID)


class ErrorBody(msgspec.Struct):
    """The body of an error reply, as protocol v1 defines it."""

    error: ErrorInfo


@dataclass(frozen=True)
class Sent:
    """What a request carried, to say which one failed."""

    subject: str
    data: bytes
    headers: dict[str, str] | None = None

    def __str__(self) -> str:
        headers = {
            k: v if len(v) < 60 else f"{v[:40]}...({len(v)} chars)"
            for k, v in (self.headers or {}).items()
        }
        return f"{self.subject} {self.data[:80]!r}{'...' if len(self.data) > 80 else ''} {headers}"


def reply_error(msg: Msg, sent: Sent) -> ErrorInfo | None:
    """The error of a reply, checked against protocol v1; None for a result."""
    headers = msg.headers or {}
    if ERROR_CODE not in headers:
        msgspec.json.decode(msg.data)  # a result is JSON
        return None
    error = msgspec.json.decode(msg.data, type=ErrorBody).error
    assert str(error.code) == headers[ERROR_CODE], sent
    assert headers[ERROR] and error.message and error.type, sent
    assert headers.get(AGENT_ID), sent
    return error


def check_answer(msg: Msg, sent: Sent) -> ErrorInfo | None:
    """A result, or an error that blames the sender (4xx): never the agent's own failure."""
    error = reply_error(msg, sent)
    if error is not None:
        assert 400 <= error.code < 500, f"{sent} was answered {error.code}: {error.message}"
    return error


def check_rejected(msg: Msg, sent: Sent, *codes: int) -> ErrorInfo:
    """An error reply with one of ``codes`` (any 4xx when none is given)."""
    error = check_answer(msg, sent)
    assert error is not None, f"{sent} got a result: {msg.data[:200]!r}"
    if codes:
        assert error.code in codes, f"{sent} was answered {error.code}: {error.message}"
    return error


Check = Callable[[Msg, Sent], Any]


def expecting(codes: Collection[int] | None) -> Check:
    """``check_answer`` when ``codes`` is None, else a check for an error with one of them."""
    if codes is None:
        return check_answer
    return lambda msg, sent: check_rejected(msg, sent, *codes)


@dataclass
class Fleet:
    """Every built-in agent on one connection, and the means to send them anything."""

    nc: Client
    subjects: Subjects
    host: AgentHost
    agent_of: dict[str, str]
    """The agent id serving each capability."""

    def task(self, capability: str, data: bytes, headers: dict[str, str] | None = None) -> Sent:
        return Sent(self.subjects.task(capability), data, headers)

    def direct(self, capability: str, data: bytes, headers: dict[str, str]) -> Sent:
        return Sent(self.subjects.agent(self.agent_of[capability]), data, headers)

    async def send(self, sent: Sent) -> Msg:
        """The reply to one raw request; fails the test if none comes in time."""
        try:
            return await self.nc.request(
                sent.subject, sent.data, timeout=REPLY_TIMEOUT, headers=sent.headers
            )
        except nats.errors.TimeoutError:
            raise AssertionError(f"no reply within {REPLY_TIMEOUT:g}s to {sent}") from None

    async def storm(self, checks: list[tuple[Sent, Check]]) -> None:
        """Send every request, ``CONCURRENCY`` at a time; check each reply; report every failure."""
        failures: list[str] = []
        limiter = anyio.CapacityLimiter(CONCURRENCY)

        async def one(sent: Sent, check: Check) -> None:
            async with limiter:
                try:
                    check(await self.send(sent), sent)
                except AssertionError as exc:
                    failures.append(str(exc).split("\n")[0])

        async with anyio.create_task_group() as tg:
            for sent, check in checks:
                tg.start_soon(one, sent, check)
        assert not failures, f"{len(failures)} of {len(checks)} failed:\n" + "\n".join(failures)

    async def assert_serving(self) -> None:
        """Every agent still answers a valid task with the right result."""
        for capability in CAPABILITIES:
            msg = await self.send(self.task(capability, VALID[capability]))
            assert msgspec.json.decode(msg.data) == EXPECTED[capability], msg.data
        assert set(self.host.agent_states.values()) == {"serving"}


def builtin_agents(suffix: str, model_url: str) -> list[Agent]:
    """One agent of every built-in type (a new built-in must be added to VALID)."""
    model = {"provider": "ollama", "model": "llama3.2", "base_url": model_url, "retries": 0}
    options: dict[str, dict[str, Any]] = {"llm": {"model": model}}
    return [
        cls(f"{kind}-{suffix}", **options.get(kind, {})) for kind, cls in BUILTIN_AGENTS.items()
    ]


@pytest.fixture
def model_server() -> Iterator[FakeOllama]:
    with FakeOllama(default="fuzzed") as server:
        yield server


@pytest.fixture
async def fleet(nc: Client, prefix: str, model_server: FakeOllama) -> AsyncIterator[Fleet]:
    agents = builtin_agents(new_agent_suffix(), model_server.url)
    async with AgentHost(
        nc, agents, prefix=prefix, max_payload=MAX_PAYLOAD, heartbeat_interval=60.0
    ) as host:
        agent_of = {name: a.id for a in agents for name in a.capability_names}
        assert sorted(agent_of) == CAPABILITIES, "fuzz every built-in agent"
        yield Fleet(nc, host.subjects, host, agent_of)


# -- the named kinds of bad input ------------------------------------------------------

DEEP = 100_000
_random = random.Random(7)

NOT_JSON: dict[str, bytes] = {
    **{f"random bytes {n}": b"\x00" + _random.randbytes(n) for n in (1, 17, 512, 8192)},
    "truncated object": b'{"expression": "6*',
    "truncated string": b'"unterminated',
    "truncated array": b"[1, 2, [3",
    "NaN": b"NaN",
    "Infinity": b"-Infinity",
    "1e999": b"1e999",
    "a 5000-digit integer": b"1" + b"0" * 5000,
    "single quotes": b"{'expression': '6*7'}",
    "trailing garbage": b'{"expression": "6*7"} and more',
    "byte order mark": b'\xef\xbb\xbf{"expression": "6*7"}',
    "invalid UTF-8": b'{"expression": "\xff\xfe"}',
    "UTF-8 surrogate": b'"\xed\xa0\x80"',
    "lone surrogate escape": rb'{"text": "\ud800"}',
    "NUL": b"\x00",
    "100k nested lists": b"[" * DEEP + b"]" * DEEP,
    "30k nested objects": b'{"a":' * 30_000 + b"1" + b"}" * 30_000,
    "100k unclosed lists": b"[" * DEEP,
}
"""Bodies that are not JSON (or not JSON a decoder can hold): 400 from every agent."""

WRONG_INPUT: dict[str, list[bytes]] = {
    "math": [
        b"",
        b"null",
        b"{}",
        b"[]",
        b'"6*7"',
        b'{"expression": 42}',
        b'{"expression": null}',
        b'{"expression": ["6*7"]}',
        b'{"expression": {"op": "+"}}',
        b'{"expression": true}',
        b'{"expression": 1' + b"0" * 400 + b"}",
        b'{"expression": "' + b"9" * 400 + b"**9**9**9" + b'"}',
        b'{"expression": "' + b"(" * 5000 + b"1" + b")" * 5000 + b'"}',
        b'{"expression": "' + b"(" * 400 + b"1" + b")" * 400 + b'"}',
        b"{\"expression\": \"__import__('os').system('true')\"}",
        b'{"expression": "1e308*10"}',
        b'{"expression": "\\u0000"}',
        b'{"expression": "' + b"1+" * 2000 + b'1"}',
    ],
    "echo": [
        b'{"delay_ms": "soon"}',
        b'{"delay_ms": -1}',
        b'{"delay_ms": -1e308}',
        b'{"delay_ms": -1' + b"0" * 400 + b"}",
        b'{"delay_ms": 1' + b"0" * 400 + b"}",  # beyond any float
        b'{"delay_ms": true}',
        b'{"delay_ms": null}',
        b'{"delay_ms": [1]}',
        b'{"delay_ms": {"ms": 1}}',
    ],
    "summarize": [
        b"",
        b"{}",
        b"[]",
        b'"just text"',
        b'{"text": 1}',
        b'{"text": null}',
        b'{"text": ["a"]}',
        b'{"text": "a", "sentences": 0}',
        b'{"text": "a", "sentences": 1001}',
        b'{"text": "a", "sentences": -1' + b"0" * 400 + b"}",
        b'{"text": "a", "sentences": 1' + b"0" * 400 + b"}",
        b'{"text": "a", "sentences": 2.5}',
        b'{"text": "a", "sentences": "3"}',
        b'{"text": "a", "sentences": true}',
    ],
    "chat": [
        b"",
        b"null",
        b"42",
        b"true",
        b"[]",
        b'["hi"]',
        b"{}",
        b'{"prompt": 1}',
        b'{"prompt": null}',
        b'{"prompt": ["hi"]}',
        b'{"context": "no prompt"}',
    ],
}
"""Valid JSON that is wrong for the capability (its type, range or content): 400."""

EXTREME_BUT_VALID: dict[str, bytes] = {
    "10**400": b"1" + b"0" * 400,
    "-10**400": b"-1" + b"0" * 400,
    "largest float": b"1.7976931348623157e308",
    "smallest float": b"5e-324",
    "500 nested lists": b"[" * 500 + b"]" * 500,
    "controls and emoji": '"\\u0000\\u001f\u202e\U0001f600 \\ud83d\\ude00"'.encode(),
    "200 KB string": b'"' + b"x" * 200_000 + b'"',
    "10k keys": msgspec.json.encode({f"k{i}": i for i in range(10_000)}),
}
"""Valid JSON at the edges: echo returns it unchanged; the others answer, 4xx at worst."""


async def test_bodies_that_are_not_json_are_400s_from_every_agent(fleet: Fleet) -> None:
    await fleet.storm(
        [
            (fleet.task(capability, body), expecting({400}))
            for body in NOT_JSON.values()
            for capability in CAPABILITIES
        ]
    )
    await fleet.assert_serving()


async def test_wrong_input_for_each_capability_is_a_400(fleet: Fleet) -> None:
    await fleet.storm(
        [
            (fleet.task(capability, body), expecting({400}))
            for capability, bodies in WRONG_INPUT.items()
            for body in bodies
        ]
    )
    await fleet.assert_serving()


async def test_extreme_but_valid_json_is_answered_and_echoed_unchanged(fleet: Fleet) -> None:
    def echoed(msg: Msg, sent: Sent) -> None:
        assert check_answer(msg, sent) is None, f"{sent} was refused"
        assert msgspec.json.decode(msg.data) == msgspec.json.decode(sent.data), sent

    await fleet.storm(
        [
            (fleet.task(capability, body), echoed if capability == "echo" else check_answer)
            for body in EXTREME_BUT_VALID.values()
            for capability in CAPABILITIES
        ]
    )
    await fleet.assert_serving()


async def test_oversized_payloads_are_413s(fleet: Fleet) -> None:
    oversized = b'{"expression": "' + b"1" * MAX_PAYLOAD + b'"}'
    await fleet.storm(
        [(fleet.task(capability, oversized), expecting({413})) for capability in CAPABILITIES]
    )
    with pytest.raises(nats.errors.MaxPayloadError):  # above the server's limit: never sent
        await fleet.send(fleet.task("echo", b" " * (fleet.nc.max_payload + 1)))
    await fleet.assert_serving()


async def test_no_error_outgrows_its_reply(
    nc: Client, prefix: str, model_server: FakeOllama
) -> None:
    """An agent that quoted a whole bad value in its error (header and body) would
    make a reply over the server's limit from a request under it: lost, unanswered."""
    huge = b'"' + b"x" * 600_000 + b'"'
    bodies = {
        "math": b'{"expression": ' + huge + b"}",
        "echo": b'{"delay_ms": ' + huge + b"}",
        "summarize": b'{"text": ' + huge + b', "sentences": "' + b"y" * 300_000 + b'"}',
        "chat": b'{"prompt": ' + huge + b', "context": "' + b"y" * 300_000 + b'"}',
    }
    agents = builtin_agents(new_agent_suffix(), model_server.url)
    async with AgentHost(nc, agents, prefix=prefix, heartbeat_interval=60.0) as host:
        fleet = Fleet(
            nc, host.subjects, host, {c: a.id for a in agents for c in a.capability_names}
        )
        await fleet.storm(
            [(fleet.task(capability, body), check_answer) for capability, body in bodies.items()]
        )
        await fleet.assert_serving()


def _header_cases(agent_of: dict[str, str]) -> list[tuple[dict[str, str], set[int] | None]]:
    """Headers with a valid body, and the codes they must get (None: a result or any 4xx)."""
    long_chain = ",".join(f"agent-{i}" for i in range(50_000))
    return [
        ({TASK_ID: "x" * 100_000}, {400}),
        ({TASK_ID: "has space"}, {400}),
        ({TASK_ID: "ünïcödé"}, {400}),
        ({TASK_ID: "\x7f\x01"}, {400}),
        ({TASK_ID: ""}, None),
        ({DEADLINE: "soon"}, {400}),
        ({DEADLINE: "1.5e12"}, {400}),
        ({DEADLINE: "1" + "0" * 400}, {400}),
        ({DEADLINE: "9" * 5000}, {400}),
        ({DEADLINE: str(2**63)}, {400}),
        ({DEADLINE: "-1"}, {408}),
        ({DEADLINE: "0"}, {408}),
        ({DEADLINE: str(now_ms() - 1)}, {408}),
        ({DEADLINE: str(2**63 - 1)}, None),
        ({DEADLINE: ""}, None),
        ({SEQ: "first"}, {400}),
        ({SEQ: "1" * 400}, {400}),
        ({SEQ: str(-(2**63))}, None),
        ({CHAIN: long_chain}, {409}),
        ({CHAIN: "," * 20}, {409}),
        ({CHAIN: ",".join(agent_of.values())}, {409}),
        ({CHAIN: "a b,c\td,ü"}, None),
        ({SENDER: "s" * 100_000}, None),
        ({SENDER: "ünïcödé \x01"}, None),
        ({TRACEPARENT: "not-a-trace" * 1000}, None),
        ({f"X-Junk-{i}": "j" * 50 for i in range(2000)}, None),
        ({"Status": "503", "Description": "No Responders"}, None),
        ({TASK_ID: "t-1", DEADLINE: "x", SEQ: "y", CHAIN: "z" * 10_000}, {400}),
    ]


async def test_odd_and_oversized_headers_are_answered_with_4xx(fleet: Fleet) -> None:
    def expect(codes: set[int] | None, sent_id: str | None) -> Check:
        def check(msg: Msg, sent: Sent) -> None:
            expecting(codes)(msg, sent)
            replied_id = (msg.headers or {}).get(TASK_ID, "")
            assert validate_task_id(replied_id), sent  # an invalid one is replaced
            if sent_id and replied_id != sent_id:
                with pytest.raises(BadInput):
                    validate_task_id(sent_id)

        return check

    checks = [
        (fleet.task(capability, VALID[capability], headers), expect(codes, headers.get(TASK_ID)))
        for headers, codes in _header_cases(fleet.agent_of)
        for capability in CAPABILITIES
    ]
    await fleet.storm(checks)
    await fleet.assert_serving()


async def test_the_direct_address_answers_unknown_operations_and_capabilities(
    fleet: Fleet,
) -> None:
    def cases(capability: str) -> list[tuple[dict[str, str], bytes, set[int] | None]]:
        valid = VALID[capability]
        return [
            ({OPERATION: "explode"}, b"", {400}),
            ({OPERATION: "TASK", CAPABILITY: capability}, valid, {400}),
            ({OPERATION: ""}, b"", {400}),
            ({OPERATION: "ö" * 1000}, b"", {400}),
            ({OPERATION: "task", CAPABILITY: "nope"}, valid, {404}),
            ({OPERATION: "task", CAPABILITY: "x" * 10_000}, valid, {404}),
            ({OPERATION: "task"}, valid, {404}),
            ({}, valid, {404}),
            ({OPERATION: "task", CAPABILITY: capability}, b"\xff", {400}),
            ({OPERATION: "task", CAPABILITY: capability, TASK_ID: "bad id"}, valid, {400}),
            ({OPERATION: "task", CAPABILITY: capability, DEADLINE: "later"}, valid, {400}),
            ({OPERATION: "ping"}, b"\xff\x00", None),
            ({OPERATION: "cancel", TASK_ID: "never-ran"}, b"\xff\xfe not utf-8", None),
            ({OPERATION: "cancel"}, b"", None),
        ]

    await fleet.storm(
        [
            (fleet.direct(capability, data, headers), expecting(codes))
            for capability in CAPABILITIES
            for headers, data, codes in cases(capability)
        ]
    )
    await fleet.assert_serving()


@asynccontextmanager
async def agents_alone(nats_url: str, prefix: str, *agents: Agent) -> AsyncIterator[Fleet]:
    """Agents on a connection of their own, for faults that may take it down: its short
    PING interval notices a dead reader fast, and the other tests' connection is spared."""
    async with (
        bus_connect(
            nats_url, name="fuzzed-agents", ping_interval=0.2, max_outstanding_pings=1
        ) as agent_nc,
        AgentHost(agent_nc, agents, prefix=prefix, heartbeat_interval=60.0) as host,
    ):
        yield Fleet(
            agent_nc, host.subjects, host, {c: a.id for a in agents for c in a.capability_names}
        )


async def answered_quickly(nc: Client, sent: Sent, timeout: float = 2.0) -> Msg | None:
    """The reply, or None if none came within ``timeout`` or nobody listens any more."""
    try:
        return await nc.request(sent.subject, sent.data, timeout=timeout, headers=sent.headers)
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
        return None


async def test_a_result_too_large_to_send_becomes_an_error_reply(
    nats_url: str, nc: Client, prefix: str
) -> None:
    echo = BUILTIN_AGENTS["echo"](f"echo-{new_agent_suffix()}")
    async with agents_alone(nats_url, prefix, echo) as fleet:
        # JSON that grows when it is written again (3 bytes become 8): 600 KB in, 1.35 MB out
        sent = fleet.task("echo", b"[" + b",".join([b"1e5"] * 150_000) + b"]")
        answer = await answered_quickly(nc, sent)
        still_serving = await answered_quickly(nc, fleet.task("echo", VALID["echo"]))
    assert still_serving is not None, "the agent stopped serving"
    assert answer is not None, f"no reply to {sent}"
    check_rejected(answer, sent)


# -- hypothesis: whatever comes, an answer and never a 5xx ------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=16)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
json_documents = json_values.map(msgspec.json.encode)


@st.composite
def truncated(draw: st.DrawFn, documents: st.SearchStrategy[bytes]) -> bytes:
    """A document cut short (at least one byte removed)."""
    document = draw(documents.filter(lambda d: len(d) > 1))
    return document[: draw(st.integers(min_value=0, max_value=len(document) - 1))]


bodies = st.one_of(
    st.binary(max_size=256),
    json_documents,
    truncated(json_documents),
    st.text(alphabet='{}[]",:0123456789.eE+-\\ ntrufalsNI', max_size=48).map(str.encode),
    st.text(max_size=24).map(lambda s: b'"' + s.encode("utf-8", "surrogatepass") + b'\xff"'),
)


@FUZZ
@given(body=bodies)
async def test_any_body_to_any_agent_is_answered_without_a_5xx(fleet: Fleet, body: bytes) -> None:
    await fleet.storm([(fleet.task(capability, body), check_answer) for capability in CAPABILITIES])


not_a_string = json_values.filter(lambda v: not isinstance(v, str))
not_a_number = json_values.filter(lambda v: isinstance(v, bool) or not isinstance(v, int | float))


def keys_but(name: str) -> st.SearchStrategy[str]:
    """Object keys, any but ``name``."""
    return st.text(max_size=8).filter(lambda key: key != name)


wrong_inputs = st.one_of(
    st.tuples(st.just("math"), st.builds(lambda v: {"expression": v}, not_a_string)),
    st.tuples(st.just("math"), st.dictionaries(keys_but("expression"), json_values, max_size=3)),
    st.tuples(st.just("math"), json_values.filter(lambda v: not isinstance(v, dict))),
    st.tuples(st.just("summarize"), st.builds(lambda v: {"text": v}, not_a_string)),
    st.tuples(
        st.just("summarize"),
        st.builds(
            lambda n: {"text": "a. b.", "sentences": n},
            st.integers().filter(lambda n: not 1 <= n <= 1000) | not_a_number,
        ),
    ),
    st.tuples(st.just("chat"), json_values.filter(lambda v: not isinstance(v, str | dict))),
    st.tuples(st.just("chat"), st.dictionaries(keys_but("prompt"), json_values, max_size=3)),
    st.tuples(st.just("chat"), st.builds(lambda v: {"prompt": v}, not_a_string)),
    st.tuples(
        st.just("echo"),
        st.builds(
            lambda v: {"delay_ms": v},
            not_a_number
            | st.integers(max_value=-1)
            | st.floats(max_value=-1e-9)
            | st.integers(min_value=2**1024, max_value=10**4000),
        ),
    ),
)


@FUZZ
@given(case=wrong_inputs)
async def test_any_wrong_input_type_is_a_400(fleet: Fleet, case: tuple[str, Any]) -> None:
    capability, payload = case
    await fleet.storm(
        [
            (
                fleet.task(capability, msgspec.json.encode(payload)),
                expecting({400}),
            )
        ]
    )


header_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=40
)
header_value = st.one_of(
    header_text,
    st.integers().map(str),
    st.floats().map(str),
    st.sampled_from(["", "1" + "0" * 400, "9" * 5000, "-1", str(2**63), "0x10"]),
    st.lists(st.text(string.ascii_letters + "-_", max_size=8), max_size=12).map(",".join),
)
header_name = st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=16)
fuzzed_headers = st.builds(
    lambda known, extra: {**extra, **known},
    st.fixed_dictionaries(
        {},
        optional=dict.fromkeys((TASK_ID, SENDER, DEADLINE, CHAIN, SEQ, TRACEPARENT), header_value),
    ),
    st.dictionaries(header_name, header_value, max_size=4),
)


@FUZZ
@given(headers=fuzzed_headers, capability=st.sampled_from(CAPABILITIES))
async def test_any_headers_are_answered_without_a_5xx(
    fleet: Fleet, headers: dict[str, str], capability: str
) -> None:
    await fleet.storm([(fleet.task(capability, VALID[capability], headers), check_answer)])


@FUZZ
@given(
    operation=st.none() | st.sampled_from(["task", "ping", "cancel"]) | header_text,
    capability_header=st.none() | st.sampled_from(CAPABILITIES) | header_text,
    body=bodies,
)
async def test_any_direct_request_is_answered_without_a_5xx(
    fleet: Fleet, operation: str | None, capability_header: str | None, body: bytes
) -> None:
    headers = {OPERATION: operation, CAPABILITY: capability_header}
    sent = fleet.direct("math", body, {k: v for k, v in headers.items() if v is not None})
    await fleet.storm([(sent, check_answer)])


# -- the raw protocol: header blocks nats-py would never write -------------------------


async def _raw_exchange(nats_url: str, frames: bytes) -> bytes:
    """Send protocol ``frames`` on a fresh TCP connection, then PING; what the server said.

    A PONG means it took everything before it; without one it refused something (with
    an ``-ERR``, or by closing the connection).
    """
    url = urlsplit(nats_url)
    connect = b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"protocol":1}\r\n'
    said = b""
    with anyio.fail_after(REPLY_TIMEOUT):
        async with await anyio.connect_tcp(url.hostname or "127.0.0.1", url.port or 4222) as sock:
            while b"\r\n" not in said:  # INFO
                said += await sock.receive()
            said = b""
            await sock.send(connect + frames + b"PING\r\n")
            try:
                while b"PONG\r\n" not in said and b"-ERR" not in said:
                    said += await sock.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
    return said


def hpub(subject: str, reply: str, header: bytes, body: bytes) -> bytes:
    """An HPUB frame exactly as given, however malformed its header block."""
    total = len(header) + len(body)
    return b"HPUB %s %s %d %d\r\n%s%s\r\n" % (
        subject.encode(),
        reply.encode(),
        len(header),
        total,
        header,
        body,
    )


RAW_HEADER_BLOCKS: dict[str, bytes] = {
    "no header lines": b"NATS/1.0\r\n\r\n",
    "status line only": b"NATS/1.0\r\n",
    "no CRLF at all": b"NATS/1.0 anything",
    "not NATS/1.0": b"HTTP/1.1 200 OK\r\nAgent-Task-Id: t\r\n\r\n",
    "binary garbage": b"\x00\xff\xfe\x80 garbage \x00\r\n\r\n",
    "LF line ends": b"NATS/1.0\nAgent-Task-Id: lf\nAgent-Deadline: x\n\n",
    "no final blank line": b"NATS/1.0\r\nAgent-Task-Id: unterminated",
    "line without colon": b"NATS/1.0\r\nnot a header line\r\n\r\n",
    "space in name": b"NATS/1.0\r\nAgent Task Id: x\r\n\r\n",
    "non-ASCII name": b"NATS/1.0\r\n\xc3\xa9t\xc3\xa9: v\r\n\r\n",
    "invalid UTF-8 task id": b"NATS/1.0\r\nAgent-Task-Id: \xff\xfe\xfd\r\n\r\n",
    "invalid UTF-8 deadline": b"NATS/1.0\r\nAgent-Deadline: \xff\r\n\r\n",
    "NUL in values": b"NATS/1.0\r\nAgent-Task-Id: a\x00b\r\nAgent-Chain: \x00,\x00\r\n\r\n",
    "duplicate task ids": b"NATS/1.0\r\nAgent-Task-Id: a\r\nAgent-Task-Id: b c\r\n\r\n",
    "empty name": b"NATS/1.0\r\n: value\r\n\r\n",
    "inline status 503": b"NATS/1.0 503\r\n\r\n",
    "inline status with text": b"NATS/1.0 404 No Messages\r\n\r\n",
    "inline status not a number": b"NATS/1.0 abc\r\n\r\n",
    "inline status then headers": b"NATS/1.0 100 Idle\r\nAgent-Deadline: x\r\n\r\n",
    "huge chain": b"NATS/1.0\r\nAgent-Chain: " + b"a," * 200_000 + b"\r\n\r\n",
    "huge deadline": b"NATS/1.0\r\nAgent-Deadline: " + b"9" * 100_000 + b"\r\n\r\n",
    "50k tiny headers": b"NATS/1.0\r\n" + b"X: y\r\n" * 50_000 + b"\r\n",
}
"""Header blocks the server passes through and nats-py parses (or skips) on delivery."""

DEAFENING_HEADER_BLOCKS: dict[str, bytes] = {
    "shorter than NATS/1.0 plus one": b"NATS/1.0",  # IndexError
    "inline status not UTF-8": b"NATS/1.0 \xff\xfe\xfd\r\n\r\n",  # UnicodeDecodeError
}
"""Header blocks the server delivers but on which nats-py 2.16's reader raises and stops
(so do ``N`` alone, and an inline status whose description is not UTF-8)."""


async def test_malformed_header_blocks_on_the_wire_are_all_answered(
    fleet: Fleet, nats_url: str
) -> None:
    inbox = fleet.nc.new_inbox()
    replies = await fleet.nc.subscribe(f"{inbox}.>")
    await fleet.nc.flush()
    expected: dict[str, Sent] = {}
    number = 0
    for capability in CAPABILITIES:
        body = VALID[capability]
        for name, header in RAW_HEADER_BLOCKS.items():
            number += 1
            reply = f"{inbox}.{number}"
            said = await _raw_exchange(
                nats_url, hpub(fleet.subjects.task(capability), reply, header, body)
            )
            assert b"PONG" in said, f"the server refused {name!r}: {said[:200]!r}"
            expected[reply] = Sent(
                fleet.subjects.task(capability), body, {"raw header block": name}
            )
    for reply in (f"{inbox}.wild.*", f"{inbox}.wild.>"):  # wildcards as a reply subject
        said = await _raw_exchange(
            nats_url, hpub(fleet.subjects.task("echo"), reply, b"NATS/1.0\r\n\r\n", b"1")
        )
        assert b"PONG" in said, said
        # security: a wildcard reply is not an inbox; the agent drops it (test_attacks.py)
    # the cancel broadcast expects no answer; it must not hurt either
    cancels = [hpub(fleet.subjects.cancel(), "", h, b"\xff") for h in RAW_HEADER_BLOCKS.values()]
    assert b"PONG" in await _raw_exchange(nats_url, b"".join(cancels))

    answered: dict[str, Msg] = {}
    with anyio.fail_after(REPLY_TIMEOUT):
        while len(answered) < len(expected):
            msg = await replies.next_msg(timeout=REPLY_TIMEOUT)
            assert msg.subject in expected and msg.subject not in answered, msg.subject
            answered[msg.subject] = msg
    await replies.unsubscribe()
    for reply, msg in answered.items():
        check_answer(msg, expected[reply])
    await fleet.assert_serving()


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(b"HPUB subject reply 10 5\r\n0123456789\r\n", id="header longer than total"),
        pytest.param(b"HPUB subject reply x y\r\n", id="sizes not numbers"),
        pytest.param(
            hpub("subject", "reply", b"NATS/1.0\r\n\r\n", b"x" * (1024 * 1024)),
            id="over max_payload",
        ),
        pytest.param(b"HPUB\r\n", id="no arguments"),
    ],
)
async def test_frames_the_server_refuses_leave_every_agent_serving(
    fleet: Fleet, nats_url: str, frame: bytes
) -> None:
    for capability in CAPABILITIES:
        aimed = frame.replace(b"subject", fleet.subjects.task(capability).encode(), 1)
        said = await _raw_exchange(nats_url, aimed)
        assert b"PONG" not in said, said[:200]  # an -ERR, or the connection closed
    await fleet.assert_serving()


@pytest.mark.parametrize("block", sorted(DEAFENING_HEADER_BLOCKS))
async def test_header_blocks_that_deafen_nats_py_are_answered(
    nats_url: str, nc: Client, prefix: str, block: str
) -> None:
    subject = Subjects(prefix).task("math")
    reply = nc.new_inbox()
    replies = await nc.subscribe(reply)
    await nc.flush()
    answer: Msg | None = None
    math = BUILTIN_AGENTS["math"](f"math-{new_agent_suffix()}")
    async with agents_alone(nats_url, prefix, math):
        frame = hpub(subject, reply, DEAFENING_HEADER_BLOCKS[block], VALID["math"])
        assert b"PONG" in await _raw_exchange(nats_url, frame)
        with contextlib.suppress(nats.errors.TimeoutError):
            answer = await replies.next_msg(timeout=2.0)
    assert answer is not None, f"the agent never answered the {block!r} header block"
    check_answer(answer, Sent(subject, VALID["math"], {"raw header block": block}))
