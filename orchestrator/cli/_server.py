"""``callboard server``: an embedded nats-server in the foreground, until Ctrl-C.

JetStream's store is kept in a fixed place (``default_store_dir()``, or
``--store-dir``) so that durable tasks, their records and results survive a
restart of the server; ``--temporary-store`` is the throwaway opt-out.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio

from bus import ConfigError, EmbeddedServer, default_store_dir

from ._common import Subcommands
from ._exit_codes import EXIT_OK

__all__ = ["cmd_server", "register"]


def register(commands: Subcommands) -> None:
    """Add ``server`` and its flags to the parser."""
    p = commands.add(
        "server", cmd_server, "run an embedded nats-server in the foreground", connects=False
    )
    p.add_argument("--port", type=int, default=4222, help="client port (0 = any free port)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    p.add_argument("--monitor-port", type=int, default=None, help="HTTP monitoring port")
    store = p.add_mutually_exclusive_group()
    store.add_argument(
        "--store-dir",
        default=None,
        metavar="DIR",
        help="keep JetStream's files in DIR/jetstream; it survives restarts "
        f"(default {_shown(default_store_dir())}, from $XDG_DATA_HOME)",
    )
    store.add_argument(
        "--temporary-store",
        action="store_true",
        help="keep JetStream in a temporary directory, deleted when the server stops: "
        "durable tasks do not survive a restart",
    )
    store.add_argument("--no-jetstream", action="store_true", help="do not enable JetStream")


async def cmd_server(args: argparse.Namespace) -> int:
    """Run an embedded nats-server in the foreground until Ctrl-C."""
    store_dir = _store_dir(args)
    server = EmbeddedServer(
        port=args.port,
        host=args.host,
        jetstream=not args.no_jetstream,
        store_dir=None if store_dir is None else str(store_dir),
        monitor_port=args.monitor_port,
    )
    server.echo_log = args.verbose > 0
    with (
        _store_lock(store_dir),
        anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals,
    ):
        async with server:
            print(f"nats-server listening on {server.url} (pid {server.pid})", flush=True)
            if server.monitor_url:
                print(f"monitoring on {server.monitor_url}", flush=True)
            if store_dir is not None:
                print(
                    f"JetStream store: {store_dir / 'jetstream'} (kept across restarts)", flush=True
                )
            elif not args.no_jetstream:
                print("JetStream store: temporary, deleted on exit", flush=True)
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


def _store_dir(args: argparse.Namespace) -> Path | None:
    """The kept store directory, created if needed; None for a temporary one or none."""
    if args.no_jetstream or args.temporary_store:
        return None
    store_dir = Path(args.store_dir).expanduser() if args.store_dir else default_store_dir()
    try:
        store_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the JetStream store {store_dir} ({exc.strerror}): give another "
            "place with --store-dir DIR, or --temporary-store"
        ) from exc
    return store_dir.resolve()


@contextlib.contextmanager
def _store_lock(store_dir: Path | None) -> Iterator[None]:
    """Hold ``store_dir`` for this server alone: two nats-servers on one store corrupt it.

    nats-server does not lock its store itself; the lock goes with this process.
    """
    if store_dir is None:
        yield
        return
    lock_path = store_dir / "callboard-server.lock"
    with open(lock_path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"another callboard server uses the JetStream store {store_dir}: stop it, or "
                "give this one its own with --store-dir DIR (or --temporary-store)"
            ) from None
        yield


def _shown(path: Path) -> str:
    """``path`` with the home directory written ``~``, for help texts."""
    try:
        return "~/" + str(path.relative_to(Path.home()))
    except ValueError:
        return str(path)
