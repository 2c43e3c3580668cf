"""``callboard submit``: dispatch one task and print its result as JSON."""

from __future__ import annotations

import argparse
import logging
import sys

import anyio
import msgspec

from bus import ConfigError
from bus.durable import DurableNames

from .._orchestrator import Orchestrator
from ._cancel_keys import cli_cancel_keys
from ._common import Subcommands, connect_cli, connect_options, say
from ._exit_codes import EXIT_OK
from ._permissions import PermissionWatch
from ._values import duration, parse_json

__all__ = ["cmd_submit", "register"]

NOTE_WAIT = 2.0
"""Seconds the look for a durable agent may take before the task is sent without it."""


def register(commands: Subcommands) -> None:
    """Add ``submit`` and its flags to the parser."""
    p = commands.add("submit", cmd_submit, "dispatch one task and print its result as JSON")
    p.add_argument("capability", help="the capability to send the task to")
    p.add_argument(
        "payload",
        nargs="?",
        default="{}",
        help="the payload as JSON, or - to read stdin (default {}, an empty object)",
    )
    p.add_argument(
        "--timeout",
        type=duration,
        default=30.0,
        help="how long to wait: seconds or a duration, e.g. 30, 500ms, 1m30s (default 30s)",
    )
    p.add_argument("--task-id", default=None, help="task ID to use (to retry a task)")
    p.add_argument("--agent", default=None, help="send to this agent id directly")
    p.add_argument("--sender", default="cli", help="the Agent-Sender header (default cli)")
    p.add_argument("--pretty", action="store_true", help="indent the JSON result")
    p.add_argument(
        "--durable",
        action="store_true",
        help="store the task in JetStream: it waits for an agent, survives restarts, is "
        "retried, and its result can be fetched later ('callboard result TASK_ID')",
    )
    p.add_argument(
        "--no-wait",
        action="store_true",
        help="with --durable: print the task's record (with its ID) and exit at once",
    )


async def cmd_submit(args: argparse.Namespace) -> int:
    """Dispatch one task and print its result."""
    text = sys.stdin.read() if args.payload == "-" else args.payload
    payload = parse_json(text, "the payload")
    durable = args.durable or args.no_wait
    look = anyio.CancelScope()
    info = f"$JS.API.CONSUMER.INFO.{DurableNames(args.prefix).tasks_stream}.".lower()

    def may_not_look(kind: str, subject: str) -> bool:
        """A login that may not read consumers sends the task without the look."""
        if kind == "publish" and subject.lower().startswith(info):  # nats-py lowercases
            look.cancel()
            return True
        return False

    watch = PermissionWatch(connect_options(args).user, expected=may_not_look)
    async with connect_cli(args, watch=watch) as nc:
        orchestrator = Orchestrator(nc, prefix=args.prefix, name=args.sender)
        if durable:  # security: the user's secret, so that 'callboard cancel' can cancel it
            try:
                keys = cli_cancel_keys(create=True)
                orchestrator.client.cancel_keys = orchestrator.durable.client.cancel_keys = keys
            except ConfigError as exc:
                say(
                    args,
                    f"note: {exc}; 'callboard cancel' cannot cancel this task",
                    level=logging.WARNING,
                )
        if durable and args.agent is None:
            # the streams first, as the submission would: a login refused them stops here
            await orchestrator.durable.client.ensure_ready()
            with look, anyio.move_on_after(NOTE_WAIT):
                await _note_if_unserved(args, orchestrator)
        if args.no_wait:
            record = await orchestrator.durable.client.submit(
                args.capability, payload, task_id=args.task_id
            )
            sys.stdout.write(msgspec.json.encode(record).decode() + "\n")
            return EXIT_OK
        reply = await orchestrator.request(
            args.capability,
            payload,
            timeout=args.timeout,
            task_id=args.task_id,
            agent_id=args.agent,
            durable=durable,
        )
    if args.verbose:
        say(
            args,
            f"task {reply.task_id} answered by {reply.sender}",
            task_id=reply.task_id,
            agent=reply.sender,
            capability=args.capability,
        )
    encoded = msgspec.json.encode(reply.payload)
    if args.pretty:
        encoded = msgspec.json.format(encoded, indent=2)
    sys.stdout.write(encoded.decode() + "\n")
    return EXIT_OK


async def _note_if_unserved(args: argparse.Namespace, orchestrator: Orchestrator) -> None:
    """Say at once when no agent takes durable tasks of the capability (a daemon
    without ``[durable]`` serves core requests only): the task is stored anyway and
    waits for an agent that starts later, but the user should not wait in silence."""
    if await orchestrator.durable.client.served(args.capability) is not False:
        return
    say(
        args,
        f"note: no agent serves durable tasks of {args.capability!r} yet; the task waits in "
        "the work queue until one starts. A daemon serves them with a [durable] section in "
        "its config (an empty one takes the defaults; see the README's 'Durable tasks on "
        "JetStream')",
        level=logging.WARNING,
        capability=args.capability,
    )
