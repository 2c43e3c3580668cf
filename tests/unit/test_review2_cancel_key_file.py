"""Attacks on the CLI's cancel key file (``orchestrator.cli._cancel_keys``): whoever
knows the secret in it can cancel every durable task of the user, so the file must
be whole when any process reads it, and be the user's own, readable by it alone."""

from __future__ import annotations

import multiprocessing
import os
import stat
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from bus import ConfigError
from bus._cancel_token import CancelKeys
from orchestrator.cli._cancel_keys import CANCEL_KEY_ENV, cli_cancel_keys

_PROCESSES = 8
_ROUNDS = 40
KNOWN_SECRET = "ab" * 32
"""A secret someone else knows (an attacker's planted key)."""


def _first_use(path: str, start: Barrier, results: Queue[str]) -> None:
    start.wait()
    try:
        results.put(cli_cancel_keys(create=True, environ={CANCEL_KEY_ENV: path}).token("t"))
    except ConfigError as exc:
        results.put(f"error: {exc.message}")


def test_concurrent_first_uses_all_get_the_one_secret(tmp_path: Path) -> None:
    """Two `submit --durable` started at once on a fresh machine: neither may fail,
    nor read the file while the other is still writing it (nor make a second secret)."""
    context = multiprocessing.get_context("fork")
    for round_ in range(_ROUNDS):
        path = str(tmp_path / str(round_) / "cancel.key")
        start = context.Barrier(_PROCESSES)
        results: Queue[str] = context.Queue()
        processes = [
            context.Process(target=_first_use, args=(path, start, results))
            for _ in range(_PROCESSES)
        ]
        for process in processes:
            process.start()
        tokens = [results.get(timeout=30) for _ in processes]
        for process in processes:
            process.join(timeout=30)
        assert len(set(tokens)) == 1 and not tokens[0].startswith("error"), (round_, tokens)
        assert not [p for p in Path(path).parent.iterdir() if p.name != "cancel.key"]


def _planted(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(KNOWN_SECRET + "\n")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660], ids=oct)
def test_a_key_file_others_may_read_is_refused(tmp_path: Path, mode: int) -> None:
    """E.g. CALLBOARD_CANCEL_KEY_FILE in a shared directory, where another user put a
    file with a secret of its own first: using it would let that user cancel ours."""
    path = tmp_path / "cancel.key"
    _planted(path)
    path.chmod(mode)
    with pytest.raises(ConfigError, match="only it may read"):
        cli_cancel_keys(create=True, environ={CANCEL_KEY_ENV: str(path)})


def test_a_symlink_to_a_readable_key_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "key"
    _planted(target)
    target.chmod(0o644)
    path = tmp_path / "config" / "callboard" / "cancel.key"
    path.parent.mkdir(parents=True)
    path.symlink_to(target)
    with pytest.raises(ConfigError, match="only it may read"):
        cli_cancel_keys(create=True, environ={"XDG_CONFIG_HOME": str(tmp_path / "config")})


def test_a_dangling_symlink_is_not_followed_to_write_the_secret(tmp_path: Path) -> None:
    """A symlink planted where the key will be made, pointing where its planter can
    read: the secret is not written through it."""
    target = tmp_path / "readable-by-the-planter"
    path = tmp_path / "cancel.key"
    path.symlink_to(target)
    with pytest.raises(ConfigError, match="no cancel key"):
        cli_cancel_keys(create=True, environ={CANCEL_KEY_ENV: str(path)})
    assert not target.exists()


@pytest.mark.skipif(os.getuid() != 0, reason="giving a file to another user needs root")
def test_a_key_file_of_another_user_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cancel.key"
    _planted(path)
    path.chmod(0o600)
    os.chown(path, 65534, 65534)
    with pytest.raises(ConfigError, match="only it may read"):
        cli_cancel_keys(create=True, environ={CANCEL_KEY_ENV: str(path)})


def test_the_users_own_private_key_is_used(tmp_path: Path) -> None:
    path = tmp_path / "cancel.key"
    _planted(path)
    path.chmod(0o600)
    keys = cli_cancel_keys(create=False, environ={CANCEL_KEY_ENV: str(path)})
    assert keys.token("t") == CancelKeys(bytes.fromhex(KNOWN_SECRET)).token("t")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_fifo_planted_as_the_key_is_refused_without_hanging(tmp_path: Path) -> None:
    """Opening a FIFO for reading waits for a writer: a planted one must not hang
    every `submit --durable` of the user."""
    path = tmp_path / "cancel.key"
    os.mkfifo(path, 0o600)
    with pytest.raises(ConfigError, match="only it may read"):
        cli_cancel_keys(create=True, environ={CANCEL_KEY_ENV: str(path)})


def test_a_directory_as_the_key_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the cancel key"):
        cli_cancel_keys(create=True, environ={CANCEL_KEY_ENV: str(tmp_path)})
