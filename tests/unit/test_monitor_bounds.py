"""``callboard monitor`` against anyone who can publish status events: invented
agent ids and capability names cost bounded work per event, forgetting them is
linear, what is tracked is capped, and refusals do not flatter the latency.

Work is measured by counting the Python and C function calls the monitor's code
makes (a profiler hook), never by a wall clock: the count of the same code on the
same input is the same on a loaded machine.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from prometheus_client import CollectorRegistry

from bus import Accepted, Completed, ErrorInfo, Failed, FleetMetrics, Online
from orchestrator.cli.monitor._fleet_view import MAX_RUNNING_PER_AGENT, FleetView

T0 = 1000.0
HEARTBEAT_TIMEOUT = 15.0
FORGET_AFTER = 600.0


@contextmanager
def counted_calls() -> Iterator[list[int]]:
    """Count every function call (Python or C) made inside the block."""
    count = [0]

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event in ("call", "c_call"):
            count[0] += 1

    sys.setprofile(profile)
    try:
        yield count
    finally:
        sys.setprofile(None)


class Monitor:
    """The monitor's bookkeeping, as ``callboard monitor --metrics`` wires it."""

    def __init__(self, **limits: int) -> None:
        self.registry = CollectorRegistry()
        self.fleet = FleetMetrics(self.registry)
        self.view = FleetView(
            heartbeat_timeout=HEARTBEAT_TIMEOUT, forget_after=FORGET_AFTER, **limits
        )

    def observe(self, event: Online | Completed | Failed, now: float) -> None:
        tracked = self.view.observe(event, now)
        for agent_id in tracked.forgotten:
            self.fleet.forget(agent_id)
        for what in tracked.left_out:
            self.fleet.left_out.labels(what).inc()
        if tracked:
            self.fleet.observe(event, tracked.capabilities)

    def sweep(self, now: float) -> None:
        expired, forgotten = self.view.sweep(now)
        for agent_id in expired:
            self.fleet.expire(agent_id)
        for agent_id in forgotten:
            self.fleet.forget(agent_id)
        for capability in self.view.forget_capabilities(now):
            self.fleet.forget_capability(capability)

    def series(self) -> int:
        return sum(len(family.samples) for family in self.registry.collect())


def online(agent: str, capability: str = "math") -> Online:
    return Online(agent=agent, ts=1.0, capabilities=(capability,), max_concurrency=4)


def completed(agent: str, capability: str = "math", elapsed_ms: float = 3.0) -> Completed:
    return Completed(
        agent=agent, ts=1.0, task_id=f"t-{agent}", capability=capability, elapsed_ms=elapsed_ms
    )


def overloaded(agent: str, task_id: str) -> Failed:
    error = ErrorInfo(code=503, type="overloaded", message="at its concurrency limit")
    return Failed(
        agent=agent, ts=1.0, task_id=task_id, capability="math", elapsed_ms=0.0, error=error
    )


def calls_to_track_and_forget(agents: int) -> tuple[int, int, int]:
    """Calls to take in, expire and forget ``agents`` fake agents (online and one
    completed task each); the view and the metrics are empty again at the end."""
    monitor = Monitor(max_agents=agents)
    with counted_calls() as taken:
        for n in range(agents):
            monitor.observe(online(f"fake-{n}"), T0)
            monitor.observe(completed(f"fake-{n}"), T0)
    with counted_calls() as expired:
        monitor.sweep(T0 + HEARTBEAT_TIMEOUT + 1)
    with counted_calls() as forgotten:
        monitor.sweep(T0 + HEARTBEAT_TIMEOUT + 1 + FORGET_AFTER)
    assert len(monitor.view) == 0
    assert not any(
        sample.labels.get("agent")
        for family in monitor.registry.collect()
        for sample in family.samples
    )
    return taken[0], expired[0], forgotten[0]


def test_twenty_thousand_agents_cost_ten_times_two_thousand_to_track_expire_and_forget() -> None:
    small = calls_to_track_and_forget(2_000)
    large = calls_to_track_and_forget(20_000)
    for phase, few, many in zip(("observe", "expire", "forget"), small, large, strict=True):
        # linear: 10x the agents, about 10x the calls; quadratic would be 100x
        assert many < 13 * few, f"{phase}: {few} calls for 2,000 agents, {many} for 20,000"


