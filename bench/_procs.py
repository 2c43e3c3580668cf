"""The serving side in processes of its own: raw responders and callboard agents.

Every variant runs its responder (raw) or agent host (callboard) in a separate
process from the requester, so each side has a core of its own as far as a
2-core machine allows; replicas are more such processes. The parent talks to a
child by signals and reads one word per line on its stdout:

- the child prints ``ready`` once it serves (subscriptions confirmed);
- SIGUSR1 starts its cProfile (``profiling``), SIGUSR2 stops it and writes the
  stats to ``--profile`` (``profiled``);
- SIGTERM or SIGINT stops it gracefully (the agent host drains and says
  ``offline``).

Run as ``python -m bench._procs --url URL --role raw|agent``.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType

import anyio

from ._callboard import connect_callboard, echo_agent
from ._loops import LOOPS, backend_options
from ._raw import connect_raw, raw_responder

__all__ = ["ROLES", "ServingSide", "ServingSpec"]

ROLES = ("raw", "agent")
ROOT = Path(__file__).resolve().parent.parent
_READY_TIMEOUT = 30.0
_STOP_TIMEOUT = 20.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServingSpec:
    """What the serving processes of one variant are.

    Attributes:
        role: ``raw`` (bytes echo responder) or ``agent`` (AgentHost + EchoAgent).
        loop: the event loop in the child, ``asyncio`` or ``uvloop``.
        replicas: how many processes (one queue group).
        max_concurrency: the agent's limit (it refuses more with 503).
        hold_ms: raw only: milliseconds to keep each request before replying.
    """

    role: str
    loop: str = "asyncio"
    replicas: int = 1
    max_concurrency: int = 1024
    hold_ms: int = 0

    def command(self, url: str, profile: Path | None) -> list[str]:
        cmd = [sys.executable, "-m", "bench._procs", "--url", url, "--role", self.role]
        cmd += ["--loop", self.loop, "--max-concurrency", str(self.max_concurrency)]
        cmd += ["--hold-ms", str(self.hold_ms)]
        if profile is not None:
            cmd += ["--profile", str(profile)]
        return cmd


class ServingSide:
    """The processes of one ``ServingSpec``, started on entry and stopped (by
    PID, SIGTERM then SIGKILL) on exit.

    Args:
        url: the nats-server's URL.
        spec: what to run.
        profile: where the first replica writes its cProfile stats, if profiled.
    """

    def __init__(self, url: str, spec: ServingSpec, *, profile: Path | None = None) -> None:
        self.url = url
        self.spec = spec
        self.profile = profile
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def __enter__(self) -> ServingSide:
        try:
            for index in range(self.spec.replicas):
                profile = self.profile if index == 0 else None
                process = subprocess.Popen(
                    self.spec.command(self.url, profile),
                    cwd=ROOT,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    bufsize=0,
                )
                self.processes.append(process)
            for process in self.processes:
                _expect(process, "ready")
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start_profile(self) -> None:
        """Start the first replica's profiler; return once it runs."""
        self._signal_first(signal.SIGUSR1, "profiling")

    def stop_profile(self) -> None:
        """Stop the first replica's profiler; return once its stats are written."""
        self._signal_first(signal.SIGUSR2, "profiled")

    def _signal_first(self, signum: int, answer: str) -> None:
        if self.profile is None:
            raise RuntimeError("this serving side was not started with a profile path")
        process = self.processes[0]
        process.send_signal(signum)
        _expect(process, answer)

    def stop(self) -> None:
        """Stop every process this object started; idempotent."""
        processes, self.processes = self.processes, []
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()


def _expect(process: subprocess.Popen[bytes], word: str) -> None:
    """Wait for ``word`` on a line of the child's stdout."""
    assert process.stdout is not None
    deadline = time.monotonic() + _READY_TIMEOUT
    line = b""
    while time.monotonic() < deadline:
        readable, _, _ = select.select([process.stdout], [], [], 0.1)
        if readable:
            chunk = process.stdout.read(1)
            if not chunk:
                break
            if chunk != b"\n":
                line += chunk
                continue
            if line.decode().strip() == word:
                return
            line = b""
        elif process.poll() is not None:
            break
    raise RuntimeError(
        f"bench child {process.pid} ({process.args!r}) did not say "
        f"{word!r} (exit code {process.poll()})"
    )


# --- the child ---------------------------------------------------------------


@asynccontextmanager
async def _serving(args: argparse.Namespace) -> AsyncIterator[None]:
    name = f"bench-{args.role}-{os.getpid()}"
    if args.role == "raw":
        async with connect_raw(args.url, name) as nc, raw_responder(nc, hold=args.hold_ms / 1000.0):
            yield
    else:
        async with (
            connect_callboard(args.url, name) as nc,
            echo_agent(nc, max_concurrency=args.max_concurrency),
        ):
            yield


async def _child(args: argparse.Namespace) -> None:
    profiler = cProfile.Profile() if args.profile else None
    with anyio.open_signal_receiver(
        signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2
    ) as signals:
        async with _serving(args):
            print("ready", flush=True)
            async for signum in signals:
                if signum == signal.SIGUSR1 and profiler is not None:
                    profiler.enable()
                    print("profiling", flush=True)
                elif signum == signal.SIGUSR2 and profiler is not None:
                    profiler.disable()
                    profiler.dump_stats(args.profile)
                    print("profiled", flush=True)
                elif signum in (signal.SIGTERM, signal.SIGINT):
                    break


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench._procs", description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--role", choices=ROLES, required=True)
    parser.add_argument("--loop", choices=LOOPS, default="asyncio")
    parser.add_argument("--max-concurrency", type=int, default=1024)
    parser.add_argument("--hold-ms", type=int, default=0)
    parser.add_argument("--profile", default=None)
    args = parser.parse_args(argv)
    anyio.run(_child, args, backend="asyncio", backend_options=backend_options(args.loop))


if __name__ == "__main__":
    main()
