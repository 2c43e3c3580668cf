"""Malformed frames sent the way an attacker would, and what a process counts of them.

``raw_client`` speaks the NATS protocol over a bare TCP socket, so a test can send
bytes no client library would (a reply subject that is not UTF-8, a broken
header block). ``refusals`` reads ``callboard_refused_messages_total`` of each
reason from a real ``/metrics`` scrape; ``wait_for_refusals`` waits for the counts
a test expects (refusals on callbacks of their own have no event to wait on).
"""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping
from urllib.parse import urlsplit

import anyio
from anyio.abc import SocketStream
from prometheus_client.parser import text_string_to_metric_families

from bus import REFUSAL_REASONS

REFUSED = "callboard_refused_messages_total"
POLL = 0.05
"""Seconds between two scrapes while a count is still below what is expected."""


async def raw_client(nats_url: str) -> SocketStream:
    """A TCP connection to the server, past its INFO and our CONNECT."""
    url = urlsplit(nats_url)
    assert url.hostname is not None and url.port is not None
    stream = await anyio.connect_tcp(url.hostname, url.port)
    info = await stream.receive()
    assert info.startswith(b"INFO ")
    await stream.send(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"protocol":1}\r\n')
    return stream


async def send_and_confirm(stream: SocketStream, frames: bytes) -> None:
    """Send ``frames``; the PONG says the server has routed them."""
    await stream.send(frames + b"PING\r\n")
    received = b""
    while b"PONG\r\n" not in received:
        received += await stream.receive()


def hpub(subject: str, header_block: bytes, payload: bytes = b"") -> bytes:
    """An HPUB frame carrying ``header_block`` as it is, well-formed or not."""
    sizes = f"{len(header_block)} {len(header_block) + len(payload)}"
    return f"HPUB {subject} {sizes}\r\n".encode() + header_block + payload + b"\r\n"


def _scrape(base_url: str) -> dict[str, float]:
    with urllib.request.urlopen(base_url + "/metrics", timeout=10) as response:
        body = response.read().decode()
    return {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == REFUSED
    }


async def refusals(base_url: str) -> dict[str, float]:
    """Reason -> count of ``base_url``/metrics now (every reason is exported, at 0 first)."""
    return await anyio.to_thread.run_sync(_scrape, base_url)


async def wait_for_refusals(
    base_url: str, expected: Mapping[str, int], timeout: float = 10.0
) -> dict[str, float]:
    """The scrape once every reason of ``expected`` has reached its count (the others are
    expected at 0); the caller asserts it is exactly that.

    Raises:
        AssertionError: a count stayed below what was expected for ``timeout`` seconds.
    """
    wanted = {reason: expected.get(reason, 0) for reason in REFUSAL_REASONS}
    seen: dict[str, float] = {}
    try:
        with anyio.fail_after(timeout):
            while True:
                seen = await refusals(base_url)
                if all(seen.get(reason, 0) >= count for reason, count in wanted.items()):
                    return seen
                await anyio.sleep(POLL)  # no event to wait on: scrape again soon
    except TimeoutError:
        raise AssertionError(f"refusals still {seen}, expected {wanted}") from None


def exactly(expected: Mapping[str, int]) -> dict[str, float]:
    """Every reason's expected count: those of ``expected``, the others 0."""
    return {reason: float(expected.get(reason, 0)) for reason in REFUSAL_REASONS}
