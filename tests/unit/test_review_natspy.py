"""An attacker's review of the seam's parser (``bus._natspy._Parser``): whatever a
publisher puts in the bytes it controls (subject and reply tokens, header block,
payload) costs at most its own message, never the read loop or the messages
after it, and everything else reads exactly as nats-py's own parser reads it."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.msg import Msg
from nats.protocol.parser import Parser
from test_natspy_seam import _hmsg, _Recorder

from bus._natspy import NatsClient

pytestmark = pytest.mark.anyio

_OUR_PARSER = type(NatsClient()._ps)


_Parsed = tuple[list[tuple[object, ...]], str | None, bytes]


async def _parsed(
    parser_class: type[Parser], stream: bytes, cuts: list[int], deliver: bool
) -> _Parsed:
    recorder = _Recorder(deliver)
    parser = parser_class(recorder)
    error: str | None = None
    try:
        for lo, hi in zip([0, *cuts], [*cuts, len(stream)], strict=True):
            await parser.parse(stream[lo:hi])
    except Exception as exc:  # compared: the same error, or none, in both
        error = type(exc).__name__
    return recorder.seen, error, bytes(parser.buf)


async def test_a_subject_or_reply_holding_a_vertical_tab_or_form_feed_costs_nothing() -> None:
    """The server lets \\x0b and \\x0c into a publisher's subject and reply (it splits
    arguments on space, tab, CR and LF only; checked with nats-server 2.x): nats-py's
    parser splits on them too and raises ProtocolError, so one such request made the
    agent's connection reconnect and lose the rest of that read."""
    stream = b"".join(
        (
            b"MSG agents.task.echo 1 _INBOX.a\x0bb 2\r\nhi\r\n",
            b"MSG _INBOX.x.5\x0c 3 2\r\nhi\r\n",  # stripped by bytes.split
            _hmsg("agents.task.echo", 1, "_INBOX.c\x0cd\x0b", b"NATS/1.0\r\nK: v\r\n\r\n", b"{}"),
            b"HMSG a\x0b 2 12 12\r\nNATS/1.0\r\n\r\n\r\n",
            b"MSG agents.task.echo 1 _INBOX.ok 2\r\nok\r\nPING\r\n",
        )
    )
    expected = [
        ("msg", 1, b"agents.task.echo", b"_INBOX.a\x0bb", b"hi", None),
        ("msg", 3, b"_INBOX.x.5\x0c", b"", b"hi", None),
        ("msg", 1, b"agents.task.echo", b"_INBOX.c\x0cd\x0b", b"{}", b"NATS/1.0\r\nK: v\r\n\r\n"),
        ("msg", 2, b"a\x0b", b"", b"", b"NATS/1.0\r\n\r\n"),
        ("msg", 1, b"agents.task.echo", b"_INBOX.ok", b"ok", None),
        ("ping",),
    ]
    for deliver in (False, True):
        for cut in range(len(stream) + 1):  # in two reads, split at every byte
            cuts = [cut] if 0 < cut < len(stream) else []
            assert await _parsed(_OUR_PARSER, stream, cuts, deliver) == (expected, None, b""), cut


async def test_a_malformed_line_is_refused_as_nats_py_refuses_it() -> None:
    """Only the server's framing can be malformed; the extra split must not make
    ours read what nats-py refuses (a sid or a size that is not a number)."""
    for line in (b"MSG a\x0bb c 2\r\nhi\r\n", b"HMSG a 1 x\x0b 2\r\n", b"MSG a 1 r\x0b\r\n"):
        theirs = await _parsed(Parser, line, [], False)
        assert theirs[1] == "ProtocolError"
        assert (await _parsed(_OUR_PARSER, line, [], False))[:2] == theirs[:2], line


_PAYLOADS = (
    *(b"", b"x", b"\r\n", b"\r", b"\n", b"\xff\xfe", b"PING\r\n", b"-ERR 'x'\r\n"),
    *(b"\r\nMSG a 1 3\r\nabc\r\n", b"HMSG a 2 4 4\r\n", b"NATS/1.0 503\r\n\r\n"),
)
_HEADER_BLOCKS = (
    *(b"NATS/1.0\r\nK: v\r\n\r\n", b"NATS/1.0 503\r\n\r\n", b"NATS", b"NATS/1.0\r\n\r\n"),
    *(b"XXXXXXXX\r\nA:\xffb\r\n\r\n", b"NATS/1.0 100 Idle\r\nK: v\r\n\r\n", b"NATS/1.0\r\n"),
    b"NATS/1.0\r\nMSG a 1 0\r\n\r\n",
)
_CONTROL = (
    *(b"PING\r\n", b"PONG\r\n", b"+OK\r\n", b"-ERR 'Permissions Violation'\r\n"),
    b'INFO {"max_payload": 1048576}\r\n',
)
_TOKENS = (b"a.b", b"a.\xff", b"x\x1cy", b"_INBOX.r", b"a", b"-ERR", b"+OK", b"9")


