"""The implementations of the ``callboard`` subcommands (the parser is in ``cli``).

Like the CLI, this is a composition root: ``run`` and ``demo`` use the agent
side, the others only the director side.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

import anyio
import msgspec

from bus import (
    DEFAULT_PREFIX,
    CallboardError,
    ConfigError,
    ConnectionFailed,
    ConnectOptions,
    EmbeddedServer,
    NoAgentError,
    TaskTimeout,
    UnknownTask,
    connect,
    env_fields,
)
from bus.codec import OPERATION
from bus.observability._logging import Announcer

from .._orchestrator import Orchestrator
from .._pipeline import StepFailed, StepResult, load_pipeline
from .._router import NoRouteError

log = logging.getLogger("callboard.cli")

EXIT_OK = 0
EXIT_AGENT_ERROR = 1
EXIT_USAGE = 2
EXIT_NO_AGENT = 3
EXIT_TIMEOUT = 4
EXIT_CONNECTION = 5
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

CONNECTION_FLAGS = {
    "server": ("-s", "--server", "NATS server URL(s), comma-separated (env NATS_URL)"),
    "user": (None, "--user", "user name (env NATS_USER)"),
    "password": (None, "--password", "password (env NATS_PASSWORD)"),
    "token": (None, "--token", "auth token (env NATS_TOKEN)"),
    "creds": (None, "--creds", "credentials file, JWT + nkey (env NATS_CREDS)"),
    "nkey": (None, "--nkey", "nkey seed file (env NATS_NKEY)"),
    "tls_ca": (None, "--tls-ca", "CA file that signs the server's certificate (env NATS_CA)"),
    "tls_cert": (None, "--tls-cert", "client certificate for mutual TLS (env NATS_CERT)"),
    "tls_key": (None, "--tls-key", "client key for mutual TLS (env NATS_KEY)"),
    "inbox_prefix": (
        None,
        "--inbox-prefix",
        "subject prefix of replies, e.g. _INBOX_orchestrator (env NATS_INBOX_PREFIX)",
    ),
}


def connect_flags(args: argparse.Namespace) -> dict[str, Any]:
    flags = {dest: getattr(args, dest, None) for dest in CONNECTION_FLAGS}
    flags["url"] = flags.pop("server")
    return flags


def connect_options(args: argparse.Namespace) -> ConnectOptions:
    return ConnectOptions.layered({"name": "callboard-cli"}, env_fields(), connect_flags(args))


def _parse_json(text: str, what: str) -> Any:
    try:
        return msgspec.json.decode(text.encode())
    except msgspec.DecodeError as exc:
        raise ConfigError(
            f"{what} is not valid JSON ({exc}): quote it for the shell, e.g. "
            '\'{"expression": "6*7"}\''
        ) from exc


async def cmd_server(args: argparse.Namespace) -> int:
    """Run an embedded nats-server in the foreground until Ctrl-C."""
    server = EmbeddedServer(
        port=args.port,
        host=args.host,
        jetstream=not args.no_jetstream,
        store_dir=args.store_dir,
        monitor_port=args.monitor_port,
    )
    server.echo_log = args.verbose > 0
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with server:
            print(f"nats-server listening on {server.url} (pid {server.pid})", flush=True)
            if server.monitor_url:
                print(f"monitoring on {server.monitor_url}", flush=True)
            print("stop with Ctrl-C", flush=True)
            exit_code = EXIT_OK
            async with anyio.create_task_group() as tg:

                async def watch_process() -> None:
                    nonlocal exit_code
                    code = await anyio.to_thread.run_sync(server.wait, abandon_on_cancel=True)
                    print(f"nats-server exited with code {code}", file=sys.stderr)
                    exit_code = code or 1
                    tg.cancel_scope.cancel()

                tg.start_soon(watch_process)
                async for _ in signals:
                    break
                tg.cancel_scope.cancel()
    return exit_code


async def cmd_run(args: argparse.Namespace) -> int:
    """Run the agents of a config file until SIGTERM/SIGINT; SIGHUP reloads the file."""
    from actors import DaemonConfig, load_config, run_daemon

    def load() -> DaemonConfig:
        """The file with the command line's overrides, at start and on every reload."""
        config = load_config(args.config)
        if getattr(args, "prefix", DEFAULT_PREFIX) != DEFAULT_PREFIX:
            config.prefix = args.prefix
        if args.metrics is not None:
            config.metrics_address = args.metrics
        return config

    announce = Announcer(getattr(args, "log_format", "text"), logger="callboard.daemon")
    await run_daemon(load(), flags=connect_flags(args), reload=load, announce=announce)
    return EXIT_OK


async def cmd_submit(args: argparse.Namespace) -> int:
    """Dispatch one task and print its result."""
    text = sys.stdin.read() if args.payload == "-" else args.payload
    payload = _parse_json(text, "the payload")
    durable = args.durable or args.no_wait
    async with connect(options=connect_options(args)) as nc:
        orchestrator = Orchestrator(nc, prefix=args.prefix, name=args.sender)
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
        print(f"task {reply.task_id} answered by {reply.sender}", file=sys.stderr)
    encoded = msgspec.json.encode(reply.payload)
    if args.pretty:
        encoded = msgspec.json.format(encoded, indent=2)
    sys.stdout.write(encoded.decode() + "\n")
    return EXIT_OK


