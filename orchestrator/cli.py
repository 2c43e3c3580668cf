"""The ``callboard`` command line.

Exit codes (``submit`` and the other commands that talk to agents):

====  ==========================================================
0     success
1     the agent answered with an error (its code is printed);
      for ``health``: the daemon answered that it is unhealthy
2     usage error: bad flags, bad JSON, bad config file
3     no agent serves the capability
4     timeout: no reply before the deadline
5     cannot connect to NATS (or, for ``health``, to the daemon's /healthz)
130   interrupted (Ctrl-C)
====  ==========================================================

Like the ``nats`` CLI, ``-s/--server`` or ``NATS_URL`` picks the server.
This module is a composition root: the one place (with ``_demo``) that uses
both the agent side (``run``) and the director side.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence

import anyio

from bus import (
    DEFAULT_PREFIX,
    CallboardError,
)
from bus.llm import DEFAULT_MODEL_TIMEOUT

from ._ask import MODEL_ENV, cmd_ask
from ._commands import (
    CONNECTION_FLAGS,
    EXIT_AGENT_ERROR,
    EXIT_BROKEN_PIPE,
    EXIT_CONNECTION,
    EXIT_INTERRUPTED,
    EXIT_NO_AGENT,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    cmd_agents,
    cmd_demo,
    cmd_pipeline,
    cmd_run,
    cmd_server,
    cmd_submit,
    exit_code_for,
)
from ._durable_commands import cmd_history, cmd_result, cmd_status
from ._fleet_view import DEFAULT_FORGET_AFTER, DEFAULT_MAX_AGENTS, DEFAULT_MAX_CAPABILITIES
from ._health_command import add_health_arguments, cmd_health
from ._live import DEFAULT_HEARTBEAT_TIMEOUT
from ._logging import LOG_FORMAT_ENV, LOG_FORMATS, Announcer, configure_logging, resolve_log_format
from ._monitor_command import cmd_monitor

__all__ = [
    "EXIT_AGENT_ERROR",
    "EXIT_CONNECTION",
    "EXIT_INTERRUPTED",
    "EXIT_NO_AGENT",
    "EXIT_OK",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "main",
]


NATS_CLI_ALIASES = {"tls_ca": "--tlsca", "tls_cert": "--tlscert", "tls_key": "--tlskey"}
"""The ``nats`` CLI's spellings, accepted too so its users' habits work."""


def _add_common(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Connection flags, accepted before or after the subcommand."""
    default = argparse.SUPPRESS if suppress else None
    group = parser.add_argument_group("connection")
    for dest, (short, long, help_text) in CONNECTION_FLAGS.items():
        names = [n for n in (short, long, NATS_CLI_ALIASES.get(dest)) if n]
        group.add_argument(*names, dest=dest, default=default, help=help_text, metavar="VALUE")
    group.add_argument(
        "--prefix",
        default=argparse.SUPPRESS if suppress else DEFAULT_PREFIX,
        help=f"subject prefix of the callboard system (default {DEFAULT_PREFIX})",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS if suppress else 0,
        help="more logging on stderr (-vv for debug)",
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=argparse.SUPPRESS if suppress else None,
        help="log on stderr as text (the default) or as JSON lines with task_id fields "
        f"(env {LOG_FORMAT_ENV})",
    )


