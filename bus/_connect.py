"""Connecting to NATS: one value object for every option, filled from the
environment the way the ``nats`` CLI reads it, and an async context manager
that drains the connection on exit.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import ssl
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import msgspec
import nats.errors
from nats.aio.client import Client
from nats.aio.subscription import Subscription
from nats.errors import SlowConsumerError

from ._errors import ConfigError, ConnectionFailed
from ._natspy import NatsClient, TLSNotOffered, drop_reconnect_buffer, unread_subscriptions
from .observability._connection_metrics import ConnectionMetrics

__all__ = [
    "DEFAULT_URL",
    "ConnectOptions",
    "close_connection",
    "connect",
    "env_fields",
    "split_servers",
    "unsubscribe_all",
]

log = logging.getLogger("callboard.bus")

DEFAULT_URL = "nats://127.0.0.1:4222"

_CLOSE_AFTER_FAILURE = 0.5
"""Seconds to wait for nats-py to close the socket of a failed first connection."""


class ConnectOptions(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Everything needed to reach a NATS server or cluster.

    Attributes:
        servers: server URLs; several for a cluster (reconnects rotate through them).
        name: the connection name shown by the server's monitoring.
        user: user for user/password auth.
        password: password for user/password auth.
        token: token auth.
        creds: path to a ``.creds`` file (JWT + nkey seed), as made by ``nsc``.
        nkey: path to an nkey seed file.
        tls_ca: CA bundle that signs the server's certificate (enables TLS).
        tls_cert: client certificate, for mutual TLS.
        tls_key: the client certificate's private key.
        tls_first: do the TLS handshake before the NATS INFO (``handshake_first``).
        connect_timeout: seconds to wait for each connection attempt.
        connect_attempts: tries per server for the first connection before giving
            up with ConnectionFailed (reconnects after that follow
            ``max_reconnect_attempts``).
        reconnect_wait: seconds before the first reconnect round; each round that
            fails doubles it (up to 15 s), half of it random (nats-py also shuffles
            the server list), so a fleet does not reconnect in step.
        max_reconnect_attempts: attempts before giving up; -1 retries forever.
        ping_interval: seconds between client PINGs (how fast a dead server is noticed).
        max_outstanding_pings: missed PONGs before the connection counts as lost.
        drain_timeout: seconds to wait for in-flight messages when closing.
        inbox_prefix: where replies come back (``_INBOX`` by default). A user of
            its own (``_INBOX_agents``) lets the server's permissions give each
            user its own replies only (``subscribe: _INBOX_agents.>``); durable
            mode needs inbox replies, for JetStream API answers and pulled tasks.
    """

    servers: tuple[str, ...] = (DEFAULT_URL,)
    name: str | None = None
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds: str | None = None
    nkey: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_first: bool = False
    connect_timeout: float = 2.0
    connect_attempts: int = 2
    reconnect_wait: float = 1.0
    max_reconnect_attempts: int = -1
    ping_interval: float = 20.0
    max_outstanding_pings: int = 2
    drain_timeout: float = 5.0
    inbox_prefix: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ConnectOptions:
        """Options from ``NATS_URL``, ``NATS_USER``, ``NATS_PASSWORD``, ``NATS_TOKEN``,
        ``NATS_CREDS``, ``NATS_NKEY``, ``NATS_CA``, ``NATS_CERT`` and ``NATS_KEY``
        (the ``nats`` CLI's names); keyword overrides that are not None win.
        """
        return cls.layered(env_fields(environ), overrides)

    @classmethod
    def layered(cls, *layers: Mapping[str, Any] | None) -> ConnectOptions:
        """Options from layers of fields, later layers winning (file, env, flags).

        A layer may say ``url`` (a comma-separated list) instead of ``servers``;
        None values do not override.
        """
        fields: dict[str, Any] = {}
        for layer in layers:
            for key, value in (layer or {}).items():
                if value is None:
                    continue
                if key in ("url", "servers"):
                    key, value = "servers", split_servers(value)
                fields[key] = value
        try:
            return msgspec.convert(fields, cls)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"invalid NATS connection option: {exc}") from exc

    def with_changes(self, **changes: Any) -> ConnectOptions:
        """A copy with some fields changed (None values are ignored)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        if isinstance(changes.get("servers"), str):
            changes["servers"] = split_servers(changes["servers"])
        try:
            return msgspec.structs.replace(self, **changes)
        except TypeError as exc:
            raise ConfigError(f"unknown NATS connection option: {exc}") from exc

    def tls_context(self) -> ssl.SSLContext | None:
        """The TLS context these options ask for, or None for plain TCP."""
        wants_tls = (
            self.tls_ca or self.tls_cert or any(s.startswith("tls://") for s in self.servers)
        )
        if not wants_tls:
            return None
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError(
                "TLS client auth needs both tls_cert and tls_key (--tls-cert, --tls-key)"
            )
        files = {"tls_ca": self.tls_ca, "tls_cert": self.tls_cert, "tls_key": self.tls_key}
        for field, path in files.items():  # h-cli: name the file that is missing
            if path and not os.path.isfile(path):
                flag = "--" + field.replace("_", "-")
                raise ConfigError(f"the {field} file {path!r} ({flag}) does not exist")
        try:
            context = ssl.create_default_context(cafile=self.tls_ca)
            if self.tls_cert and self.tls_key:
                context.load_cert_chain(self.tls_cert, self.tls_key)
        except (OSError, ssl.SSLError) as exc:
            named = ", ".join(f"{field} {path!r}" for field, path in files.items() if path)
            raise ConfigError(f"cannot load TLS files ({named}): {exc}") from exc
        return context


_ENV_FIELDS = {
    "user": "NATS_USER",
    "password": "NATS_PASSWORD",
    "token": "NATS_TOKEN",
    "creds": "NATS_CREDS",
    "nkey": "NATS_NKEY",
    "tls_ca": "NATS_CA",
    "tls_cert": "NATS_CERT",
    "tls_key": "NATS_KEY",
    "inbox_prefix": "NATS_INBOX_PREFIX",
}


def env_fields(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The connection fields the environment sets (``NATS_URL``, ``NATS_CREDS``, ...)."""
    env = os.environ if environ is None else environ
    fields: dict[str, Any] = {key: env[var] for key, var in _ENV_FIELDS.items() if env.get(var)}
    if env.get("NATS_URL"):
        fields["servers"] = split_servers(env["NATS_URL"])
    return fields


