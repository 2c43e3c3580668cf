"""Properties of the wire codec under any input (issue 7, "bad input everywhere").

Whatever bytes or headers arrive, decoding either succeeds or raises ``BadInput``
with a message a sender can act on; never another exception, which the agent
runtime would report as its own failure (a 500). Replies decode without raising
at all. Where a value can go out and come back, it comes back unchanged.
"""

from __future__ import annotations

import string
from typing import Any

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from actors.builtins import MathInput, SummarizeInput
from actors.llm import LLMInput
from bus import (
    WIRE_ERRORS,
    AgentError,
    AgentMessage,
    BadInput,
    ErrorInfo,
    MessageType,
    TaskError,
)
from bus.codec import (
    AGENT_ID,
    CHAIN,
    DEADLINE,
    ERROR,
    ERROR_CODE,
    SENDER,
    SEQ,
    TASK_ID,
    TRACEPARENT,
    decode_json,
    decode_reply,
    decode_task,
    encode_error,
    encode_json,
    encode_result,
    encode_task,
    error_from_reply,
)

PROPERTY = settings(max_examples=120, deadline=None, derandomize=True, database=None)

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
DEEP = 100_000
"""Nesting far beyond any recursion limit: 100k levels."""

# -- strategies ------------------------------------------------------------------------

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
    max_leaves=16,
)
"""Any JSON document msgspec can write and read back unchanged."""

json_documents = json_values.map(msgspec.json.encode)


@st.composite
def truncated_json(draw: st.DrawFn) -> bytes:
    """A valid JSON document cut short (at least one byte removed)."""
    document = draw(json_documents.filter(lambda d: len(d) > 1))
    return document[: draw(st.integers(min_value=0, max_value=len(document) - 1))]


@st.composite
def corrupted_json(draw: st.DrawFn) -> bytes:
    """A valid JSON document with one byte replaced by any byte."""
    document = bytearray(draw(json_documents))
    index = draw(st.integers(min_value=0, max_value=len(document) - 1))
    document[index] = draw(st.integers(min_value=0, max_value=255))
    return bytes(document)


json_ish = st.text(alphabet='{}[]",:0123456789.eE+-\\ ntrufalsNI\x00', max_size=48).map(str.encode)
"""Text made of JSON's own punctuation and keywords: near misses of every kind."""

invalid_utf8_strings = st.text(max_size=24).map(
    lambda s: b'{"expression": "' + s.encode("utf-8", "surrogatepass") + b'\xff\xed\xa0\x80"}'
)

bodies = st.one_of(
    st.binary(max_size=256),
    json_documents,
    truncated_json(),
    corrupted_json(),
    json_ish,
    invalid_utf8_strings,
    st.integers().map(lambda n: str(n).encode()),
    st.sampled_from(
        [
            b"1" + b"0" * 400,  # 10**400: a valid, huge integer
            b"1" + b"0" * 5000,  # beyond Python's int-from-string digit limit
            b"1e999",
            b"-1e999",
            b"NaN",
            b"Infinity",
            rb'"\ud800"',  # a lone surrogate escape
            b"\xef\xbb\xbf{}",  # a UTF-8 byte order mark
            b'{"a": 1} trailing',
        ]
    ),
)
"""Any body a task may arrive with: random bytes and every kind of malformed JSON."""

DECODERS: dict[str, msgspec.json.Decoder[Any] | None] = {
    "any": None,
    "math": msgspec.json.Decoder(MathInput),
    "summarize": msgspec.json.Decoder(SummarizeInput),
    "llm": msgspec.json.Decoder(LLMInput),
}
"""The input decoders of the built-in agents (echo takes any JSON)."""

KNOWN_HEADERS = (TASK_ID, SENDER, DEADLINE, CHAIN, SEQ, TRACEPARENT)
header_names = st.text(alphabet=string.ascii_letters + "-", min_size=1, max_size=12)
header_values = st.one_of(
    st.text(max_size=40),
    INT64.map(str),
    st.integers().map(str),
    st.floats().map(str),
    st.sampled_from(["", " ", "1" + "0" * 400, "9" * 5000, "0x10", "1_000", "+7", " 42 "]),
    st.lists(st.text(max_size=8), max_size=20).map(",".join),
)
any_headers = st.none() | st.builds(
    lambda known, extra: {**extra, **known},
    st.fixed_dictionaries({}, optional=dict.fromkeys(KNOWN_HEADERS, header_values)),
    st.dictionaries(header_names, header_values, max_size=3),
)
"""Headers as nats-py hands them over: protocol v1's own with any values, and others."""

agent_ids = st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=1, max_size=16)
task_ids = st.text(alphabet="".join(map(chr, range(0x21, 0x7F))), min_size=1, max_size=128)
safe_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
"""Text that can be encoded as UTF-8 (no lone surrogates)."""


class ErrorBody(msgspec.Struct):
    """The body of an error reply, as protocol v1 defines it."""

    error: ErrorInfo


