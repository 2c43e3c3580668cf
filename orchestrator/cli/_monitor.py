"""``callboard monitor``: the status stream as a live table, one line per event,
or the raw JSON events; and with ``--metrics``, the fleet's metrics on ``/metrics``.

Output modes. On a terminal, without ``--follow`` or ``--json``, a table of
the agents redrawn every second. ``--follow`` prints one line per event;
``--json`` prints each event as it came (one JSON object a line). When stdout
is not a terminal, or ``--state``/``--count`` ask for events, the default is
``--follow``, so pipes and scripts get lines as they always did.

With ``--metrics ADDR`` or the table, the whole stream of the prefix is read
(the filters then choose what is printed or shown), the agents already up are
found with one discovery before "following" is printed, and a sweep every
second expires silent agents and forgets long-gone ones
(``monitor/_fleet_view.py``), for the table and the metrics alike.
"""

from __future__ import annotations

import argparse
import datetime
import signal
import sys
import time
from collections.abc import Callable
from contextlib import AsyncExitStack, ExitStack, aclosing
from typing import Any

import anyio
from nats.aio.client import Client
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

from bus import (
    ConfigError,
    ConnectionFailed,
    ConnectionMetrics,
    FleetMetrics,
    MetricsServer,
    RefusalMetrics,
    StatusEvent,
    Subjects,
    connect,
    connection_status,
    wait_until_lost,
)
from bus.security import StatusBinding

from .._live import DEFAULT_HEARTBEAT_TIMEOUT
from .._registry import discover_agents
from ._common import Subcommands, connect_options
from ._exit_codes import EXIT_OK
from ._values import duration, parse_duration
from .monitor import (
    DEFAULT_FORGET_AFTER,
    DEFAULT_MAX_AGENTS,
    DEFAULT_MAX_CAPABILITIES,
    FleetView,
    LiveScreen,
    Tracked,
    fleet_totals,
    follow_status,
    format_status,
    render_table,
    replay_and_follow_status,
    status_subject,
)

__all__ = ["REFRESH_INTERVAL", "MonitorMetrics", "cmd_monitor", "output_mode", "register"]

REFRESH_INTERVAL = 1.0
"""Seconds between two redraws of the table (and two sweeps of the fleet)."""
DISCOVERY_WAIT = 0.5
"""Seconds to collect the INFO replies of the agents already up at start."""


