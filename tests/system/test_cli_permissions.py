"""The CLI under a login whose permissions deny what a command needs: the secured
deploy config (deploy/nats), a real server and daemon, and the read-only ``monitor`` user.

A denied subject is the answer, said at once with exit code 6 and the subject named,
not a warning followed by a timeout; what a read-only user is expected not to do
(ping agents in ``callboard agents``) is shown in the table, not warned about.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial

import anyio
import pytest
from nats_security_support import DeployCopy, cli_env_for, make_deploy_copy, secure_server
from system_support import Daemon
from system_support import run_cli_async as cli

from orchestrator.cli import EXIT_OK, EXIT_PERMISSION

pytestmark = [pytest.mark.system, pytest.mark.anyio]


@pytest.fixture(scope="module")
def deploy(tmp_path_factory: pytest.TempPathFactory) -> DeployCopy:
    """deploy/nats copied, with secrets from its generator (bcrypt is slow: once)."""
    return make_deploy_copy(tmp_path_factory.mktemp("deploy-nats"))


async def test_the_monitor_user_is_told_at_once_what_it_may_not_do(
    deploy: DeployCopy, start_daemon: Callable[..., Daemon], callboard_cmd: list[str]
) -> None:
    async with secure_server(deploy.config("single.conf")) as server:
        await anyio.to_thread.run_sync(
            partial(
                start_daemon,
                [{"type": "math", "id": "math", "replicas": 2}],
                prefix="agents",
                env=cli_env_for(server.url, deploy, None),
                nats={"url": server.url, **deploy.login("agent-math")},
            )
        )
        monitor = cli_env_for(server.url, deploy, "monitor")

        listed = await cli(callboard_cmd, monitor, ["agents"])
        assert listed.returncode == EXIT_OK, listed.stderr
        assert "violation" not in listed.stderr.lower(), listed.stderr
        assert listed.stdout.count("not permitted to ping it") == 2, listed.stdout

        as_json = await cli(callboard_cmd, monitor, ["agents", "--json"])
        assert {row["agent"] for row in json.loads(as_json.stdout)} == {"math-1", "math-2"}

        # a timeout far beyond the CLI's own limit: only an immediate answer passes
        submitted = await cli(
            callboard_cmd, monitor, ["submit", "--timeout", "10m", "math", '{"expression": "1"}']
        )
        assert submitted.returncode == EXIT_PERMISSION, submitted.stderr
        assert "does not let user 'monitor' publish to 'agents.task.math'" in submitted.stderr
        assert submitted.stderr.count("\n") == 1, submitted.stderr  # that line, no warnings

        pinged = await cli(
            callboard_cmd, monitor, ["health", "--agent", "math-1", "--timeout", "10m"]
        )
        assert pinged.returncode == EXIT_PERMISSION, pinged.stderr
        assert "'agents.agent.math-1'" in pinged.stderr

        orchestrator = cli_env_for(server.url, deploy, "orchestrator")
        allowed = await cli(
            callboard_cmd, orchestrator, ["submit", "math", '{"expression": "6*7"}']
        )
        assert allowed.returncode == EXIT_OK, allowed.stderr
        assert allowed.stdout == '{"value":42}\n'
