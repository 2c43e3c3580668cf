"""``callboard health``: is a daemon connected and serving? An answer for probes.

Two ways to ask, for two kinds of probe:

- ``--url URL`` or ``--metrics ADDR`` read the daemon's ``/healthz`` (it serves
  one with ``metrics_address``): what systemd or a Kubernetes exec probe asks
  of a daemon on its own machine, without a NATS login.
- ``--agent ID`` or ``--capability NAME`` ping agents on their direct address
  over NATS (``Agent-Op: ping``): whether the bus reaches them, from anywhere.

The exit code is the answer (``health_exit_codes_epilog``); stdout says why in a line,
or as JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import anyio
import msgspec
import nats.errors
from nats.aio.client import Client

from bus import (
    ConfigError,
    NoAgentError,
    Subjects,
    TaskTimeout,
    parse_metrics_address,
)
from bus.codec import OPERATION
from bus.observability._logging import Announcer

from .._registry import discover_agents
from ._common import Subcommands, connect_cli
from ._exit_codes import (
    EXIT_CONNECTION,
    EXIT_NO_AGENT,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_UNHEALTHY,
    health_exit_codes_epilog,
)
from ._values import duration

__all__ = ["DEFAULT_HEALTH_TIMEOUT", "cmd_health", "ping_agent", "register"]

DEFAULT_HEALTH_TIMEOUT = 3.0
"""Seconds to wait for ``/healthz`` or a ping: less than a probe's period."""
DISCOVERY_WAIT = 0.5
"""Seconds ``--capability`` collects the INFO replies of the agents before pinging them."""


def register(commands: Subcommands) -> None:
    """Add ``health`` and its flags to the parser."""
    p = commands.add(
        "health",
        cmd_health,
        "say whether a daemon is connected and serving, by exit code (for probes)",
    )
    p.epilog = health_exit_codes_epilog()
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--url", default=None, help="the daemon's /healthz URL, e.g. http://127.0.0.1:9464/healthz"
    )
    target.add_argument(
        "--metrics",
        default=None,
        metavar="ADDR",
        help="the daemon's metrics address (PORT or HOST:PORT, as its --metrics); reads /healthz",
    )
    target.add_argument("--agent", default=None, metavar="ID", help="ping this agent id over NATS")
    target.add_argument(
        "--capability",
        default=None,
        metavar="NAME",
        help="ping every agent of this capability over NATS",
    )
    p.add_argument(
        "--timeout",
        type=duration,
        default=DEFAULT_HEALTH_TIMEOUT,
        help=f"how long to wait for an answer: seconds or a duration like 500ms "
        f"(default {DEFAULT_HEALTH_TIMEOUT:g}s)",
    )
    p.add_argument("--json", action="store_true", help="print the answer as JSON")


async def ping_agent(
    nc: Client, subjects: Subjects, agent_id: str, *, timeout: float
) -> dict[str, Any]:
    """Ping one agent on its direct address: its load, with ``rtt_ms``.

    Raises:
        NoAgentError: no agent has that id on this prefix.
        TaskTimeout: it did not answer within ``timeout`` seconds.
    """
    started = time.monotonic()
    try:
        reply = await nc.request(
            subjects.agent(agent_id), b"", timeout=timeout, headers={OPERATION: "ping"}
        )
    except nats.errors.NoRespondersError as exc:
        raise NoAgentError(f"no agent {agent_id!r} on prefix {subjects.prefix!r}") from exc
    except nats.errors.TimeoutError as exc:
        raise TaskTimeout(f"agent {agent_id} did not answer a ping within {timeout:g}s") from exc
    try:
        answer = msgspec.json.decode(reply.data)
    except (msgspec.DecodeError, RecursionError):
        answer = None  # something answered: that is all a ping needs
    load = answer if isinstance(answer, dict) else {"agent": agent_id}
    load["rtt_ms"] = round((time.monotonic() - started) * 1000, 3)
    return load


async def cmd_health(args: argparse.Namespace) -> int:
    """Answer with an exit code whether a daemon (or agent) is healthy."""
    if args.agent is not None or args.capability is not None:
        return await _ping_health(args)
    url = _healthz_url(args.url, args.metrics)
    status, document = await anyio.to_thread.run_sync(_fetch_health, url, args.timeout)
    if document.get("status") == "unreachable":
        document["error"] += _METRICS_OFF_HINT
    if args.json:
        _print_json(document)
    else:
        print(_health_summary(document))
    if status is None:
        _report(args, document["error"])
        return EXIT_TIMEOUT if document["status"] == "timeout" else EXIT_CONNECTION
    return EXIT_OK if status == 200 else EXIT_UNHEALTHY


