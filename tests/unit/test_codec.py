"""The wire codec: headers + JSON body, exactly as protocol v1 says."""

from __future__ import annotations

import msgspec
import pytest

from bus import (
    AgentError,
    AgentMessage,
    AgentOverloaded,
    BadInput,
    DelegationError,
    ErrorInfo,
    MessageType,
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
    decode_reply,
    decode_task,
    encode_error,
    encode_result,
    encode_task,
    error_from_reply,
)


class Point(msgspec.Struct):
    x: int
    y: int


def test_task_round_trip_keeps_every_field() -> None:
    message = AgentMessage(
        type=MessageType.TASK,
        task_id="t-1",
        payload={"expression": "6*7"},
        sender="orch",
        deadline_ms=1_700_000_000_000,
        chain=("a-1", "b-2"),
        seq=3,
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    headers, body = encode_task(message)
    assert headers == {
        TASK_ID: "t-1",
        SENDER: "orch",
        DEADLINE: "1700000000000",
        CHAIN: "a-1,b-2",
        SEQ: "3",
        TRACEPARENT: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    }
    assert body == b'{"expression":"6*7"}'
    decoded = decode_task(headers, body, task_id="t-1", capability="math", receiver="m-1")
    assert decoded.payload == {"expression": "6*7"}
    assert decoded.chain == ("a-1", "b-2")
    assert decoded.seq == 3
    assert decoded.deadline_ms == 1_700_000_000_000
    assert decoded.sender == "orch"
    assert decoded.capability == "math"
    assert decoded.receiver == "m-1"
    assert decoded.id == "t-1"


def test_a_plain_body_without_headers_is_a_complete_task() -> None:
    task = decode_task(None, b'{"expression": "6*7"}', task_id="x", capability="math")
    assert task.payload == {"expression": "6*7"}
    assert task.sender == "anonymous"
    assert task.deadline_ms is None
    assert task.chain == ()


def test_empty_body_is_null_payload() -> None:
    assert decode_task(None, b"", task_id="x", capability="echo").payload is None


def test_typed_payload_is_validated_and_the_field_is_named() -> None:
    decoder = msgspec.json.Decoder(Point)
    task = decode_task(None, b'{"x": 1, "y": 2}', task_id="x", capability="c", decoder=decoder)
    assert task.payload == Point(1, 2)
    with pytest.raises(BadInput, match=r"\$\.y") as info:
        decode_task(None, b'{"x": 1, "y": "two"}', task_id="x", capability="c", decoder=decoder)
    assert info.value.code == 400
    with pytest.raises(BadInput, match="missing required field `y`"):
        decode_task(None, b'{"x": 1}', task_id="x", capability="c", decoder=decoder)


@pytest.mark.parametrize("body", [b"not json", b'{"a": ', b"\xff\xfe", b'{"a": "\xff"}'])
def test_malformed_json_is_bad_input(body: bytes) -> None:
    with pytest.raises(BadInput, match="not valid JSON"):
        decode_task(None, body, task_id="x", capability="c")


@pytest.mark.parametrize("header", [DEADLINE, SEQ])
def test_malformed_integer_headers_are_bad_input(header: str) -> None:
    with pytest.raises(BadInput, match=header):
        decode_task({header: "soon"}, b"{}", task_id="x", capability="c")


def test_result_reply_round_trip() -> None:
    headers, body = encode_result({"value": 42}, task_id="t", agent_id="math-1")
    assert headers == {TASK_ID: "t", AGENT_ID: "math-1"}
    reply = decode_reply(headers, body, task_id="t")
    assert reply.type is MessageType.RESULT
    assert reply.payload == {"value": 42}
    assert reply.sender == "math-1"


def test_error_reply_follows_the_micro_convention() -> None:
    error = ErrorInfo(code=400, type="bad_input", message="bad\nthing")
    headers, body = encode_error(error, task_id="t", agent_id="math-1")
    assert headers[ERROR_CODE] == "400"
    assert headers[ERROR] == "bad thing"  # no newline may reach a header
    assert msgspec.json.decode(body) == {
        "error": {"code": 400, "type": "bad_input", "message": "bad\nthing"}
    }
    reply = decode_reply(headers, body, task_id="t")
    assert reply.type is MessageType.ERROR
    assert reply.error == error
    exc = error_from_reply(reply)
    assert isinstance(exc, AgentError)
    assert (exc.code, exc.agent_id, exc.task_id) == (400, "math-1", "t")


def test_error_reply_from_a_foreign_micro_service_uses_the_headers() -> None:
    reply = decode_reply({ERROR: "nope", ERROR_CODE: "503"}, b"", task_id="t")
    exc = error_from_reply(reply)
    assert isinstance(exc, AgentOverloaded)
    assert exc.message == "nope"


def test_409_becomes_a_delegation_error() -> None:
    headers, body = encode_error(
        ErrorInfo(code=409, type="delegation_cycle", message="cycle"), task_id="t", agent_id="a"
    )
    assert isinstance(error_from_reply(decode_reply(headers, body, task_id="t")), DelegationError)


def test_a_reply_that_is_not_json_is_a_502() -> None:
    reply = decode_reply({AGENT_ID: "x"}, b"<html>", task_id="t")
    assert reply.type is MessageType.ERROR
    assert reply.error is not None and reply.error.code == 502


def test_non_serialisable_payload_is_bad_input() -> None:
    message = AgentMessage(type=MessageType.TASK, task_id="t", payload={"when": object()})
    with pytest.raises(BadInput, match="not JSON-serialisable"):
        encode_task(message)
