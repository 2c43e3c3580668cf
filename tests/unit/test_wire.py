"""The frames the hot path writes and the header parser it reads with, against
nats-py's own (the seam's guards of nats-py's internals are in
``test_natspy_seam.py``); and ``bus._metrics``'s lock-free prometheus_client
values against the stock ones.
"""

from __future__ import annotations

import itertools
import random
import re

import nats.errors
import pytest
from nats.aio.client import Client
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from bus._cancel_token import CancelKeys
from bus._wire import PlainTaskHeaders
from bus.codec import CAPABILITY, TASK_HEADERS, TASK_ID, task_headers
from bus.observability._metrics import DURATION_BUCKETS
from bus.observability._prometheus import LoopCounter as _Counter
from bus.observability._prometheus import LoopHistogram as _Histogram
from bus.wire import BadHeaderError, header_block, parse_header_lines, task_header_block


def _corpus() -> list[bytes]:
    pieces = [b"a", b"K", b":", b" ", b"\t", b"\r", b"\n", b"\r\n", b"\x1c", b"\x0b"]
    pieces += [b"\xc3\xa9", b"\xff", b"\x85", b"-", b"\x00", b"\x0c", b"\x1f", b"Agent-Id"]
    rng = random.Random(8)
    blobs = [b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 24))) for _ in range(20_000)]
    blobs += [
        b"Agent-Task-Id: abc\r\nAgent-Sender: orchestrator\r\nAgent-Deadline: 1\r\n\r\n",
        b"A:b\r\nA :c\r\n B:d\r\nC\xc3\xa9: e\r\nD: \xff\r\n\r\n",
        b"Name:\tValue  \r\nNo colon here\r\n:empty name\r\n",
    ]
    return blobs


def test_header_parsing_matches_nats_py_on_every_input() -> None:
    for blob in _corpus():
        assert parse_header_lines(blob) == Client._parse_header_lines(blob), blob


def test_header_blocks_are_built_as_nats_py_builds_them() -> None:
    block = header_block({" Agent-Task-Id ": " t-1 ", "": "skipped", "X": "a\r\nb"})
    # nats-py: keys stripped, empty keys skipped, values stripped, CR/LF -> space
    assert block == b"NATS/1.0\r\nAgent-Task-Id: t-1\r\nX: a  b\r\n\r\n"
    with pytest.raises(BadHeaderError):
        header_block({"bad key": "v"})
    assert header_block({}) == b"NATS/1.0\r\n\r\n"
    assert header_block({"A": "é"}) == "NATS/1.0\r\nA: é\r\n\r\n".encode()


_FIELD_VALUES: dict[str, tuple[object, ...]] = {
    "task_id": ("t-1", " padded\r\n "),
    "sender": (None, "", "orchestrator", "a\nb"),
    "deadline_ms": (None, 0, 1_700_000_000_000),
    "chain": ((), ("a-1",), ("a-1", "b-2")),
    "seq": (None, 0, 7),
    "traceparent": (None, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    "capability": (None, "math"),
    "cancel_hash": (None, "0123456789abcdef0123456789abcdef"),
}


def test_every_task_header_is_in_the_one_table() -> None:
    assert set(_FIELD_VALUES) == {header.field for header in TASK_HEADERS}


def test_the_task_header_block_is_the_header_block_of_the_task_headers() -> None:
    for values in itertools.product(*_FIELD_VALUES.values()):
        fields = dict(zip(_FIELD_VALUES, values, strict=True))
        assert task_header_block(**fields) == header_block(task_headers(**fields)), fields
    assert task_headers(task_id="t", capability="math") == {TASK_ID: "t", CAPABILITY: "math"}
    with pytest.raises(TypeError, match="not a task header field: colour"):
        task_headers(task_id="t", colour="red")


def test_a_plain_tasks_block_from_the_template_is_the_task_header_block() -> None:
    senders = ("orchestrator", "", " ", "100% sure %s", "é\r\nx", " padded ")
    task_ids = ("t-1", " padded\r\n ", "%d%%", "é", " ")
    for sender, task_id in itertools.product(senders, task_ids):
        plain = PlainTaskHeaders(sender)
        for deadline_ms, cancel_hash in ((0, "ab"), (1_700_000_000_000, CancelKeys().hash_of("t"))):
            expected = task_header_block(
                task_id=task_id, sender=sender, deadline_ms=deadline_ms, cancel_hash=cancel_hash
            )
            assert plain.block(task_id, deadline_ms, cancel_hash) == expected, (sender, task_id)


def _exposition(registry: CollectorRegistry) -> bytes:
    return re.sub(rb"\n[^\n]*_created[^\n]*", b"", generate_latest(registry))


def test_lock_free_metrics_expose_what_the_stock_ones_do() -> None:
    fast, stock = CollectorRegistry(), CollectorRegistry()
    counters = [
        cls("c_total", "doc", ("l",), registry=r) for cls, r in ((_Counter, fast), (Counter, stock))
    ]
    histograms = [
        cls("h_seconds", "doc", ("l",), registry=r, buckets=DURATION_BUCKETS)
        for cls, r in ((_Histogram, fast), (Histogram, stock))
    ]
    for value in (0.0, 0.0001, 0.0005, 0.001, 0.3, 5.0, 300.0, 1e9, float("nan")):
        for histogram in histograms:
            histogram.labels("a").observe(value)
    for counter in counters:
        counter.labels("a").inc()
        counter.labels("b").inc(2.5)
        with pytest.raises(ValueError):
            counter.labels("a").inc(-1)
        with pytest.raises(ValueError):
            counter.inc()  # a parent with labels is not observable
    assert _exposition(fast) == _exposition(stock)


def test_the_task_frames_are_what_the_general_framing_builds() -> None:
    """The reply and the begun events are framed by hand, in one piece each: the
    same bytes as ``Wire.hpub`` of the reply's header block and ``EventFrames.event``
    of each event encoded on its own (the ``started`` event included)."""
    import msgspec

    from bus import Accepted, Started
    from bus.codec import AGENT_ID
    from bus.wire import EventFrames, ReplyFrames, Wire

    nc = Client()
    nc._max_payload = 1_000_000
    wire = Wire(nc)
    replies, events = ReplyFrames(wire, "echo-1"), EventFrames(wire, "agents.status.echo-1.")
    for task_id, sender in [("t", "s"), ('q"u\\o,"ts":1', 'a "b" \\ é\x01'), ("x" * 128, "")]:
        body = b'{"a":"%s"}' % task_id.encode()
        headers = header_block({TASK_ID: task_id, AGENT_ID: "echo-1"})
        assert replies.result("_INBOX.r", task_id, body) == wire.hpub("_INBOX.r", "", headers, body)
        fields = dict(agent="echo-1", ts=12.5, task_id=task_id, capability="echo", sender=sender)
        accepted = msgspec.json.encode(Accepted(**fields))
        started = msgspec.json.encode(Started(**fields))
        assert events.begun(accepted) == (
            events.event("accepted", accepted) + events.event("started", started)
        )
    nc._max_payload = 10
    with pytest.raises(nats.errors.MaxPayloadError):
        replies.result("_INBOX.r", "t", b"x" * 10)
    with pytest.raises(nats.errors.MaxPayloadError):
        events.begun(accepted)
