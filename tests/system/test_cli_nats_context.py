"""The ``nats`` CLI's contexts, honoured by ``callboard`` as natscli honours them.

Each test saves contexts with the real ``nats context save`` (natscli v0.5.0) in a config
directory of its own (``XDG_CONFIG_HOME``), then runs ``callboard`` as a subprocess with no
``NATS_URL``: only the context can lead it to the test's server and daemon. Precedence is
natscli's: flags, then ``NATS_*`` variables, then the context, then the defaults.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from go_tools import nats_cli, nats_env
from nats_security_support import DeployCopy, make_deploy_copy, secure_server
from system_support import ROOT, Daemon, run_cli, run_cli_async

from bus import new_agent_suffix
from orchestrator.cli import EXIT_CONNECTION, EXIT_OK, EXIT_USAGE

pytestmark = pytest.mark.system

DEAD_URL = "nats://127.0.0.1:1"
"""A URL where no server listens: a context or variable that points there is not used."""

SIX_TIMES_SEVEN = '{"expression": "6*7"}'


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def env(home: Path) -> dict[str, str]:
    """callboard's environment: no NATS_* variable, a config directory of the test's own."""
    environment = nats_env(home)
    environment["PYTHONUNBUFFERED"] = "1"
    return environment


@pytest.fixture
def nats(env: dict[str, str]) -> Callable[..., None]:
    """Run the real nats CLI (``nats context save ...``) in the test's config directory."""
    binary = nats_cli()

    def run(*args: str) -> None:
        result = subprocess.run(
            [binary, *args], env=env, capture_output=True, text=True, timeout=30, check=False
        )
        assert result.returncode == 0, result.stderr

    return run


def submit(
    callboard_cmd: list[str], env: dict[str, str], prefix: str, *flags: str
) -> subprocess.CompletedProcess[str]:
    args: Sequence[str] = [*flags, "submit", "--prefix", prefix, "math", SIX_TIMES_SEVEN]
    return run_cli(callboard_cmd, env, args)


@pytest.mark.parametrize("how", ["flag", "env", "selected"])
def test_the_context_leads_callboard_to_its_server(
    how: str,
    daemon: Daemon,
    prefix: str,
    nats_url: str,
    env: dict[str, str],
    nats: Callable[..., None],
    callboard_cmd: list[str],
) -> None:
    nats("context", "save", "dev", "--server", nats_url)
    flags: list[str] = []
    if how == "flag":
        flags = ["--context", "dev"]
    elif how == "env":
        env["NATS_CONTEXT"] = "dev"
    else:
        nats("context", "select", "dev")
    result = submit(callboard_cmd, env, prefix, *flags)
    assert result.returncode == EXIT_OK, result.stderr
    assert result.stdout == '{"value":42}\n'


def test_flags_beat_variables_which_beat_the_context(
    daemon: Daemon,
    prefix: str,
    nats_url: str,
    env: dict[str, str],
    nats: Callable[..., None],
    callboard_cmd: list[str],
) -> None:
    nats("context", "save", "dead", "--server", DEAD_URL, "--select")
    nats("context", "save", "live", "--server", nats_url)

    env["NATS_URL"] = nats_url  # the variable over the selected (dead) context
    assert submit(callboard_cmd, env, prefix).returncode == EXIT_OK

    env["NATS_URL"] = DEAD_URL  # the flag over the variable and the context
    by_flag = submit(callboard_cmd, env, prefix, "-s", nats_url, "--context", "dead")
    assert by_flag.returncode == EXIT_OK, by_flag.stderr

    # the variable over a context named on the command line, as in natscli
    env_wins = submit(callboard_cmd, env, prefix, "--context", "live")
    assert env_wins.returncode == EXIT_CONNECTION
    assert DEAD_URL in env_wins.stderr


def test_an_unknown_context_is_a_usage_error_that_names_it(
    daemon: Daemon,
    prefix: str,
    env: dict[str, str],
    nats: Callable[..., None],
    callboard_cmd: list[str],
) -> None:
    result = submit(callboard_cmd, env, prefix, "--context", "nosuch")
    assert result.returncode == EXIT_USAGE
    assert "unknown NATS context 'nosuch'" in result.stderr
    assert "Traceback" not in result.stderr

    env["NATS_CONTEXT"] = "gone"
    from_env = submit(callboard_cmd, env, prefix)
    assert from_env.returncode == EXIT_USAGE
    assert "'gone' (NATS_CONTEXT)" in from_env.stderr


def test_a_context_callboard_cannot_honour_is_refused_and_no_context_skips_it(
    daemon: Daemon,
    prefix: str,
    nats_url: str,
    env: dict[str, str],
    nats: Callable[..., None],
    callboard_cmd: list[str],
) -> None:
    nats("context", "save", "proxied", "--server", nats_url, "--socks-proxy", "127.0.0.1:1080")
    nats("context", "select", "proxied")
    refused = submit(callboard_cmd, env, prefix)
    assert refused.returncode == EXIT_USAGE
    assert "'proxied' sets 'socks_proxy'" in refused.stderr

    env["NATS_URL"] = nats_url
    skipped = submit(callboard_cmd, env, prefix, "--no-context")
    assert skipped.returncode == EXIT_OK, skipped.stderr


