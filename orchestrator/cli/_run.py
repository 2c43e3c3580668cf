"""``callboard run``: the agents of a config file as a daemon (SIGHUP reloads the file).

The one command that hosts agents: it uses the agent side (``actors``).
"""

from __future__ import annotations

import argparse

from actors import DaemonConfig, load_config, run_daemon
from bus import DEFAULT_PREFIX
from bus.observability import Announcer

from ._common import Subcommands, daemon_connect_flags
from ._exit_codes import EXIT_OK
from ._pid_file import pid_file

__all__ = ["cmd_run", "register"]


def register(commands: Subcommands) -> None:
    """Add ``run`` and its flags to the parser."""
    p = commands.add(
        "run", cmd_run, "run the agents of a config file as a daemon (SIGHUP reloads the file)"
    )
    p.add_argument("config", help="the daemon's TOML config file")
    p.add_argument(
        "--metrics",
        default=None,
        metavar="ADDR",
        help="serve /metrics and /healthz on ADDR (PORT or HOST:PORT, loopback unless "
        "a host is given); overrides the file's metrics_address",
    )
    p.add_argument(
        "--pid-file",
        default=None,
        metavar="FILE",
        help="write the daemon's process id to FILE while it runs, for "
        "'kill -HUP \"$(cat FILE)\"' (pidof cannot find it: the process is python3)",
    )


async def cmd_run(args: argparse.Namespace) -> int:
    """Run the agents of a config file until SIGTERM/SIGINT; SIGHUP reloads the file."""

    def load() -> DaemonConfig:
        """The file with the command line's overrides, at start and on every reload."""
        config = load_config(args.config)
        if getattr(args, "prefix", DEFAULT_PREFIX) != DEFAULT_PREFIX:
            config.prefix = args.prefix
        if args.metrics is not None:
            config.metrics_address = args.metrics
        return config

    announce = Announcer(getattr(args, "log_format", "text"), logger="callboard.daemon")
    config = load()
    with pid_file(args.pid_file):
        await run_daemon(config, flags=daemon_connect_flags(args), reload=load, announce=announce)
    return EXIT_OK
