"""``callboard demo``: the whole system in one command, with no setup at all."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from orchestrator.cli import EXIT_OK

pytestmark = pytest.mark.system


def test_demo_runs_the_pipeline_and_shows_results_in_step_order(
    callboard_cmd: list[str],
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATS_")}
    try:
        result = subprocess.run(
            [*callboard_cmd, "demo"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
        )
    except subprocess.TimeoutExpired:  # subprocess.run has killed it
        pytest.fail("`callboard demo` did not finish within 30s")
    assert result.returncode == EXIT_OK, result.stderr
    lines = result.stdout.splitlines()

    step_lines = [line for line in lines if re.match(r"^\s+step \d ", line)]
    assert len(step_lines) == 3, result.stdout
    assert re.match(r'^\s+step 1 summarize\s+by summarize-1: \{"summary":"\S', step_lines[0])
    assert re.match(r'^\s+step 2 math\s+by math-1: \{"value":42\}$', step_lines[1])
    # Step 3 echoes what the first two steps produced.
    assert re.match(r"^\s+step 3 echo\s+by echo-1: \{", step_lines[2])
    assert '"answer":42' in step_lines[2]
    summary = step_lines[0].split(": ", 1)[1][len('{"summary":') : -1]
    assert f'"summary":{summary}' in step_lines[2]

    results_at = lines.index("results, in step order:")
    assert lines.index(step_lines[0]) == results_at + 1

    status = [line for line in lines if line.startswith("  [status] ")]
    for agent in ("summarize-1", "math-1", "echo-1"):
        states = [
            m.group(1) for line in status if (m := re.search(rf"\s{agent}\s+(\w+)\s", line + " "))
        ]
        assert states[:1] == ["online"], (agent, status)
        assert "accepted" in states, (agent, status)
        assert "completed" in states, (agent, status)
        assert states.index("accepted") < states.index("completed"), (agent, states)
    assert lines[-1].startswith("demo finished in "), result.stdout
