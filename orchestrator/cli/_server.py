"""``callboard server``: an embedded nats-server in the foreground, until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys

import anyio

from bus import EmbeddedServer

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
    p.add_argument("--store-dir", default=None, help="JetStream store (default: a temp dir)")
    p.add_argument("--no-jetstream", action="store_true", help="do not enable JetStream")


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
