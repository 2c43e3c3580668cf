"""The orchestrator's ``DispatchMetrics`` against a real nats-server and real agents,
one fresh registry per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from nats.aio.client import Client
from prometheus_client import CollectorRegistry

from actors import AgentHost, EchoAgent, MathAgent
from bus import (
    AgentError,
    AgentOverloaded,
    DispatchMetrics,
    NoAgentError,
    TaskTimeout,
    new_agent_suffix,
)
from orchestrator import Orchestrator, RetryPolicy, StepFailed

pytestmark = pytest.mark.anyio

QUICK_RETRY = RetryPolicy(attempts=3, backoff=0.01, jitter=0.0)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """A sample's value; 0 when the series does not exist (yet)."""
    return registry.get_sample_value(name, labels) or 0.0


def dispatches(registry: CollectorRegistry, capability: str) -> dict[str, float]:
    """``callboard_dispatch_total`` of a capability by outcome, the zeros left out."""
    outcomes = ("ok", "no_agent", "timeout", "agent_error", "cancelled")
    counts = {
        outcome: sample(
            registry, "callboard_dispatch_total", capability=capability, outcome=outcome
        )
        for outcome in outcomes
    }
    return {outcome: count for outcome, count in counts.items() if count}


def latencies(registry: CollectorRegistry, capability: str) -> tuple[float, float]:
    """(count, sum) of ``callboard_dispatch_duration_seconds`` of a capability."""
    name = "callboard_dispatch_duration_seconds"
    return (
        sample(registry, f"{name}_count", capability=capability),
        sample(registry, f"{name}_sum", capability=capability),
    )


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def agents(nc: Client, prefix: str) -> AsyncIterator[AgentHost]:
    """A math agent and an echo agent that runs one task at a time."""
    hosted = [MathAgent("m-1"), EchoAgent("e-1", max_concurrency=1)]
    async with AgentHost(nc, hosted, prefix=prefix) as host:
        yield host


@pytest.fixture
def orch(nc: Client, prefix: str, registry: CollectorRegistry) -> Orchestrator:
    return Orchestrator(nc, prefix=prefix, metrics=DispatchMetrics(registry))


async def wait_started(nc: Client, prefix: str, agent: str) -> anyio.Event:
    """An event set when ``agent`` starts a task (subscribed before returning)."""
    started = anyio.Event()

    async def on_started(_: Any) -> None:
        started.set()

    await nc.subscribe(f"{prefix}.status.{agent}.started", cb=on_started)
    await nc.flush()
    return started


async def test_a_result_counts_as_ok_with_its_latency(
    agents: AgentHost, orch: Orchestrator, registry: CollectorRegistry
) -> None:
    assert await orch.dispatch("math", {"expression": "6*7"}) == {"value": 42}
    assert dispatches(registry, "math") == {"ok": 1}
    count, total = latencies(registry, "math")
    assert count == 1 and total > 0
    assert orch.metrics is not None


async def test_no_agent_is_counted_at_once(orch: Orchestrator, registry: CollectorRegistry) -> None:
    capability = f"nobody-{new_agent_suffix()}"
    with pytest.raises(NoAgentError):
        await orch.dispatch(capability, {})
    assert dispatches(registry, capability) == {"no_agent": 1}
    assert latencies(registry, capability)[0] == 1


async def test_a_timeout_is_counted_with_the_time_waited(
    agents: AgentHost, orch: Orchestrator, registry: CollectorRegistry
) -> None:
    with pytest.raises(TaskTimeout):
        await orch.dispatch("echo", {"delay_ms": 5000}, timeout=0.3)
    assert dispatches(registry, "echo") == {"timeout": 1}
    count, total = latencies(registry, "echo")
    assert count == 1 and total >= 0.3


async def test_an_error_reply_is_an_agent_error(
    agents: AgentHost, orch: Orchestrator, registry: CollectorRegistry
) -> None:
    with pytest.raises(AgentError) as info:
        await orch.dispatch("math", {"expression": "2 +"})
    assert info.value.code == 400
    assert dispatches(registry, "math") == {"agent_error": 1}


async def test_a_dispatch_cancelled_by_its_caller_counts_as_cancelled(
    nc: Client,
    prefix: str,
    agents: AgentHost,
    orch: Orchestrator,
    registry: CollectorRegistry,
) -> None:
    started = await wait_started(nc, prefix, "e-1")
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(orch.dispatch, "echo", {"delay_ms": 30_000})
            await started.wait()
            tg.cancel_scope.cancel()
    assert dispatches(registry, "echo") == {"cancelled": 1}
    assert latencies(registry, "echo")[0] == 1


async def test_retries_are_counted_apart_from_the_one_dispatch(
    orch: Orchestrator, registry: CollectorRegistry
) -> None:
    capability = f"nobody-{new_agent_suffix()}"
    with pytest.raises(NoAgentError):
        await orch.dispatch(capability, {}, retry=QUICK_RETRY)
    assert sample(registry, "callboard_dispatch_retries_total", capability=capability) == 2
    assert orch.retries == 2
    assert dispatches(registry, capability) == {"no_agent": 1}


