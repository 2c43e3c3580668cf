"""Guards of the seam to nats-py (``bus/_natspy.py``): one per internal it relies on.

If a nats-py release moves one of these, a test here names it, before any
dispatch hangs. CI runs them at both ends of ``NATS_PY_RANGE``.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import random
import subprocess
import sys
import tomllib
from pathlib import Path

import nats.errors
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bus import _natspy
from bus._natspy import NATS_PY_RANGE, NatsClient, check_nats_py_version

ROOT = Path(__file__).resolve().parents[2]


def _source(function: object) -> str:
    return inspect.getsource(function)  # type: ignore[arg-type]


def test_outbox_append_finds_the_buffer_the_flusher_writes() -> None:
    nc = Client()
    for name in ("_pending", "_pending_data_size", "_max_pending_size", "_flush_queue"):
        assert hasattr(nc, name), name
    for name in ("_flusher_task", "_status", "stats"):
        assert hasattr(nc, name), name
    assert isinstance(nc._pending, list)
    assert {"out_msgs", "out_bytes"} <= nc.stats.keys()
    assert Client.CONNECTED != Client.CLOSED
    flusher = _source(Client._flusher)
    assert "self._flush_queue.get()" in flusher
    assert "self._pending" in flusher and "self._pending_data_size = 0" in flusher
    assert inspect.iscoroutinefunction(Client._flush_pending)
    assert "force_flush" in inspect.signature(Client._flush_pending).parameters


def test_taking_over_a_queue_matches_what_the_reader_does() -> None:
    # the reader counts a message as pending, then put_nowait()s it; drain joins the queue
    reader = _source(Client._process_msg)
    assert "sub._pending_size += payload_size" in reader
    assert "sub._pending_queue.put_nowait(msg)" in reader
    assert "await self._pending_queue.join()" in _source(Subscription._drain)
    sub = Subscription(Client(), 1, "s")
    assert sub._pending_size == 0
    assert sub._wait_for_msgs_task is None  # no callback, no task of its own
    assert hasattr(sub._pending_queue, "task_done")


def test_the_fast_header_parser_replaces_nats_pys_on_the_instance() -> None:
    assert isinstance(inspect.getattr_static(Client, "_parse_header_lines"), staticmethod)
    assert "self._parse_header_lines(" in _source(Client._process_headers)
    assert NatsClient()._parse_header_lines is _natspy.parse_header_lines


def test_a_message_that_cannot_be_built_is_dropped_by_the_reader() -> None:
    reader = _source(Client._process_msg)
    assert "await self._process_headers(headers)" in reader
    assert "msg = self._build_message(sid, subject, reply, data, hdr)" in reader
    assert "if not msg:\n            return" in reader
    parameters = list(inspect.signature(Client._build_message).parameters)
    assert parameters == ["self", "sid", "subject", "reply", "data", "headers"]
    nc = NatsClient()
    assert nc._build_message(1, b"a.b", b"\xff", b"", None) is None
    assert nc._build_message(1, b"a.\xc3\x28", b"", b"", None) is None
    assert nc.malformed_messages == 2
    good = nc._build_message(1, b"a.b", b"r", b"x", {"K": "v"})
    assert good is not None and (good.subject, good.reply, good.headers) == ("a.b", "r", {"K": "v"})


@pytest.mark.anyio
async def test_a_malformed_header_block_costs_only_its_headers() -> None:
    nc = NatsClient()
    assert await nc._process_headers(b"NATS") is None  # shorter than NATS/1.0
    assert await nc._process_headers(b"NATS/1.0 \xff\xfe\r\n\r\n") is None
    assert nc.malformed_messages == 2
    assert await nc._process_headers(b"NATS/1.0\r\nA: b\r\n\r\n") == {"A": "b"}


def test_credentials_are_checked_where_nats_py_builds_its_connect() -> None:
    assert "self._connect_command()" in _source(Client._process_connect_init)
    nc = NatsClient()
    for name in ("_server_info", "_current_server", "options"):
        assert hasattr(nc, name), name
    nc.require_tls = True
    nc._server_info = {}
    with pytest.raises(_natspy.TLSNotOffered):
        nc._connect_command()
    nc.options.update(verbose=False, pedantic=False, name=None, no_echo=None)
    nc._server_info = {"tls_required": True}
    assert nc._connect_command().startswith(b"CONNECT ")


def test_server_selection_reads_the_wait_before_each_pick() -> None:
    select = _source(Client._select_next_server)
    assert 'self.options["reconnect_time_wait"]' in select
    assert "s.reconnects += 1" in select
    assert "self._server_pool" in select
    assert "await self._select_next_server()" in _source(Client._attempt_reconnect)


def test_closing_finds_the_buffer_and_the_subscriptions() -> None:
    nc = Client()
    nc._pending = [b"PUB a 1\r\nx\r\n"]
    nc._pending_data_size = 12
    assert _natspy.drop_reconnect_buffer(nc) == 12
    assert (nc._pending, nc._pending_data_size) == ([], 0)

    async def cb(msg: object) -> None:
        pass

    read, called = Subscription(nc, 1, "a"), Subscription(nc, 2, "b", cb=cb)
    nc._subs = {1: read, 2: called}
    assert _natspy.unread_subscriptions(nc) == [read]


@pytest.mark.parametrize(
    ("version", "ok"),
    [
        ("2.15.0", True),
        ("2.16.0", True),
        ("2.16.9", True),
        ("2.14.0", False),
        ("2.9.0", False),
        ("2.17.0", False),
        ("2.17.0rc1", False),
        ("3.0.0", False),
        ("unknown", False),
    ],
)
def test_the_version_check_admits_the_tested_range_only(version: str, ok: bool) -> None:
    low, high = NATS_PY_RANGE
    assert low == (2, 15) and high == (2, 17)
    if ok:
        assert check_nats_py_version(version) == version
    else:
        with pytest.raises(ImportError, match=r"nats-py >=2\.15,<2\.17") as caught:
            check_nats_py_version(version)
        assert "pip install 'nats-py[nkeys]>=2.15,<2.17'" in str(caught.value)


@pytest.mark.parametrize("version", ["2.9.0", "2.14.0", "2.17.0"])
def test_an_untested_nats_py_is_refused_at_import(tmp_path: Path, version: str) -> None:
    # a dist-info first on sys.path is what importlib.metadata finds for nats-py
    dist = tmp_path / f"nats_py-{version}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: nats-py\nVersion: {version}\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-c", "import bus"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: callboard needs nats-py >=2.15,<2.17"), done.stderr
    assert f"nats-py {version} is installed" in last
    assert "pip install 'nats-py[nkeys]>=2.15,<2.17'" in last


def test_the_pin_is_the_range_the_seam_checks() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    pins = [d for d in pyproject["project"]["dependencies"] if d.startswith("nats-py")]
    (low_major, low_minor), (high_major, high_minor) = NATS_PY_RANGE
    assert pins == [f"nats-py[nkeys]>={low_major}.{low_minor},<{high_major}.{high_minor}"]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "NATS_PY_RANGE" in ci and "tests/unit/test_natspy_seam.py" in ci


def _subscribed(nc: Client, sid: int = 1, **limits: int) -> Subscription:
    sub = Subscription(nc, sid, "s", **limits)  # type: ignore[arg-type]
    nc._subs[sid] = sub
    return sub


@pytest.mark.anyio
async def test_a_taken_queue_does_the_readers_bookkeeping() -> None:
    nc = NatsClient()
    sub = _subscribed(nc)
    taken = _natspy.take_over_queue(sub)
    assert sub._pending_queue is taken
    assert taken.take() is None and not taken.stopped
    block = b"NATS/1.0\r\nK: v\r\n\r\n"
    await nc._process_msg(1, b"s", b"_INBOX.r", b"12345", block)
    assert sub._pending_size == 5 + len(block) and sub.pending_msgs == 1  # headers count
    msg = taken.take()
    assert msg is not None and (msg.subject, msg.reply, msg.data) == ("s", "_INBOX.r", b"12345")
    assert msg.headers == {"K": "v"} and msg._sid == 1 and msg._client is nc
    assert sub._pending_size == 0 and taken.take() is None
    taken.stop()
    await taken.wait()  # returns at once once stopped
    assert taken.take() is None and taken.stopped


@pytest.mark.anyio
async def test_the_taken_path_reads_as_nats_pys_own_reader() -> None:
    # the same frames through nats-py's reader (its asyncio.Queue) and ours
    theirs, ours = Client(), NatsClient()
    their_sub, our_sub = _subscribed(theirs), _subscribed(ours)
    taken = _natspy.take_over_queue(our_sub)
    frames = [
        (b"a.b", b"", b"x", None),
        (b"a.b", b"_INBOX.1", b"", b"NATS/1.0\r\nAgent-Task-Id: t\r\nX:  y \r\n\r\n"),
        (b"a.b", b"r", b"{}", b"NATS/1.0 503\r\n\r\n"),
        (b"a.b", b"r", b"{}", b"NATS/1.0\r\n\r\n"),
    ]
    for subject, reply, data, headers in frames:
        await theirs._process_msg(1, subject, reply, data, headers)  # type: ignore[arg-type]
        await ours._process_msg(1, subject, reply, data, headers)

    def fields(msg: Msg | None) -> tuple[object, ...]:
        assert msg is not None
        return dataclasses.astuple(dataclasses.replace(msg, _client=None))

    expected = [fields(their_sub._pending_queue.get_nowait()) for _ in frames]
    assert [fields(taken.take()) for _ in frames] == expected
    assert ours.stats == theirs.stats and our_sub._received == their_sub._received == 4
    # a subject that is not UTF-8 is dropped and counted; the reader goes on
    await ours._process_msg(1, b"a.\xff", b"", b"x", None)
    assert taken.take() is None and ours.malformed_messages == 1
    # what the reader relies on in nats-py's message and subscription
    assert [f.name for f in dataclasses.fields(Msg)][:8] == [
        *("_client", "subject", "reply", "data", "headers", "_metadata", "_ackd", "_sid")
    ]
    for name in ("_max_msgs", "_jsi", "_future", "_pending_bytes_limit", "_pending_msgs_limit"):
        assert hasattr(our_sub, name), name


@pytest.mark.anyio
async def test_a_taken_queue_over_nats_pys_limits_drops_as_nats_py_does() -> None:
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    nc = NatsClient()
    nc._error_cb = on_error
    taken = _natspy.take_over_queue(_subscribed(nc, 1, pending_bytes_limit=8))
    await nc._process_msg(1, b"s", b"", b"1234", None)
    await nc._process_msg(1, b"s", b"", b"12345", None)  # 9 bytes pending: over
    assert [type(e).__name__ for e in errors] == ["SlowConsumerError"]
    taken = _natspy.take_over_queue(_subscribed(nc, 2, pending_msgs_limit=1))
    await nc._process_msg(2, b"s", b"", b"1", None)
    await nc._process_msg(2, b"s", b"", b"2", None)
    assert len(errors) == 2 and taken.qsize() == 1


@pytest.mark.anyio
async def test_header_bytes_count_against_the_pending_limit() -> None:
    """nats-py counts only payloads as pending: a flood of tiny payloads under large
    header blocks would queue without bound under a bytes limit. A taken queue
    counts both, and drops past the limit as nats-py drops a slow consumer."""
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    nc = NatsClient()
    nc._error_cb = on_error
    sub = _subscribed(nc, 1, pending_bytes_limit=4096)
    taken = _natspy.take_over_queue(sub)
    block = b"NATS/1.0\r\nPadding: " + b"x" * 1000 + b"\r\n\r\n"
    for _ in range(10):
        await nc._process_msg(1, b"s", b"_INBOX.r", b"{}", block)
    held = 4096 // (len(block) + 2)
    assert taken.qsize() == held and len(errors) == 10 - held
    assert all(isinstance(e, nats.errors.SlowConsumerError) for e in errors)
    assert sub._pending_size == held * (len(block) + 2)
    while taken.take() is not None:
        pass
    assert sub._pending_size == 0


@pytest.mark.anyio
async def test_a_drain_waits_until_the_taken_queue_is_empty() -> None:
    import anyio

    nc = NatsClient()
    taken = _natspy.take_over_queue(_subscribed(nc))
    for data in (b"1", b"2"):
        await nc._process_msg(1, b"s", b"", data, None)
    joined = False

    async def join() -> None:
        nonlocal joined
        await taken.join()  # what Subscription._drain awaits
        joined = True

    async with anyio.create_task_group() as tg:
        tg.start_soon(join)
        await anyio.wait_all_tasks_blocked()
        assert not joined
        taken.take()
        await anyio.wait_all_tasks_blocked()
        assert not joined
        taken.take()
    assert joined


def test_a_handed_over_queue_passes_each_message_on_at_once() -> None:
    sub = Subscription(Client(), 1, "s")
    handed: list[Msg] = []
    _natspy.take_over_queue(sub, handed.append)
    msg = Msg(Client(), subject="s", data=b"123")
    sub._pending_size += len(msg.data)
    sub._pending_queue.put_nowait(msg)  # what nats-py's reader calls
    assert handed == [msg]
    assert sub._pending_size == 0
    assert sub._pending_queue.empty() and sub._pending_queue.qsize() == 0


def _blocks() -> list[bytes]:
    pieces = [b"a", b"K", b":", b" ", b"\t", b"\r", b"\n", b"\r\n", b"\xc3\xa9", b"\xff", b"-"]
    rng = random.Random(15)
    blobs = [b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 16))) for _ in range(3000)]
    heads = [b"NATS/1.0\r\n", b"NATS/1.0 503\r\n", b"NATS/1.0 100 Idle\r\n", b"XXXXXXXX\r\n"]
    return [head + blob for head in heads for blob in blobs] + [b"", b"NATS/1.0", b"NATS/1.0\r\n"]


@pytest.mark.anyio
async def test_the_usual_header_block_is_parsed_as_nats_py_parses_it() -> None:
    ours, theirs = NatsClient(), Client()
    compared = 0
    for block in _blocks():
        try:
            expected = await theirs._process_headers(block)
        except Exception:
            continue  # ours drops that message's headers (test above)
        assert await ours._process_headers(block) == expected, block
        compared += 1
    assert compared > 10_000


class _Recorder:
    """What a parser hands on, recorded; ``deliver`` says whether ``_delivered`` takes it."""

    def __init__(self, deliver: bool) -> None:
        self.seen: list[tuple[object, ...]] = []
        self.deliver = deliver

    def _delivered(self, *message: object) -> bool:
        if self.deliver:
            self.seen.append(("msg", *message))
        return self.deliver

    async def _process_msg(self, *message: object) -> None:
        self.seen.append(("msg", *(bytes(m) if isinstance(m, bytearray) else m for m in message)))

    _undelivered = _process_msg  # what our parser calls when _delivered declines

    async def _process_ping(self) -> None:
        self.seen.append(("ping",))

    async def _process_pong(self) -> None:
        self.seen.append(("pong",))

    async def _process_info(self, info: dict[str, object]) -> None:
        self.seen.append(("info", info))

    async def _process_err(self, err: str) -> None:
        self.seen.append(("err", err))


def _hmsg(subject: str, sid: int, reply: str, headers: bytes, payload: bytes) -> bytes:
    size = len(headers)
    line = f"HMSG {subject} {sid} {reply} {size} {size + len(payload)}".replace("  ", " ")
    return line.encode() + b"\r\n" + headers + payload + b"\r\n"


_STREAM = b"".join(
    (
        b'INFO {"server_id": "x y", "max_payload": 1048576}\r\n',
        b"MSG a.b 1 5\r\nhello\r\n",
        b"MSG a.b 1 _INBOX.r 0\r\n\r\n",
        b"PING\r\n",
        _hmsg("a.c", 2, "_INBOX.r", b"NATS/1.0\r\nK: v\r\n\r\n", b"abc"),
        b"+OK\r\nPONG\r\n",
        _hmsg("a.c", 2, "", b"NATS/1.0\r\n\r\n", b"hi"),
        _hmsg("a.c", 2, "_INBOX.q", b"NATS/1.0 503\r\n\r\n", b""),
        b"MSG a.b 1 8\r\nwith\r\nnl\r\n",
        b"-ERR 'Permissions Violation for Publish to x'\r\n",
        b"MSG a.b\t1  3\r\nabc\r\n",
    )
)


@pytest.mark.anyio
@pytest.mark.parametrize("deliver", [False, True])
async def test_the_parser_reads_every_command_as_nats_pys_does(deliver: bool) -> None:
    from nats.protocol.parser import Parser

    theirs = _Recorder(deliver=False)
    reference = Parser(theirs)
    await reference.parse(_STREAM)
    assert len(theirs.seen) == 11 and reference.buf == bytearray()
    rng = random.Random(13)
    for cuts in [[], *[sorted(rng.sample(range(1, len(_STREAM)), 6)) for _ in range(300)]]:
        ours = _Recorder(deliver)
        parser = type(NatsClient()._ps)(ours)
        for lo, hi in zip([0, *cuts], [*cuts, len(_STREAM)], strict=True):
            await parser.parse(_STREAM[lo:hi])
        assert ours.seen == theirs.seen, cuts
        assert parser.buf == bytearray() and parser.state == reference.state


@pytest.mark.anyio
async def test_a_large_message_read_in_small_pieces_is_buffered_not_copied_per_read() -> None:
    """Each read of a message's payload is only appended: copying the buffer per
    read would make a large message cost time quadratic in its size."""
    payload = bytes(range(256)) * 4096  # 1 MiB
    stream = _hmsg("a.c", 2, "_INBOX.r", b"NATS/1.0\r\nK: v\r\n\r\n", payload) + b"PING\r\n"
    ours = _Recorder(deliver=True)
    parser = type(NatsClient()._ps)(ours)
    await parser.parse(stream[:1000])
    buffer = parser.buf
    pieces = range(1000, len(stream), 1024)
    for lo in pieces:
        await parser.parse(stream[lo : lo + 1024])
        if lo + 1024 < len(stream) - len(b"PING\r\n"):
            assert parser.buf is buffer and ours.seen == [], lo  # appended, nothing copied
    headers = b"NATS/1.0\r\nK: v\r\n\r\n"
    assert ours.seen == [("msg", 2, b"a.c", b"_INBOX.r", payload, headers), ("ping",)]
    assert parser.buf == bytearray()


@pytest.mark.anyio
async def test_the_parser_refuses_what_nats_pys_refuses() -> None:
    import nats.errors
    from nats.protocol.parser import Parser

    for line in (b"HMSG a x 1 2\r\n", b"BOGUS\r\n", b"MSG a b c d e f\r\n"):
        with pytest.raises(nats.errors.ProtocolError):
            await Parser(_Recorder(False)).parse(line)
        with pytest.raises(nats.errors.ProtocolError):
            await type(NatsClient()._ps)(_Recorder(False)).parse(line)
    # what the parser relies on in nats-py's
    parser = Parser(_Recorder(False))
    assert (parser.buf, parser.state) == (bytearray(), 1)
    assert "await self.nc._process_msg(sid, subject, reply, payload, hdr)" in _source(Parser.parse)
    assert "self._ps.parse(b)" in _source(Client._read_loop)
