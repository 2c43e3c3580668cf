"""``callboard pipeline FILE`` against a real ``callboard run`` daemon: output and exit codes."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from system_support import Daemon, run_cli

from orchestrator.cli import EXIT_AGENT_ERROR, EXIT_NO_AGENT, EXIT_OK, EXIT_USAGE

pytestmark = pytest.mark.system

PIPELINE_TIMEOUT = 20.0
"""Seconds a ``pipeline`` process may run before the test gives up on it."""


def pipeline(
    callboard_cmd: list[str],
    env: Mapping[str, str],
    prefix: str,
    args: Sequence[str],
    *,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``callboard --prefix PREFIX pipeline ARGS`` to completion."""
    return run_cli(
        callboard_cmd, env, ["--prefix", prefix, "pipeline", *args], stdin=stdin, timeout=20.0
    )


def write_json(path: Path, steps: list[dict[str, object]]) -> str:
    path.write_text(json.dumps({"steps": steps}))
    return str(path)


def test_the_example_toml_pipeline_prints_one_line_per_step_in_order(
    daemon: Daemon, prefix: str, cli_env: dict[str, str], callboard_cmd: list[str]
) -> None:
    math_id, echo_id, summarize_id = daemon.agent_ids
    result = pipeline(callboard_cmd, cli_env, prefix, ["deploy/pipelines/example.toml"])
    assert result.returncode == EXIT_OK, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(" ", 3)[:3] for line in lines] == [
        ["1.", "summarize", "'summary'"],
        ["2.", "math", "'answer'"],
        ["3.", "math", "'double'"],
        ["4.", "echo", "'report'"],
        ["5.", "echo", "'done'"],
    ]
    assert lines[0].startswith(f"1. summarize 'summary' by {summarize_id} in ")
    assert lines[1].startswith(f"2. math 'answer' by {math_id} in ")
    assert lines[1].endswith(': {"value":42}')
    assert lines[2].endswith(': {"value":84}')
    assert f"by {echo_id}" in lines[3] and '"answer":42,"double":84' in lines[3]
    assert lines[4].endswith(': {"message":"report sent"}')


def test_json_output_and_stdin(
    daemon: Daemon, prefix: str, cli_env: dict[str, str], callboard_cmd: list[str]
) -> None:
    steps = [
        {"capability": "echo", "payload": {"delay_ms": 50, "n": n}, "id": f"e{n}"} for n in range(5)
    ]
    steps.append({"capability": "math", "payload": {"expression": "${steps.e4.n} * 10"}})
    result = pipeline(
        callboard_cmd,
        cli_env,
        prefix,
        ["-", "--json", "--concurrency", "5"],
        stdin=json.dumps({"steps": steps}),
    )
    assert result.returncode == EXIT_OK, result.stderr
    document = json.loads(result.stdout)
    assert document["ok"] is True
    assert [r["seq"] for r in document["results"]] == [1, 2, 3, 4, 5, 6]
    assert [r["result"] for r in document["results"][:5]] == [s["payload"] for s in steps[:5]]
    assert document["results"][5]["result"] == {"value": 40}
    assert all(r["task_id"] and r["agent"] for r in document["results"])


FAILING = [
    {"id": "one", "capability": "echo", "payload": 1},
    {"id": "div", "capability": "math", "payload": {"expression": "1/0"}},
    {"id": "uses-div", "capability": "echo", "payload": "$steps.div.value"},
    {"id": "three", "capability": "echo", "payload": 3, "after": ["one"]},
]


def test_a_failing_step_exits_1_and_is_named(
    daemon: Daemon,
    prefix: str,
    cli_env: dict[str, str],
    callboard_cmd: list[str],
    tmp_path: Path,
) -> None:
    file = write_json(tmp_path / "failing.json", FAILING)
    result = pipeline(callboard_cmd, cli_env, prefix, [file])
    assert result.returncode == EXIT_AGENT_ERROR, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].endswith(": 1")
    assert lines[1].startswith("2. math 'div' by ")
    assert "error 400 (bad_input): division by zero" in lines[1]
    assert "pipeline step 2 'div' (math) failed" in result.stderr


def test_partial_runs_the_rest_and_reports_the_dependants(
    daemon: Daemon,
    prefix: str,
    cli_env: dict[str, str],
    callboard_cmd: list[str],
    tmp_path: Path,
) -> None:
    file = write_json(tmp_path / "failing.json", FAILING)
    result = pipeline(callboard_cmd, cli_env, prefix, [file, "--partial", "--concurrency", "4"])
    assert result.returncode == EXIT_AGENT_ERROR, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4, result.stdout
    assert "error 400 (bad_input)" in lines[1]
    assert lines[2] == (
        "3. echo 'uses-div' not run: error 424 (dependency_failed): "
        "depends on step 2 'div' (math), which failed"
    )
    assert lines[3].endswith(": 3")
    assert "1 step(s) failed" in result.stderr


def test_no_agent_exits_3(
    daemon: Daemon, prefix: str, cli_env: dict[str, str], callboard_cmd: list[str]
) -> None:
    steps = {"steps": [{"capability": "translate", "payload": "hello"}]}
    result = pipeline(callboard_cmd, cli_env, prefix, ["-"], stdin=json.dumps(steps))
    assert result.returncode == EXIT_NO_AGENT, result.stderr
    assert "no agent serves capability 'translate'" in result.stderr


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("typo.json", '{"steps": [{"capability": "echo", "paylod": 1}]}', "unknown field"),
        ("broken.json", '{"steps": [', "is not a valid JSON pipeline"),
        ("broken.toml", "[[steps]\ncapability = 'echo'\n", "is not a valid TOML pipeline"),
        (
            "cycle.toml",
            "[[steps]]\nid = 'a'\ncapability = 'echo'\nafter = ['b']\n"
            "[[steps]]\nid = 'b'\ncapability = 'echo'\npayload = '$steps.a'\n",
            "cycle",
        ),
        ("unknown.toml", "[[steps]]\ncapability = 'echo'\nafter = ['x']\n", "no step 'x'"),
    ],
)
def test_a_malformed_file_exits_2_before_connecting(
    prefix: str,
    cli_env: dict[str, str],
    callboard_cmd: list[str],
    tmp_path: Path,
    name: str,
    text: str,
    message: str,
) -> None:
    (tmp_path / name).write_text(text)
    # No daemon, and a server nobody listens on: the file is checked first.
    env = {**cli_env, "NATS_URL": "nats://127.0.0.1:1"}
    result = pipeline(callboard_cmd, env, prefix, [str(tmp_path / name)])
    assert result.returncode == EXIT_USAGE, result.stderr
    assert result.stdout == ""
    assert f"callboard pipeline: pipeline file '{tmp_path / name}'" in result.stderr
    assert message in result.stderr