# --- parser and entry point ------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="callboard",
        description="Coordinate a network of AI agents over NATS.",
        epilog="Exit codes: 0 ok, 1 agent error (health: unhealthy), 2 usage, 3 no agent, "
        "4 timeout, 5 cannot connect, 130 interrupted.",
    )
    _add_common(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, func: Callable[[argparse.Namespace], Awaitable[int]], help_text: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _add_common(p, suppress=True)
        p.set_defaults(func=func)
        return p

    p = command("server", cmd_server, "run an embedded nats-server in the foreground")
    p.add_argument("--port", type=int, default=4222, help="client port (0 = any free port)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    p.add_argument("--monitor-port", type=int, default=None, help="HTTP monitoring port")
    p.add_argument("--store-dir", default=None, help="JetStream store (default: a temp dir)")
    p.add_argument("--no-jetstream", action="store_true", help="do not enable JetStream")

    p = command(
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

    p = command("submit", cmd_submit, "dispatch one task and print its result as JSON")
    p.add_argument("capability", help="the capability to send the task to")
    p.add_argument(
        "payload", nargs="?", default="null", help="the payload as JSON, or - to read stdin"
    )
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (default 30)")
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

    p = command("status", cmd_status, "show a durable task's state, attempts, agent and error")
    p.add_argument("task_id", help="the task ID")
    p.add_argument("--json", action="store_true", help="print the record as JSON")

    p = command("result", cmd_result, "print a durable task's result as JSON")
    p.add_argument("task_id", help="the task ID")
    p.add_argument("--wait", action="store_true", help="wait for the task to finish")
    p.add_argument(
        "--timeout", type=float, default=30.0, help="with --wait: seconds (0 = no limit)"
    )
    p.add_argument("--pretty", action="store_true", help="indent the JSON result")

    p = command(
        "history",
        cmd_history,
        "replay a durable task's story: record revisions and the status events kept for it",
    )
    p.add_argument("task_id", help="the task ID")
    p.add_argument(
        "--since", default=None, metavar="DURATION", help="only events newer than this (10m, 2h)"
    )
    p.add_argument("--json", action="store_true", help="print raw JSON, one a line")

    p = command(
        "monitor",
        cmd_monitor,
        "watch the agents: a live table on a terminal, else one line per status event",
    )
    p.add_argument("--agent", default=None, help="only this agent's events (or row)")
    p.add_argument(
        "--state", default=None, help="only events of this state (e.g. failed); implies --follow"
    )
    output = p.add_mutually_exclusive_group()
    output.add_argument(
        "--follow",
        action="store_true",
        help="one line per event instead of the table (the default when stdout is not a terminal)",
    )
    output.add_argument(
        "--json", action="store_true", help="each event as its raw JSON, one a line"
    )
    p.add_argument(
        "--count", type=int, default=0, help="exit after this many events; implies --follow"
    )
    p.add_argument(
        "--since",
        default=None,
        metavar="DURATION",
        help="first replay the events kept in the status stream from this long ago "
        "(e.g. 10m; needs daemons with a [durable] section), then go on live",
    )
    p.add_argument(
        "--metrics",
        default=None,
        metavar="ADDR",
        help="serve the fleet's /metrics and /healthz on ADDR (PORT or HOST:PORT, loopback "
        "unless a host is given)",
    )
    p.add_argument(
        "--heartbeat-timeout",
        type=float,
        default=DEFAULT_HEARTBEAT_TIMEOUT,
        metavar="SECONDS",
        help="seconds of silence after which an agent counts as expired "
        f"(default {DEFAULT_HEARTBEAT_TIMEOUT:g}, as the orchestrator's registry)",
    )
    p.add_argument(
        "--forget-after",
        type=float,
        default=DEFAULT_FORGET_AFTER,
        metavar="SECONDS",
        help="seconds an offline or expired agent stays in the table and in /metrics "
        f"(default {DEFAULT_FORGET_AFTER:g})",
    )
    p.add_argument(
        "--max-agents",
        type=int,
        default=DEFAULT_MAX_AGENTS,
        metavar="N",
        help="agents tracked at most; beyond, events of new agents are left out and counted "
        f"in callboard_fleet_left_out_total (default {DEFAULT_MAX_AGENTS})",
    )
    p.add_argument(
        "--max-capabilities",
        type=int,
        default=DEFAULT_MAX_CAPABILITIES,
        metavar="N",
        help="capabilities tracked at most, likewise (default "
        f"{DEFAULT_MAX_CAPABILITIES}); one unheard of for --forget-after is forgotten",
    )

    p = command("ask", cmd_ask, "run a request in plain words: decompose, route, aggregate")
    p.add_argument("request", help="what to do, e.g. \"calculate 6*7, then summarize '...'\"")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per step (default 30)")
    p.add_argument("--json", action="store_true", help="print the whole result as JSON")
    g = p.add_argument_group(
        "model",
        "plan the steps and write the answer with a language model; without one, the "
        "request is split at sentences and 'then', and the results are joined",
    )
    g.add_argument(
        "--model",
        default=None,
        metavar="NAME",
        help=f"the model, e.g. llama3.2 (env {MODEL_ENV}; '' for no model)",
    )
    g.add_argument(
        "--provider",
        choices=("ollama", "openai"),
        default="ollama",
        help="ollama, or any OpenAI-compatible server (default ollama)",
    )
    g.add_argument(
        "--model-url",
        default=None,
        metavar="URL",
        help="the model server (env OLLAMA_HOST or OPENAI_BASE_URL; "
        "default the local Ollama or api.openai.com)",
    )
    g.add_argument(
        "--model-timeout",
        type=float,
        default=DEFAULT_MODEL_TIMEOUT,
        metavar="SECONDS",
        help=f"seconds to wait for each answer of the model (default {DEFAULT_MODEL_TIMEOUT:g})",
    )

    p = command("agents", cmd_agents, "list the live agents, their capabilities and load")
    p.add_argument("--wait", type=float, default=0.5, help="seconds to collect answers")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = command("pipeline", cmd_pipeline, "run the steps of a pipeline file (JSON or TOML)")
    p.add_argument("file", help="the pipeline: a .toml file, else JSON ('-' reads stdin)")
    p.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="steps in flight at once (default: the file's max_concurrency, else 1)",
    )
    p.add_argument(
        "--partial",
        action="store_true",
        help="run every step that can run despite failures, instead of stopping at the first",
    )
    p.add_argument(
        "--timeout", type=float, default=30.0, help="seconds per step unless it sets its own"
    )
    p.add_argument("--json", action="store_true", help="print one JSON document of all results")

    p = command(
        "health",
        cmd_health,
        "say whether a daemon is connected and serving, by exit code (for probes)",
    )
    add_health_arguments(p)

    command("demo", cmd_demo, "start a server and agents, run a pipeline, show the events")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``callboard`` console script."""
    args = build_parser().parse_args(argv)
    try:
        args.log_format = resolve_log_format(args.log_format, os.environ)
    except CallboardError as exc:
        print(f"callboard {args.command}: {exc}", file=sys.stderr)
        return exit_code_for(exc)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    if args.command == "run":
        level = min(level, logging.INFO)
    configure_logging(level, args.log_format)
    try:
        code: int = anyio.run(args.func, args)
    except CallboardError as exc:
        report = Announcer(args.log_format, logger="callboard.cli")
        report(f"callboard {args.command}: {exc}", level=logging.ERROR)
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


def _only_broken_pipes(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_broken_pipes(e) for e in exc.exceptions)
    return isinstance(exc, BrokenPipeError)


if __name__ == "__main__":
    sys.exit(main())
