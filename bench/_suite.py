"""The whole suite: start a nats-server, run each section, write the results.

Sections, in order (each starts the serving processes it needs and stops
them by PID when done):

1. asyncio: raw against callboard at each concurrency, the fan-out, and the
   CPU profiles at c=128;
2. uvloop on both sides (skipped, and said so, without uvloop);
3. two replicas in separate processes (asyncio);
4. durable mode against core mode (a JetStream server and a daemon of its own);
5. memory: RSS per 10,000 tasks in flight, then the long run.
"""

from __future__ import annotations

import cProfile
import dataclasses
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec

from bus import EmbeddedServer

from ._callboard import connect_callboard, dispatch_sender
from ._callboard import orchestrator as open_orchestrator
from ._compare import Contender, compare
from ._durable import DurableBench, measure_durable
from ._fanout import fanout
from ._load import drive, echo_payload
from ._loops import backend_options, uvloop_version
from ._machine import describe_machine, load_average
from ._memory import run_inflight, run_longrun
from ._procs import ServingSide, ServingSpec
from ._profile import render, summarise
from ._raw import connect_raw, raw_sender
from ._report import TARGET_CONCURRENCY, level_json, render_markdown, write_json

__all__ = ["PRESETS", "Settings", "run_suite"]

TOPOLOGY = (
    "Topology: one nats-server (loopback, JetStream off); the requester (this process: "
    "the raw nats-py client and the `Orchestrator`, each on its own connection) in one "
    "process; the raw bytes-echo responder and the callboard `AgentHost` + `EchoAgent` "
    "each in processes of their own (two each for replicas). All of them share the "
    "machine's cores: on 2 cores, requester, server and responder compete, for raw and "
    "callboard alike."
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """How long and how hard each section runs.

    Attributes:
        preset: ``default``, ``quick`` or ``long``.
        concurrencies: requests in flight at once, one level each.
        rounds: pairs of alternating rounds per concurrency.
        duration: seconds per round.
        warmup: seconds of warm-up per contender and concurrency.
        payload_bytes: size of the JSON payload (``{"text": "..."}``).
        max_concurrency: the agents' limit (above every concurrency).
        replicas: serving processes in the replicas section.
        fanout_steps: steps in the fan-out pipeline.
        fanout_rounds: alternating pairs of fan-out rounds.
        durable_concurrencies: the levels of the durable section.
        durable_rounds: alternating pairs of core and durable rounds per level.
        profile_requests: requests during the profile.
        profile_concurrency: concurrency of the profile.
        inflight_tasks: tasks held in flight for the memory reading.
        hold_ms: how long the responder holds each of them.
        longrun_tasks: dispatches in the long run.
        fit_longrun: shorten the long run to fit ``budget`` (and say so).
        budget: seconds the whole suite should stay under.
    """

    preset: str
    concurrencies: tuple[int, ...] = (1, 16, 128, 512)
    rounds: int = 5
    duration: float = 1.5
    warmup: float = 0.5
    payload_bytes: int = 256
    max_concurrency: int = 1024
    replicas: int = 2
    fanout_steps: int = 1000
    fanout_rounds: int = 7
    durable_concurrencies: tuple[int, ...] = (1, 16, 128)
    durable_rounds: int = 3
    profile_requests: int = 20_000
    profile_concurrency: int = TARGET_CONCURRENCY
    inflight_tasks: int = 10_000
    hold_ms: int = 3000
    longrun_tasks: int = 1_000_000
    fit_longrun: bool = True
    budget: float = 570.0


PRESETS: dict[str, Settings] = {
    "default": Settings(preset="default"),
    "quick": Settings(
        preset="quick",
        rounds=2,
        duration=0.5,
        warmup=0.2,
        fanout_rounds=3,
        durable_rounds=1,
        profile_requests=5_000,
        hold_ms=2000,
        longrun_tasks=50_000,
        budget=90.0,
    ),
    "long": Settings(preset="long", fit_longrun=False, budget=1800.0),
}


class _Log:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, line: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {line}", file=sys.stderr, flush=True)


async def _contenders(
    url: str,
    raw_side: ServingSide,
    agent_side: ServingSide,
    settings: Settings,
    work: Callable[..., Any],
) -> Any:
    """Open the raw connection and the orchestrator, and run ``work`` with them."""
    payload = echo_payload(settings.payload_bytes)
    body = msgspec.json.encode(payload)
    async with (
        connect_raw(url, "bench-raw-requester") as raw_nc,
        connect_callboard(url, "bench-orchestrator") as board_nc,
        open_orchestrator(board_nc) as orch,
    ):
        raw = Contender(name="raw", send=raw_sender(raw_nc, body), serving_pids=raw_side.pids)
        board = Contender(
            name="callboard", send=dispatch_sender(orch, payload), serving_pids=agent_side.pids
        )
        return await work(
            raw=raw, board=board, raw_nc=raw_nc, orch=orch, payload=payload, body=body
        )


def _run_compare(
    server: EmbeddedServer,
    settings: Settings,
    log: _Log,
    *,
    loop: str,
    replicas: int = 1,
    extra: Callable[..., Any] | None = None,
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    raw_spec = ServingSpec(role="raw", loop=loop, replicas=replicas)
    agent_spec = ServingSpec(
        role="agent", loop=loop, replicas=replicas, max_concurrency=settings.max_concurrency
    )
    raw_profile = profile_dir / "raw-responder.prof" if profile_dir else None
    agent_profile = profile_dir / "callboard-agent.prof" if profile_dir else None
    with (
        ServingSide(server.url, raw_spec, profile=raw_profile) as raw_side,
        ServingSide(server.url, agent_spec, profile=agent_profile) as agent_side,
    ):

        async def work(**kw: Any) -> dict[str, Any]:
            levels = await compare(
                kw["raw"],
                kw["board"],
                concurrencies=settings.concurrencies,
                rounds=settings.rounds,
                duration=settings.duration,
                warmup=settings.warmup,
                server_pid=server.pid,
                progress=log,
            )
            result: dict[str, Any] = {"levels": [level_json(level) for level in levels]}
            if extra is not None:
                result.update(await extra(raw_side=raw_side, agent_side=agent_side, **kw))
            return result

        runner = functools.partial(_contenders, server.url, raw_side, agent_side, settings, work)
        result: dict[str, Any] = anyio.run(
            runner, backend="asyncio", backend_options=backend_options(loop)
        )
    return result


async def _profile(
    contender: Contender,
    serving: ServingSide,
    settings: Settings,
    profile_dir: Path,
    requester_name: str,
) -> Path:
    await anyio.to_thread.run_sync(serving.start_profile)
    profiler = cProfile.Profile()
    profiler.enable()
    await drive(contender.send, settings.profile_concurrency, requests=settings.profile_requests)
    profiler.disable()
    await anyio.to_thread.run_sync(serving.stop_profile)
    path = profile_dir / f"{requester_name}.prof"
    profiler.dump_stats(path)
    return path


def _asyncio_extras(settings: Settings, log: _Log, profile_dir: Path) -> Callable[..., Any]:
    async def extras(**kw: Any) -> dict[str, Any]:
        log(f"fan-out: {settings.fanout_steps} steps, {settings.fanout_rounds} rounds")
        result = await fanout(
            kw["raw_nc"],
            kw["orch"],
            payload=kw["payload"],
            body=kw["body"],
            steps=settings.fanout_steps,
            rounds=settings.fanout_rounds,
            progress=log,
        )
        log(f"profiles: {settings.profile_requests} requests at c={settings.profile_concurrency}")
        await _profile(kw["raw"], kw["raw_side"], settings, profile_dir, "raw-requester")
        await _profile(kw["board"], kw["agent_side"], settings, profile_dir, "callboard-requester")
        return {"fanout": result}

    return extras


def _durable(settings: Settings, log: _Log) -> dict[str, Any]:
    bench = DurableBench(
        payload_bytes=settings.payload_bytes,
        concurrencies=settings.durable_concurrencies,
        rounds=settings.durable_rounds,
        duration=settings.duration,
        warmup=settings.warmup,
        max_concurrency=settings.max_concurrency,
    )
    return measure_durable(bench, log)


def _memory(
    server: EmbeddedServer, settings: Settings, log: _Log, elapsed: float, c128_rate: float | None
) -> dict[str, Any]:
    inflight: dict[str, Any] = {"tasks": settings.inflight_tasks, "hold_ms": settings.hold_ms}
    raw_spec = ServingSpec(role="raw", hold_ms=settings.hold_ms)
    agent_spec = ServingSpec(role="agent", max_concurrency=settings.inflight_tasks + 1024)
    with ServingSide(server.url, raw_spec), ServingSide(server.url, agent_spec):
        for mode in ("raw", "callboard"):
            log(f"memory: {settings.inflight_tasks} {mode} tasks in flight")
            inflight[mode] = run_inflight(
                server.url,
                mode=mode,
                tasks=settings.inflight_tasks,
                hold_ms=settings.hold_ms,
                payload_bytes=settings.payload_bytes,
                progress=log,
            )
    growth = {m: inflight[m]["rss"] - inflight[m]["baseline_rss"] for m in ("raw", "callboard")}
    inflight["callboard_extra_mib"] = (growth["callboard"] - growth["raw"]) / 2**20

    tasks, note = _longrun_size(settings, elapsed, c128_rate)
    concurrency = TARGET_CONCURRENCY
    log(f"memory: long run of {tasks:,} dispatches at c={concurrency}")
    agent_spec = ServingSpec(role="agent", max_concurrency=settings.max_concurrency)
    with ServingSide(server.url, agent_spec):
        checkpoints = run_longrun(
            server.url,
            tasks=tasks,
            concurrency=concurrency,
            payload_bytes=settings.payload_bytes,
            timeout=max(settings.budget, 600.0),
            progress=log,
        )
    longrun = {
        "requested": settings.longrun_tasks,
        "tasks": tasks,
        "concurrency": concurrency,
        "checkpoints": checkpoints,
        "note": note,
    }
    return {"inflight": inflight, "longrun": longrun}


def _longrun_size(settings: Settings, elapsed: float, rate: float | None) -> tuple[int, str]:
    """The long run's task count: as asked, or cut to fit the budget (and why)."""
    tasks = settings.longrun_tasks
    if not settings.fit_longrun or not rate:
        return tasks, ""
    left = settings.budget - elapsed - 15.0  # start-up, the result files
    fits = int(left * rate * 0.85) // 10_000 * 10_000
    if fits >= tasks:
        return tasks, ""
    fits = max(fits, 50_000)
    return fits, (
        f"The long run was cut from {tasks:,} to {fits:,} dispatches to keep the suite "
        f"within {settings.budget:.0f} s at the measured {rate:.0f} dispatches/s; "
        "`python -m bench --long` runs the full count."
    )


def _c128_rate(throughput: dict[str, Any]) -> float | None:
    for level in throughput.get("asyncio", {}).get("levels", []):
        if level["concurrency"] == TARGET_CONCURRENCY:
            rate: float = level["callboard"]["throughput"]
            return rate
    return None


def run_suite(settings: Settings, out_dir: Path, command: str) -> dict[str, Any]:
    """Run every section; write ``latest.json``, ``latest.md`` and ``profile-*.txt``."""
    log = _Log()
    started = time.monotonic()
    machine = describe_machine()
    out_dir.mkdir(parents=True, exist_ok=True)
    throughput: dict[str, Any] = {}
    profiles: dict[str, Any] = {}
    profile_dir = out_dir / "prof"
    profile_dir.mkdir(exist_ok=True)
    with EmbeddedServer(jetstream=False) as server:
        log(f"nats-server at {server.url} (pid {server.pid}); settings: {settings}")
        log("section 1/5: asyncio")
        asyncio_result = _run_compare(
            server,
            settings,
            log,
            loop="asyncio",
            extra=_asyncio_extras(settings, log, profile_dir),
            profile_dir=profile_dir,
        )
        fanout_result = asyncio_result.pop("fanout")
        throughput["asyncio"] = asyncio_result
        requests = settings.profile_requests
        for name, title in (
            ("callboard-agent", "callboard agent process (AgentHost + EchoAgent)"),
            ("callboard-requester", "callboard requester process (Orchestrator.dispatch)"),
            ("raw-responder", "raw nats-py responder process (reference)"),
            ("raw-requester", "raw nats-py requester process (reference)"),
        ):
            summary = summarise(profile_dir / f"{name}.prof", title=title, requests=requests)
            (out_dir / f"profile-{name}.txt").write_text(render(summary))
            profiles[f"profile-{name}"] = summary.to_json()

        log("section 2/5: uvloop on both sides")
        if uvloop_version() is None:
            throughput["uvloop"] = {"skipped": "uvloop is not installed (the `fast` extra)"}
        else:
            throughput["uvloop"] = _run_compare(server, settings, log, loop="uvloop")

        log(f"section 3/5: {settings.replicas} replicas in separate processes")
        throughput[f"{settings.replicas} replicas"] = _run_compare(
            server, settings, log, loop="asyncio", replicas=settings.replicas
        )

        log("section 4/5: durable mode")
        durable = _durable(settings, log)

        log("section 5/5: memory")
        memory = _memory(server, settings, log, time.monotonic() - started, _c128_rate(throughput))

    machine["load_average_at_end"] = load_average()
    document: dict[str, Any] = {
        "suite": {
            "preset": settings.preset,
            "command": command,
            "seconds": time.monotonic() - started,
            "settings": dataclasses.asdict(settings),
        },
        "machine": machine,
        "topology": TOPOLOGY,
        "targets": {
            "concurrency": TARGET_CONCURRENCY,
            "throughput_at_least": 0.9,
            "p99_at_most": 1.2,
        },
        "throughput": throughput,
        "fanout": dataclasses.asdict(fanout_result),
        "durable": durable,
        "memory": memory,
        "profiles": profiles,
    }
    write_json(out_dir / "latest.json", document)
    (out_dir / "latest.md").write_text(render_markdown(document))
    log(f"wrote {out_dir}/latest.json, latest.md and profile-*.txt")
    return document
