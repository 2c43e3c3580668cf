"""What a process refused from the bus, by reason: ``callboard_refused_messages_total``.

Everything that arrives over NATS is untrusted, so each process drops what an
attacker or a broken client sends (see the README's threat model). A drop the
operator cannot see is a drop nobody investigates: each one is counted here,
in one series per reason, on the ``/metrics`` of the process that refused it
(the agent daemon, ``callboard monitor --metrics``, the gateway).

The ``reason`` label is a word from ``REFUSAL_REASONS`` and nothing else: no
label value is ever taken from the refused message (an attacker would choose
it, and the series with it). Every reason is exported from the start, at 0, so
that ``increase()`` sees the first refusal. The refusing objects hold a bound
``inc`` (``counter(reason)``): nothing is done until something is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

from prometheus_client import CollectorRegistry

from ._prometheus import LoopCounter

__all__ = ["REFUSAL_REASONS", "RefusalMetrics", "RefusalReason"]

RefusalReason = Literal[
    "reply_not_inbox",
    "cancel_token",
    "status_body_mismatch",
    "malformed_status_event",
    "malformed_frame",
]
"""Why a message was refused:

- ``reply_not_inbox``: a request (task, ping, discovery) whose reply subject is
  not an ``_INBOX`` inbox, dropped unanswered (a reflection attempt);
- ``cancel_token``: a cancel of a running task without its caller's token, or a
  durable task's stored cancel request whose token is not its caller's;
- ``status_body_mismatch``: a status event whose body names another agent or
  state than its subject (a forgery);
- ``malformed_status_event``: a status event that is not one (not JSON, wrong shape);
- ``malformed_frame``: a message whose subject or reply subject is not UTF-8
  (dropped by the connection) or whose header block does not parse (delivered
  without its headers); the connection's log says which.
"""
REFUSAL_REASONS: tuple[RefusalReason, ...] = get_args(RefusalReason)


class RefusalMetrics:
    """``callboard_refused_messages_total{reason}`` of one process, in its registry.

    Args:
        registry: where the counter is registered (one per registry).

    Attributes:
        refused: the counter family.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.refused = LoopCounter(
            "callboard_refused_messages_total",
            "Messages from the bus refused as an attack or malformed, by reason",
            ("reason",),
            registry=registry,
        )
        self._children = {reason: self.refused.labels(reason) for reason in REFUSAL_REASONS}

    def counter(self, reason: RefusalReason) -> Callable[[], None]:
        """The function that counts one refusal for ``reason`` (bind it once)."""
        return self._children[reason].inc

    def count(self, reason: RefusalReason) -> None:
        """Count one refusal for ``reason``."""
        self._children[reason].inc()