def _command(rng: random.Random) -> bytes:
    kind = rng.randrange(10)
    if kind < 5:
        return _CONTROL[kind]
    payload = b"".join(rng.choice(_PAYLOADS) for _ in range(rng.randrange(4)))
    subject, reply = rng.choice(_TOKENS), rng.choice((b"", *_TOKENS))
    middle = [subject, str(rng.randrange(1, 4)).encode(), *([reply] if reply else [])]
    if kind < 7:
        return b" ".join((b"MSG", *middle, b"%d" % len(payload))) + b"\r\n" + payload + b"\r\n"
    block = rng.choice(_HEADER_BLOCKS)
    sizes = (b"%d" % len(block), b"%d" % (len(block) + len(payload)))
    return b" ".join((b"HMSG", *middle, *sizes)) + b"\r\n" + block + payload + b"\r\n"


async def test_random_streams_read_as_nats_pys_parser_reads_them() -> None:
    """Differential: streams of every command, whose payloads and header blocks hold
    whole commands, statuses and stray CR/LF, read in random pieces (and one byte
    at a time), give what nats-py's parser gives in one read."""
    rng = random.Random(20261207)
    compared = 0
    for round_ in range(400):
        stream = b"".join(_command(rng) for _ in range(rng.randrange(1, 8)))
        theirs = await _parsed(Parser, stream, [], False)
        assert theirs[1] is None
        pieces = [sorted(rng.sample(range(1, len(stream)), min(5, len(stream) - 1)))]
        if round_ % 40 == 0:
            pieces.append(list(range(1, len(stream))))
        for cuts in pieces:
            for deliver in (False, True):
                assert await _parsed(_OUR_PARSER, stream, cuts, deliver) == theirs, (stream, cuts)
                compared += 1
    assert compared > 800


async def test_what_nats_pys_own_reader_raises_on_a_message_costs_that_message_only(
    nats_url: str,
) -> None:
    """A message nats-py's ``_process_msg`` cannot handle, from whoever may publish
    to the subject: a reply of the wrong form on an ordered consumer's deliver
    subject raises ``NotJSMessageError`` there, which ended nats-py's read loop
    with a log line (no reconnect: the connection stayed up, deaf, until its
    pings went unanswered). Dropped and counted instead; the reader goes on."""
    import anyio

    from bus import connect

    async with connect(nats_url) as nc, connect(nats_url) as attacker:
        assert isinstance(nc, NatsClient)
        js = nc.jetstream()
        stream = f"REVIEW{random.randrange(1 << 30)}"
        await js.add_stream(name=stream, subjects=[f"{stream}.>"])
        try:
            sub = await js.subscribe(f"{stream}.>", ordered_consumer=True)
            await nc.flush()  # the server has its SUB: what the attacker sends reaches it
            await attacker.publish(sub.subject, b"x", reply="not.a.js.ack")
            await attacker.flush()  # the server has routed it to nc: nc reads it before
            await nc.flush(timeout=5)  # the PONG to this (a dead reader never reads one)
            await nc.publish(f"{stream}.after", b"after")
            with anyio.fail_after(10):
                msg = await sub.next_msg(timeout=10)
            assert msg.data == b"after"
            assert nc.malformed_messages == 1 and nc.stats["reconnects"] == 0
        finally:
            await js.delete_stream(stream)


_HEADER_PIECES = st.sampled_from(
    (
        *(b"NATS/1.0", b" 503", b"\r\n", b"\r", b"\n", b":", b" ", b"\t", b"\x0b", b"\x0c"),
        *(b"\x1c", b"\x85", b"\xa0", b"\xc3\xa9", b"\xff", b"\x00", b"K", b"Agent-Task-Id", b"v"),
    )
)


@settings(max_examples=800, deadline=None)
@given(st.lists(_HEADER_PIECES | st.binary(max_size=4), max_size=24).map(b"".join))
def test_the_header_parser_is_nats_pys_on_any_block(block: bytes) -> None:
    """``parse_header_lines`` against nats-py's ``_parse_header_lines`` (generated
    blocks: separators, every kind of blank, non-ASCII, stray CR/LF)."""
    from nats.aio.client import Client

    from bus._headers import parse_header_lines

    assert parse_header_lines(block) == Client._parse_header_lines(block)
    # twice: the second call reads its keys from the cache of clean keys
    assert parse_header_lines(block) == Client._parse_header_lines(block)


