"""Durable dispatch against core dispatch, in alternating rounds of the same run.

One nats-server with JetStream on file storage (a temporary store), one
``callboard run`` daemon process with an echo agent and a ``[durable]``
section, so the same agent serves both modes. The requester drives
``Orchestrator.dispatch`` (core) and ``Orchestrator.dispatch(durable=True)``
from the same pool of coroutines; the ratios are durable / core. A durable
task is several JetStream writes (its record three times, the job, the ack,
the kept status events), each a round trip to the server and, with file
storage, a write to disk; the table shows what that costs here.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import msgspec

from actors import READY_LINE
from bus import EmbeddedServer
from bus.durable import DurableSettings
from orchestrator import Orchestrator

from ._callboard import CAPABILITY, connect_callboard, dispatch_sender
from ._compare import Contender, LevelComparison, compare
from ._load import echo_payload
from ._report import level_json

__all__ = ["DurableBench", "measure_durable"]

_STARTUP_TIMEOUT = 30.0
_SETTINGS = DurableSettings(storage="file")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DurableBench:
    """What to measure: the concurrencies, and the rounds at each."""

    payload_bytes: int = 256
    concurrencies: Sequence[int] = (1, 16, 128)
    rounds: int = 3
    duration: float = 1.5
    warmup: float = 0.5
    max_concurrency: int = 512


def _config(path: Path, max_concurrency: int) -> None:
    path.write_text(
        'prefix = "agents"\nheartbeat_interval = 60\n\n[durable]\nstorage = "file"\n\n'
        f'[[agents]]\ntype = "echo"\nid = "bench-durable-echo"\n'
        f"max_concurrency = {max_concurrency}\n"
    )


def _start_daemon(url: str, config: Path, log_path: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATS_")}
    log_file = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "-s", url, "run", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=log_file,
        env=env,
    )
    log_file.close()
    deadline = time.monotonic() + _STARTUP_TIMEOUT
    while READY_LINE not in log_path.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the durable bench daemon did not start:\n{log_path.read_text()}")
        time.sleep(0.05)
    return proc


async def _measure(
    url: str,
    daemon_pid: int,
    server_pid: int | None,
    bench: DurableBench,
    log: Callable[[str], None],
) -> list[LevelComparison]:
    payload = echo_payload(bench.payload_bytes)
    async with connect_callboard(url, "bench-durable-requester") as nc:
        orch = Orchestrator(nc, durable_settings=_SETTINGS)
        core = Contender(
            name="core", send=dispatch_sender(orch, payload), serving_pids=[daemon_pid]
        )
        durable = Contender(
            name="durable",
            send=functools.partial(orch.dispatch, CAPABILITY, payload, durable=True, timeout=60),
            serving_pids=[daemon_pid],
        )
        return await compare(
            core,
            durable,
            concurrencies=bench.concurrencies,
            rounds=bench.rounds,
            duration=bench.duration,
            warmup=bench.warmup,
            server_pid=server_pid,
            progress=lambda line: log(
                "durable: " + line.replace("raw ", "core ").replace("callboard ", "durable ")
            ),
        )


def measure_durable(bench: DurableBench, log: Callable[[str], None]) -> dict[str, Any]:
    """Run the comparison on a server and daemon of its own; the section's JSON."""
    with tempfile.TemporaryDirectory(prefix="callboard-bench-durable-") as tmp:
        root = Path(tmp)
        config = root / "durable.toml"
        _config(config, bench.max_concurrency)
        with EmbeddedServer(jetstream=True, store_dir=str(root / "store")) as server:
            daemon = _start_daemon(server.url, config, root / "daemon.log")
            try:
                levels = anyio.run(_measure, server.url, daemon.pid, server.pid, bench, log)
            finally:
                daemon.terminate()
                try:
                    daemon.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    daemon.wait()
    rows = []
    for level in levels:
        row = level_json(level)
        row["core"] = row.pop("raw")
        row["durable"] = row.pop("callboard")
        row["rounds"] = {"core": row["rounds"]["raw"], "durable": row["rounds"]["callboard"]}
        row.pop("meets_targets", None)
        rows.append(row)
    return {
        "status": "measured",
        "settings": dataclasses.asdict(bench) | {"durable": msgspec.to_builtins(_SETTINGS)},
        "levels": rows,
        "note": "Durable dispatch (JetStream, file storage) against core dispatch, same agent "
        "process, alternating rounds; ratios are durable / core.",
    }
