"""``callboard monitor``'s model of the fleet, with explicit timestamps: the
one-minute task windows, agent lifetimes, the table, and FleetMetrics' expiry
and series cleanup."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from bus import (
    Accepted,
    Cancelled,
    Completed,
    ErrorInfo,
    Failed,
    FleetMetrics,
    Heartbeat,
    Offline,
    Online,
    Started,
)
from orchestrator.cli.monitor._fleet_table import COLUMNS, format_latency, render_table
from orchestrator.cli.monitor._fleet_view import AgentRow, FleetView, fleet_totals
from orchestrator.cli.monitor._fleet_window import TaskWindow, quantile

T0 = 1000.0


def online(agent: str, *capabilities: str, max_concurrency: int = 4) -> Online:
    return Online(agent=agent, ts=1.0, capabilities=capabilities, max_concurrency=max_concurrency)


def heartbeat(agent: str, in_flight: int, *capabilities: str) -> Heartbeat:
    return Heartbeat(
        agent=agent, ts=1.0, capabilities=capabilities, in_flight=in_flight, max_concurrency=4
    )


def completed(agent: str, task_id: str, elapsed_ms: float, capability: str = "math") -> Completed:
    return Completed(
        agent=agent, ts=1.0, task_id=task_id, capability=capability, elapsed_ms=elapsed_ms
    )


def failed(agent: str, task_id: str, code: int = 400, type: str = "bad_input") -> Failed:
    error = ErrorInfo(code=code, type=type, message="no")
    return Failed(
        agent=agent, ts=1.0, task_id=task_id, capability="math", elapsed_ms=2.0, error=error
    )


# --- the window ----------------------------------------------------------------------------


def test_the_rate_is_over_the_time_observed_until_a_whole_window_has_passed() -> None:
    window = TaskWindow(T0)
    for n in range(10):
        window.add(T0 + n, elapsed_ms=1.0, failed=False)
    assert window.rate(T0 + 10) == pytest.approx(10 / 10)
    assert window.rate(T0 + 59) == pytest.approx(10 / 59)


def test_entries_older_than_the_window_are_dropped() -> None:
    window = TaskWindow(T0)
    window.add(T0 + 1, elapsed_ms=500.0, failed=True)
    window.add(T0 + 30, elapsed_ms=10.0, failed=False)
    window.add(T0 + 50, elapsed_ms=20.0, failed=False)
    assert window.count(T0 + 60) == 3
    assert window.error_rate(T0 + 60) == pytest.approx(1 / 3)
    # at T0+61 the first task is more than a minute old
    assert window.count(T0 + 61) == 2
    assert window.rate(T0 + 61) == pytest.approx(2 / 60)
    assert window.error_rate(T0 + 61) == 0.0
    assert window.latency_ms(T0 + 61, 0.5, 0.99) == (10.0, 20.0)
    assert window.count(T0 + 200) == 0
    assert window.error_rate(T0 + 200) is None
    assert window.latency_ms(T0 + 200, 0.5) == (None,)


def test_percentiles_are_nearest_rank_and_leave_out_tasks_without_latency() -> None:
    window = TaskWindow(T0)
    for ms in range(100, 0, -1):  # 100 .. 1 ms, in no particular order of time
        window.add(T0 + 1, elapsed_ms=float(ms), failed=False)
    window.add(T0 + 1, elapsed_ms=None, failed=False)  # a cancelled task
    assert window.latency_ms(T0 + 2, 0.5, 0.99, 1.0) == (50.0, 99.0, 100.0)
    assert window.count(T0 + 2) == 101
    assert quantile([], 0.5) is None
    assert quantile([7.0], 0.99) == 7.0


# --- the fleet view ------------------------------------------------------------------------


def test_rows_show_state_load_and_the_last_minute() -> None:
    view = FleetView()
    view.observe(online("m-1", "math"), T0)
    view.observe(Accepted(agent="m-1", ts=1.0, task_id="t1", capability="math"), T0 + 1)
    view.observe(Started(agent="m-1", ts=1.0, task_id="t1", capability="math"), T0 + 1)
    view.observe(Accepted(agent="m-1", ts=1.0, task_id="t2", capability="math"), T0 + 1)
    [row] = view.rows(T0 + 2)
    assert row == AgentRow("m-1", ("math",), "online", 2, 4, 0.0, None, None, None)
    view.observe(completed("m-1", "t1", 10.0), T0 + 3)
    view.observe(failed("m-1", "t2"), T0 + 4)
    [row] = view.rows(T0 + 10)
    assert (row.in_flight, row.tasks_per_second, row.error_rate) == (0, 2 / 10, 0.5)
    assert (row.p50_ms, row.p99_ms) == (2.0, 10.0)


def test_in_flight_counts_tasks_begun_before_the_monitor_started() -> None:
    view = FleetView()
    view.observe(heartbeat("m-1", 2, "math"), T0)
    assert view.rows(T0)[0].in_flight == 2
    view.observe(completed("m-1", "older", 5.0), T0 + 1)
    assert view.rows(T0 + 1)[0].in_flight == 1
    view.observe(heartbeat("m-1", 0, "math"), T0 + 2)
    assert view.rows(T0 + 2)[0].in_flight == 0


def test_lifetimes_online_draining_offline_expired_then_forgotten() -> None:
    view = FleetView(heartbeat_timeout=15, forget_after=300)
    view.observe(online("a", "math"), T0)
    view.observe(online("b", "echo"), T0)
    assert view.discovered("c", ("math",), 2, T0)
    assert not view.discovered("a", ("other",), 9, T0)  # its own events are newer
    view.observe(failed("a", "t", code=503, type="draining"), T0 + 1)
    view.observe(Offline(agent="a", ts=1.0), T0 + 2)
    view.observe(heartbeat("b", 0, "echo"), T0 + 10)
    assert view.sweep(T0 + 15).expired == []
    assert [r.state for r in view.rows(T0 + 15)] == ["offline", "online", "online"]
    # c was last heard of at T0: silent for more than 15 s now
    assert view.sweep(T0 + 15.5) == (["c"], [])
    assert view.sweep(T0 + 26) == (["b"], [])
    assert [r.state for r in view.rows(T0 + 26)] == ["offline", "expired", "expired"]
    assert view.live_count() == 0
    # a heartbeat brings an expired agent back
    view.observe(heartbeat("b", 0, "echo"), T0 + 30)
    assert view.rows(T0 + 30)[1].state == "online"
    # a went offline at T0+2, c expired at T0+15.5: each is forgotten 300 s later
    assert view.sweep(T0 + 302) == (["b"], ["a"])
    assert view.sweep(T0 + 316) == ([], ["c"])
    assert [(r.agent, r.state) for r in view.rows(T0 + 316)] == [("b", "expired")]


def test_a_capability_stays_until_forget_after_once_its_last_agent_is_forgotten() -> None:
    view = FleetView(heartbeat_timeout=15, forget_after=300)
    view.observe(online("a", "math"), T0)
    view.observe(Offline(agent="a", ts=1.0), T0 + 1)
    assert view.forget_capabilities(T0 + 400) == []  # a still shows it (offline, not forgotten)
    assert view.sweep(T0 + 301).forgotten == ["a"]
    assert view.forget_capabilities(T0 + 600) == []  # nobody serves math: the alert's 0
    assert view.forget_capabilities(T0 + 601) == ["math"]
    assert view.capability_count == 0


def test_a_draining_agent_is_shown_draining_until_it_says_offline() -> None:
    view = FleetView()
    view.observe(online("a", "math"), T0)
    view.observe(failed("a", "t", code=503, type="draining"), T0 + 1)
    assert view.rows(T0 + 1)[0].state == "draining"
    view.observe(online("a", "math"), T0 + 2)  # restarted under the same id
    assert view.rows(T0 + 2)[0].state == "online"


def test_an_agent_met_by_its_task_events_is_shown_with_their_capabilities() -> None:
    view = FleetView()
    view.observe(completed("x", "t", 3.0, capability="summarize"), T0)
    [row] = view.rows(T0)
    assert (row.state, row.capabilities, row.max_concurrency) == ("online", ("summarize",), 0)


def test_totals_sum_the_rows() -> None:
    rows = [
        AgentRow("a", ("math",), "online", 1, 4, 2.0, 0.5, 1.0, 2.0),
        AgentRow("b", ("math",), "online", 0, 4, 1.0, None, None, None),
        AgentRow("c", ("echo",), "expired", 0, 8, 0.0, None, None, None),
    ]
    totals = fleet_totals(rows)
    assert totals.agents == 3
    assert totals.states == {"online": 2, "draining": 0, "offline": 0, "expired": 1}
    assert (totals.in_flight, totals.capacity) == (1, 8)  # gone agents add no capacity
    assert totals.tasks_per_second == 3.0
    assert totals.error_rate == pytest.approx(1 / 3)


# --- the table -----------------------------------------------------------------------------


def sample_rows() -> list[AgentRow]:
    return [
        AgentRow("math-0123456789abcdef", ("math", "calc"), "online", 3, 4, 12.5, 0.02, 1.2, 30.0),
        AgentRow("echo-1", ("echo",), "draining", 1, 1, 0.0, None, None, None),
        AgentRow("summarize-2", ("summarize",), "expired", 0, 2, 0.5, 1.0, 1500.0, 2500.0),
    ]


def test_the_table_has_a_header_then_one_row_per_agent() -> None:
    rows = sample_rows()
    lines = render_table(rows, fleet_totals(rows), width=160, title="callboard monitor x")
    header, columns, *body = lines
    assert header.startswith("callboard monitor x  3 agent(s): 1 online, 1 draining, 1 expired")
    assert "in flight 4/5" in header and "13.00 tasks/s" in header
    assert columns.split() == " ".join(COLUMNS).split()
    assert len(body) == 3
    assert body[0].split() == [
        *("math-0123456789abcdef", "math,calc", "online", "3/4", "12.50", "2.0%", "1.2ms"),
        "30.0ms",
    ]
    assert body[1].split() == ["echo-1", "echo", "draining", "1/1", "0.00", "-", "-", "-"]
    assert body[2].split()[-2:] == ["1.50s", "2.50s"]


@pytest.mark.parametrize("width", [20, 40, 60, 80, 100, 200])
def test_every_line_fits_the_width(width: int) -> None:
    rows = sample_rows()
    lines = render_table(rows, fleet_totals(rows), width=width)
    assert all(len(line) <= width for line in lines), lines
    assert len(lines) == 2 + len(rows)
    # who, what, state and load are kept; statistics give way first
    assert lines[1].startswith("AGENT")
    if width >= 60:
        states = ("online", "draining", "expired")
        assert all(state in line for line, state in zip(lines[2:], states, strict=True))


def test_a_narrow_column_is_never_widened() -> None:
    rows = [AgentRow("a", ("m",), "online", 0, 1, 0.0, None, None, None)]
    natural = render_table(rows, fleet_totals(rows), width=200)[2]
    squeezed = render_table(rows, fleet_totals(rows), width=60)
    assert squeezed[2].startswith("a      m")  # AGENT is 5 wide, CAPABILITIES shrunk
    assert natural.startswith("a      m")
    assert all(len(line) <= 60 for line in squeezed)


def test_agents_beyond_the_height_are_summed_up() -> None:
    rows = sample_rows() * 5
    lines = render_table(rows, fleet_totals(rows), width=120, height=8)
    assert len(lines) == 8  # the totals, the column names, 5 agents, and the rest
    assert lines[-1].startswith("... and 10 more agent(s)")


def test_an_empty_fleet_says_so() -> None:
    lines = render_table([], fleet_totals([]), width=80)
    assert lines[1].split()[0] == COLUMNS[0]
    assert lines[-1].startswith("no agents heard of yet")


def test_latency_format() -> None:
    assert [format_latency(v) for v in (None, 0.25, 999.9, 1000.0, 61_000.0)] == [
        *("-", "0.2ms", "999.9ms", "1.00s", "61.00s"),
    ]


# --- FleetMetrics: expiry and series cleanup ------------------------------------------------


def series(registry: CollectorRegistry, agent: str) -> list[str]:
    """Names of the samples that carry ``agent``."""
    return sorted(
        {
            sample.name
            for family in registry.collect()
            for sample in family.samples
            if sample.labels.get("agent") == agent
        }
    )


def test_expiry_sets_the_agent_down_and_out_of_the_live_counts() -> None:
    registry = CollectorRegistry()
    fleet = FleetMetrics(registry)
    fleet.observe(online("a", "math"))
    fleet.observe(heartbeat("b", 3, "math"))
    value = registry.get_sample_value
    assert value("callboard_fleet_live_agents", {"capability": "math"}) == 2
    fleet.expire("b")
    assert value("callboard_fleet_agent_up", {"agent": "b"}) == 0
    assert value("callboard_fleet_agent_in_flight", {"agent": "b"}) == 0
    assert value("callboard_fleet_live_agents", {"capability": "math"}) == 1
    fleet.observe(heartbeat("b", 0, "math"))  # back
    assert value("callboard_fleet_agent_up", {"agent": "b"}) == 1
    assert value("callboard_fleet_live_agents", {"capability": "math"}) == 2


def test_forget_deletes_every_series_of_the_agent_and_keeps_the_capability() -> None:
    registry = CollectorRegistry()
    fleet = FleetMetrics(registry)
    fleet.observe(online("a", "math"))
    fleet.observe(online("b", "math"))
    fleet.observe(completed("a", "t1", 3.0))
    fleet.observe(failed("a", "t2"))
    fleet.observe(Cancelled(agent="a", ts=1.0, task_id="t3", capability="math"))
    fleet.observe(completed("b", "t4", 3.0))
    assert "callboard_fleet_tasks_failed_total" in series(registry, "a")
    fleet.observe(Offline(agent="a", ts=1.0))
    fleet.forget("a")
    assert series(registry, "a") == []
    assert series(registry, "b") != []
    value = registry.get_sample_value
    assert value("callboard_fleet_live_agents", {"capability": "math"}) == 1
    assert value("callboard_fleet_task_duration_seconds_count", {"capability": "math"}) == 3
    fleet.forget("a")  # idempotent
    fleet.forget("never-seen")


def test_an_agent_found_by_discovery_is_live_without_an_event_counted() -> None:
    registry = CollectorRegistry()
    fleet = FleetMetrics(registry)
    fleet.live("d", ("math",), 4)
    value = registry.get_sample_value
    assert value("callboard_fleet_agent_up", {"agent": "d"}) == 1
    assert value("callboard_fleet_agent_max_concurrency", {"agent": "d"}) == 4
    assert value("callboard_fleet_live_agents", {"capability": "math"}) == 1
    assert value("callboard_fleet_status_events_total", {"state": "online"}) is None
