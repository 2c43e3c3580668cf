"""Real nats-server processes for fault tests: a 3-node cluster on loopback, or a
single node that can be killed with SIGKILL and started again on the same ports;
and a load of tasks to run through the fault, with the outcome of each counted.

Each node gets a config file of its own (``listen``, ``server_name``, and for a
cluster ``cluster { name, listen, routes }``) and is started as
``nats-server -c CONFIG -m MONITOR_PORT``; readiness is the server's own
"Server is ready" line, and a cluster counts as formed once every node's
``/routez`` lists a route to each of the others. Processes are stopped by PID.

Nothing here sleeps to wait for something: the log is read line by line in a
thread, and the waits re-check their condition whenever the node logs a line
(the routes of a cluster appear in the log as they connect), with a short
timeout in between so that a quiet node is still re-checked.
"""

from __future__ import annotations

import collections
import json
import logging
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from bus import CallboardError, find_nats_server
from orchestrator import Orchestrator

NODE_START_TIMEOUT = 15.0
"""Seconds a node may take to say "Server is ready"."""
ROUTES_TIMEOUT = 20.0
"""Seconds a cluster may take until every node has a route to every other."""
STOP_TIMEOUT = 10.0
"""Seconds a node may take to exit after SIGTERM before it is killed."""
_RECHECK = 0.2
"""Seconds between two checks of a condition while the node logs nothing."""


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (all bound at once, then released)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class NatsNode:
    """One nats-server process on fixed loopback ports, restartable with the same args.

    Args:
        name: the server name (``server_name``), also used in messages.
        directory: where the config file is written.
        client_port: the client port.
        monitor_port: the HTTP monitoring port (``-m``).
        cluster_port: the route port, or None for a standalone server.
        routes: the route ports of the other nodes.
        cluster_name: the cluster's name.
    """

    def __init__(
        self,
        name: str,
        directory: Path,
        *,
        client_port: int,
        monitor_port: int,
        cluster_port: int | None = None,
        routes: Sequence[int] = (),
        cluster_name: str = "callboard-test",
    ) -> None:
        self.name = name
        self.client_port = client_port
        self.monitor_port = monitor_port
        self.cluster_port = cluster_port
        self.config = directory / f"{name}.conf"
        lines = [f"server_name: {name}", f"listen: 127.0.0.1:{client_port}"]
        if cluster_port is not None:
            route_urls = ", ".join(f"nats-route://127.0.0.1:{port}" for port in routes)
            lines += [
                "cluster {",
                f"  name: {cluster_name}",
                f"  listen: 127.0.0.1:{cluster_port}",
                f"  routes: [{route_urls}]",
                "}",
            ]
        self.config.write_text("\n".join(lines) + "\n")
        self.args = [find_nats_server(), "-c", str(self.config), "-m", str(monitor_port)]
        self.lines: list[str] = []
        self.starts = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._changed = threading.Condition()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.monitor_port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def log(self) -> str:
        """Everything the node has logged, over all its starts."""
        with self._changed:
            return "\n".join(self.lines)

    def start(self) -> NatsNode:
        """Start the process (again, after a kill: same args, same ports); wait until ready."""
        if self.alive():
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.starts += 1
        with self._changed:
            self.lines.append(f"--- {self.name}: start {self.starts} ---")
            mark = len(self.lines)
        self._process = subprocess.Popen(
            self.args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self._reader = threading.Thread(
            target=self._read, args=(self._process,), name=f"log-{self.name}", daemon=True
        )
        self._reader.start()
        self.wait_until(
            lambda: any("Server is ready" in line for line in self.lines[mark:]),
            NODE_START_TIMEOUT,
            "to be ready",
        )
        return self

    def _read(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stderr is not None
        try:
            for raw in process.stderr:
                with self._changed:
                    self.lines.append(raw.decode(errors="replace").rstrip())
                    self._changed.notify_all()
        finally:
            process.stderr.close()
            with self._changed:
                self._changed.notify_all()

    def wait_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Return once ``condition()`` holds; re-checked after every log line (or 0.2 s).

        Raises:
            AssertionError: it did not hold within ``timeout`` seconds, or the
                process exited first; the message shows the node's log.
        """
        deadline = time.monotonic() + timeout
        while True:
            if condition():  # outside the lock: it may ask the monitoring endpoint
                return
            with self._changed:
                if not self.alive():
                    raise AssertionError(f"{self.name} exited while waiting {what}:\n{self.log}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{self.name} still not {what} after {timeout:g}s:\n{self.log}"
                    )
                self._changed.wait(min(left, _RECHECK))

    def monitor(self, endpoint: str) -> dict[str, Any]:
        """A monitoring endpoint's JSON (``routez``, ``connz``, ``varz``, ...)."""
        with urllib.request.urlopen(f"{self.monitor_url}/{endpoint}", timeout=5) as response:
            data: dict[str, Any] = json.load(response)
        return data

    def route_peers(self) -> set[str]:
        """Names of the servers this node has a route to (one each, however pooled)."""
        try:
            routes = self.monitor("routez").get("routes") or []
        except (OSError, urllib.error.URLError):
            return set()
        return {route.get("remote_name") or route["remote_id"] for route in routes}

    def wait_routed(self, peers: Collection[str], timeout: float = ROUTES_TIMEOUT) -> None:
        """Return once this node has a route to every one of ``peers`` (server names)."""
        self.wait_until(
            lambda: set(peers) <= self.route_peers(), timeout, f"routed to {sorted(peers)}"
        )

    def connection_names(self) -> list[str]:
        """The names of the client connections on this node."""
        return [c.get("name", "") for c in self.monitor("connz").get("connections") or []]

    def kill(self) -> None:
        """SIGKILL (no lame-duck mode, no goodbye to the clients or routes) and reap it."""
        self.send_kill()
        process = self._process
        if process is not None:
            process.wait(STOP_TIMEOUT)
        self._join_reader()

    def send_kill(self) -> None:
        """SIGKILL without waiting (safe in an event loop: the fault lands at once);
        ``kill()`` afterwards reaps the process."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers; idempotent."""
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT)
        self._join_reader()

    def _join_reader(self) -> None:
        if self._reader is not None:
            self._reader.join(STOP_TIMEOUT)
            self._reader = None


class Cluster:
    """Nodes with routes to each other, all on loopback."""

    def __init__(self, nodes: Sequence[NatsNode]) -> None:
        self.nodes = list(nodes)

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def node_of(self, url: str) -> NatsNode:
        """The node whose client URL (or ``host:port``) ``url`` names."""
        for node in self.nodes:
            if url.rstrip("/").endswith(f":{node.client_port}"):
                return node
        raise LookupError(f"no node of this cluster listens at {url}")

    def wait_formed(self, timeout: float = ROUTES_TIMEOUT) -> None:
        """Return once every running node has a route to every other running node."""
        running = [node for node in self.nodes if node.alive()]
        for node in running:
            others = {other.name for other in running if other is not node}
            node.wait_routed(others, timeout)

    def logs(self) -> str:
        """Every node's log, for assertion messages."""
        return "\n".join(node.log for node in self.nodes)


@contextmanager
def running_cluster(directory: Path, size: int = 3) -> Iterator[Cluster]:
    """``size`` nats-server nodes routed to each other; all stopped (by PID) on exit."""
    ports = free_ports(3 * size)
    client, cluster, monitor = ports[:size], ports[size : 2 * size], ports[2 * size :]
    nodes = [
        NatsNode(
            f"n{index + 1}",
            directory,
            client_port=client[index],
            monitor_port=monitor[index],
            cluster_port=cluster[index],
            routes=[port for other, port in enumerate(cluster) if other != index],
        )
        for index in range(size)
    ]
    with ExitStack() as stack:
        for node in nodes:
            stack.callback(node.stop)
            node.start()
        formed = Cluster(nodes)
        formed.wait_formed()
        yield formed


@contextmanager
def running_node(directory: Path, name: str = "solo") -> Iterator[NatsNode]:
    """One standalone nats-server on fixed free ports; stopped (by PID) on exit."""
    client_port, monitor_port = free_ports(2)
    node = NatsNode(name, directory, client_port=client_port, monitor_port=monitor_port)
    try:
        yield node.start()
    finally:
        node.stop()


# --- load through a fault ------------------------------------------------------------------


@dataclass
class LoadOutcomes:
    """What became of every task of a load run: its result, a typed error, or nothing.

    Attributes:
        total: tasks sent.
        completed: ids of the tasks that returned their own result.
        failed: typed failures, counted by ``ErrorClass(code)``.
        untyped: failures outside the ``CallboardError`` tree (a bug if any).
        hung: ids of the tasks still waiting at the per-task bound (a bug if any).
        wrong: tasks that got a result that is not theirs (a bug if any).
    """

    total: int
    completed: list[str] = field(default_factory=list)
    failed: collections.Counter[str] = field(default_factory=collections.Counter)
    untyped: list[str] = field(default_factory=list)
    hung: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)

    def summary(self, retried: Collection[str] = ()) -> dict[str, Any]:
        """The counts, with how many completed only thanks to a retry."""
        return {
            "completed": len(self.completed),
            "completed_via_retry": len(set(retried) & set(self.completed)),
            "failed": dict(self.failed),
            "untyped": len(self.untyped),
            "hung": len(self.hung),
        }

    def assert_every_task_ended(self) -> None:
        """Each task ended with its own result or one typed error; none hung."""
        assert not self.untyped, self.untyped[:5]
        assert not self.hung, f"{len(self.hung)} hung: {self.hung[:10]}"
        assert not self.wrong, self.wrong[:5]
        assert len(self.completed) + sum(self.failed.values()) == self.total, self.summary()


