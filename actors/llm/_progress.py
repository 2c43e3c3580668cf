"""A model's token stream as progress events, rate-limited.

A model streams a token every few milliseconds; one status event per token
would flood ``agents.status.>`` for every watcher. Text is accumulated and
published at most once per interval, and the rest at the end of each turn,
so a watcher still sees every character, in order.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["DEFAULT_PROGRESS_INTERVAL", "ProgressReport", "TokenProgress"]

DEFAULT_PROGRESS_INTERVAL = 0.25
"""Seconds between two progress events of one streaming answer."""

ProgressReport = Callable[[str, Any], Awaitable[None]]
"""Publishes one progress event: ``(message, data)``, as ``TaskContext.progress``."""

STREAM_MESSAGE = "model output"


class TokenProgress:
    """Buffers streamed text and reports it at most once per ``interval``.

    Args:
        report: where events go.
        interval: least seconds between two events.
        clock: monotonic seconds (a parameter so tests can drive it).
    """

    def __init__(
        self,
        report: ProgressReport,
        interval: float = DEFAULT_PROGRESS_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._report = report
        self._interval = interval
        self._clock = clock
        self._round = 0
        self._pending: list[str] = []
        self._chars = 0
        self._last = float("-inf")
        self.events = 0

    def start_turn(self, round_number: int) -> None:
        """A new model turn begins; its character count starts at zero."""
        self._round = round_number
        self._pending = []
        self._chars = 0

    async def on_token(self, text: str) -> None:
        """Take one streamed piece; report if the interval has passed."""
        if not text:
            return
        self._pending.append(text)
        self._chars += len(text)
        if self._clock() - self._last >= self._interval:
            await self.flush()

    async def flush(self) -> None:
        """Report the text not yet reported (the end of a turn)."""
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending = []
        self._last = self._clock()
        self.events += 1
        await self._report(
            STREAM_MESSAGE, {"round": self._round, "text": text, "chars": self._chars}
        )
