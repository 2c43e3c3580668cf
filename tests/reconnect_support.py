"""Counting a client's reconnect attempts during an outage, at the server's port.

While its server is down, a client's attempts are counted by a listener on the
server's port that accepts each connection and closes it at once (as a server that
dies on the spot would). A test waits for as many attempts as it needs, an event
rather than a time, and without reading them from the client's log (which says a
burst of identical errors only once).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import anyio

ATTEMPT_TIMEOUT = 10.0
"""Seconds one reconnect attempt may take to come (the client backs off between them)."""


class AttemptCounter:
    """The connections made to one loopback port, each closed at once."""

    def __init__(self, port: int) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen()
        self.count = 0
        self._changed = threading.Condition()

    def serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:  # closed: the outage is over
                return
            connection.close()
            with self._changed:
                self.count += 1
                self._changed.notify_all()

    def wait(self, attempts: int, timeout: float | None = None) -> None:
        """Return once ``attempts`` connections have been made (fail after ``timeout``)."""
        limit = ATTEMPT_TIMEOUT * attempts if timeout is None else timeout
        with self._changed:
            if not self._changed.wait_for(lambda: self.count >= attempts, limit):
                raise AssertionError(f"{self.count} of {attempts} attempts in {limit:g}s")

    async def wait_async(self, attempts: int, timeout: float | None = None) -> None:
        """``wait`` from async code."""
        await anyio.to_thread.run_sync(self.wait, attempts, timeout)


@contextmanager
def attempts_counted(port: int) -> Iterator[AttemptCounter]:
    """Count the connections to ``port`` (free: its server is down) for the block."""
    counter = AttemptCounter(port)
    thread = threading.Thread(target=counter.serve, daemon=True)
    thread.start()
    try:
        yield counter
    finally:
        counter.listener.shutdown(socket.SHUT_RDWR)
        counter.listener.close()
        thread.join(5)