async def test_an_overloaded_agent_is_retried_then_counted_as_an_agent_error(
    nc: Client,
    prefix: str,
    agents: AgentHost,
    orch: Orchestrator,
    registry: CollectorRegistry,
) -> None:
    started = await wait_started(nc, prefix, "e-1")
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(orch.dispatch, "echo", {"delay_ms": 30_000})
            await started.wait()
            with pytest.raises(AgentOverloaded):
                await orch.dispatch("echo", {"n": 1}, retry=QUICK_RETRY)
            tg.cancel_scope.cancel()
    assert sample(registry, "callboard_dispatch_retries_total", capability="echo") == 2
    assert dispatches(registry, "echo") == {"agent_error": 1, "cancelled": 1}


def pipeline_counts(registry: CollectorRegistry) -> tuple[dict[str, float], dict[str, float]]:
    """(runs by outcome, steps by outcome), the zeros left out."""
    runs = {
        o: sample(registry, "callboard_pipeline_runs_total", outcome=o)
        for o in ("ok", "failed", "partial")
    }
    steps = {
        o: sample(registry, "callboard_pipeline_steps_total", outcome=o)
        for o in ("ok", "failed", "skipped")
    }
    return {o: n for o, n in runs.items() if n}, {o: n for o, n in steps.items() if n}


GOOD = {"capability": "math", "payload": {"expression": "1+2"}}
BAD = {"capability": "math", "payload": {"expression": "1 +"}}
ECHO = {"capability": "echo", "payload": {"n": 2}}


async def test_a_pipeline_that_succeeds(
    agents: AgentHost, orch: Orchestrator, registry: CollectorRegistry
) -> None:
    assert len(await orch.run_pipeline([GOOD, ECHO], timeout=10)) == 2
    assert pipeline_counts(registry) == ({"ok": 1}, {"ok": 2})


async def test_a_pipeline_that_fails_skips_the_steps_it_never_ran(
    agents: AgentHost, orch: Orchestrator, registry: CollectorRegistry
) -> None:
    with pytest.raises(StepFailed):
        await orch.run_pipeline([GOOD, BAD, ECHO], timeout=10)
    assert pipeline_counts(registry) == ({"failed": 1}, {"ok": 1, "failed": 1, "skipped": 1})


async def test_a_partial_pipeline_counts_failed_and_skipped_steps(
    agents: AgentHost, orch: Orchestrator, registry: CollectorRegistry
) -> None:
    dependant = {**ECHO, "after": ["1"]}
    results = await orch.run_pipeline([BAD, dependant, GOOD], timeout=10, partial=True)
    assert [r.ok for r in results] == [False, False, True]
    assert pipeline_counts(registry) == ({"partial": 1}, {"ok": 1, "failed": 1, "skipped": 1})


async def test_a_malformed_pipeline_is_not_a_run(
    orch: Orchestrator, registry: CollectorRegistry
) -> None:
    with pytest.raises(Exception, match="names no step"):
        await orch.run_pipeline([{**GOOD, "after": ["nope"]}])
    assert pipeline_counts(registry) == ({}, {})


async def test_run_counts_as_a_pipeline(
    agents: AgentHost, orch: Orchestrator, registry: CollectorRegistry
) -> None:
    result = await orch.run("calculate 6*7")
    assert [step.result for step in result.steps] == [{"value": 42}]
    assert pipeline_counts(registry) == ({"ok": 1}, {"ok": 1})
    assert dispatches(registry, "math") == {"ok": 1}


async def test_live_agents_follow_the_registry_down_to_zero(
    nc: Client, prefix: str, registry: CollectorRegistry
) -> None:
    def live(capability: str) -> float | None:
        return registry.get_sample_value(
            "callboard_registry_live_agents", {"capability": capability}
        )

    async with Orchestrator(nc, prefix=prefix, metrics=DispatchMetrics(registry)) as orch:
        assert live("math") is None
        async with AgentHost(nc, [MathAgent("m-1"), MathAgent("m-2")], prefix=prefix):
            await orch.registry.wait_for(lambda found: len(found) == 2)
            assert live("math") == 2
        await orch.registry.wait_for(lambda found: not found)
        assert live("math") == 0  # known, and served by nobody: 0, not absent


async def test_an_agent_that_stops_beating_drops_out_of_the_count(
    nc: Client, prefix: str, registry: CollectorRegistry
) -> None:
    now = [1000.0]
    orch = Orchestrator(nc, prefix=prefix, metrics=DispatchMetrics(registry), heartbeat_timeout=15)
    orch.registry.clock = lambda: now[0]
    async with orch, AgentHost(nc, [MathAgent("m-1")], prefix=prefix, heartbeat_interval=600):
        await orch.registry.wait_for(lambda found: len(found) == 1)
        value = {"capability": "math"}
        assert registry.get_sample_value("callboard_registry_live_agents", value) == 1
        now[0] += 16  # silent past the timeout: the next scrape sees it, nothing else needed
        assert registry.get_sample_value("callboard_registry_live_agents", value) == 0


async def test_without_metrics_nothing_is_recorded(nc: Client, prefix: str) -> None:
    orch = Orchestrator(nc, prefix=prefix)
    assert orch.metrics is None
    assert orch.registry.on_change is None
