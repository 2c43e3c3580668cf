"""``callboard cancel``: cancel a durable task that this user submitted.

A queued task (no agent has taken it) is cancelled at once and never runs; a
running one is told to stop, and its agent records it ``cancelled``; a finished
one stays as it ended, and the command says so (exit 1), as it does when the
task was not sent with this user's cancel key (it stays queued).
"""

from __future__ import annotations

import argparse
import sys

import msgspec

from bus.durable import DurableTaskClient, TaskState

from ._cancel_keys import cancel_key_path, cli_cancel_keys
from ._common import Subcommands, connect_cli
from ._exit_codes import EXIT_AGENT_ERROR, EXIT_OK
from ._status import describe

__all__ = ["cmd_cancel", "register"]


def register(commands: Subcommands) -> None:
    """Add ``cancel`` and its flags to the parser."""
    p = commands.add(
        "cancel", cmd_cancel, "cancel a durable task sent by this user's 'submit --durable'"
    )
    p.add_argument("task_id", help="the task ID, or CAPABILITY.TASK_ID")
    p.add_argument("--json", action="store_true", help="print the record after the cancel")


async def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel the task; print its record now (0: cancelled or being cancelled)."""
    keys = cli_cancel_keys(create=False)
    async with connect_cli(args) as nc:
        client = DurableTaskClient(nc, prefix=args.prefix, sender="cli")
        client.cancel_keys = keys
        record = await client.cancel(args.task_id)
    if args.json:
        sys.stdout.write(msgspec.json.encode(record).decode() + "\n")
    elif record.state == TaskState.WORKING:
        print(f"{describe(record)}; told its agent to stop it")
    else:
        print(describe(record))
    if record.state == TaskState.SUBMITTED:
        print(
            f"callboard cancel: task {record.task_id} is not cancelled: it was not sent with "
            f"this user's cancel key ({cancel_key_path()}), or its submission was written "
            "over since (then the agent that takes it still checks the cancel)",
            file=sys.stderr,
        )
        return EXIT_AGENT_ERROR
    if record.done and record.state != TaskState.CANCELLED:
        print(
            f"callboard cancel: task {record.task_id} had already ended {record.state}",
            file=sys.stderr,
        )
        return EXIT_AGENT_ERROR
    return EXIT_OK
