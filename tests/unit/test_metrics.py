"""The metrics contract (names, types, labels, buckets) and the HTTP endpoint.

Every test builds a fresh CollectorRegistry: nothing here touches the global one.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any, cast

import anyio
import msgspec
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_support import populated_registry

from actors import AgentHost
from actors._daemon import DaemonMetrics
from bus import (
    DEFAULT_MAX_REFUSALS,
    DISPATCH_OUTCOMES,
    DURATION_BUCKETS,
    AgentError,
    AgentMetrics,
    Completed,
    ConfigError,
    ConnectionMetrics,
    DeadlineExceeded,
    DispatchMetrics,
    ErrorInfo,
    Failed,
    FleetMetrics,
    Heartbeat,
    MetricsServer,
    NoAgentError,
    Offline,
    Online,
    PayloadTooLarge,
    TaskCancelled,
    TaskTimeout,
    dispatch_outcome,
    parse_metrics_address,
)
from bus.observability._connection_health import lost_reason

# The spec (issue 5): family name -> (type, labels). The dashboard and alerts use these.
CONTRACT: dict[str, tuple[str, set[str]]] = {
    "callboard_agent_up": ("gauge", {"agent", "kind"}),
    "callboard_agent_tasks_received": ("counter", {"agent", "capability"}),
    "callboard_agent_tasks_completed": ("counter", {"agent", "capability"}),
    "callboard_agent_tasks_failed": ("counter", {"agent", "capability", "code"}),
    "callboard_agent_tasks_rejected": ("counter", {"agent", "capability", "reason"}),
    "callboard_agent_task_duration_seconds": ("histogram", {"agent", "capability"}),
    "callboard_agent_tasks_in_flight": ("gauge", {"agent"}),
    "callboard_agent_max_concurrency": ("gauge", {"agent"}),
    "callboard_agent_status_events": ("counter", {"agent", "state"}),
    "callboard_agent_delegations": ("counter", {"agent", "capability", "outcome"}),
    "callboard_dispatch": ("counter", {"capability", "outcome"}),
    "callboard_dispatch_duration_seconds": ("histogram", {"capability"}),
    "callboard_dispatch_retries": ("counter", {"capability"}),
    "callboard_pipeline_runs": ("counter", {"outcome"}),
    "callboard_pipeline_steps": ("counter", {"outcome"}),
    "callboard_registry_live_agents": ("gauge", {"capability"}),
    "callboard_nats_connected": ("gauge", {"connection"}),
    "callboard_nats_reconnects": ("counter", {"connection"}),
    "callboard_nats_disconnected_seconds": ("counter", {"connection"}),
    "callboard_nats_pending_bytes": ("gauge", {"connection"}),
    "callboard_nats_slow_consumer_events": ("counter", {"connection"}),
    "callboard_fleet_agent_up": ("gauge", {"agent"}),
    "callboard_fleet_agent_in_flight": ("gauge", {"agent"}),
    "callboard_fleet_agent_max_concurrency": ("gauge", {"agent"}),
    "callboard_fleet_live_agents": ("gauge", {"capability"}),
    "callboard_fleet_tasks": ("counter", {"agent", "capability", "outcome"}),
    "callboard_fleet_tasks_failed": ("counter", {"agent", "capability", "code"}),
    "callboard_fleet_tasks_rejected": ("counter", {"agent", "capability", "reason"}),
    "callboard_fleet_left_out": ("counter", {"what"}),
    "callboard_fleet_task_duration_seconds": ("histogram", {"capability"}),
    "callboard_fleet_status_events": ("counter", {"state"}),
    "callboard_refused_messages": ("counter", {"reason"}),
    "callboard_agent_model_corrections": ("counter", {"agent", "kind"}),
}
SPEC_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5]
SPEC_BUCKETS += [1, 2.5, 5, 10, 30, 60, 120, 300]


def _error(code: int) -> ErrorInfo:
    return ErrorInfo(code=code, type="bad_input", message="bad")


class _Client:
    def __init__(self, pending: int) -> None:
        self.pending_data_size = pending


def test_every_family_has_the_spec_name_type_and_labels() -> None:
    registry = populated_registry()
    found: dict[str, tuple[str, set[str]]] = {}
    for family in registry.collect():
        labels = {k for s in family.samples for k in s.labels if k != "le"}
        found[family.name] = (family.type, labels)
    assert found == CONTRACT


def test_histograms_use_the_spec_buckets() -> None:
    assert list(DURATION_BUCKETS) == SPEC_BUCKETS
    registry = populated_registry()
    for name in ("callboard_agent_task_duration_seconds", "callboard_dispatch_duration_seconds"):
        [family] = [f for f in registry.collect() if f.name == name]
        bounds = [float(s.labels["le"]) for s in family.samples if s.name.endswith("_bucket")]
        assert bounds == [*SPEC_BUCKETS, float("inf")]


def test_the_exposition_passes_promtool() -> None:
    text = generate_latest(populated_registry())
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, timeout=30
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (None, "ok"),
        (NoAgentError("nobody"), "no_agent"),
        (TaskTimeout("late"), "timeout"),
        (DeadlineExceeded("stopped at the deadline", code=408), "timeout"),
        (TaskCancelled("gave up", code=499), "cancelled"),
        (asyncio.CancelledError(), "cancelled"),
        (AgentError("boom", code=500), "agent_error"),
        (PayloadTooLarge("big"), "agent_error"),
    ],
)
def test_dispatch_outcome_names_how_a_task_ended(error: BaseException | None, outcome: str) -> None:
    assert dispatch_outcome(error) == outcome
    assert outcome in DISPATCH_OUTCOMES


def test_a_removed_agent_leaves_no_series_behind() -> None:
    registry = CollectorRegistry()
    metrics = AgentMetrics(registry)
    series = metrics.bind("e-1", "echo", ["echo"], 2)
    kept = metrics.bind("e-2", "echo", ["echo"], 2)
    series.up.set(1)
    series.capabilities["echo"].finished(0.1, 500)
    series.delegated("math", "no_agent")
    series.remove()
    series.delegated("math", "ok")  # a late delegation after removal is not resurrected
    # the process's refusals have no agent label: they stay
    per_agent = [f for f in registry.collect() if f.name != "callboard_refused_messages"]
    agents = {s.labels.get("agent") for f in per_agent for s in f.samples}
    assert agents == {"e-2"}
    kept.remove()
    left = {f.name for f in registry.collect() if f.samples}
    assert left == {"callboard_refused_messages"}


def test_model_corrections_take_only_their_fixed_kinds() -> None:
    """A task's prompt may make its model need correcting as often as it likes (an
    attacker's too), but only the three known kinds ever become series: no label
    value comes from the model or the task, so /metrics cannot be inflated."""
    registry = CollectorRegistry()
    series = AgentMetrics(registry).bind("llm-1", "llm", ["chat"], 2)

    def corrections() -> dict[str, float]:
        name = "callboard_agent_model_corrections_total"
        return {
            s.labels["kind"]: s.value
            for f in registry.collect()
            for s in f.samples
            if s.name == name
        }

    assert corrections() == {}  # none until a model needs one
    for _ in range(1000):
        series.model_corrected("text_tool_calls")
    series.model_corrected("repeated_calls", 0)  # nothing to count: no series
    with pytest.raises(ValueError, match="unknown model correction"):
        series.model_corrected("made-up by a prompt")
    assert corrections() == {"text_tool_calls": 1000}
    series.remove()
    series.model_corrected("output_repairs")  # after removal: not resurrected
    assert corrections() == {}


def test_failed_is_counted_by_code_and_observed() -> None:
    registry = CollectorRegistry()
    series = AgentMetrics(registry).bind("m-1", "math", ["math"], 2).capabilities["math"]
    series.finished(0.001, None)
    series.finished(0.002, 400)
    series.finished(0.003, 400)
    series.finished(0.004, 500)
    labels = {"agent": "m-1", "capability": "math"}
    value = registry.get_sample_value
    assert value("callboard_agent_tasks_completed_total", labels) == 1
    assert value("callboard_agent_tasks_failed_total", {**labels, "code": "400"}) == 2
    assert value("callboard_agent_tasks_failed_total", {**labels, "code": "500"}) == 1
    assert value("callboard_agent_task_duration_seconds_count", labels) == 4
    assert value("callboard_agent_tasks_rejected_total", {**labels, "reason": "draining"}) == 0


def test_dispatch_live_agents_of_a_vanished_capability_read_zero() -> None:
    registry = CollectorRegistry()
    dispatch = DispatchMetrics(registry)
    dispatch.set_live_agents({"math": 2, "echo": 1})
    dispatch.set_live_agents({"math": 1})
    live = "callboard_registry_live_agents"
    assert registry.get_sample_value(live, {"capability": "math"}) == 1
    assert registry.get_sample_value(live, {"capability": "echo"}) == 0
    assert dispatch.dispatched("math", 0.5, NoAgentError("x")) == "no_agent"
    labels = {"capability": "math", "outcome": "no_agent"}
    assert registry.get_sample_value("callboard_dispatch_total", labels) == 1


def test_fleet_metrics_follow_the_status_stream() -> None:
    registry = CollectorRegistry()
    fleet = FleetMetrics(registry)
    value = registry.get_sample_value
    fleet.observe(Online(agent="m-1", ts=1.0, capabilities=("math",), max_concurrency=8))
    fleet.observe(Heartbeat(agent="m-2", ts=1.0, capabilities=("math",), in_flight=3))
    assert value("callboard_fleet_live_agents", {"capability": "math"}) == 2
    assert value("callboard_fleet_agent_in_flight", {"agent": "m-2"}) == 3
    assert value("callboard_fleet_agent_max_concurrency", {"agent": "m-1"}) == 8
    fleet.observe(Completed(agent="m-1", ts=1.0, task_id="a", capability="math", elapsed_ms=5))
    fleet.observe(Failed(agent="m-1", ts=1.0, task_id="b", capability="math", error=_error(400)))
    task = {"agent": "m-1", "capability": "math"}
    assert value("callboard_fleet_tasks_total", {**task, "outcome": "completed"}) == 1
    assert value("callboard_fleet_tasks_failed_total", {**task, "code": "400"}) == 1
    assert value("callboard_fleet_task_duration_seconds_count", {"capability": "math"}) == 2
    fleet.observe(Offline(agent="m-1", ts=2.0))
    fleet.expire("m-2")
    assert value("callboard_fleet_agent_up", {"agent": "m-1"}) == 0
    assert value("callboard_fleet_live_agents", {"capability": "math"}) == 0
    assert value("callboard_fleet_status_events_total", {"state": "online"}) == 1


def test_connection_downtime_grows_during_an_outage_and_stops_after() -> None:
    registry = CollectorRegistry()
    state = ConnectionMetrics(registry).track(None)
    state.on_connected(_Client(12))
    labels = {"connection": "default"}
    value = registry.get_sample_value
    assert value("callboard_nats_connected", labels) == 1
    assert value("callboard_nats_pending_bytes", labels) == 12
    state.on_disconnected()
    assert value("callboard_nats_connected", labels) == 0
    during = value("callboard_nats_disconnected_seconds_total", labels)
    later = value("callboard_nats_disconnected_seconds_total", labels)
    assert during is not None and later is not None and later >= during
    state.on_reconnected()
    after = value("callboard_nats_disconnected_seconds_total", labels)
    assert after is not None and after >= during
    assert value("callboard_nats_disconnected_seconds_total", labels) == after
    assert value("callboard_nats_reconnects_total", labels) == 1
    state.on_closed()
    assert value("callboard_nats_pending_bytes", labels) == 0


def test_a_refused_or_closed_connection_is_unhealthy_and_ends_the_wait_for_loss() -> None:
    daemon = DaemonMetrics("127.0.0.1:0", "callboard-daemon")
    daemon.host = cast(AgentHost, SimpleNamespace(agent_states={"m-1": "serving"}))
    connection = daemon.connections.track("callboard-daemon")
    connection.on_connected(_Client(0))
    assert lost_reason(connection) is None
    connection.on_disconnected()
    assert daemon.health()[1]["connection"] == "reconnecting"
    for refusal in range(1, DEFAULT_MAX_REFUSALS + 1):
        assert lost_reason(connection) is None
        connection.on_refused()
        healthy, details = daemon.health()
        assert (healthy, details["connection"]) == (False, "refused"), refusal
    assert "refused the login 3 times" in (lost_reason(connection) or "")
    connection.on_reconnected()  # a success in between starts the count again
    assert daemon.health()[0] and lost_reason(connection) is None
    connection.on_lost()
    healthy, details = daemon.health()
    assert (healthy, details["connection"], details["connected"]) == (False, "closed", False)
    assert lost_reason(connection) == "the NATS connection was closed for good"


def test_the_daemon_is_healthy_when_connected_and_serving() -> None:
    daemon = DaemonMetrics("127.0.0.1:0", "callboard-daemon")  # nothing listens before entry
    assert daemon.health() == (
        False,
        {"status": "unhealthy", "connected": False, "connection": "connecting", "agents": {}},
    )
    connection = daemon.connections.track("callboard-daemon")
    connection.on_connected(_Client(0))
    host = SimpleNamespace(agent_states={"m-1": "serving"})
    daemon.host = cast(AgentHost, host)
    assert daemon.health() == (
        True,
        {
            "status": "ok",
            "connected": True,
            "connection": "connected",
            "agents": {"m-1": "serving"},
        },
    )
    connection.on_disconnected()
    assert daemon.health()[1]["status"] == "unhealthy"
    connection.on_reconnected()
    host.agent_states = {"m-1": "draining"}
    assert daemon.health() == (
        False,
        {
            "status": "draining",
            "connected": True,
            "connection": "connected",
            "agents": {"m-1": "draining"},
        },
    )
    host.agent_states = {"m-1": "serving"}
    daemon.stopping = True
    assert daemon.health()[1]["status"] == "draining"


# --- the HTTP endpoint ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("9464", ("127.0.0.1", 9464)),
        (":9464", ("127.0.0.1", 9464)),
        ("0.0.0.0:9464", ("0.0.0.0", 9464)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:9464", ("::1", 9464)),
    ],
)
def test_an_address_gives_a_host_and_port(address: str, expected: tuple[str, int]) -> None:
    assert parse_metrics_address(address) == expected


@pytest.mark.parametrize(
    "address", ["", ":", "127.0.0.1", "host:", "host:99999", "http://host:9464", "::1:9464"]
)
def test_a_bad_address_says_what_to_write(address: str) -> None:
    with pytest.raises(ConfigError, match=r"write PORT, :PORT or HOST:PORT"):
        MetricsServer(address, CollectorRegistry())


def fetch(url: str) -> tuple[int, str, bytes]:
    """(status, content type, body) of a GET, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers["Content-Type"], exc.read()


