"""Support for the tests of deploy/nats: the repository's server configs, copied
with fresh dev secrets into a temporary directory, and clients that log in as
one of their users and report the permission violations the server sends them.

The configs are used as they are; only what must differ per test run changes:
ports (nats-server's ``-p``/``-m`` flags, and the route ports of the cluster
nodes, rewritten to free ones) and which TLS include is switched on.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from cluster_support import free_ports
from nats.aio.client import Client

from bus import EmbeddedServer, find_nats_server

ROOT = Path(__file__).resolve().parent.parent
DEPLOY_NATS = ROOT / "deploy" / "nats"
GENERATOR = DEPLOY_NATS / "gen_dev_secrets.py"

CLUSTER_ROUTE_PORTS = (6222, 6223, 6224)
"""The route ports the cluster configs give nodes 1, 2 and 3."""
VIOLATION_TIMEOUT = 5.0
"""Seconds to wait for the server's report of a permissions violation."""


@dataclass(frozen=True)
class DeployCopy:
    """A copy of deploy/nats with its own secrets (``secrets/``), made by the generator.

    Attributes:
        root: the copy's directory (single.conf, accounts.conf, cluster/, secrets/).
        passwords: every user's password, from the ``<user>.env`` files.
    """

    root: Path
    passwords: Mapping[str, str]

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    @property
    def ca(self) -> Path:
        return self.secrets / "ca.pem"

    def cert(self, user: str) -> Path:
        return self.secrets / f"{user}-cert.pem"

    def key(self, user: str) -> Path:
        return self.secrets / f"{user}-key.pem"

    def login(self, user: str) -> dict[str, str]:
        """``user`` and ``password`` of one user, as connect() takes them."""
        return {"user": user, "password": self.passwords[user]}

    def env(self, user: str) -> dict[str, str]:
        """The NATS_* lines of the user's generated ``.env`` file (uncommented ones)."""
        lines = (self.secrets / f"{user}.env").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if line.startswith("NATS_"))

    def config(self, name: str, *, tls: str | None = None) -> Path:
        """A config of the copy (``single.conf``, ``cluster/node-1.conf``), with one
        of its commented TLS includes (``tls.conf``, ``mtls.conf``) switched on."""
        path = self.root / name
        if tls is None:
            return path
        text = path.read_text()
        line = re.compile(rf'^# (include "(?:\.\./)?{re.escape(tls)}")$', re.MULTILINE)
        text, count = line.subn(r"\1", text)
        assert count == 1, f"{name} has no commented 'include \"{tls}\"' line to switch on"
        variant = path.with_name(f"{path.stem}-{tls.removesuffix('.conf')}.conf")
        variant.write_text(text)
        return variant


