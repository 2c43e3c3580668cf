"""Whether a NATS connection can serve, and when it never will again.

A process whose connection cannot serve must say so (``/healthz`` 503), and a
process whose connection will not come back must end, with an error, so that
its supervisor (systemd ``Restart=on-failure``, Kubernetes) restarts it. Two
things never mend by themselves: nats-py closing the connection for good (a
refusal on a live connection, reconnect attempts used up), and a server that
refuses the login on every reconnect (a revoked password, a rotated key).
Both are read from the ``ConnectionState`` that ``connect`` keeps.
"""

from __future__ import annotations

import anyio

from ._connection_metrics import ConnectionState

__all__ = ["CONNECTION_STATUSES", "DEFAULT_MAX_REFUSALS", "connection_status", "wait_until_lost"]

DEFAULT_MAX_REFUSALS = 3
"""Logins refused in a row after which a connection counts as lost: a node of a
cluster with a stale config may refuse once; a revoked password refuses forever.
With the default backoff, the third refusal comes some 3 to 7 s after the first."""
CONNECTION_STATUSES = ("connecting", "connected", "reconnecting", "refused", "closed")


def connection_status(state: ConnectionState) -> str:
    """One word from ``CONNECTION_STATUSES``; only ``connected`` can serve.

    Reads plain values only, so it may run in a metrics server's thread.
    """
    if state.lost:
        return "closed"
    if state.connected:
        return "connected"
    if state.refusals:
        return "refused"
    return "reconnecting" if state.reconnects or state.disconnected_seconds() else "connecting"


def lost_reason(state: ConnectionState, *, max_refusals: int = DEFAULT_MAX_REFUSALS) -> str | None:
    """Why the connection will not come back, or None while it may."""
    if state.lost:
        return "the NATS connection was closed for good"
    if state.refusals >= max_refusals:
        return f"the NATS server refused the login {state.refusals} times in a row"
    return None


async def wait_until_lost(
    state: ConnectionState, *, max_refusals: int = DEFAULT_MAX_REFUSALS
) -> str:
    """Wait until the connection is lost for good (see ``lost_reason``); return why."""
    while (reason := lost_reason(state, max_refusals=max_refusals)) is None:
        changed = anyio.Event()
        stop = state.listen(changed.set)
        try:
            await changed.wait()
        finally:
            stop()
    return reason