def nested(depth: int, open_: bytes = b"[", close: bytes = b"]", leaf: bytes = b"") -> bytes:
    return open_ * depth + leaf + close * depth


DEEP_DOCUMENTS = {
    "lists": nested(DEEP),
    "objects": nested(DEEP, b'{"a":', b"}", b"1"),
    "mixed": nested(DEEP // 2, b'[{"a":', b"}]", b"1"),
    "unclosed": b"[" * DEEP,
}


def assert_bad_input(exc: BadInput) -> None:
    """A BadInput a sender can act on: code 400 and a message that says something."""
    assert exc.code == 400
    assert exc.type == "bad_input"
    assert isinstance(exc.message, str) and len(exc.message) > 10


# -- decoding task bodies --------------------------------------------------------------


@PROPERTY
@given(data=bodies, decoder=st.sampled_from(sorted(DECODERS)))
def test_any_body_decodes_or_is_bad_input(data: bytes, decoder: str) -> None:
    try:
        decode_json(data, DECODERS[decoder])
    except BadInput as exc:
        assert_bad_input(exc)


@pytest.mark.parametrize("decoder", sorted(DECODERS))
@pytest.mark.parametrize("shape", sorted(DEEP_DOCUMENTS))
def test_deep_nesting_is_bad_input_not_a_recursion_error(shape: str, decoder: str) -> None:
    with pytest.raises(BadInput) as info:
        decode_json(DEEP_DOCUMENTS[shape], DECODERS[decoder])
    assert_bad_input(info.value)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"1e999", "out of range"),
        (b'{"expression": 1e999}', "out of range"),
        (b"NaN", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (rb'"\ud800"', "not valid JSON"),
        (b"1" + b"0" * 5000, "out of range"),
    ],
)
def test_out_of_range_and_non_json_numbers_are_named(body: bytes, fragment: str) -> None:
    with pytest.raises(BadInput, match=fragment):
        decode_json(body)


@PROPERTY
@given(value=json_values)
def test_json_round_trips(value: Any) -> None:
    assert decode_json(encode_json(value)) == value


def test_a_huge_integer_round_trips() -> None:
    assert decode_json(encode_json(10**400)) == 10**400


unencodable = st.one_of(
    json_values,
    st.floats(),  # NaN and infinities are written as null
    st.text(max_size=8).map(lambda s: s + "\ud800"),  # lone surrogate: not UTF-8
    st.builds(object),
    st.sampled_from([10**5000, {1: 2}, {(1, 2): 3}, b"bytes", {1, 2}, Ellipsis]),
    st.lists(st.builds(object), min_size=1, max_size=2),
)


@PROPERTY
@given(value=unencodable)
def test_encoding_any_value_gives_json_or_bad_input(value: Any) -> None:
    try:
        data = encode_json(value, "payload")
    except BadInput as exc:
        assert_bad_input(exc)
        assert "payload" in exc.message
    else:
        decode_json(data)


def test_encoding_a_too_deeply_nested_value_is_bad_input() -> None:
    value: list[Any] = []
    for _ in range(DEEP):
        value = [value]
    with pytest.raises(BadInput):
        encode_json(value)


# -- task headers ----------------------------------------------------------------------


@PROPERTY
@given(headers=any_headers, body=st.sampled_from([b"", b"{}", b'"x"']))
@example(headers={DEADLINE: "1" + "0" * 400}, body=b"{}")  # overflowed time_left() once
@example(headers={SEQ: str(-(2**64))}, body=b"{}")
def test_any_headers_decode_or_are_bad_input(headers: dict[str, str] | None, body: bytes) -> None:
    try:
        task = decode_task(headers, body, task_id="t-1", capability="echo", receiver="e-1")
    except BadInput as exc:
        assert_bad_input(exc)
        assert any(name in exc.message for name in (DEADLINE, SEQ))
        return
    assert task.type is MessageType.TASK
    assert (task.task_id, task.capability, task.receiver) == ("t-1", "echo", "e-1")
    assert task.sender
    assert all(isinstance(hop, str) for hop in task.chain)
    for number in (task.deadline_ms, task.seq):
        assert number is None or -(2**63) <= number < 2**63
    left = task.time_left()  # a deadline that decodes can be used
    assert left is None or isinstance(left, float)


@pytest.mark.parametrize("header", [DEADLINE, SEQ])
@pytest.mark.parametrize(
    "value",
    [
        "soon",
        "1.5",
        "1e3",
        "0x10",
        "12abc",
        "1" + "0" * 400,
        "9" * 5000,
        str(2**63),
        str(-(2**63) - 1),
    ],
)
def test_integer_headers_out_of_form_or_range_are_bad_input(header: str, value: str) -> None:
    with pytest.raises(BadInput, match=header) as info:
        decode_task({header: value}, b"{}", task_id="t", capability="c")
    assert_bad_input(info.value)


