"""Support code for the system tests (the fixtures live in ``conftest.py``):
real CLI processes watched through their pipes, daemon configs, status events.

Nothing here sleeps to wait for something: a process's output is read line by
line in a background thread, and tests wait (with a timeout) for the line they
expect; status events are awaited on the bus with ``anyio.fail_after``.
"""

from __future__ import annotations

import functools
import json
import re
import signal
import subprocess
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import anyio
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from actors import READY_LINE

ROOT = Path(__file__).resolve().parents[2]

STARTUP_TIMEOUT = 20.0
"""Seconds a CLI process may take to say it is ready (interpreter start included)."""
STOP_TIMEOUT = 10.0
"""Seconds a process may take to exit after SIGTERM before it is killed."""

Matcher = str | re.Pattern[str] | Callable[[str], bool]


def _matches(matcher: Matcher, line: str) -> bool:
    if isinstance(matcher, str):
        return matcher in line
    if isinstance(matcher, re.Pattern):
        return matcher.search(line) is not None
    return matcher(line)


class LineReader:
    """Reads a pipe line by line in a thread; tests wait for a matching line.

    Every line is kept (``lines``) so that a failure can show the whole output.
    ``wait_for`` consumes lines in order: each call searches after the line the
    previous call matched.
    """

    def __init__(self, stream: IO[bytes], name: str) -> None:
        self.name = name
        self.lines: list[str] = []
        self.eof = False
        self._stream = stream
        self._cursor = 0
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, name=f"reader-{name}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for raw in self._stream:
                line = raw.decode(errors="replace").rstrip("\r\n")
                with self._changed:
                    self.lines.append(line)
                    self._changed.notify_all()
        finally:
            with self._changed:
                self.eof = True
                self._changed.notify_all()

    @property
    def text(self) -> str:
        """Everything read so far."""
        with self._changed:
            return "\n".join(self.lines)

    def wait_for(self, matcher: Matcher, timeout: float = STARTUP_TIMEOUT) -> str:
        """Return the next line that matches (a substring, regex or predicate).

        Raises:
            AssertionError: no such line within ``timeout`` seconds, or the pipe
                closed first; the message shows what was read.
        """
        with self._changed:
            found = self._changed.wait_for(
                lambda: self._scan(matcher) is not None or self.eof, timeout
            )
            index = self._scan(matcher)
            if index is None:
                why = "the stream ended" if found else f"{timeout:g}s passed"
                raise AssertionError(
                    f"no line matching {matcher!r} on {self.name} before {why}; "
                    f"it said:\n{chr(10).join(self.lines)}"
                )
            self._cursor = index + 1
            return self.lines[index]

    def _scan(self, matcher: Matcher) -> int | None:
        for index in range(self._cursor, len(self.lines)):
            if _matches(matcher, self.lines[index]):
                return index
        return None

    def wait_eof(self, timeout: float = STOP_TIMEOUT) -> None:
        """Return once the whole stream has been read (the writer closed it)."""
        with self._changed:
            if not self._changed.wait_for(lambda: self.eof, timeout):
                raise AssertionError(f"{self.name} still open after {timeout:g}s")

    def close(self, timeout: float = STOP_TIMEOUT) -> None:
        """Wait for the reader to reach the end of the pipe, then close the pipe."""
        self._thread.join(timeout)
        self._stream.close()


class Proc:
    """A CLI process with its stdout and stderr read line by line."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str],
        name: str,
        stdin: int = subprocess.DEVNULL,
    ) -> None:
        self.args = list(args)
        self.name = name
        self.popen = subprocess.Popen(
            self.args,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            cwd=ROOT,
        )
        assert self.popen.stdout is not None and self.popen.stderr is not None
        self.stdout = LineReader(self.popen.stdout, f"{name} stdout")
        self.stderr = LineReader(self.popen.stderr, f"{name} stderr")
        self._closed = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def send_signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        """The exit code, once the process has exited and all its output has been read.

        Fails the test (showing the output) if it does not exit in time.
        """
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} (pid {self.pid}) did not exit within {timeout:g}s; "
                f"stderr:\n{self.stderr.text}"
            ) from None
        self.stdout.wait_eof(timeout)
        self.stderr.wait_eof(timeout)
        return code

    def kill(self) -> None:
        """SIGKILL, and reap the process."""
        if self.alive():
            self.popen.kill()
        self.popen.wait(STOP_TIMEOUT)

    def stop(self) -> None:
        """SIGTERM, wait, SIGKILL if needed; then close the pipes. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.alive():
                self.popen.send_signal(signal.SIGTERM)
                try:
                    self.popen.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self.popen.kill()
                    self.popen.wait(STOP_TIMEOUT)
        finally:
            self.stdout.close()
            self.stderr.close()
            if self.popen.stdin is not None:
                self.popen.stdin.close()

    def output(self) -> str:
        """Both streams, for assertion messages."""
        return f"--- {self.name} stdout ---\n{self.stdout.text}\n--- stderr ---\n{self.stderr.text}"


