"""A deeply nested pipeline file is a usage error (exit 2), never a traceback (issue 15.10).

A payload nested about 1,000 levels used to end in a ``RecursionError``
traceback and exit 1. The files are written as text, so the nesting the test
means is exactly what the CLI reads.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from system_support import Daemon, run_cli

from orchestrator._references import MAX_NESTING
from orchestrator.cli import EXIT_OK, EXIT_USAGE

pytestmark = pytest.mark.system


def pipeline(
    callboard_cmd: list[str],
    env: Mapping[str, str],
    prefix: str,
    args: Sequence[str],
    *,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m orchestrator.cli --prefix PREFIX pipeline ARGS`` to completion."""
    return run_cli(
        callboard_cmd, env, ["--prefix", prefix, "pipeline", *args], stdin=stdin, timeout=30.0
    )


def nested(levels: int) -> str:
    """A JSON (and TOML) array nested ``levels`` deep, with a number at the bottom."""
    return "[" * levels + "1" + "]" * levels


def json_file(levels: int) -> str:
    return f'{{"steps": [{{"capability": "echo", "payload": {nested(levels)}}}]}}'


def toml_file(levels: int) -> str:
    return f"[[steps]]\ncapability = 'echo'\npayload = {nested(levels)}\n"


@pytest.mark.parametrize("levels", [1_000, 100_000])
@pytest.mark.parametrize("source", ["deep.json", "deep.toml", "-"])
def test_a_file_nested_past_what_the_decoder_takes_exits_2_and_says_so(
    prefix: str,
    cli_env: dict[str, str],
    callboard_cmd: list[str],
    tmp_path: Path,
    source: str,
    levels: int,
) -> None:
    text = toml_file(levels) if source.endswith(".toml") else json_file(levels)
    path = str(tmp_path / source) if source != "-" else "-"
    if path != "-":
        Path(path).write_text(text)
    # A server nobody listens on: the file is checked before connecting.
    env = {**cli_env, "NATS_URL": "nats://127.0.0.1:1"}
    result = pipeline(callboard_cmd, env, prefix, [path], stdin=text if path == "-" else None)
    assert (result.returncode, result.stdout) == (EXIT_USAGE, ""), result.stderr
    assert result.stderr == (
        f"callboard pipeline: malformed file {path!r}: nested deeper than {MAX_NESTING} levels\n"
    )


@pytest.mark.parametrize("source", ["deep.json", "deep.toml", "-"])
def test_a_payload_one_level_past_the_limit_exits_2_naming_the_step(
    prefix: str, cli_env: dict[str, str], callboard_cmd: list[str], tmp_path: Path, source: str
) -> None:
    text = toml_file(MAX_NESTING + 1) if source.endswith(".toml") else json_file(MAX_NESTING + 1)
    path = str(tmp_path / source) if source != "-" else "-"
    if path != "-":
        Path(path).write_text(text)
    env = {**cli_env, "NATS_URL": "nats://127.0.0.1:1"}
    result = pipeline(callboard_cmd, env, prefix, [path], stdin=text if path == "-" else None)
    assert (result.returncode, result.stdout) == (EXIT_USAGE, ""), result.stderr
    assert result.stderr == (
        f"callboard pipeline: malformed file {path!r}: step 1 (echo): "
        f"the payload is nested deeper than {MAX_NESTING} levels\n"
    )


def test_a_payload_at_the_limit_runs(
    daemon: Daemon, prefix: str, cli_env: dict[str, str], callboard_cmd: list[str], tmp_path: Path
) -> None:
    (tmp_path / "limit.json").write_text(json_file(MAX_NESTING))
    result = pipeline(callboard_cmd, cli_env, prefix, [str(tmp_path / "limit.json"), "--json"])
    assert result.returncode == EXIT_OK, result.stderr
    (step,) = json.loads(result.stdout)["results"]
    assert step["result"] == json.loads(nested(MAX_NESTING))
