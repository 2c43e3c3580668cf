"""``callboard result``: a durable task's result as JSON, by task ID."""

from __future__ import annotations

import argparse
import sys

import msgspec

from bus.durable import DurableTaskClient

from ._common import Subcommands, connect_cli
from ._exit_codes import EXIT_OK
from ._values import durable_task_id, duration

__all__ = ["cmd_result", "register"]


def register(commands: Subcommands) -> None:
    """Add ``result`` and its flags to the parser."""
    p = commands.add("result", cmd_result, "print a durable task's result as JSON")
    p.add_argument("task_id", type=durable_task_id, help="the task ID")
    p.add_argument("--wait", action="store_true", help="wait for the task to finish")
    p.add_argument(
        "--timeout",
        type=duration,
        default=30.0,
        help="with --wait: how long, in seconds or as a duration like 5m (0 = no limit)",
    )
    p.add_argument("--pretty", action="store_true", help="indent the JSON result")


async def cmd_result(args: argparse.Namespace) -> int:
    """Print a durable task's result (waiting for it with ``--wait``)."""
    timeout = (None if args.timeout <= 0 else args.timeout) if args.wait else 0.0
    async with connect_cli(args) as nc:
        client = DurableTaskClient(nc, prefix=args.prefix, sender="cli")
        result = await client.result(args.task_id, timeout=timeout)
    encoded = msgspec.json.encode(result)
    if args.pretty:
        encoded = msgspec.json.format(encoded, indent=2)
    sys.stdout.write(encoded.decode() + "\n")
    return EXIT_OK
