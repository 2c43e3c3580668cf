"""What every ``callboard`` command shares: its connection flags and its registration.

Each command is a module of this package with a ``register(commands)`` that adds
its subcommand, flags and handler; ``_main`` assembles the parser from them.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgspec

from bus import DEFAULT_PREFIX, ConfigError, ConnectOptions, env_fields
from bus.observability import LOG_FORMAT_ENV, LOG_FORMATS

__all__ = [
    "CONNECTION_FLAGS",
    "Command",
    "Handler",
    "Subcommands",
    "add_common_flags",
    "connect_flags",
    "connect_options",
    "parse_duration",
    "parse_json",
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


def add_common_flags(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Connection flags, accepted before or after the subcommand."""
    default = argparse.SUPPRESS if suppress else None
    group = parser.add_argument_group("connection")
    for dest, (short, long, help_text) in CONNECTION_FLAGS.items():
        names = [n for n in (short, long, NATS_CLI_ALIASES.get(dest)) if n]
        group.add_argument(*names, dest=dest, default=default, help=help_text, metavar="VALUE")
    group.add_argument(
        "--prefix",
        default=argparse.SUPPRESS if suppress else DEFAULT_PREFIX,
        help=f"subject prefix of the callboard system (default {DEFAULT_PREFIX})",
    )
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


class Subcommands:
    """The subcommands of the ``callboard`` parser, to which each command adds its own."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self._subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(self, name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        """A subcommand run by ``handler``, with the common flags; add its own to the result."""
        parser = self._subparsers.add_parser(name, help=help_text, description=help_text)
        add_common_flags(parser, suppress=True)
        parser.set_defaults(func=handler)
        return parser


class Command(Protocol):
    """A command module: it adds its subcommand, flags and handler to the parser."""

    def register(self, commands: Subcommands) -> None: ...


def connect_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The connection flags given on the command line, as ``ConnectOptions`` fields."""
    flags = {dest: getattr(args, dest, None) for dest in CONNECTION_FLAGS}
    flags["url"] = flags.pop("server")
    return flags


def connect_options(args: argparse.Namespace) -> ConnectOptions:
    """How to connect: the flags over the environment over the defaults."""
    return ConnectOptions.layered({"name": "callboard-cli"}, env_fields(), connect_flags(args))


def parse_json(text: str, what: str) -> Any:
    """``text`` decoded, or a usage error that shows how to quote JSON for the shell."""
    try:
        return msgspec.json.decode(text.encode())
    except msgspec.DecodeError as exc:
        raise ConfigError(
            f"{what} is not valid JSON ({exc}): quote it for the shell, e.g. "
            '\'{"expression": "6*7"}\''
        ) from exc


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``30s``, ``10m``, ``2h`` or ``1d``."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ConfigError(f"invalid duration {text!r}: write e.g. 90, 30s, 10m, 2h or 1d")
    return float(match.group(1)) * _UNITS[match.group(2)]