def make_deploy_copy(directory: Path) -> DeployCopy:
    """Copy deploy/nats's configs into ``directory`` and generate secrets there,
    running the generator as a user would."""
    for conf in DEPLOY_NATS.glob("*.conf"):
        shutil.copy(conf, directory / conf.name)
    shutil.copytree(DEPLOY_NATS / "cluster", directory / "cluster")
    result = subprocess.run(
        [sys.executable, str(GENERATOR), str(directory / "secrets")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"gen_dev_secrets.py failed:\n{result.stderr}"
    passwords = {}
    for env in (directory / "secrets").glob("*.env"):
        fields = dict(
            line.split("=", 1) for line in env.read_text().splitlines() if line.startswith("NATS_")
        )
        passwords[fields["NATS_USER"]] = fields["NATS_PASSWORD"]
    return DeployCopy(root=directory, passwords=passwords)


def check_config(config: Path) -> subprocess.CompletedProcess[str]:
    """``nats-server -t``: parse the config and its includes, open its TLS files."""
    return subprocess.run(
        [find_nats_server(), "-c", str(config), "-t"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd="/",  # includes and TLS paths must not depend on the working directory
    )


def secure_server(config: Path) -> EmbeddedServer:
    """A nats-server on ``config``, on free loopback ports (client and monitoring)."""
    return EmbeddedServer(config_file=str(config), jetstream=False, monitor_port=0)


def violations_in_log(server: EmbeddedServer) -> list[str]:
    """The permission violations the server logged (it logs each one as an error)."""
    return [line for line in server.log_lines if "Violation" in line]


# --- the cluster ---------------------------------------------------------------------------


def cluster_configs(copy: DeployCopy) -> list[Path]:
    """The three node configs, beside the originals, with their route ports moved
    to free ones (client and monitoring ports are the servers' flags)."""
    ports = dict(zip(CLUSTER_ROUTE_PORTS, free_ports(3), strict=True))
    configs = []
    for n in (1, 2, 3):
        original = copy.root / "cluster" / f"node-{n}.conf"
        text = original.read_text()
        for old, new in ports.items():
            text, count = re.subn(rf"127\.0\.0\.1:{old}\b", f"127.0.0.1:{new}", text)
            assert count == 1, f"node-{n}.conf should name route port {old} once"
        config = original.with_name(f"node-{n}-free-ports.conf")
        config.write_text(text)
        configs.append(config)
    return configs


def monitoring(server: EmbeddedServer, endpoint: str) -> dict[str, Any]:
    """A monitoring endpoint's JSON (``routez``, ``subsz?...``)."""
    assert server.monitor_url is not None, "the server was started without monitoring"
    with urllib.request.urlopen(f"{server.monitor_url}/{endpoint}", timeout=5) as response:
        data: dict[str, Any] = json.load(response)
    return data


def route_peers(server: EmbeddedServer) -> set[str]:
    """The names of the servers this one has routes to (one each, however pooled)."""
    routes = monitoring(server, "routez").get("routes") or []
    return {route.get("remote_name") or route["remote_id"] for route in routes}


async def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` (a monitoring endpoint: the server has no event to wait on).

    Raises:
        AssertionError: it still did not hold after ``timeout`` seconds.
    """
    try:
        with anyio.fail_after(timeout):
            while True:
                if await anyio.to_thread.run_sync(condition):
                    return
                await anyio.sleep(0.05)  # no event to wait for: look again soon
    except TimeoutError:
        raise AssertionError(f"still not {what} after {timeout:g}s") from None


# --- logged-in clients -----------------------------------------------------------------------


class Violations:
    """The permission violations the server reported to one client."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.other_errors: list[str] = []
        self._changed = anyio.Event()

    async def on_error(self, exc: Exception) -> None:
        text = str(exc)
        if "permissions violation" in text.lower():
            self.messages.append(text)
        else:
            self.other_errors.append(repr(exc))
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def wait_for(self, kind: str, subject: str, timeout: float = VIOLATION_TIMEOUT) -> str:
        """The violation of ``kind`` (publish, subscription) on ``subject``.

        nats-py lower-cases the server's message, so the match ignores case.
        """
        wanted = f'permissions violation for {kind} to "{subject.lower()}'
        try:
            with anyio.fail_after(timeout):
                while True:
                    changed = self._changed
                    for message in self.messages:
                        if wanted in message.lower():
                            return message
                    await changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"the server reported no {kind} violation on {subject!r} within {timeout:g}s; "
                f"it reported {self.messages}, other errors {self.other_errors}"
            ) from None


@asynccontextmanager
async def logged_in(
    url: str, copy: DeployCopy, user: str, *, inbox_prefix: str | None = None
) -> AsyncIterator[tuple[Client, Violations]]:
    """A raw nats-py client logged in as ``user``, with the violations it is told of,
    replies on the user's own inbox (its ``.env`` file's) unless ``inbox_prefix`` says.

    Raw nats-py rather than ``bus.connect``: the test needs the error callback.
    """
    if inbox_prefix is None:
        inbox_prefix = copy.env(user).get("NATS_INBOX_PREFIX", "_INBOX")
    violations = Violations()
    nc = Client()
    await nc.connect(
        servers=[url],
        name=f"test-{user}",
        error_cb=violations.on_error,
        allow_reconnect=False,
        connect_timeout=5,
        inbox_prefix=inbox_prefix,
        **copy.login(user),
    )
    try:
        yield nc, violations
    finally:
        await nc.close()


def cli_env_for(url: str, deploy: DeployCopy, user: str | None) -> dict[str, str]:
    """The CLI's environment: no NATS_* of the caller's, the server(s), the user's .env."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATS_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["NATS_URL"] = url
    if user is not None:
        env.update(deploy.env(user))
    return env
