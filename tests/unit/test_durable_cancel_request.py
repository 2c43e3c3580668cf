"""Cancel requests of queued durable tasks, and the CLI's cancel key file: only the
caller's token counts, and a malformed request is none."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from bus import ConfigError
from bus._cancel_token import CancelKeys
from bus.durable import CancelRequest, decode_cancel_request, request_matches
from bus.durable._cancel import encode_cancel_request
from orchestrator.cli._cancel_keys import CANCEL_KEY_ENV, cli_cancel_keys

KEYS = CancelKeys(b"k" * 32)


def request(token: str, task_id: str = "t-1") -> CancelRequest:
    return CancelRequest(task_id=task_id, token=token, requested_at=1.0)


def test_only_the_callers_token_matches_the_tasks_hash() -> None:
    the_hash = KEYS.hash_of("t-1")
    assert request_matches(request(KEYS.token("t-1")), the_hash)
    assert not request_matches(request(CancelKeys().token("t-1")), the_hash)
    assert not request_matches(request(KEYS.token("t-2")), the_hash)  # another task's
    assert not request_matches(request(the_hash), the_hash)  # the hash is no token
    assert not request_matches(request(KEYS.token("t-1")), "")  # a task without a hash
    assert not request_matches(None, the_hash)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"cancel!",
        b"[]",
        json.dumps({"task_id": "t-1", "requested_at": 1.0}).encode(),  # no token
        json.dumps({"task_id": "t-1", "token": "", "requested_at": 1.0}).encode(),
        json.dumps({"task_id": "t-1", "token": "a" * 65, "requested_at": 1.0}).encode(),
        json.dumps({"task_id": "t-2", "token": "ab", "requested_at": 1.0}).encode(),
        json.dumps({"task_id": "t-1", "token": 7, "requested_at": 1.0}).encode(),
    ],
)
def test_a_malformed_request_is_none(data: bytes) -> None:
    assert decode_cancel_request(data, "t-1") is None


def test_a_request_round_trips() -> None:
    sent = request(KEYS.token("t-1"))
    assert decode_cancel_request(encode_cancel_request(sent), "t-1") == sent


def test_the_cli_key_file_is_made_once_owner_only_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "cancel.key"
    env = {CANCEL_KEY_ENV: str(path)}
    with pytest.raises(ConfigError, match="no cancel key"):
        cli_cancel_keys(create=False, environ=env)
    first = cli_cancel_keys(create=True, environ=env)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    again = cli_cancel_keys(create=True, environ=env)
    assert first.token("t-1") == again.token("t-1")  # a later process cancels the same task
    path.write_text("not hex\n")
    with pytest.raises(ConfigError, match="not 32 bytes"):
        cli_cancel_keys(create=False, environ=env)


def test_the_cli_key_file_defaults_under_xdg_config_home(tmp_path: Path) -> None:
    cli_cancel_keys(create=True, environ={"XDG_CONFIG_HOME": str(tmp_path)})
    assert (tmp_path / "callboard" / "cancel.key").is_file()