def split_servers(urls: str | Sequence[str]) -> tuple[str, ...]:
    """``"nats://a:4222,nats://b:4222"`` → a tuple of URLs (the ``nats`` CLI's form)."""
    if isinstance(urls, str):
        urls = urls.split(",")
    servers = tuple(u.strip() for u in urls if u.strip())
    if not servers:
        raise ConfigError("no NATS server URL given: pass -s/--server or set NATS_URL")
    return servers


MAX_RECONNECT_WAIT = 15.0
"""Seconds: the longest wait between rounds of reconnect attempts."""


def reconnect_delay(
    failed_rounds: int,
    base: float,
    *,
    cap: float = MAX_RECONNECT_WAIT,
    rng: random.Random | None = None,
) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random.

    After a server outage every daemon retries; the doubling keeps a dead
    cluster from being hammered, the jitter keeps daemons from knocking in step.
    """
    wait: float = min(cap, base * 2.0 ** min(failed_rounds, 16))
    jitter: float = (rng or random).uniform(0.0, wait / 2)
    return wait / 2 + jitter


def _is_final(exc: BaseException) -> bool:
    """An error of the first connection that a retry cannot fix."""
    return isinstance(exc, ssl.SSLError | TLSNotOffered | nats.errors.AuthorizationError) or (
        "authorization violation" in str(exc).lower()
    )


def _tls_without_cert(options: ConnectOptions) -> bool:
    tls = options.tls_ca is not None or any(u.startswith("tls://") for u in options.servers)
    return tls and options.tls_cert is None


def _failure_hint(exc: BaseException | None, *, tls_without_cert: bool = False) -> str:
    """What to do about the error that stopped the first connection."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            "The server's TLS certificate is not trusted: pass --tls-ca (NATS_CA, "
            "tls_ca) with the CA that signed it"
        )
    if isinstance(exc, ssl.SSLError) and "CERTIFICATE_REQUIRED" in str(exc):
        return (
            "The server requires a client certificate (mutual TLS): pass --tls-cert "
            "and --tls-key (NATS_CERT, NATS_KEY)"
        )
    if isinstance(exc, ssl.SSLError):
        return "The TLS handshake failed: check the server's TLS settings and --tls-* files"
    if tls_without_cert and isinstance(exc, ConnectionResetError | BrokenPipeError):
        # TLS 1.3: a server that wants a client certificate says so after the
        # handshake, and the client may only see the connection it then closed
        return (
            "The server closed the TLS connection: it probably requires a client "
            "certificate (mutual TLS): pass --tls-cert and --tls-key (NATS_CERT, NATS_KEY)"
        )
    if isinstance(exc, TLSNotOffered):
        return "Connect to a server with TLS on, or drop the TLS options for this one"
    if (
        isinstance(exc, nats.errors.AuthorizationError)
        or "authorization violation" in str(exc).lower()
    ):
        return (
            "The server refused these credentials: check --user/--password, --token, "
            "--creds or --nkey (NATS_USER, NATS_PASSWORD, NATS_TOKEN, NATS_CREDS, NATS_NKEY)"
        )
    return (
        "Is a server running there? Start one with 'callboard server', or point "
        "-s/--server or NATS_URL at yours."
    )


