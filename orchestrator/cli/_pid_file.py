"""``callboard run --pid-file``: where scripts find the daemon to signal it.

``pidof callboard`` cannot: the process is ``python3`` running the ``callboard``
script, and every other ``callboard`` command looks the same to ``pgrep``. A pid
file names this daemon alone, for ``kill -HUP "$(cat FILE)"``, systemd's
``PIDFile=`` and init scripts.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

from bus import ConfigError

__all__ = ["pid_file"]


@contextlib.contextmanager
def pid_file(path: str | None) -> Iterator[None]:
    """Write this process's id to ``path`` for the block's duration; None writes nothing.

    A file that names a live process other than this one is refused (another daemon
    owns it); a stale one is replaced. SIGHUP is ignored from the moment the file
    exists until the daemon installs its reload handler, so a script that signals
    at once cannot kill the daemon with the signal's default action.

    Raises:
        ConfigError: the file belongs to a live process, or cannot be written.
    """
    if path is None:
        yield
        return
    target = Path(path)
    other = _live_pid_in(target)
    if other is not None:
        raise ConfigError(
            f"the pid file {target} names process {other}, which is running: another "
            "daemon owns it; stop that one or give this one another --pid-file"
        )
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    staging = target.with_name(f".{target.name}.{os.getpid()}")
    try:
        staging.write_text(f"{os.getpid()}\n")
        os.replace(staging, target)  # readers never see a half-written file
    except OSError as exc:
        raise ConfigError(f"cannot write the pid file {target}: {exc.strerror}") from exc
    try:
        yield
    finally:
        if _pid_in(target) == os.getpid():
            target.unlink(missing_ok=True)


def _pid_in(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _live_pid_in(path: Path) -> int | None:
    """The pid in ``path`` if that process runs and is not this one."""
    pid = _pid_in(path)
    if pid is None or pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid  # it runs, as another user
    return pid