def test_run_connects_with_a_named_context(
    start_daemon: Callable[..., Daemon],
    prefix: str,
    nats_url: str,
    env: dict[str, str],
    nats: Callable[..., None],
    callboard_cmd: list[str],
) -> None:
    nats("context", "save", "dev", "--server", nats_url)
    env["NATS_CONTEXT"] = "dev"
    start_daemon([{"type": "math", "id": f"math-{new_agent_suffix()}"}], prefix=prefix, env=env)
    result = submit(callboard_cmd, env, prefix)
    assert result.returncode == EXIT_OK, result.stderr


@pytest.fixture(scope="module")
def deploy(tmp_path_factory: pytest.TempPathFactory) -> DeployCopy:
    """deploy/nats copied, with secrets from its generator (bcrypt is slow: once)."""
    return make_deploy_copy(tmp_path_factory.mktemp("deploy-nats"))


@pytest.mark.anyio
async def test_a_context_with_a_login_and_a_ca_reaches_a_tls_server(
    deploy: DeployCopy,
    env: dict[str, str],
    nats: Callable[..., None],
    callboard_cmd: list[str],
) -> None:
    async with secure_server(deploy.config("single.conf", tls="tls.conf")) as server:
        password = deploy.passwords["orchestrator"]
        nats(
            "context",
            "save",
            "secure",
            "--server",
            server.url,
            "--user",
            "orchestrator",
            "--password",
            password,
            "--tlsca",
            str(deploy.ca),
            "--inbox-prefix",
            deploy.env("orchestrator")["NATS_INBOX_PREFIX"],
        )
        result = await run_cli_async(
            callboard_cmd, env, ["--context", "secure", "agents", "--json"]
        )
        assert result.returncode == EXIT_OK, result.stderr
        assert json.loads(result.stdout) == []
        assert "eof_received" not in result.stderr


def handshake_first_config(deploy: DeployCopy) -> Path:
    """single.conf with TLS whose handshake comes before the server's INFO."""
    tls = (deploy.root / "tls.conf").read_text()
    (deploy.root / "tlsfirst.conf").write_text(
        tls.replace("timeout: 2", "timeout: 2\n  handshake_first: true")
    )
    single = (deploy.root / "single.conf").read_text()
    config = deploy.root / "single-tlsfirst.conf"
    config.write_text(single.replace('# include "tls.conf"', 'include "tlsfirst.conf"'))
    return config


@pytest.mark.anyio
async def test_tlsfirst_as_a_flag_and_from_a_context(
    deploy: DeployCopy,
    env: dict[str, str],
    nats: Callable[..., None],
    callboard_cmd: list[str],
) -> None:
    async with secure_server(handshake_first_config(deploy)) as server:
        env.update(deploy.env("orchestrator"))
        env["NATS_URL"] = server.url
        agents = ["agents", "--json", "--tls-ca", str(deploy.ca)]

        waits_for_info = await run_cli_async(callboard_cmd, env, agents)
        assert waits_for_info.returncode == EXIT_CONNECTION, waits_for_info.stderr

        by_flag = await run_cli_async(callboard_cmd, env, ["--tlsfirst", *agents])
        assert by_flag.returncode == EXIT_OK, by_flag.stderr
        assert json.loads(by_flag.stdout) == []

        nats("context", "save", "first", "--server", server.url, "--tlsfirst")
        by_context = await run_cli_async(callboard_cmd, env, ["--context", "first", *agents])
        assert by_context.returncode == EXIT_OK, by_context.stderr


def test_the_readmes_context_lines_work_as_written(
    daemon: Daemon,
    prefix: str,
    nats_url: str,
    env: dict[str, str],
    callboard_cmd: list[str],
) -> None:
    """The README's ``nats context save ... --select``, its server swapped for the test's."""
    [line] = [
        x for x in (ROOT / "README.md").read_text().splitlines() if x.startswith("nats context ")
    ]
    words = shlex.split(line.partition("#")[0])
    words[words.index("--server") + 1] = nats_url
    saved = subprocess.run(
        [nats_cli(), *words[1:]], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert saved.returncode == 0, saved.stderr

    listed = run_cli(callboard_cmd, env, ["agents", "--prefix", prefix, "--json"])
    assert listed.returncode == EXIT_OK, listed.stderr
    assert {row["agent"] for row in json.loads(listed.stdout)} == set(daemon.agent_ids)

    named = run_cli(
        callboard_cmd,
        env,
        ["--context", "dev", "submit", "--prefix", prefix, "math", '{"expression": "6*7"}'],
    )
    assert named.stdout == '{"value":42}\n', named.stderr

    env["NATS_URL"] = DEAD_URL
    assert run_cli(callboard_cmd, env, ["agents", "--prefix", prefix]).returncode == (
        EXIT_CONNECTION
    )
