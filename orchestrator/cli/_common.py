"""What every ``callboard`` command shares: its connection flags and its registration.

Each command is a module of this package with a ``register(commands)`` that adds
its subcommand, flags and handler; ``_main`` assembles the parser from them.
The argument values (durations, JSON, task IDs) are in ``_values``, re-exported here.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any, NoReturn, Protocol

from nats.aio.client import Client

from bus import DEFAULT_PREFIX, CallboardError, ConnectOptions, connect, env_fields
from bus.observability import LOG_FORMAT_ENV, LOG_FORMATS, Announcer, resolve_log_format

from ._exit_codes import EXIT_USAGE, exit_codes_epilog
from ._nats_context import CONTEXT_ENV, load_context_fields
from ._permissions import PermissionWatch
from ._values import durable_task_id, duration, parse_duration, parse_json

__all__ = [
    "CONNECTION_FLAGS",
    "USAGE_LOG_FORMAT",
    "CallboardParser",
    "Command",
    "Handler",
    "Subcommands",
    "add_common_flags",
    "connect_cli",
    "connect_flags",
    "connect_options",
    "connection_flags_given",
    "context_fields",
    "daemon_connect_flags",
    "durable_task_id",
    "duration",
    "log_format_of",
    "parse_duration",
    "parse_json",
    "say",
]

Handler = Callable[[argparse.Namespace], Awaitable[int]]
"""A command's implementation: parsed arguments in, exit code out."""

CONNECTION_FLAGS = {
    "server": ("-s", "--server", "NATS server URL(s), comma-separated (env NATS_URL)"),
    "user": (None, "--user", "user name (env NATS_USER)"),
    "password": (None, "--password", "password (env NATS_PASSWORD)"),
    "token": (None, "--token", "auth token (env NATS_TOKEN)"),
    "creds": (None, "--creds", "credentials file, JWT + nkey (env NATS_CREDS)"),
    "nkey": (None, "--nkey", "nkey seed file (env NATS_NKEY)"),
    "tls_ca": (None, "--tls-ca", "CA file that signs the server's certificate (env NATS_CA)"),
    "tls_cert": (None, "--tls-cert", "client certificate for mutual TLS (env NATS_CERT)"),
    "tls_key": (None, "--tls-key", "client key for mutual TLS (env NATS_KEY)"),
    "inbox_prefix": (
        None,
        "--inbox-prefix",
        "subject prefix of replies, e.g. _INBOX_orchestrator (env NATS_INBOX_PREFIX)",
    ),
}

NATS_CLI_ALIASES = {"tls_ca": "--tlsca", "tls_cert": "--tlscert", "tls_key": "--tlskey"}
"""The ``nats`` CLI's spellings, accepted too so its users' habits work."""


def add_common_flags(
    parser: argparse.ArgumentParser, *, suppress: bool, connects: bool = True
) -> None:
    """Connection flags (for a command that ``connects``) and logging flags, accepted
    before or after the subcommand.
    """
    if connects:
        _add_connection_flags(parser, suppress=suppress)
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS if suppress else 0,
        help="more logging on stderr (-vv for debug)",
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=argparse.SUPPRESS if suppress else None,
        help="log on stderr as text (the default) or as JSON lines with task_id fields "
        f"(env {LOG_FORMAT_ENV})",
    )


def connection_flags_given(args: argparse.Namespace) -> list[str]:
    """The connection flags set on the command line (for a command that takes none)."""
    given = [f"--{dest.replace('_', '-')}" for dest in (*CONNECTION_FLAGS, "tls_first", "context")]
    given = [flag for flag in given if getattr(args, flag[2:].replace("-", "_"), None)]
    if getattr(args, "no_context", False):
        given.append("--no-context")
    if getattr(args, "prefix", DEFAULT_PREFIX) != DEFAULT_PREFIX:
        given.append("--prefix")
    return given