async def run_load(
    orch: Orchestrator,
    *,
    tasks: int,
    in_flight: int,
    task_bound: float,
    label: str,
    milestone: int,
    reached: anyio.Event,
    delay_ms: int = 5,
) -> LoadOutcomes:
    """Send ``tasks`` echo tasks, ``in_flight`` at a time; set ``reached`` once
    ``milestone`` have completed (the moment to inject the fault).

    Each task echoes a payload naming it, so a result that is not the task's own is
    caught; a task not done after ``task_bound`` seconds is abandoned and counted hung.
    """
    outcomes = LoadOutcomes(total=tasks)
    limiter = anyio.CapacityLimiter(in_flight)

    async def one(n: int) -> None:
        task_id = f"{label}-{n}"
        payload = {"n": n, "task": task_id, "delay_ms": delay_ms}
        async with limiter:
            with anyio.move_on_after(task_bound) as bound:
                try:
                    reply = await orch.request("echo", payload, task_id=task_id)
                except CallboardError as exc:
                    outcomes.failed[f"{type(exc).__name__}({exc.code})"] += 1
                    return
                except Exception as exc:  # counted; the test fails on it
                    outcomes.untyped.append(repr(exc))
                    return
            if bound.cancelled_caught:
                outcomes.hung.append(task_id)
                return
        if reply.payload != payload or reply.task_id != task_id:
            outcomes.wrong.append(f"{task_id}: {reply.task_id} {reply.payload}")
            return
        outcomes.completed.append(task_id)
        if len(outcomes.completed) == milestone:
            reached.set()

    async with anyio.create_task_group() as tg:
        for n in range(tasks):
            tg.start_soon(one, n)
    return outcomes


def retried_tasks(records: Iterable[logging.LogRecord]) -> collections.Counter[str]:
    """Task id → retries, from the orchestrator's "attempt n/m failed" log records
    (capture ``callboard.orchestrator`` at INFO)."""
    return collections.Counter(
        str(record.args[0])
        for record in records
        if record.name == "callboard.orchestrator"
        and isinstance(record.args, tuple)
        and "attempt" in record.msg
    )


def retry_reasons(records: Iterable[logging.LogRecord]) -> collections.Counter[str]:
    """Why the orchestrator retried (``timeout``, ``no_agent``, ...), counted."""
    return collections.Counter(
        str(record.args[3])
        for record in records
        if record.name == "callboard.orchestrator"
        and isinstance(record.args, tuple)
        and "attempt" in record.msg
    )
