"""Permissions violations, as a command's error rather than a warning and a timeout.

A server that denies a publish says so on the connection (``-ERR 'Permissions
Violation for Publish to "agents.task.math"'``) and drops the message: a
request then waits out its timeout, and nats-py only logs the violation. A
one-shot command knows better: a violation on a subject it uses is the answer,
so the command ends at once with ``PermissionDenied`` (exit code 6), naming
the user and the subject. Violations a command expects (``agents`` pinging
agents a read-only user may not address) are noted, not warned about.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import anyio

from bus import CallboardError

__all__ = ["PermissionDenied", "PermissionWatch"]

log = logging.getLogger("callboard.cli")

_VIOLATION = re.compile(r'permissions violation for (publish|subscription) to "([^"]*)"', re.I)


class PermissionDenied(CallboardError):
    """The server's permissions do not let this login use a subject the command needs."""

    type = "permission_denied"


Expected = Callable[[str, str], bool]
"""Whether a violation (``publish``/``subscription``, subject) is one the command expects."""


class PermissionWatch:
    """The violations of one connection: expected ones noted, the others fatal to
    the block run under ``guard``.

    Args:
        user: the login, to name in the error (None: the login in use).
        expected: the violations the command expects and handles itself.
    """

    def __init__(self, user: str | None, expected: Expected | None = None) -> None:
        self._user = f"user {user!r}" if user else "this login"
        self._expected = expected or (lambda kind, subject: False)
        self._scopes: set[anyio.CancelScope] = set()
        self.denied: PermissionDenied | None = None
        self.tolerated: set[str] = set()

    def on_error(self, exc: Exception) -> bool:
        """``connect``'s error listener: True (handled, not logged) for a violation."""
        match = _VIOLATION.search(str(exc))
        if match is None:
            return False
        kind, subject = match.group(1).lower(), match.group(2)
        if self._expected(kind, subject):
            log.debug("expected permissions violation: %s to %s", kind, subject)
            self.tolerated.add(subject)
            return True
        if self.denied is None:
            verb = "publish to" if kind == "publish" else "subscribe to"
            advice = (
                "each role reads only its own inbox: set its inbox prefix (--inbox-prefix, "
                "NATS_INBOX_PREFIX or the context's inbox_prefix; _INBOX_<user> in "
                "deploy/nats/accounts.conf)"
                if subject.lower().startswith("_inbox.")
                else "use a login whose permissions allow it, e.g. the orchestrator's of "
                "deploy/nats/accounts.conf"
            )
            self.denied = PermissionDenied(
                f"the NATS server does not let {self._user} {verb} {subject!r} (permissions "
                f"violation): {advice}"
            )
        for scope in self._scopes:
            scope.cancel()
        return True

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Run a block that ends at once with ``PermissionDenied`` on a violation.

        Raises:
            PermissionDenied: the server denied a subject while the block ran.
        """
        with anyio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                yield
            finally:
                self._scopes.discard(scope)
        if scope.cancelled_caught and self.denied is not None:
            raise self.denied