async def get(url: str) -> tuple[int, str, bytes]:
    return await anyio.to_thread.run_sync(fetch, url)


@pytest.mark.anyio
async def test_metrics_are_served_over_http() -> None:
    registry = populated_registry()
    async with MetricsServer("127.0.0.1:0", registry) as server:
        assert server.port != 0
        assert server.url == f"http://127.0.0.1:{server.port}"
        status, content_type, body = await get(server.url + "/metrics")
        assert status == 200 and content_type.startswith("text/plain")
        names = {f.name for f in text_string_to_metric_families(body.decode())}
        # the text format's parser reads each ``_created`` series as a family of its own
        assert {n for n in names if not n.endswith("_created")} == set(CONTRACT)
        status, _, body = await get(server.url + "/nothing-here")
        assert status == 404 and b"/metrics" in body


@pytest.mark.anyio
async def test_healthz_answers_200_or_503_with_the_details() -> None:
    state: dict[str, Any] = {"healthy": True}

    def health() -> tuple[bool, Mapping[str, Any]]:
        if state.get("explode"):
            raise RuntimeError("broken check")
        status = "ok" if state["healthy"] else "draining"
        return state["healthy"], {"status": status, "agents": {"m-1": status}}

    async with MetricsServer(":0", CollectorRegistry(), health=health) as server:
        status, content_type, body = await get(server.url + "/healthz")
        assert (status, content_type) == (200, "application/json")
        assert msgspec.json.decode(body) == {"status": "ok", "agents": {"m-1": "ok"}}
        state["healthy"] = False
        status, _, body = await get(server.url + "/healthz")
        assert status == 503 and msgspec.json.decode(body)["status"] == "draining"
        state["explode"] = True
        status, _, body = await get(server.url + "/healthz")
        assert status == 503 and "broken check" in msgspec.json.decode(body)["error"]