_METRICS_OFF_HINT = (
    ". Is the daemon running with metrics on? It serves /healthz only when its config "
    "sets metrics_address (or with 'callboard run --metrics ADDR'): metrics are off by default"
)


def _healthz_url(url: str | None, metrics: str | None) -> str:
    """``--url`` as given (``/healthz`` when it has no path), or the one of ``--metrics``."""
    if url is None:
        host, port = parse_metrics_address(metrics or "")
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/healthz"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"--url {url!r} is not an http(s) URL, e.g. http://127.0.0.1:9464/healthz"
        )
    if parts.path in ("", "/"):
        parts = parts._replace(path="/healthz")
    return urllib.parse.urlunsplit(parts)


def _fetch_health(url: str, timeout: float) -> tuple[int | None, dict[str, Any]]:
    """(HTTP status, the JSON answer); (None, why) when the daemon cannot be reached."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            status, body = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, TimeoutError):
            why = f"{url} did not answer within {timeout:g}s"
            return None, {"status": "timeout", "url": url, "error": why}
        return None, {"status": "unreachable", "url": url, "error": f"cannot reach {url}: {reason}"}
    try:
        document = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):
        document = None
    if not isinstance(document, dict):
        text = body.decode(errors="replace").strip()[:200]
        document = {"status": "unhealthy" if status != 200 else "ok", "body": text}
    document.setdefault("http_status", status)
    return status, document


def _health_summary(document: dict[str, Any]) -> str:
    """``ok: connected; agents math-1 serving, echo-1 serving`` (or why it is not)."""
    if "error" in document:
        return f"{document['status']}: {document['error']}"
    parts = [str(document.get("status", "unknown"))]
    if "connected" in document:
        why = document.get("connection")  # reconnecting, refused (the login), closed
        parts.append(
            "connected"
            if document["connected"]
            else "not connected to NATS" + (f" ({why})" if why else "")
        )
    agents = document.get("agents")
    if isinstance(agents, dict):
        listed = ", ".join(f"{agent} {state}" for agent, state in sorted(agents.items()))
        parts.append(f"agents {listed}" if listed else "no agents")
    if "body" in document:
        parts.append(f"HTTP {document['http_status']}: {document['body']}")
    return parts[0] + ": " + "; ".join(parts[1:]) if len(parts) > 1 else parts[0]


async def _ping_health(args: argparse.Namespace) -> int:
    """``--agent``/``--capability``: 0 when every agent asked answers its ping."""
    subjects = Subjects(args.prefix)
    async with connect_cli(args) as nc:
        if args.agent is not None:
            ids = [args.agent]
        else:
            found = await discover_agents(nc, subjects, wait=min(args.timeout, DISCOVERY_WAIT))
            ids = [a.id for a in found if args.capability in a.capabilities]
            if not ids:
                problem = f"no agent serves {args.capability!r} on prefix {args.prefix!r}"
                if args.json:
                    _print_json({"status": "unhealthy", "agents": [], "error": problem})
                else:
                    print(f"unhealthy: {problem}")
                _report(args, problem)
                return EXIT_NO_AGENT
        answers: dict[str, dict[str, Any]] = {}

        async def ping(agent_id: str) -> None:
            try:
                answers[agent_id] = await ping_agent(nc, subjects, agent_id, timeout=args.timeout)
            except (NoAgentError, TaskTimeout) as exc:
                answers[agent_id] = {"agent": agent_id, "error": exc.message, "type": exc.type}

        async with anyio.create_task_group() as tg:
            for agent_id in ids:
                tg.start_soon(ping, agent_id)
    results = [answers[i] for i in sorted(answers)]
    failed = [r for r in results if "error" in r]
    if args.json:
        _print_json({"status": "unhealthy" if failed else "ok", "agents": results})
    else:
        print(("unhealthy: " if failed else "ok: ") + "; ".join(map(_ping_summary, results)))
    if not failed:
        return EXIT_OK
    _report(args, failed[0]["error"])
    return EXIT_NO_AGENT if failed[0]["type"] == NoAgentError.type else EXIT_TIMEOUT


def _ping_summary(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"{result['agent']}: {result['error']}"
    load = f"{result.get('in_flight', '?')}/{result.get('max_concurrency', '?')} in flight"
    return f"{result['agent']} answered in {result['rtt_ms']:.1f}ms ({load})"


def _report(args: argparse.Namespace, problem: str) -> None:
    """Say on stderr why the answer is no, in the log format."""
    report = Announcer(getattr(args, "log_format", "text"), logger="callboard.cli")
    report(f"callboard health: {problem}", level=logging.ERROR)


def _print_json(document: Any) -> None:
    sys.stdout.write(msgspec.json.encode(document).decode() + "\n")
