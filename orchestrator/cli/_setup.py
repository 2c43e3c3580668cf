"""``callboard setup``: create callboard's JetStream streams and task bucket, or
bring them to the settings.

It is a step of its own, run by a user that may create and update those
streams (``setup`` in deploy/nats/accounts.conf), so that no running role, a
daemon or a submitter, ever needs the power to change or wipe durable state.
Run it once before the first durable task, and again after changing the
``[durable]`` settings of a daemon config.
"""

from __future__ import annotations

import argparse

from actors import load_config
from bus import connect
from bus.durable import DurableNames, DurableSettings, ensure_durable

from ._common import Subcommands, connect_options
from ._exit_codes import EXIT_OK

__all__ = ["cmd_setup", "register"]

_JS_TIMEOUT = 10.0


def register(commands: Subcommands) -> None:
    """Add ``setup`` and its argument to the parser."""
    parser = commands.add(
        "setup", cmd_setup, "create or update the JetStream streams of durable tasks"
    )
    parser.add_argument(
        "config",
        nargs="?",
        default=None,
        help="a daemon config file: apply its [durable] section with its prefix "
        "(default: the default settings, with --prefix)",
    )


async def cmd_setup(args: argparse.Namespace) -> int:
    """Create or update the streams and the bucket; print what was done to each."""
    settings, prefix = DurableSettings(), args.prefix
    if args.config is not None:
        config = load_config(args.config)
        settings, prefix = config.durable or DurableSettings(), config.prefix
    names = DurableNames(prefix)
    async with connect(options=connect_options(args)) as nc:
        done = await ensure_durable(nc.jetstream(timeout=_JS_TIMEOUT), names, settings, update=True)
    for line in done:
        print(line)
    return EXIT_OK
