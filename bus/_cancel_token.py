"""Cancel tokens: only the caller of a task can cancel it.

A task id is no secret: it is on the status stream for every reader. So the
caller sends, with each task, the hash of a token that only it knows
(``Agent-Cancel-Hash``); a cancel must present the token itself
(``Agent-Cancel-Token``), and the agent stops the task only if the token hashes
to what the task carried. Neither is ever put on the status stream. A task sent
without a hash (a plain ``nats req``) cannot be cancelled; its deadline still ends it.

The token need not be stored per task: it is derived from the task id and a
secret of the caller's client (``CancelKeys``), so a retry under the same id
keeps the same token, and the client can cancel with nothing but the id.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["CANCEL_HASH", "CANCEL_TOKEN", "CancelKeys", "token_matches"]

CANCEL_HASH = "Agent-Cancel-Hash"
"""Task header: hex BLAKE2b-128 of the caller's cancel token."""
CANCEL_TOKEN = "Agent-Cancel-Token"
"""Cancel header: the token whose hash the task carried."""

_DIGEST = 16
_UNKEYED = hashlib.blake2b(digest_size=_DIGEST)
"""BLAKE2b-128 with no data yet: copying it skips parsing the parameters per hash."""


def _hash(token: str) -> str:
    hashed = _UNKEYED.copy()
    hashed.update(token.encode())
    return hashed.hexdigest()


class CancelKeys:
    """One client's cancel tokens, derived from a random secret it never sends."""

    __slots__ = ("_keyed",)

    def __init__(self, secret: bytes | None = None) -> None:
        key = secret if secret is not None else secrets.token_bytes(32)
        # keyed once; each token copies the keyed state (cheaper than re-keying)
        self._keyed = hashlib.blake2b(key=key, digest_size=_DIGEST)

    def token(self, task_id: str) -> str:
        """The token that cancels ``task_id`` (send it only to cancel)."""
        keyed = self._keyed.copy()
        keyed.update(task_id.encode())
        return keyed.hexdigest()

    def hash_of(self, task_id: str) -> str:
        """The hash the task carries, so that an agent can check a token:
        ``_hash(self.token(task_id))``, written out (it runs once per task)."""
        keyed = self._keyed.copy()
        keyed.update(task_id.encode())
        hashed = _UNKEYED.copy()
        hashed.update(keyed.hexdigest().encode())
        return hashed.hexdigest()


def token_matches(expected_hash: str | None, token: str | None) -> bool:
    """Whether ``token`` is the one whose hash the task carried (constant time).

    False when the task carried no hash or the cancel no token.
    """
    if not expected_hash or not token or len(token) > 4 * _DIGEST:
        return False
    return hmac.compare_digest(_hash(token), expected_hash)
