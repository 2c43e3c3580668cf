"""An agent answers only to inboxes: no reflection through a forged reply subject.

Whoever sends a request picks its reply subject, and ``allow_responses`` lets
the agent publish there. A caller that names ``agents.status.math-1.offline``
or ``agents.task.echo`` as the reply would make an honest agent forge an event
or inject a task with the agent's own permissions. So the agent refuses every
reply subject that is not an inbox: the first token must start with ``_INBOX``
(nats-py's ``_INBOX.``, a role's own ``_INBOX_agents.``, the ``nats`` CLI's and
other clients' default), with no wildcard, never inside the system's prefix nor a
``$`` system subject (``$SRV.``, ``$JS.``, ``$KV.``, ``$SYS.``). Such a request is
dropped unanswered, counted, and the first one logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

__all__ = ["INBOX_TOKEN_START", "ReplyGuard", "is_inbox"]

log = logging.getLogger("callboard.security")

INBOX_TOKEN_START = "_INBOX"
"""What the first token of every reply subject an agent answers to starts with."""


def is_inbox(subject: str) -> bool:
    """Whether ``subject`` is an inbox an agent may answer to (see the module doc)."""
    return (
        subject.startswith(INBOX_TOKEN_START)
        and "*" not in subject
        and ">" not in subject
        and " " not in subject
        and "\t" not in subject
    )


class ReplyGuard:
    """Decides, per request, whether its reply subject may be answered.

    Attributes:
        refused: requests dropped so far for their reply subject.
        on_refused: called once per refusal (the ``reply_not_inbox`` series); None
            counts only ``refused``.
    """

    __slots__ = ("_logged", "on_refused", "owner", "refused")

    def __init__(self, owner: str, *, on_refused: Callable[[], None] | None = None) -> None:
        self.owner = owner
        self.refused = 0
        self.on_refused = on_refused
        self._logged = False

    def allows(self, reply: str) -> bool:
        """True for no reply or an inbox; otherwise count (and log once) a refusal."""
        if not reply or is_inbox(reply):
            return True
        self.refused += 1
        if self.on_refused is not None:
            self.on_refused()
        if not self._logged:
            self._logged = True
            log.warning(
                "%s dropped a request whose reply subject %.120r is not an inbox "
                "(a reflection attempt: answering would publish there with this "
                "agent's permissions); later ones are only counted",
                self.owner,
                reply,
            )
        return False