@pytest.mark.anyio
async def test_a_busy_port_is_a_config_error_and_the_server_closes() -> None:
    async with MetricsServer("127.0.0.1:0", CollectorRegistry()) as first:
        taken = MetricsServer(f"127.0.0.1:{first.port}", CollectorRegistry())
        with pytest.raises(ConfigError, match=r"cannot serve metrics on 127\.0\.0\.1"):
            async with taken:
                pass
    # closed on exit: nothing listens there any more
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", first.port), timeout=5):
        pass


@pytest.mark.anyio
async def test_idle_connections_are_capped_timed_out_and_make_way_for_a_probe() -> None:
    server = MetricsServer("127.0.0.1:0", CollectorRegistry(), max_connections=4, timeout=1.0)
    async with server:
        idle = [await anyio.connect_tcp("127.0.0.1", server.port) for _ in range(20)]
        try:
            # each newcomer replaces the oldest idle one: the probe, last, is answered
            status, _, body = await get(server.url + "/healthz")
            assert status == 200 and msgspec.json.decode(body) == {"status": "ok"}
            assert server.open_connections <= server.max_connections == 4
            # an idle connection the server kept is closed once its request is overdue
            with anyio.fail_after(10):
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                    await idle[-1].receive()
        finally:
            for stream in idle:
                await stream.aclose()


@pytest.mark.anyio
async def test_a_malformed_request_gets_400_and_the_server_goes_on() -> None:
    async with MetricsServer("127.0.0.1:0", CollectorRegistry()) as server:
        async with await anyio.connect_tcp("127.0.0.1", server.port) as stream:
            await stream.send(b"\x16\x03\x01 not http at all\r\n\r\n")
            with anyio.fail_after(10):
                answer = await stream.receive()
        assert answer.startswith(b"HTTP/1.1 400")
        status, _, _ = await get(server.url + "/healthz")
        assert status == 200
