"""The wire protocol from a non-Python client: ``tests/interop/client.mjs`` (nats.js v3)
against a real ``callboard run`` daemon.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
from system_support import ROOT, Daemon

from bus import QUEUE_GROUP, new_agent_suffix

pytestmark = pytest.mark.system

INTEROP = ROOT / "tests" / "interop"


def _require(ok: bool, why: str) -> None:
    """Skip when the Node.js side is not installed, but never on CI (CI must run it)."""
    if ok:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why} (CI=true: the interop test must run on CI)")
    pytest.skip(why)


_NPM_TIMEOUT = 300.0
"""Seconds ``npm ci`` may take on a cold npm cache."""


_PACKAGES = ("transport-node", "services")
"""The ``@nats-io`` packages of ``package.json``."""


def _installed() -> bool:
    return all((INTEROP / "node_modules" / "@nats-io" / m).is_dir() for m in _PACKAGES)


def _npm_ci() -> None:
    """Install the client's npm packages (``package-lock.json``) when they are missing,
    so the README's ``pytest`` runs this test on a fresh clone (as ``.ci/run`` does)."""
    npm = shutil.which("npm")
    _require(npm is not None, "npm is not installed: it installs the Node.js interop client")
    assert npm is not None
    with open(INTEROP / ".npm-ci.lock", "a+") as lock:  # one install for parallel runs
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _installed():
            return
        try:
            done = subprocess.run(
                [npm, "ci", "--prefix", str(INTEROP), "--no-audit", "--no-fund"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=_NPM_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            done = None
        why = "timed out" if done is None else f"failed:\n{done.stderr[-2000:]}"
        _require(
            done is not None and done.returncode == 0 and _installed(),
            f"`npm ci --prefix tests/interop` {why}",
        )


@pytest.fixture
def node() -> str:
    path = shutil.which("node")
    _require(path is not None, "node is not installed: the Node.js interop client needs Node 18+")
    assert path is not None
    if not _installed():
        _npm_ci()
    return path


def run_client(node: str, url: str, prefix: str) -> dict[str, Any]:
    try:
        result = subprocess.run(
            [node, str(INTEROP / "client.mjs"), url, prefix],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            cwd=INTEROP,
            timeout=60,
        )
    except subprocess.TimeoutExpired:  # subprocess.run has killed it
        pytest.fail("the Node.js interop client did not finish within 60s")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    out: dict[str, Any] = json.loads(lines[0])
    return out


def test_node_client_speaks_the_wire_protocol(
    node: str, start_daemon: Callable[..., Daemon], prefix: str, nats_url: str
) -> None:
    math_id = f"math-{new_agent_suffix()}"
    start_daemon([{"type": "math", "id": math_id}], prefix=prefix, heartbeat_interval=600.0)

    out = run_client(node, nats_url, prefix)
    assert out["prefix"] == prefix

    ok = out["ok"]
    assert ok["body"] == {"value": 42}
    assert ok["task_id"].startswith("interop-ok-")
    assert ok["headers"] == {"Agent-Task-Id": ok["task_id"], "Agent-Id": math_id}

    for case in ("bad_input", "not_json"):
        reply = out[case]
        assert reply["headers"]["Nats-Service-Error-Code"] == "400", (case, reply)
        assert reply["headers"]["Nats-Service-Error"], (case, reply)
        assert reply["body"]["error"]["code"] == 400, (case, reply)
        assert reply["body"]["error"]["type"] == "bad_input", (case, reply)
        assert reply["body"]["error"]["message"] == reply["headers"]["Nats-Service-Error"]
    assert "not valid JSON" in out["not_json"]["body"]["error"]["message"]

    assert out["no_responders"]["no_responders"] is True, out["no_responders"]

    assert out["status_completed"] is True
    events = out["status_events"]
    states = [e["state"] for e in events]
    assert states == ["accepted", "started", "completed"], events
    for event in events:
        assert event["agent"] == math_id
        assert event["task_id"] == ok["task_id"]
        assert event["capability"] == "math"
        assert event["v"] == 1
    assert out["status_subjects"] == [f"{prefix}.status.{math_id}.{s}" for s in states]

    task_subject = f"{prefix}.task.math"
    [service] = [s for s in out["services"] if (s["metadata"] or {}).get("agent_id") == math_id]
    assert service["name"] == "math"
    assert {"name": "math", "subject": task_subject, "queue_group": QUEUE_GROUP} in [
        {k: e[k] for k in ("name", "subject", "queue_group")} for e in service["endpoints"]
    ]
    assert service["metadata"]["prefix"] == prefix

    [stats] = [s for s in out["stats"] if (s["metadata"] or {}).get("agent_id") == math_id]
    [endpoint] = [e for e in stats["endpoints"] if e["subject"] == task_subject]
    assert endpoint["num_requests"] == 3  # ok, bad input, not JSON
    assert endpoint["num_errors"] == 2

    assert any(
        (p["metadata"] or {}).get("agent_id") == math_id and p["name"] == "math"
        for p in out["ping"]
    ), out["ping"]
