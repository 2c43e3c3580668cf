"""``callboard agents``: the live agents, their capabilities and load."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

import anyio
import msgspec

from bus import Subjects
from bus.codec import OPERATION

from .._orchestrator import Orchestrator
from ._common import Subcommands, connect_cli, connect_options, say
from ._exit_codes import EXIT_NO_AGENT, EXIT_OK
from ._permissions import PermissionWatch
from ._values import duration

__all__ = ["cmd_agents", "register"]

log = logging.getLogger("callboard.cli")


def register(commands: Subcommands) -> None:
    """Add ``agents`` and its flags to the parser."""
    p = commands.add("agents", cmd_agents, "list the live agents, their capabilities and load")
    p.add_argument(
        "--wait", type=duration, default=0.5, help="how long to collect answers (0.5, 500ms, 2s)"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


async def cmd_agents(args: argparse.Namespace) -> int:
    """List the live agents: capabilities, load, when last heard from."""
    subjects = Subjects(args.prefix)
    ping_subjects: set[str] = set()
    # a read-only login (the monitor's) may discover agents but not ping them
    pings = PermissionWatch(
        connect_options(args).user,
        expected=lambda kind, subject: kind == "publish" and subject in ping_subjects,
    )
    async with connect_cli(args, watch=pings) as nc:
        orchestrator = Orchestrator(nc, prefix=args.prefix, name="cli")
        agents = await orchestrator.discover(wait=args.wait)
        ping_subjects.update(subjects.agent(agent.id) for agent in agents)
        rows = await _agent_rows(orchestrator, agents)
    for entry in rows:
        if subjects.agent(entry["agent"]) in pings.tolerated:
            entry["last_seen"] = "not permitted to ping it (this login's permissions)"
    if args.json:
        sys.stdout.write(msgspec.json.encode(rows).decode() + "\n")
        return EXIT_OK
    if not rows:
        say(args, f"no agents answered on prefix {args.prefix!r}", level=logging.ERROR)
        return EXIT_NO_AGENT
    headers = ("AGENT", "KIND", "CAPABILITIES", "IN FLIGHT", "LAST SEEN")
    table = [
        (
            r["agent"],
            r["kind"],
            ",".join(r["capabilities"]),
            f"{r['in_flight']}/{r['max_concurrency']}" if r["in_flight"] >= 0 else "?",
            r["last_seen"],
        )
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in (headers, *table)) for i in range(len(headers))]
    for row in (headers, *table):
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))
    return EXIT_OK


async def _agent_rows(orchestrator: Orchestrator, agents: Sequence[Any]) -> list[dict[str, Any]]:
    """Ping every agent on its direct address for its current load."""
    rows: list[dict[str, Any]] = []

    async def ping(agent: Any) -> None:
        row = {
            "agent": agent.id,
            "kind": agent.kind,
            "capabilities": list(agent.capabilities),
            "in_flight": -1,
            "max_concurrency": agent.max_concurrency,
            "last_seen": "no answer to ping",
        }
        started = time.monotonic()
        try:
            reply = await orchestrator.nc.request(
                orchestrator.subjects.agent(agent.id), b"", timeout=1.0, headers={OPERATION: "ping"}
            )
            load = msgspec.json.decode(reply.data)
            row["in_flight"] = int(load.get("in_flight", -1))
            row["last_seen"] = f"just now ({(time.monotonic() - started) * 1000:.1f}ms rtt)"
        except Exception as exc:
            log.debug("ping of %s failed: %s", agent.id, exc)
        rows.append(row)

    async with anyio.create_task_group() as tg:
        for agent in agents:
            tg.start_soon(ping, agent)
    return sorted(rows, key=lambda r: str(r["agent"]))