# --- daemons -----------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {value!r} in these tests")


def daemon_toml(prefix: str, agents: Sequence[Mapping[str, Any]], **settings: Any) -> str:
    """The text of a daemon config file; ``nats={...}`` becomes the ``[nats]`` table."""
    nats = settings.pop("nats", None)
    lines = [f"prefix = {_toml_value(prefix)}"]
    lines += [f"{key} = {_toml_value(value)}" for key, value in settings.items()]
    if nats:
        lines.append("[nats]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in nats.items()]
    for agent in agents:
        lines.append("[[agents]]")
        options = agent.get("options") or {}
        lines += [f"{k} = {_toml_value(v)}" for k, v in agent.items() if k != "options"]
        if options:
            lines.append("[agents.options]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in options.items()]
    return "\n".join(lines) + "\n"


_READY = re.compile(re.escape(READY_LINE) + r": (\d+) agent\(s\): (.*)$")
_DAEMON_METRICS_LINE = re.compile(r"callboard daemon metrics on (http://\S+)/metrics")


def parse_ready_line(line: str) -> list[str]:
    """The agent ids of a daemon's ready line."""
    match = _READY.search(line)
    assert match, f"unexpected ready line: {line!r}"
    ids = [i.strip() for i in match.group(2).split(",")]
    assert len(ids) == int(match.group(1)), line
    return ids


@dataclass
class Daemon:
    """A running ``callboard run CONFIG`` and the agent ids it announced."""

    proc: Proc
    agent_ids: list[str]
    config: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def metrics_url(self) -> str:
        """The base URL of its ``/metrics`` and ``/healthz``, as it printed it (it binds
        port 0 in tests, so only it knows the port)."""
        match = _DAEMON_METRICS_LINE.search(self.proc.stderr.text)
        assert match, self.proc.output()
        return match.group(1)


# --- status events -------------------------------------------------------------------------


class StatusWatch:
    """Collects every status event of a prefix; tests await the one they expect."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.subjects: list[str] = []
        self._changed = anyio.Event()

    async def on_message(self, msg: Msg) -> None:
        self.events.append(json.loads(msg.data))
        self.subjects.append(msg.subject)
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        """The first event (seen so far or to come) that satisfies ``predicate``."""
        index = 0
        try:
            with anyio.fail_after(timeout):
                while True:
                    changed = self._changed
                    for event in self.events[index:]:
                        if predicate(event):
                            return event
                    index = len(self.events)
                    await changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"no matching status event within {timeout:g}s; saw {self.events}"
            ) from None

    async def wait_state(
        self, state: str, *, timeout: float = 10.0, **fields: Any
    ) -> dict[str, Any]:
        """The first event in ``state`` whose fields equal ``fields``."""
        return await self.wait_for(
            lambda ev: ev.get("state") == state and all(ev.get(k) == v for k, v in fields.items()),
            timeout,
        )


@asynccontextmanager
async def watch_status(nc: Client, prefix: str) -> AsyncIterator[StatusWatch]:
    """Subscribe to ``<prefix>.status.>`` (confirmed by the server) for the block."""
    watch = StatusWatch()
    sub = await nc.subscribe(f"{prefix}.status.>", cb=watch.on_message)
    await nc.flush()
    try:
        yield watch
    finally:
        await sub.unsubscribe()


async def wait_line(reader: LineReader, matcher: Matcher, timeout: float = 10.0) -> str:
    """``LineReader.wait_for`` from async code, without blocking the event loop."""
    return await anyio.to_thread.run_sync(reader.wait_for, matcher, timeout)


async def wait_exit(proc: Proc, timeout: float = STOP_TIMEOUT) -> int:
    """``Proc.wait`` from async code."""
    return await anyio.to_thread.run_sync(proc.wait, timeout)


CLI_TIMEOUT = 20.0
"""Seconds a one-shot CLI command may run before the test gives up on it."""


def run_cli(
    callboard_cmd: list[str],
    env: Mapping[str, str],
    args: Sequence[str],
    *,
    stdin: str | None = None,
    timeout: float = CLI_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run ``callboard ARGS`` to completion; fail the test if it outlives ``timeout``."""
    try:
        return subprocess.run(
            [*callboard_cmd, *args],
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=dict(env),
            timeout=timeout,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired as exc:  # subprocess.run has killed it
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        pytest.fail(
            f"`callboard {' '.join(args)}` did not exit within {timeout:g}s; "
            f"the end of its stderr:\n{stderr[-600:]}"
        )


async def run_cli_async(
    callboard_cmd: list[str], env: Mapping[str, str], args: Sequence[str]
) -> subprocess.CompletedProcess[str]:
    """``run_cli`` off the event loop."""
    return await anyio.to_thread.run_sync(functools.partial(run_cli, callboard_cmd, env, args))
