"""Durable tasks under the shipped ``deploy/nats`` logins: ``single.conf``'s server with
an empty JetStream store (its streams set up when settings are given), and each
role's connection to it."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from nats_security_support import DeployCopy, secure_server

from bus import ConnectOptions, EmbeddedServer, connect
from bus.durable import DurableNames, DurableSettings, DurableTaskClient, ensure_durable

NAMES = DurableNames("agents")


def login_options(server: EmbeddedServer, deploy: DeployCopy, user: str) -> ConnectOptions:
    """Only what the test says: this server, this user, its own inbox."""
    return ConnectOptions(
        servers=(server.url,),
        connect_attempts=1,
        inbox_prefix=deploy.env(user).get("NATS_INBOX_PREFIX"),
        **deploy.login(user),
    )


@asynccontextmanager
async def secured_durable_server(
    deploy: DeployCopy, settings: DurableSettings | None = None
) -> AsyncIterator[EmbeddedServer]:
    """``single.conf``'s server on an empty store; with ``settings``, the durable
    streams and bucket set up by the ``setup`` login."""
    shutil.rmtree(deploy.root / "jetstream" / "single", ignore_errors=True)
    async with secure_server(deploy.config("single.conf")) as running:
        if settings is not None:
            async with connect(options=login_options(running, deploy, "setup")) as nc:
                await ensure_durable(nc.jetstream(timeout=10), NAMES, settings, update=True)
        yield running


@asynccontextmanager
async def durable_client(
    server: EmbeddedServer,
    deploy: DeployCopy,
    settings: DurableSettings,
    user: str = "orchestrator",
) -> AsyncIterator[DurableTaskClient]:
    """A durable client on its own connection as ``user``."""
    async with connect(options=login_options(server, deploy, user)) as nc:
        yield DurableTaskClient(nc, prefix="agents", settings=settings)
