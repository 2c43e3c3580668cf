"""A server outage in the daemon's log: the refused reconnects are said once, then at
most once a window with a count, however often nats-py retries.

The outage is real (the daemon's nats-server stops), and its length is measured in
reconnect attempts, not seconds: a listener on the server's port counts the daemon's
attempts (accepting and closing each, as a server that dies at once would) until there
have been enough, then a new nats-server takes the port and the daemon reconnects.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from reconnect_support import attempts_counted
from system_support import Daemon

from bus import EmbeddedServer, new_agent_suffix

pytestmark = pytest.mark.system

ATTEMPTS = 6
"""Reconnect attempts the outage lasts: each one used to print a warning."""


def test_an_outage_prints_one_reconnect_warning_not_one_per_attempt(
    start_daemon: Callable[..., Daemon], cli_env: dict[str, str], prefix: str
) -> None:
    server = EmbeddedServer(jetstream=False)
    server.start()
    port = server.port
    try:
        env = {**cli_env, "NATS_URL": server.url}
        daemon = start_daemon(
            [{"type": "echo", "id": f"echo-{new_agent_suffix()}"}],
            prefix=prefix,
            env=env,
            heartbeat_interval=60.0,
            nats={"reconnect_wait": 0.1},  # a short outage, in seconds, of many attempts
        )
        server.stop()
        daemon.proc.stderr.wait_for("disconnected from NATS")
        with attempts_counted(port) as counter:
            counter.wait(ATTEMPTS)
        server = EmbeddedServer(port=port, jetstream=False)
        server.start()
        daemon.proc.stderr.wait_for("reconnected to NATS")
    finally:
        server.stop()
    text = daemon.proc.stderr.text
    outage = text[text.index("disconnected from NATS") : text.index("reconnected to NATS")]
    warnings = [line for line in outage.splitlines() if "NATS connection error" in line]
    assert counter.count >= ATTEMPTS
    assert len(warnings) <= 3, "\n".join(warnings)  # a refusal, an EOF, the EOF at the kill
