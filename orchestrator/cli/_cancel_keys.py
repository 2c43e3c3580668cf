"""The CLI's cancel secret: one per user, kept in a file, so that ``callboard
cancel`` can cancel a durable task that an earlier ``callboard submit --durable``
of the same user sent.

A task carries the hash of a token derived from the caller's secret and the task
ID (see ``bus._cancel_token``); a process with a random secret could never cancel
a task after it exits. The secret is 32 random bytes, written on first use to
``$CALLBOARD_CANCEL_KEY_FILE`` (default ``~/.config/callboard/cancel.key``, under
``$XDG_CONFIG_HOME`` if set), readable by its owner only. Whoever reads that file
can cancel the user's durable tasks, and nothing else.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from bus import ConfigError
from bus._cancel_token import CancelKeys

__all__ = ["CANCEL_KEY_ENV", "cancel_key_path", "cli_cancel_keys"]

CANCEL_KEY_ENV = "CALLBOARD_CANCEL_KEY_FILE"
_SECRET_BYTES = 32


def cancel_key_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where the CLI keeps its cancel secret."""
    env = os.environ if environ is None else environ
    if given := env.get(CANCEL_KEY_ENV):
        return Path(given).expanduser()
    config = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config / "callboard" / "cancel.key"


def cli_cancel_keys(*, create: bool, environ: Mapping[str, str] | None = None) -> CancelKeys:
    """The CLI's cancel keys, from its secret file (written first if ``create``).

    Raises:
        ConfigError: the file is missing (and not to be created), unreadable or
            not a secret this module wrote.
    """
    path = cancel_key_path(environ)
    if create and not path.exists():
        _write_secret(path)
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise ConfigError(
            f"no cancel key at {path}: 'callboard cancel' cancels durable tasks that "
            f"'callboard submit --durable' sent with the same key (set {CANCEL_KEY_ENV} to "
            "the file the submitting user had)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the cancel key {path}: {exc}") from None
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) != _SECRET_BYTES:
        raise ConfigError(
            f"the cancel key {path} is not {_SECRET_BYTES} bytes in hex: delete it to make a "
            "new one (the durable tasks sent with the old one can no longer be cancelled)"
        )
    return CancelKeys(secret)


def _write_secret(path: Path) -> None:
    """Create the secret file, owner-only; a file another process wrote first wins."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise ConfigError(
            f"cannot write the cancel key {path} ({exc}): set {CANCEL_KEY_ENV} to a writable file"
        ) from None
    with os.fdopen(fd, "w", encoding="ascii") as file:
        file.write(secrets.token_hex(_SECRET_BYTES) + "\n")
