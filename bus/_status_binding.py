"""Status events are believed only as far as their subject says.

The server lets each agent user publish only under its own agents'
``<prefix>.status.<agent_id>.>`` (see ``deploy/nats/accounts.conf``); what the
body says (``agent``, ``state``) is the agent's claim. An event whose body names
another agent or another state than its subject is a forgery or a bug: readers
(the live registry, the monitor) drop it, count it, and log the first one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ._messages import StatusEvent
from ._subjects import Subjects

__all__ = ["StatusBinding"]

log = logging.getLogger("callboard.security")


class StatusBinding:
    """Checks that a status event agrees with the subject it arrived on.

    Args:
        subjects: the system's subjects.
        on_rejected: called once per rejected event (the ``status_body_mismatch``
            series); None counts only ``rejected``.

    Attributes:
        rejected: events dropped so far because body and subject disagreed.
    """

    __slots__ = ("_logged", "on_rejected", "rejected", "subjects")

    def __init__(
        self, subjects: Subjects, *, on_rejected: Callable[[], None] | None = None
    ) -> None:
        self.subjects = subjects
        self.rejected = 0
        self.on_rejected = on_rejected
        self._logged = False

    def accepts(self, subject: str, event: StatusEvent) -> bool:
        """True if ``event`` names the agent and state of ``subject``; else count it."""
        parsed = self.subjects.parse_status(subject)
        state = event.__struct_config__.tag
        if parsed is not None and parsed == (event.agent, state):
            return True
        self.rejected += 1
        if self.on_rejected is not None:
            self.on_rejected()
        if not self._logged:
            self._logged = True
            log.warning(
                "dropped a status event whose body (agent %.40r, state %.20r) disagrees "
                "with its subject %.120r: a forgery, or an agent that is not callboard's; "
                "later ones are only counted",
                event.agent,
                state,
                subject,
            )
        return False