async def cmd_agents(args: argparse.Namespace) -> int:
    """List the live agents: capabilities, load, when last heard from."""
    async with connect(options=connect_options(args)) as nc:
        orchestrator = Orchestrator(nc, prefix=args.prefix, name="cli")
        agents = await orchestrator.discover(wait=args.wait)
        rows = await _agent_rows(orchestrator, agents)
    if args.json:
        sys.stdout.write(msgspec.json.encode(rows).decode() + "\n")
        return EXIT_OK
    if not rows:
        print(f"no agents answered on prefix {args.prefix!r}", file=sys.stderr)
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


async def cmd_pipeline(args: argparse.Namespace) -> int:
    """Run the steps of a pipeline file and print one line per step (or one JSON document).

    Exit code: 0 when every step succeeded; else that of the first failure
    (1 a step's error, 2 a bad file or reference, 3 no agent, 4 timeout, 5 connection).
    """
    text = sys.stdin.buffer.read() if args.file == "-" else None
    pipeline = load_pipeline(args.file, text)  # a bad file fails here, before connecting
    concurrency = pipeline.max_concurrency if args.concurrency is None else args.concurrency
    if concurrency < 1:
        raise ConfigError(f"--concurrency must be at least 1, got {concurrency}")
    async with connect(options=connect_options(args)) as nc:
        orchestrator = Orchestrator(nc, prefix=args.prefix, name="cli")
        try:
            results = await orchestrator.run_pipeline(
                pipeline.steps,
                timeout=args.timeout,
                max_concurrency=concurrency,
                partial=args.partial,
            )
        except StepFailed as exc:
            shown = sorted([*exc.results, exc.result], key=lambda r: r.seq)
            _print_pipeline(shown, args.json, error=str(exc), cancelled=exc.cancelled)
            print(f"callboard pipeline: {exc}", file=sys.stderr)
            if exc.cancelled:
                cancelled = ", ".join(map(str, exc.cancelled))
                print(f"callboard pipeline: cancelled steps {cancelled}", file=sys.stderr)
            return exit_code_for(exc)
    _print_pipeline(results, args.json)
    failures = [r.error for r in results if r.error is not None and r.error.code != 424]
    if not failures:
        return EXIT_OK
    print(f"callboard pipeline: {len(failures)} step(s) failed", file=sys.stderr)
    return _PIPELINE_EXIT_CODES.get(failures[0].type, EXIT_AGENT_ERROR)


_PIPELINE_EXIT_CODES = {
    "no_agent": EXIT_NO_AGENT,
    "timeout": EXIT_TIMEOUT,
    "connection": EXIT_CONNECTION,
    "bad_reference": EXIT_USAGE,
}
"""Exit codes of ``--partial`` runs, by the first failed step's error type."""


def _print_pipeline(
    results: Sequence[StepResult],
    as_json: bool,
    *,
    error: str | None = None,
    cancelled: Sequence[int] = (),
) -> None:
    if as_json:
        document: dict[str, Any] = {"ok": error is None and all(r.ok for r in results)}
        if error is not None:
            document.update(error=error, cancelled=list(cancelled))
        document["results"] = results
        sys.stdout.write(msgspec.json.encode(document).decode() + "\n")
        return
    for r in results:
        name = f" {r.step_id!r}" if r.step_id else ""
        by = f" by {r.agent}" if r.agent else ""
        where = f"{by} in {r.elapsed_ms:.1f}ms" if r.task_id else " not run"
        if r.error is None:
            outcome = msgspec.json.encode(r.result).decode()
        else:
            outcome = f"error {r.error.code} ({r.error.type}): {r.error.message}"
        print(f"{r.seq}. {r.capability}{name}{where}: {outcome}", flush=True)


async def cmd_demo(args: argparse.Namespace) -> int:
    """Run the zero-setup demo."""
    from ._demo import run_demo

    await run_demo()
    return EXIT_OK


_EXIT_CODES: tuple[tuple[type[CallboardError], int], ...] = (
    (NoRouteError, EXIT_NO_AGENT),
    (NoAgentError, EXIT_NO_AGENT),
    (UnknownTask, EXIT_NO_AGENT),
    (TaskTimeout, EXIT_TIMEOUT),  # before AgentError: DeadlineExceeded is both
    (ConnectionFailed, EXIT_CONNECTION),
    (ConfigError, EXIT_USAGE),
)
"""First match wins; anything else is the agent's (or the task's) own error."""


def exit_code_for(exc: CallboardError) -> int:
    """The exit code that tells a script what kind of failure ``exc`` is."""
    if isinstance(exc, StepFailed):
        exc = exc.cause
    return next((code for kind, code in _EXIT_CODES if isinstance(exc, kind)), EXIT_AGENT_ERROR)
