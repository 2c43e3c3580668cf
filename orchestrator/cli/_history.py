"""``callboard history``: a durable task's story, its record revisions and kept events."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any

import msgspec

from bus.durable import DurableNames, DurableTaskClient, replay_status, split_task_ref

from ._common import Subcommands, connect_cli, say
from ._exit_codes import EXIT_AGENT_ERROR, EXIT_OK
from ._status import describe
from ._values import durable_task_id, parse_duration
from .monitor import decode_status, format_status

__all__ = ["cmd_history", "register"]


def register(commands: Subcommands) -> None:
    """Add ``history`` and its flags to the parser."""
    p = commands.add(
        "history",
        cmd_history,
        "replay a durable task's story: record revisions and the status events kept for it",
    )
    p.add_argument("task_id", type=durable_task_id, help="the task ID")
    p.add_argument(
        "--since", default=None, metavar="DURATION", help="only events newer than this (10m, 2h)"
    )
    p.add_argument("--json", action="store_true", help="print raw JSON, one a line")


async def cmd_history(args: argparse.Namespace) -> int:
    """Print a durable task's record revisions and its kept status events, in time order."""
    since = None if args.since is None else time.time() - parse_duration(args.since)
    _, wanted = split_task_ref(args.task_id)  # TASK_ID, or CAPABILITY.TASK_ID
    names = DurableNames(args.prefix)
    lines: list[tuple[float, str, Any]] = []
    async with connect_cli(args) as nc:
        client = DurableTaskClient(nc, prefix=args.prefix, sender="cli")
        for record in await client.history(args.task_id):
            lines.append((record.updated_at, f"record  {describe(record)}", record))
        async for msg in replay_status(
            client.js, names, names.subjects.all_status(), since=since, follow=False
        ):
            event = decode_status(msg.data)
            task_id = getattr(event, "task_id", None)
            if task_id is None and isinstance(event, dict):
                task_id = event.get("task_id")
            if task_id == wanted:
                ts = float(getattr(event, "ts", 0.0) or 0.0)
                lines.append((ts, f"event   {format_status(event, msg.data)}", msg.data))
    if not lines:
        say(
            args,
            f"no record and no kept events of task {args.task_id}",
            level=logging.ERROR,
            task_id=args.task_id,
        )
        return EXIT_AGENT_ERROR
    for _, text, raw in sorted(lines, key=lambda line: line[0]):
        if args.json:
            data = raw if isinstance(raw, bytes) else msgspec.json.encode(raw)
            sys.stdout.write(data.decode(errors="replace") + "\n")
        else:
            print(text)
    return EXIT_OK