def register(commands: Subcommands) -> None:
    """Add ``monitor`` and its flags to the parser."""
    p = commands.add(
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
        type=duration,
        default=DEFAULT_HEARTBEAT_TIMEOUT,
        metavar="DURATION",
        help="time of silence after which an agent counts as expired "
        f"(default {DEFAULT_HEARTBEAT_TIMEOUT:g}, as the orchestrator's registry)",
    )
    p.add_argument(
        "--forget-after",
        type=duration,
        default=DEFAULT_FORGET_AFTER,
        metavar="DURATION",
        help="time an offline or expired agent stays in the table and in /metrics "
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


def output_mode(args: argparse.Namespace, *, tty: bool) -> str:
    """``live`` (the table), ``follow`` (a line per event) or ``json`` (raw events)."""
    if args.json:
        return "json"
    if args.follow or args.state or args.count or not tty:
        return "follow"
    return "live"


class MonitorMetrics:
    """The monitor's own registry (the fleet, its connection, the process) and its
    ``/metrics`` and ``/healthz`` server.

    Args:
        address: where to serve (``--metrics``).
        connection_name: the NATS connection's name, its ``connection`` label.

    Attributes:
        live_agents: agents live at the last sweep; ``health`` reports it.
    """

    def __init__(self, address: str, connection_name: str | None) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.fleet = FleetMetrics(self.registry)
        self.refusals = RefusalMetrics(self.registry)
        self.connections = ConnectionMetrics(self.registry, refusals=self.refusals)
        self.connection = self.connections.track(connection_name)
        self.server = MetricsServer(address, self.registry, health=self.health)
        self.live_agents = 0

    def health(self) -> tuple[bool, dict[str, Any]]:
        """200 while connected to NATS (the stream is being read), else 503 (``connection``
        says why: reconnecting, refused, closed)."""
        connection = connection_status(self.connection)
        connected = connection == "connected"
        status = "ok" if connected else "unhealthy"
        details = {"status": status, "connected": connected, "connection": connection}
        return connected, {**details, "agents": self.live_agents}


async def cmd_monitor(args: argparse.Namespace) -> int:
    """Show the status stream (see the module docstring for the modes)."""
    for flag in ("heartbeat_timeout", "forget_after"):
        if not getattr(args, flag) > 0:
            raise ConfigError(f"--{flag.replace('_', '-')} must be a positive number of seconds")
    for flag in ("max_agents", "max_capabilities"):
        if not getattr(args, flag) > 0:
            raise ConfigError(f"--{flag.replace('_', '-')} must be a positive number")
    if args.since is not None:
        parse_duration(args.since)  # a bad duration is a usage error before connecting
    mode = output_mode(args, tty=sys.stdout.isatty())
    options = connect_options(args, "callboard-monitor")
    metrics = None if args.metrics is None else MonitorMetrics(args.metrics, options.name)
    async with AsyncExitStack() as stack:
        if metrics is not None:
            url = (await stack.enter_async_context(metrics.server)).url
            print(
                f"callboard monitor metrics on {url}/metrics (health on {url}/healthz)",
                file=sys.stderr,
                flush=True,
            )
        nc = await stack.enter_async_context(
            connect(options=options, metrics=None if metrics is None else metrics.connections)
        )
        monitor = _Monitor(nc, args, mode, metrics)
        code = await monitor.run()
    if monitor.lost is not None:
        raise ConnectionFailed(
            f"{monitor.lost}: the monitor stops so that its supervisor restarts it"
        )
    return code


class _Monitor:
    """One run of the command: the stream read, the fleet kept, the output written."""

    def __init__(
        self, nc: Client, args: argparse.Namespace, mode: str, metrics: MonitorMetrics | None
    ) -> None:
        self.nc = nc
        self.args = args
        self.mode = mode
        self.metrics = metrics
        self.subjects = Subjects(args.prefix)
        self.shown_subject = status_subject(self.subjects, args.agent, args.state)
        self.binding = StatusBinding(self.subjects)  # security: events bound to their subject
        if metrics is not None:
            self.binding.on_rejected = metrics.refusals.counter("status_body_mismatch")
        tracked = mode == "live" or metrics is not None
        self.view = (
            FleetView(
                heartbeat_timeout=args.heartbeat_timeout,
                forget_after=args.forget_after,
                max_agents=args.max_agents,
                max_capabilities=args.max_capabilities,
            )
            if tracked
            else None
        )
        self.clock: Callable[[], float] = time.monotonic
        self.subscribed = anyio.Event()
        self.screen: LiveScreen | None = None
        self.lost: str | None = None

    async def run(self) -> int:
        # the screen is left after the task group has stopped every task that draws
        with ExitStack() as stack, anyio.open_signal_receiver(signal.SIGTERM) as signals:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._read, tg.cancel_scope)
                await self.subscribed.wait()  # "following" is printed before the screen
                if self.mode == "live":
                    self.screen = stack.enter_context(LiveScreen(sys.stdout))
                if self.view is not None:
                    tg.start_soon(self._tick)
                if self.metrics is not None:
                    tg.start_soon(self._end_when_lost, tg.cancel_scope)
                async for _ in signals:  # SIGTERM: stop as cleanly as Ctrl-C
                    break
                tg.cancel_scope.cancel()
        return EXIT_OK

    async def _end_when_lost(self, scope: anyio.CancelScope) -> None:
        """A monitor serving metrics ends once its connection will not come back."""
        assert self.metrics is not None
        self.lost = await wait_until_lost(self.metrics.connection)
        scope.cancel()

    def _ready(self) -> None:
        self.subscribed.set()
        print(f"following {self.shown_subject} (Ctrl-C to stop)", file=sys.stderr, flush=True)

    def _no_history(self, why: str) -> None:
        print(
            f"cannot replay --since {self.args.since}: {why}; showing live events only",
            file=sys.stderr,
            flush=True,
        )

    async def _read(self, scope: anyio.CancelScope) -> None:
        tracked = self.view is not None
        subject = self.subjects.all_status() if tracked else self.shown_subject
        status_prefix = self.subjects.all_status()[:-1]
        prepare = self._discover if tracked else None
        if self.args.since is not None:
            since = time.time() - parse_duration(self.args.since)
            stream = replay_and_follow_status(
                self.nc,
                self.subjects,
                subject,
                since=since,
                on_ready=self._ready,
                on_no_history=self._no_history,
            )
        else:
            stream = follow_status(self.nc, subject, on_ready=self._ready, prepare=prepare)
        printed = 0
        async with aclosing(stream):  # unsubscribed at once, whatever ends the loop
            async for received, event, raw in stream:
                if isinstance(event, StatusEvent) and not self.binding.accepts(received, event):
                    continue  # security: body and subject disagree (dropped, counted)
                if event is None and self.metrics is not None:
                    self.metrics.refusals.count("malformed_status_event")  # not JSON
                if isinstance(event, StatusEvent):
                    self._observe(event)
                if self.mode == "live" or not self._shown(received.removeprefix(status_prefix)):
                    continue
                json_line = self.mode == "json"
                print(raw.decode(errors="replace") if json_line else format_status(event, raw))
                sys.stdout.flush()
                printed += 1
                if self.args.count and printed >= self.args.count:
                    break
        scope.cancel()  # --count events printed: the command is done

    def _shown(self, tokens: str) -> bool:
        """Whether an event on ``<agent>.<state>`` passes ``--agent`` and ``--state``."""
        agent, _, state = tokens.rpartition(".")
        return (self.args.agent in (None, agent)) and (self.args.state in (None, state))

    def _observe(self, event: StatusEvent) -> None:
        if self.view is None:
            return
        tracked = self.view.observe(event, self.clock())
        if self.metrics is not None:
            self._count(tracked)
            if tracked:
                self.metrics.fleet.observe(event, tracked.capabilities)

    def _count(self, tracked: Tracked) -> None:
        """Forget the agents the view forgot to make room; count what it left out."""
        assert self.metrics is not None
        fleet = self.metrics.fleet
        for agent_id in tracked.forgotten:
            fleet.forget(agent_id)
        for what in tracked.left_out:
            fleet.left_out.labels(what).inc()

    async def _discover(self) -> None:
        """Agents already up when the monitor starts say nothing until their next beat,
        so they are asked once, before any event is read (the events then win)."""
        assert self.view is not None
        for agent in await discover_agents(self.nc, self.subjects, wait=DISCOVERY_WAIT):
            found = self.view.discovered(
                agent.id, agent.capabilities, agent.max_concurrency, self.clock()
            )
            if self.metrics is not None:
                self._count(found)
                if found:
                    self.metrics.fleet.live(agent.id, found.capabilities, agent.max_concurrency)

    async def _tick(self) -> None:
        while True:
            self._sweep()
            self._draw()
            await anyio.sleep(REFRESH_INTERVAL)

    def _sweep(self) -> None:
        assert self.view is not None
        now = self.clock()
        expired, forgotten = self.view.sweep(now)
        capabilities = self.view.forget_capabilities(now)
        if self.metrics is not None:
            for agent_id in expired:
                self.metrics.fleet.expire(agent_id)
            for agent_id in forgotten:
                self.metrics.fleet.forget(agent_id)
            for capability in capabilities:
                self.metrics.fleet.forget_capability(capability)
            self.metrics.live_agents = self.view.live_count()

    def _draw(self) -> None:
        if self.screen is None or self.view is None:
            return
        now = self.clock()
        rows = [r for r in self.view.rows(now) if self.args.agent in (None, r.agent)]
        width, height = self.screen.size()
        clock = datetime.datetime.now().strftime("%H:%M:%S")
        title = f"callboard monitor {self.args.prefix} {clock}"
        totals = fleet_totals(rows)
        self.screen.draw(render_table(rows, totals, width=width, height=height, title=title))
