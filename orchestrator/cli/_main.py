"""The ``callboard`` command line: the parser, assembled from the command modules.

Each command is one module of this package (``_submit``, ``_monitor``, ...)
whose ``register`` adds its subcommand and flags; a new command is a new
module and a line in ``COMMANDS``. The exit codes are in ``_exit_codes``.

Like the ``nats`` CLI, ``-s/--server`` or ``NATS_URL`` picks the server.
This package is a composition root: the one place that uses both the agent
side (``run``, ``demo``) and the director side.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import anyio

from bus import CallboardError
from bus.observability import (
    Announcer,
    configure_logging,
    resolve_log_format,
    resolve_repeat_window,
)

from .._pipeline import StepFailed
from . import (
    _agents,
    _ask,
    _cancel,
    _demo,
    _gateway,
    _health,
    _history,
    _monitor,
    _pipeline,
    _result,
    _run,
    _server,
    _setup,
    _status,
    _submit,
)
from ._common import (
    USAGE_LOG_FORMAT,
    CallboardParser,
    Command,
    Subcommands,
    add_common_flags,
    connection_flags_given,
    log_format_of,
)
from ._exit_codes import (
    EXIT_AGENT_ERROR,
    EXIT_BROKEN_PIPE,
    EXIT_CONNECTION,
    EXIT_INTERRUPTED,
    EXIT_NO_AGENT,
    EXIT_OK,
    EXIT_PERMISSION,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    exit_code_for,
    exit_codes_epilog,
)

__all__ = [
    "COMMANDS",
    "EXIT_AGENT_ERROR",
    "EXIT_CONNECTION",
    "EXIT_INTERRUPTED",
    "EXIT_NO_AGENT",
    "EXIT_OK",
    "EXIT_PERMISSION",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "build_parser",
    "main",
]

COMMANDS: tuple[Command, ...] = (
    _server,
    _run,
    _submit,
    _status,
    _result,
    _history,
    _cancel,
    _monitor,
    _ask,
    _agents,
    _pipeline,
    _health,
    _setup,
    _gateway,
    _demo,
)
"""Every command module, in the order ``callboard --help`` lists them."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = CallboardParser(
        prog="callboard",
        description="Coordinate a network of AI agents over NATS.",
        epilog=exit_codes_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_flags(parser, suppress=False)
    commands = Subcommands(parser)
    for command in COMMANDS:
        command.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``callboard`` console script."""
    parser = build_parser()
    USAGE_LOG_FORMAT.set(log_format_of(sys.argv[1:] if argv is None else argv, os.environ))
    args = parser.parse_args(argv)
    if not args.connects and (given := connection_flags_given(args)):
        parser.error(
            f"{args.command} takes no connection flags ({', '.join(given)}): it starts its "
            "own server"
        )
    try:
        args.log_format = resolve_log_format(args.log_format, os.environ)
        repeat_window = resolve_repeat_window(os.environ)
    except CallboardError as exc:
        print(f"callboard {args.command}: {exc}", file=sys.stderr)
        return exit_code_for(exc)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    if args.command == "run":
        level = min(level, logging.INFO)
    configure_logging(level, args.log_format, repeat_window=repeat_window)
    try:
        code = _run_command(args)
    except CallboardError as exc:
        report = Announcer(args.log_format, logger="callboard.cli")
        report(f"callboard {args.command}: {exc}", level=logging.ERROR, **_task_fields(exc))
        code = exit_code_for(exc)
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except (BrokenPipeError, BaseExceptionGroup) as exc:
        # `callboard monitor | head`: the reader left; end quietly like any Unix
        # filter, after the context managers have stopped what this process started
        if not _only_broken_pipes(exc):
            raise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_BROKEN_PIPE
    return code


def _run_command(args: argparse.Namespace) -> int:
    """Run the command; the one error that ended a task group comes out as itself,
    to be reported like any other, not as a traceback."""
    try:
        code: int = anyio.run(args.func, args)
    except BaseExceptionGroup as group:
        errors, others = group.split(CallboardError)
        leaves = [] if errors is None else list(_leaves(errors))
        if others is None and len(leaves) == 1:
            raise leaves[0] from group
        raise
    return code


def _leaves(group: BaseExceptionGroup[CallboardError]) -> list[BaseException]:
    leaves: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            leaves.extend(_leaves(exc))
        else:
            leaves.append(exc)
    return leaves


def _task_fields(exc: CallboardError) -> dict[str, Any]:
    """The task an error is about, for the fields of a JSON log line."""
    cause = exc.cause if isinstance(exc, StepFailed) else exc
    return {
        "task_id": getattr(exc, "task_id", None) or getattr(cause, "task_id", None),
        "capability": getattr(exc, "capability", None) or getattr(cause, "capability", None),
        "agent": getattr(cause, "agent_id", None),
    }


def _only_broken_pipes(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_broken_pipes(e) for e in exc.exceptions)
    return isinstance(exc, BrokenPipeError)
