"""The CLI of durable tasks: ``status``, ``result`` and ``history`` by task ID.

Each reads the task's record from the task bucket, so it works from any
machine, long after the submitting process has gone.
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys
import time
from typing import Any

import msgspec

from bus import ConfigError, connect
from bus.durable import DurableNames, DurableTaskClient, TaskRecord, replay_status, split_task_ref

from ._commands import EXIT_AGENT_ERROR, EXIT_OK, connect_options
from ._monitor import decode_status, format_status

__all__ = ["cmd_history", "cmd_result", "cmd_status", "parse_duration"]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``30s``, ``10m``, ``2h`` or ``1d``."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ConfigError(f"invalid duration {text!r}: write e.g. 90, 30s, 10m, 2h or 1d")
    return float(match.group(1)) * _UNITS[match.group(2)]


async def cmd_status(args: argparse.Namespace) -> int:
    """Print a durable task's record: state, attempts, agent, times, error."""
    async with connect(options=connect_options(args)) as nc:
        record = await DurableTaskClient(nc, prefix=args.prefix, sender="cli").record(args.task_id)
    if args.json:
        sys.stdout.write(msgspec.json.encode(record).decode() + "\n")
    else:
        print(describe(record))
    return EXIT_OK


async def cmd_result(args: argparse.Namespace) -> int:
    """Print a durable task's result (waiting for it with ``--wait``)."""
    timeout = (None if args.timeout <= 0 else args.timeout) if args.wait else 0.0
    async with connect(options=connect_options(args)) as nc:
        client = DurableTaskClient(nc, prefix=args.prefix, sender="cli")
        result = await client.result(args.task_id, timeout=timeout)
    encoded = msgspec.json.encode(result)
    if args.pretty:
        encoded = msgspec.json.format(encoded, indent=2)
    sys.stdout.write(encoded.decode() + "\n")
    return EXIT_OK


async def cmd_history(args: argparse.Namespace) -> int:
    """Print a durable task's record revisions and its kept status events, in time order."""
    since = None if args.since is None else time.time() - parse_duration(args.since)
    _, wanted = split_task_ref(args.task_id)  # TASK_ID, or CAPABILITY.TASK_ID
    names = DurableNames(args.prefix)
    lines: list[tuple[float, str, Any]] = []
    async with connect(options=connect_options(args)) as nc:
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
        print(f"no record and no kept events of task {args.task_id}", file=sys.stderr)
        return EXIT_AGENT_ERROR
    for _, text, raw in sorted(lines, key=lambda line: line[0]):
        if args.json:
            data = raw if isinstance(raw, bytes) else msgspec.json.encode(raw)
            sys.stdout.write(data.decode(errors="replace") + "\n")
        else:
            print(text)
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
