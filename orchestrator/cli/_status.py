"""``callboard status``: a durable task's state, attempts, agent and error.

It reads the task's record from the task bucket, so it works from any machine,
long after the submitting process has gone (as ``result`` and ``history`` do).
"""

from __future__ import annotations

import argparse
import datetime
import sys

import msgspec

from bus import UnknownTask
from bus.durable import DurableTaskClient, TaskRecord

from ._common import Subcommands, connect_cli
from ._exit_codes import EXIT_OK
from ._values import durable_task_id

__all__ = ["cmd_status", "describe", "register"]


def register(commands: Subcommands) -> None:
    """Add ``status`` and its flags to the parser."""
    p = commands.add("status", cmd_status, "show a durable task's state, attempts, agent and error")
    p.add_argument("task_id", type=durable_task_id, help="the task ID")
    p.add_argument("--json", action="store_true", help="print the record as JSON")


async def cmd_status(args: argparse.Namespace) -> int:
    """Print a durable task's record: state, attempts, agent, times, error."""
    async with connect_cli(args) as nc:
        try:
            record = await DurableTaskClient(nc, prefix=args.prefix, sender="cli").record(
                args.task_id
            )
        except UnknownTask as exc:
            # the store may be gone (a temporary one, a lost volume): never claim more
            raise UnknownTask(
                f"no record of task {args.task_id}: never submitted (with --durable, under "
                f"prefix {args.prefix!r}), expired after result_ttl, or the server's "
                "JetStream store was lost (a server started with --temporary-store, or a "
                "deleted store directory)",
                task_id=args.task_id,
            ) from exc
    if args.json:
        sys.stdout.write(msgspec.json.encode(record).decode() + "\n")
    else:
        print(describe(record))
    return EXIT_OK


def describe(record: TaskRecord) -> str:
    """One readable line for a record."""
    parts = [f"task {record.task_id}: {record.state}", f"capability {record.capability}"]
    if record.agent:
        parts.append(f"agent {record.agent}")
    parts.append(f"{record.attempts} attempt(s)")
    parts.append(f"submitted {_clock(record.submitted_at)} by {record.sender or '?'}")
    parts.append(f"updated {_clock(record.updated_at)}")
    text = ", ".join(parts)
    if record.error is not None:
        error = record.error
        text += f"; error {error.code} ({error.type}): {error.message}"
    return text


def _clock(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")