def _client_kwargs(options: ConnectOptions) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "servers": list(options.servers),
        "connect_timeout": options.connect_timeout,
        "reconnect_time_wait": options.reconnect_wait,  # then backoff: NatsClient
        "max_reconnect_attempts": max(1, options.connect_attempts),
        "ping_interval": options.ping_interval,
        "max_outstanding_pings": options.max_outstanding_pings,
        "drain_timeout": options.drain_timeout,
        "allow_reconnect": True,
    }
    optional = {
        "name": options.name,
        "user": options.user,
        "password": options.password,
        "token": options.token,
        "user_credentials": options.creds,
        "nkeys_seed": options.nkey,
        "tls": options.tls_context(),
        "inbox_prefix": options.inbox_prefix,
    }
    kwargs.update({k: v for k, v in optional.items() if v is not None})
    if options.tls_first:
        kwargs["tls_handshake_first"] = True
    for path in (options.creds, options.nkey):
        if path and not os.path.isfile(path):
            raise ConfigError(f"credentials file {path!r} does not exist")
    return kwargs


@asynccontextmanager
async def connect(
    servers: str | Sequence[str] | None = None,
    *,
    options: ConnectOptions | None = None,
    metrics: ConnectionMetrics | None = None,
    error_listener: Callable[[Exception], bool] | None = None,
    **changes: Any,
) -> AsyncIterator[Client]:
    """Connect to NATS for the duration of the block, draining on exit.

    Args:
        servers: URL(s); overrides ``options.servers`` and ``NATS_URL``.
        options: the full option set; defaults to ``ConnectOptions.from_env()``.
        metrics: counts this connection's reconnects, time disconnected,
            slow-consumer errors and pending bytes, labelled with its name, and
            the malformed frames it drops (if given ``refusals``).
        error_listener: told of each error the server reports once connected
            (a permissions violation); True when it handles it, which is then
            not logged as a warning.
        **changes: individual ConnectOptions fields to override.

    Raises:
        ConnectionFailed: no server in the list could be reached.
        ConfigError: an option is invalid (bad TLS files, missing creds file).

    Example:
        ``async with connect("nats://127.0.0.1:4222") as nc: ...``
    """
    opts = options if options is not None else ConnectOptions.from_env()
    opts = opts.with_changes(servers=servers, **changes)
    kwargs = _client_kwargs(opts)
    url_list = ", ".join(opts.servers)

    connected = closing = False
    state = metrics.track(opts.name) if metrics is not None else None
    last_failure: BaseException | None = None

    async def on_error(exc: Exception) -> None:
        nonlocal last_failure
        if state is not None and isinstance(exc, SlowConsumerError):
            state.on_slow_consumer()
        if connected and state is not None and _is_final(exc):
            state.on_refused()  # a revoked login: before the line that reports it
        if connected and error_listener is not None and error_listener(exc):
            return  # h-cli: the caller reports it (e.g. a permissions violation)
        # before the first connection the final ConnectionFailed says it all
        log.log(
            logging.WARNING if connected else logging.DEBUG, "NATS connection error: %s", _said(exc)
        )
        if not connected:
            # the reason to report: a refusal beats the reset that may follow it
            if last_failure is None or not _is_final(last_failure):
                last_failure = exc
            if _is_final(exc):
                # Retries cannot fix a certificate or a password, and nats-py would
                # retry forever in a cluster (each INFO adds the peers back to its
                # pool): fail now. nats-py raises this error when it may not reconnect.
                nc.options["allow_reconnect"] = False

    async def on_disconnect() -> None:
        if nc.is_closed or nc.is_draining:
            return
        if state is not None:
            state.on_disconnected()
        log.warning("disconnected from NATS (%s); reconnecting", url_list)

    async def on_closed() -> None:
        # closed by nats-py itself (a refusal, reconnects used up): gone for good
        if connected and not closing:
            if state is not None:
                state.on_lost()
            log.error("the NATS connection is closed for good: %s", nc.last_error or "closed")

    async def on_reconnect() -> None:
        if state is not None:
            state.on_reconnected()
        log.warning(
            "reconnected to NATS at %s", nc.connected_url.geturl() if nc.connected_url else "?"
        )

    nc = NatsClient()
    if metrics is not None and metrics.refusals is not None:
        nc.on_malformed = metrics.refusals.counter("malformed_frame")
    nc.require_tls = "tls" in kwargs
    nc.reconnect_delay = functools.partial(reconnect_delay, base=opts.reconnect_wait)
    try:
        await nc.connect(
            error_cb=on_error,
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
            closed_cb=on_closed,
            **kwargs,
        )
    except Exception as exc:
        # a final error leaves its socket to close; nats-py may wait forever for
        # one whose TLS handshake failed (asyncio has closed it already)
        with anyio.CancelScope(shield=True), anyio.move_on_after(_CLOSE_AFTER_FAILURE):
            await nc.close()
        # nats-py ends with "no servers available": the error before it says why
        cause = last_failure or exc
        raise ConnectionFailed(
            f"could not connect to NATS at {url_list}: {cause or type(cause).__name__}. "
            + _failure_hint(cause, tls_without_cert=_tls_without_cert(opts))
        ) from exc
    # nats-py retries a first connection forever when max_reconnect_attempts is
    # -1, so the first one is bounded by connect_attempts and the real policy
    # applies from here on (nats-py reads it from this dict on every reconnect).
    nc.options["max_reconnect_attempts"] = opts.max_reconnect_attempts
    connected = True
    if state is not None:
        state.on_connected(nc)
    try:
        yield nc
    finally:
        closing = True
        try:
            await close_connection(nc)
        finally:
            if state is not None:
                state.on_closed()