async def test_a_long_line_holding_a_vertical_tab_cannot_smuggle_commands_in_its_payload() -> None:
    """A publisher's reply of ~4 KB holding a \\x0b made a ``MSG`` line that neither
    our split nor nats-py's regex read; nats-py's parser leaves a line of 4096
    bytes or more unread, so ours skipped it and read the payload behind it as
    commands: a forged ``MSG`` on any subscription of the connection (a reply to
    a pending request on the inbox's sid, past every permission). Now the line is
    read as the server framed it and its payload stays a payload."""
    forged = b"MSG _INBOX.victim.7 9 6\r\nforged\r\nPING"
    reply = b"_INBOX.x\x0b" + b"r" * 4100
    stream = b"MSG agents.task.echo 1 %s %d\r\n%s\r\n" % (reply, len(forged), forged)
    stream += b"MSG agents.task.echo 1 _INBOX.ok 2\r\nok\r\n"
    expected = [
        ("msg", 1, b"agents.task.echo", reply, forged, None),
        ("msg", 1, b"agents.task.echo", b"_INBOX.ok", b"ok", None),
    ]
    for deliver in (False, True):
        for cuts in ([], [10], [len(stream) // 2], list(range(4000, len(stream), 7))):
            assert await _parsed(_OUR_PARSER, stream, cuts, deliver) == (expected, None, b"")


async def test_a_line_nats_py_leaves_unread_is_refused_not_skipped() -> None:
    """nats-py's parser leaves an unknown line of 4096 bytes or more unread (it waits
    for more, for ever); skipping it, ours read what followed, which may be a
    payload, as commands. Such a line (a broken server) is a ``ProtocolError``
    now: the connection reconnects, and nothing behind it is read."""
    stream = b"BOGUS " + b"x" * 4100 + b"\r\nMSG a 1 6\r\nforged\r\n"
    for deliver in (False, True):
        assert await _parsed(_OUR_PARSER, stream, [], deliver) == (
            [],
            "ProtocolError",
            stream[:4108],
        )


async def test_a_write_that_fills_the_buffer_is_sent_even_when_its_caller_does_not_wait(
    nats_url: str,
) -> None:
    """``Outbox.append`` returned True over the buffer's limit without kicking the
    flusher, for its caller to wait; three callers do not (the lead worker's last
    held answers, begun events, a cancel): from an idle flusher, those bytes sat
    until another write or a PING (the server's first comes ~2 s after connecting,
    then every 2 minutes; the client's every 20 s). Now it is always kicked."""
    import anyio

    from bus import connect
    from bus._wire import wire_for

    async with connect(nats_url) as nc, connect(nats_url) as reader:
        sub = await reader.subscribe("review.big")
        await reader.flush()
        wire = wire_for(nc)
        frame = wire.pub("review.big", b"x" * 900_000)
        batch = frame * (nc._max_pending_size // len(frame) + 1)  # one held batch
        assert nc._pending_data_size == 0 and nc._flush_queue.empty()
        assert wire.write_nowait(batch, batch.count(b"PUB ")) is True  # not awaited
        assert not nc._flush_queue.empty()  # the flusher will write it
        with anyio.fail_after(5):
            for _ in range(batch.count(b"PUB ")):
                assert len((await sub.next_msg(timeout=5)).data) == 900_000


async def test_a_write_while_the_connection_drains_its_subscriptions_is_sent_at_once(
    nats_url: str,
) -> None:
    """While a connection drains its subscriptions (closing: their callbacks finish
    the messages they have), what those callbacks write must still go out; the
    outbox appended it without kicking the flusher, so it waited for the whole
    drain (up to its 30 s timeout) or a PING."""
    import anyio

    from bus import connect
    from bus._wire import wire_for

    async with connect(nats_url) as reader, connect(nats_url) as nc:
        answers = await reader.subscribe("review.answer")
        await reader.flush()
        go, release = anyio.Event(), anyio.Event()
        kicked: list[bool] = []

        async def slow_callback(msg: Msg) -> None:
            await go.wait()
            wire = wire_for(nc)
            wire.write_nowait(wire.pub("review.answer", msg.data))
            kicked.append(not nc._flush_queue.empty())
            await release.wait()

        await nc.subscribe("review.task", cb=slow_callback)
        await nc.flush()
        await reader.publish("review.task", b"answer me")
        await reader.flush()
        async with anyio.create_task_group() as tg:
            tg.start_soon(nc.drain)
            with anyio.fail_after(5):
                while not nc.is_draining:  # noqa: ASYNC110 (nats-py has no event for it)
                    await anyio.sleep(0.01)
                await anyio.wait_all_tasks_blocked()  # its UNSUB is flushed
                go.set()
                assert (await answers.next_msg(timeout=5)).data == b"answer me"
            assert kicked == [True]
            release.set()
        assert nc.is_closed