def test_a_sweep_with_nothing_due_looks_at_no_agent() -> None:
    monitor = Monitor()
    for n in range(5_000):
        monitor.observe(online(f"fake-{n}"), T0 + n / 1000)
    with counted_calls() as idle:
        monitor.sweep(T0 + 10)
    assert idle[0] < 100, idle[0]


def test_agents_beyond_the_cap_are_left_out_and_counted_and_gone_ones_make_room() -> None:
    monitor = Monitor(max_agents=100)
    for n in range(150):
        monitor.observe(online(f"fake-{n}"), T0)
    assert len(monitor.view) == 100
    value = monitor.registry.get_sample_value
    assert value("callboard_fleet_left_out_total", {"what": "agent"}) == 50
    assert value("callboard_fleet_agent_up", {"agent": "fake-120"}) is None
    monitor.sweep(T0 + HEARTBEAT_TIMEOUT + 1)  # all expired: gone, not yet forgotten
    monitor.observe(online("real-1"), T0 + 20)
    assert "real-1" in monitor.view and len(monitor.view) == 100
    assert value("callboard_fleet_agent_up", {"agent": "real-1"}) == 1
    assert value("callboard_fleet_agent_up", {"agent": "fake-0"}) is None  # made room


def test_twenty_thousand_capabilities_keep_the_series_bounded_then_age_out() -> None:
    monitor = Monitor(max_capabilities=1_000)
    monitor.observe(online("m-1"), T0)
    baseline = monitor.series()
    for n in range(20_000):
        monitor.observe(completed("m-1", capability=f"junk-{n}"), T0 + 1)
    # about a dozen series per capability (a task counter, the duration histogram)
    assert monitor.series() < baseline + 1_000 * 25
    value = monitor.registry.get_sample_value
    assert value("callboard_fleet_left_out_total", {"what": "capability"}) == 20_000 - 999
    assert len(monitor.view.rows(T0 + 1)[0].capabilities) <= 64
    # m-1 beats, showing only its own capability: the junk no agent shows is forgotten
    # forget_after after it was last named; what m-1 showed until now, as long after that
    monitor.observe(online("m-1"), T0 + FORGET_AFTER)
    monitor.sweep(T0 + FORGET_AFTER + 2)
    assert monitor.view.capability_count == 64
    monitor.observe(online("m-1"), T0 + 2 * FORGET_AFTER)
    monitor.sweep(T0 + 2 * FORGET_AFTER + 2)
    assert monitor.view.capability_count == 1
    junk = [
        sample
        for family in monitor.registry.collect()
        for sample in family.samples
        if sample.labels.get("capability", "").startswith("junk-")
    ]
    assert junk == []
    assert value("callboard_fleet_live_agents", {"capability": "math"}) == 1


def test_refusals_are_counted_apart_and_left_out_of_latency() -> None:
    monitor = Monitor()
    monitor.observe(online("m-1"), T0)
    monitor.observe(completed("m-1", elapsed_ms=40.0), T0 + 1)
    for n in range(9):
        monitor.observe(overloaded("m-1", f"refused-{n}"), T0 + 1)
    [row] = monitor.view.rows(T0 + 2)
    assert (row.p50_ms, row.p99_ms) == (40.0, 40.0)
    value = monitor.registry.get_sample_value
    duration = {"capability": "math"}
    assert value("callboard_fleet_task_duration_seconds_count", duration) == 1
    assert value("callboard_fleet_task_duration_seconds_sum", duration) == 0.04
    rejected = {"agent": "m-1", "capability": "math", "reason": "overloaded"}
    assert value("callboard_fleet_tasks_rejected_total", rejected) == 9
    failed = {"agent": "m-1", "capability": "math", "code": "503"}
    assert value("callboard_fleet_tasks_failed_total", failed) == 9


def test_accepted_events_that_never_end_cannot_grow_an_agent_without_bound() -> None:
    monitor = Monitor()
    monitor.observe(online("m-1"), T0)
    for n in range(MAX_RUNNING_PER_AGENT + 5_000):
        accepted = Accepted(agent="m-1", ts=1.0, task_id=f"never-ends-{n}", capability="math")
        monitor.view.observe(accepted, T0 + 1)
    [row] = monitor.view.rows(T0 + 1)
    assert row.in_flight == MAX_RUNNING_PER_AGENT
