"""The durable decoders given values any submitter may store: a value nested past
Python's recursion limit is rejected like any other malformed one (msgspec raises
RecursionError for it, not a MsgspecError)."""

from __future__ import annotations

import pytest

from bus.durable import CorruptRecord, decode_cancel_request, decode_record

DEEP = b'{"task_id": "t-1", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"


def test_a_too_deeply_nested_cancel_request_is_none() -> None:
    assert decode_cancel_request(DEEP, "t-1") is None


def test_a_too_deeply_nested_record_is_corrupt() -> None:
    with pytest.raises(CorruptRecord, match="not a task record"):
        decode_record(DEEP, task_id="t-1", capability="math", revision=3)
