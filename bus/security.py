"""Public face of what callboard itself checks, beyond the server's permissions:
reply subjects (no reflection), cancel tokens (only the caller cancels), and
status events that must agree with their subject. See the README's security section."""

from __future__ import annotations

from ._cancel_token import CANCEL_HASH, CANCEL_TOKEN, CancelKeys, token_matches
from ._reply_guard import INBOX_TOKEN_START, ReplyGuard, is_inbox
from ._status_binding import StatusBinding

__all__ = [
    "CANCEL_HASH",
    "CANCEL_TOKEN",
    "INBOX_TOKEN_START",
    "CancelKeys",
    "ReplyGuard",
    "StatusBinding",
    "is_inbox",
    "token_matches",
]