@pytest.mark.parametrize("value", [str(2**63 - 1), str(-(2**63)), "0", "-1"])
def test_integer_headers_at_the_edges_of_range_decode(value: str) -> None:
    task = decode_task({DEADLINE: value, SEQ: value}, b"{}", task_id="t", capability="c")
    assert task.deadline_ms == task.seq == int(value)
    assert isinstance(task.time_left(), float)


@PROPERTY
@given(
    task_id=task_ids,
    payload=json_values,
    sender=safe_text.filter(bool) | st.just("anonymous"),
    chain=st.lists(agent_ids, max_size=8).map(tuple),
    seq=st.none() | INT64,
    deadline_ms=st.none() | INT64,
    traceparent=st.none() | safe_text.filter(bool),
)
def test_task_round_trips(
    task_id: str,
    payload: Any,
    sender: str,
    chain: tuple[str, ...],
    seq: int | None,
    deadline_ms: int | None,
    traceparent: str | None,
) -> None:
    message = AgentMessage(
        type=MessageType.TASK,
        task_id=task_id,
        id=task_id,
        payload=payload,
        sender=sender,
        receiver="a-1",
        capability="cap",
        seq=seq,
        deadline_ms=deadline_ms,
        chain=chain,
        traceparent=traceparent,
    )
    headers, body = encode_task(message)
    assert decode_task(headers, body, task_id=task_id, capability="cap", receiver="a-1") == message


# -- replies ---------------------------------------------------------------------------


reply_headers = st.none() | st.builds(
    lambda known, extra: {**extra, **known},
    st.fixed_dictionaries(
        {}, optional=dict.fromkeys((TASK_ID, AGENT_ID, ERROR, ERROR_CODE), header_values)
    ),
    st.dictionaries(header_names, header_values, max_size=3),
)


@PROPERTY
@given(headers=reply_headers, data=bodies)
def test_any_reply_decodes_without_raising(headers: dict[str, str] | None, data: bytes) -> None:
    reply = decode_reply(headers, data, task_id="t-1", capability="cap")
    assert reply.type in (MessageType.RESULT, MessageType.ERROR)
    if reply.type is MessageType.ERROR:
        assert reply.error is not None
        exc = error_from_reply(reply)
        assert isinstance(exc, AgentError)
        assert (exc.code, exc.message) == (reply.error.code, reply.error.message)
        str(exc)


@pytest.mark.parametrize("shape", sorted(DEEP_DOCUMENTS))
@pytest.mark.parametrize("error_reply", [False, True], ids=["result", "error"])
def test_a_too_deeply_nested_reply_is_an_error_not_a_crash(shape: str, error_reply: bool) -> None:
    headers = {ERROR_CODE: "500", ERROR: "boom"} if error_reply else {AGENT_ID: "a-1"}
    reply = decode_reply(headers, DEEP_DOCUMENTS[shape], task_id="t")
    assert reply.type is MessageType.ERROR
    assert reply.error is not None
    assert reply.error.code == (500 if error_reply else 502)


@PROPERTY
@given(
    code=st.integers(min_value=100, max_value=599),
    type_=safe_text,
    message=safe_text,
    agent_id=agent_ids,
    task_id=task_ids,
)
def test_error_replies_round_trip_to_the_typed_error(
    code: int, type_: str, message: str, agent_id: str, task_id: str
) -> None:
    error = ErrorInfo(code=code, type=type_, message=message)
    headers, body = encode_error(error, task_id=task_id, agent_id=agent_id)
    assert "\r" not in headers[ERROR] and "\n" not in headers[ERROR]
    reply = decode_reply(headers, body, task_id=task_id, capability="cap")
    assert (reply.type, reply.error, reply.sender) == (MessageType.ERROR, error, agent_id)
    exc = error_from_reply(reply)
    assert type(exc) is WIRE_ERRORS.get(code, TaskError)
    assert (exc.code, exc.message, exc.agent_id, exc.task_id) == (code, message, agent_id, task_id)


@PROPERTY
@given(value=json_values, agent_id=agent_ids, task_id=task_ids)
def test_results_round_trip(value: Any, agent_id: str, task_id: str) -> None:
    headers, body = encode_result(value, task_id=task_id, agent_id=agent_id)
    reply = decode_reply(headers, body, task_id=task_id)
    assert (reply.type, reply.payload, reply.sender) == (MessageType.RESULT, value, agent_id)


@PROPERTY
@given(code=header_values, data=bodies)
def test_a_foreign_error_reply_keeps_its_header_code_or_is_a_500(code: str, data: bytes) -> None:
    reply = decode_reply({ERROR_CODE: code, ERROR: "nope"}, data, task_id="t")
    assert reply.type is MessageType.ERROR and reply.error is not None
    try:
        body_error: ErrorInfo | None = msgspec.json.decode(data, type=ErrorBody).error
    except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
        body_error = None
    if body_error is not None:
        assert reply.error == body_error
    else:
        try:
            expected = int(code)
        except ValueError:
            expected = 500
        assert reply.error.code == expected
