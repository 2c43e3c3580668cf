"""The hot path's reliance on nats-py and prometheus_client internals, guarded.

``bus._wire`` writes framed messages into nats-py's outgoing buffer and parses
header blocks in place of ``Client._parse_header_lines``; ``bus._metrics``
gives prometheus_client's counters and histograms a lock-free value. If an
upgrade of either library moves what these rely on, these tests say so.
"""

from __future__ import annotations

import inspect
import random
import re

import nats.errors
import pytest
from nats.aio.client import Client
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from bus.observability._metrics import DURATION_BUCKETS
from bus.observability._prometheus import LoopCounter as _Counter
from bus.observability._prometheus import LoopHistogram as _Histogram
from bus.wire import header_block, parse_header_lines


def test_nats_client_has_the_private_parts_the_wire_writes_to() -> None:
    nc = Client()
    for name in ("_pending", "_pending_data_size", "_max_pending_size", "_flush_queue"):
        assert hasattr(nc, name), name
    for name in ("_flusher_task", "_status", "_max_payload", "stats"):
        assert hasattr(nc, name), name
    assert isinstance(nc._pending, list)
    assert {"out_msgs", "out_bytes"} <= nc.stats.keys()
    assert Client.CONNECTED != Client.CLOSED
    assert inspect.iscoroutinefunction(Client._flush_pending)
    assert "force_flush" in inspect.signature(Client._flush_pending).parameters
    assert isinstance(inspect.getattr_static(Client, "_parse_header_lines"), staticmethod)
    # the parser is called through the instance, so an instance attribute replaces it
    source = inspect.getsource(Client._process_headers)
    assert "self._parse_header_lines(" in source


def test_nats_subscriptions_queue_what_the_runner_and_the_inbox_take_over() -> None:
    # bus._inbox replaces a callback-less subscription's queue, and the agent
    # runner's leaders read it: nats-py's reader must go through put_nowait,
    # and drain through join()/task_done()
    from nats.aio.subscription import Subscription

    reader = inspect.getsource(Client._process_msg)
    assert "sub._pending_size += payload_size" in reader
    assert "sub._pending_queue.put_nowait(msg)" in reader
    assert "await self._pending_queue.join()" in inspect.getsource(Subscription._drain)
    sub = Subscription(Client(), 1, "s")
    assert sub._pending_size == 0
    assert sub._wait_for_msgs_task is None  # no callback, no task of its own
    assert hasattr(sub._pending_queue, "task_done")


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
    with pytest.raises(nats.errors.BadHeaderError):
        header_block({"bad key": "v"})
    assert header_block({}) == b"NATS/1.0\r\n\r\n"
    assert header_block({"A": "é"}) == "NATS/1.0\r\nA: é\r\n\r\n".encode()


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
