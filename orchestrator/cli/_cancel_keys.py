"""The CLI's cancel secret: one per user, kept in a file, so that ``callboard
cancel`` can cancel a durable task that an earlier ``callboard submit --durable``
of the same user sent.

A task carries the hash of a token derived from the caller's secret and the task
ID (see ``bus._cancel_token``); a process with a random secret could never cancel
a task after it exits. The secret is 32 random bytes, written on first use to
``$CALLBOARD_CANCEL_KEY_FILE`` (default ``~/.config/callboard/cancel.key``, under
``$XDG_CONFIG_HOME`` if set), readable by its owner only. Whoever reads that file
can cancel the user's durable tasks, and nothing else; so a file that is not the
user's own, or that others may read, is refused rather than used.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Mapping
from pathlib import Path
from stat import S_ISREG

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
        ConfigError: the file is missing (and not to be created), unreadable, not
            this user's own 0600 file, or not a secret this module wrote.
    """
    path = cancel_key_path(environ)
    if create and not path.exists():
        _write_secret(path)
    try:
        text = _read_private(path)
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


def _read_private(path: Path) -> str:
    """The file's text, if only its owner (this user) can read or change it: a key
    another user planted (a file or a symlink to one, in a shared directory) would
    be a secret that user knows.

    Raises:
        ConfigError: the file is not a regular file of this user, or others may read it.
        OSError: it cannot be opened.
    """
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO planted there: no hang
    with open(descriptor, encoding="ascii") as file:
        stat = os.fstat(file.fileno())
        if stat.st_uid != os.getuid() or stat.st_mode & 0o077 or not S_ISREG(stat.st_mode):
            raise ConfigError(
                f"the cancel key {path} must be a file of this user that only it may read "
                f"(mode 0600; it is {oct(stat.st_mode & 0o777)}, owner uid {stat.st_uid}): "
                "whoever can read or replace it can cancel this user's durable tasks"
            )
        return file.read().strip()


def _write_secret(path: Path) -> None:
    """Create the secret file, owner-only, whole at once: written under a temporary
    name, then linked to ``path`` (which fails if it exists, a symlink included), so a
    process that reads it concurrently never sees it empty; a file another process
    wrote first wins."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".cancel.key.")
    except OSError as exc:
        raise ConfigError(
            f"cannot write the cancel key {path} ({exc}): set {CANCEL_KEY_ENV} to a writable file"
        ) from None
    try:
        with os.fdopen(fd, "w", encoding="ascii") as file:  # mkstemp: mode 0600
            file.write(secrets.token_hex(_SECRET_BYTES) + "\n")
            file.flush()
            os.fsync(file.fileno())
        os.link(temporary, path)
    except FileExistsError:
        return
    except OSError as exc:
        raise ConfigError(
            f"cannot write the cancel key {path} ({exc}): set {CANCEL_KEY_ENV} to a writable file"
        ) from None
    finally:
        os.unlink(temporary)