async def unsubscribe_all(subscriptions: Iterable[Subscription]) -> None:
    """Unsubscribe each, logging failures: a connection already gone has nothing to undo."""
    for sub in subscriptions:
        try:
            await sub.unsubscribe()
        except Exception as exc:
            log.debug("unsubscribe of %s failed: %s", sub.subject, exc)


async def close_connection(nc: Client) -> None:
    """Drain (deliver what is in flight) then close; safe to call twice.

    Subscriptions read with ``next_msg``/``messages`` are unsubscribed first:
    nats-py's drain waits for their queues to be consumed, which nobody will
    do once the block has ended, and the close would stall for the drain timeout.
    """
    if nc.is_closed:
        return
    if not nc.is_connected:
        # What the reconnect buffer holds can no longer be delivered: drop it
        dropped = drop_reconnect_buffer(nc)
        if dropped:
            log.warning("closing while disconnected: %d buffered byte(s) are dropped", dropped)
        try:
            await nc.close()
        except Exception as exc:
            log.debug("close while disconnected failed: %s", exc)
        return
    await unsubscribe_all(unread_subscriptions(nc))
    try:
        await nc.drain()
    except Exception as exc:
        log.debug("drain failed (%s); closing", exc)
    if not nc.is_closed:
        await nc.close()


def _said(exc: Exception) -> str:
    """What to log of a connection error. A slow consumer names the subscription,
    not the message nats-py names: a flood on distinct subjects (a wildcard
    subscription's) is then one line repeated, which the log's repeat limit folds,
    instead of a line per dropped message."""
    if isinstance(exc, SlowConsumerError):
        subject = getattr(exc.sub, "subject", "?")
        return f"slow consumer: messages dropped on subscription {subject} (sid {exc.sid})"
    return str(exc)