def _add_connection_flags(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    group = parser.add_argument_group("connection")
    for dest, (short, long, help_text) in CONNECTION_FLAGS.items():
        names = [n for n in (short, long, NATS_CLI_ALIASES.get(dest)) if n]
        group.add_argument(*names, dest=dest, default=default, help=help_text, metavar="VALUE")
    group.add_argument(
        "--tlsfirst",
        "--tls-first",
        dest="tls_first",
        action="store_true",
        default=default,
        help="do the TLS handshake before the server's greeting (a server with handshake_first)",
    )
    group.add_argument(
        "--context",
        default=default,
        metavar="NAME",
        help=f"the nats CLI context to connect with (env {CONTEXT_ENV}; default the one "
        "selected with 'nats context select'); flags, then NATS_* variables, win over it",
    )
    group.add_argument(
        "--no-context",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="ignore the nats CLI's contexts, even the selected one",
    )
    group.add_argument(
        "--prefix",
        default=argparse.SUPPRESS if suppress else DEFAULT_PREFIX,
        help=f"subject prefix of the callboard system (default {DEFAULT_PREFIX})",
    )


USAGE_LOG_FORMAT: ContextVar[str] = ContextVar("usage_log_format", default="text")
"""The log format usage errors are printed in, known before the arguments are parsed."""


class CallboardParser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors are a JSON line in json log format
    (so that a json-format stderr holds nothing but JSON lines)."""

    def error(self, message: str) -> NoReturn:
        if USAGE_LOG_FORMAT.get() != "json":
            super().error(message)
        report = Announcer("json", logger="callboard.cli")
        report(f"{self.prog}: error: {message}", level=logging.ERROR)
        self.exit(EXIT_USAGE)


def say(args: argparse.Namespace, line: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """A line for the user on stderr, in the command's log format: in json format a
    JSON line with ``fields`` (``task_id``, ``agent``, ``capability``)."""
    report = Announcer(getattr(args, "log_format", "text"), logger="callboard.cli")
    report(line, level=level, **fields)


def log_format_of(argv: Sequence[str], environ: Mapping[str, str]) -> str:
    """The log format ``argv`` or ``CALLBOARD_LOG_FORMAT`` ask for, before parsing them
    (``text`` when they name none, or no valid one)."""
    flag = None
    for i, arg in enumerate(argv):
        if arg == "--log-format" and i + 1 < len(argv):
            flag = argv[i + 1]
        elif arg.startswith("--log-format="):
            flag = arg.split("=", 1)[1]
    try:
        return resolve_log_format(flag if flag in LOG_FORMATS else None, environ)
    except CallboardError:
        return "text"


class Subcommands:
    """The subcommands of the ``callboard`` parser, to which each command adds its own."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self._subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        self, name: str, handler: Handler, help_text: str, *, connects: bool = True
    ) -> argparse.ArgumentParser:
        """A subcommand run by ``handler``, with the common flags; add its own to the result.

        A command that does not ``connect`` to a server of the user's (``server``,
        ``demo``) takes no connection flags, rather than ignore them.
        """
        parser = self._subparsers.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=exit_codes_epilog(),
            formatter_class=argparse.RawDescriptionHelpFormatter,  # the exit-code table
        )
        add_common_flags(parser, suppress=True, connects=connects)
        parser.set_defaults(func=handler, connects=connects)
        return parser


class Command(Protocol):
    """A command module: it adds its subcommand, flags and handler to the parser."""

    def register(self, commands: Subcommands) -> None: ...


def connect_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The connection flags given on the command line, as ``ConnectOptions`` fields."""
    flags = {dest: getattr(args, dest, None) for dest in (*CONNECTION_FLAGS, "tls_first")}
    flags["url"] = flags.pop("server")
    return flags


def context_fields(args: argparse.Namespace, *, use_selected: bool = True) -> dict[str, Any]:
    """The fields of the nats CLI context in use (``--context``, ``NATS_CONTEXT``, selected)."""
    return load_context_fields(
        getattr(args, "context", None),
        no_context=getattr(args, "no_context", False),
        use_selected=use_selected,
    )


def connect_options(args: argparse.Namespace, name: str = "callboard-cli") -> ConnectOptions:
    """How to connect, as the ``nats`` CLI decides it: the flags over the environment
    over the nats context over the defaults.
    """
    return ConnectOptions.layered(
        {"name": name}, context_fields(args), env_fields(), connect_flags(args)
    )


@asynccontextmanager
async def connect_cli(
    args: argparse.Namespace, name: str = "callboard-cli", *, watch: PermissionWatch | None = None
) -> AsyncIterator[Client]:
    """A one-shot command's connection (``connect_options``), during which a
    permissions violation ends the command at once with ``PermissionDenied``.
    """
    options = connect_options(args, name)
    watch = watch if watch is not None else PermissionWatch(options.user)
    async with connect(options=options, error_listener=watch.on_error) as nc:
        with watch.guard():
            yield nc


def daemon_connect_flags(args: argparse.Namespace) -> dict[str, Any]:
    """What ``run`` layers over its config file's ``[nats]``: the context named by
    ``--context`` or ``NATS_CONTEXT`` (not the selected one: the file is the daemon's),
    then the flags; the environment, which the daemon layers itself, beats the context.
    """
    environment = env_fields()
    context = {
        key: value
        for key, value in context_fields(args, use_selected=False).items()
        if key not in environment and not (key == "url" and "servers" in environment)
    }
    flags = {key: value for key, value in connect_flags(args).items() if value is not None}
    return {**context, **flags}
