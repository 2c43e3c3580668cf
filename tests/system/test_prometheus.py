"""The dashboard and the alert rules against a real Prometheus scraping real processes.

One stack per module: the session's nats-server, two ``callboard run`` daemons
serving ``/metrics`` (``metrics_address``), ``callboard monitor --metrics`` (the
fleet view), and an ``Orchestrator`` in this process whose ``DispatchMetrics`` are
served from a registry of its own. A load exercises every metric (completions,
400s, an overload rejection, a timeout, delegations, a retry, no agent, pipelines
that succeed, fail and partly fail), then a real ``prometheus`` scrapes it all every
second with ``deploy/prometheus/alerts.yml`` loaded. Every query of the dashboard
and of the rules must evaluate, and every panel must show data.

Prometheus is not installed by the tests: CI installs Debian's ``prometheus``
package (``.ci/run``); elsewhere the module is skipped when it is missing.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from llm_servers import FakeOllama
from nats.aio.client import Client
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_support import (
    ALERTS,
    PROMETHEUS_CONFIG,
    Prometheus,
    ScrapeJob,
    alert_rules,
    dashboard_exprs,
    dashboard_panels,
    empty_panels,
    empty_variables,
    free_port,
    load_dashboard,
    metric_names,
    panel_exprs,
    prometheus_config,
    query_problems,
    read_yaml,
    require_tool,
    wait_until,
)
from system_support import (
    ROOT,
    STARTUP_TIMEOUT,
    Proc,
    daemon_toml,
    watch_status,
)

from actors import READY_LINE
from bus import (
    AgentError,
    AgentOverloaded,
    DispatchMetrics,
    EmbeddedServer,
    NoAgentError,
    TaskTimeout,
    new_agent_suffix,
)
from bus import connect as bus_connect
from orchestrator import Orchestrator, RetryPolicy, StepFailed

pytestmark = pytest.mark.system

SCRAPE_INTERVAL = "1s"
DATA_TIMEOUT = 60.0
"""Seconds Prometheus may take to hold data for every panel after the load."""
ALERT_TIMEOUT = 30.0
"""Seconds a stopped daemon may take to show up in the alerts (pending or firing)."""

TEXT = (
    "NATS is a connective technology. Agents subscribe to the subjects of their "
    "capabilities. An orchestrator sends each step to the capability that owns it."
)


@dataclass
class Stack:
    """What the module's tests look at."""

    prometheus: Prometheus
    doomed: Proc
    """The second daemon, which ``test_a_stopped_daemon_raises_agent_down`` stops."""
    doomed_target: str
    doomed_agent: str
    missing: dict[str, str]
    """component -> why it is not there (its metrics are then absent)."""
    jobs: list[ScrapeJob]

    def blocked_panels(self, dashboard: dict[str, Any]) -> dict[str, str]:
        """title -> why, for each panel all of whose metrics come from missing components."""
        blocked: dict[str, str] = {}
        for panel in dashboard_panels(dashboard):
            names = {n for expr in panel_exprs(panel) for n in metric_names(expr)}
            sources = {_source(name) for name in names}
            if sources and sources <= self.missing.keys():
                blocked[panel["title"]] = "; ".join(self.missing[s] for s in sorted(sources))
        return blocked

    def explain(self) -> str:
        """The context of a failure: missing components, and the metrics Prometheus has."""
        lines = [f"  {name}: {why}" for name, why in self.missing.items()]
        names = [n for n in self.prometheus.series_names() if n.startswith("callboard_")]
        return (
            "missing components:\n" + "\n".join(lines) + "\n" if lines else ""
        ) + f"callboard metrics Prometheus holds: {names}"


_SOURCES = {
    "callboard_fleet_": "monitor",
    "callboard_dispatch_": "orchestrator",
    "callboard_pipeline_": "orchestrator",
    "callboard_registry_": "orchestrator",
}


def _source(metric: str) -> str:
    """The component of the stack that exports a metric."""
    for prefix, component in _SOURCES.items():
        if metric.startswith(prefix):
            return component
    return "daemon"


def http_status(url: str) -> int | str:
    """The HTTP status of a GET (or the connection error), for polling."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError as exc:
        return str(exc)


CLI = [sys.executable, "-m", "orchestrator.cli"]


def start_daemon(
    cleanup: ExitStack,
    name: str,
    directory: Path,
    env: dict[str, str],
    prefix: str,
    agents: list[dict[str, Any]],
) -> tuple[Proc, str]:
    """``callboard run`` with ``metrics_address``, once healthy: the process and its target."""
    target = f"127.0.0.1:{free_port()}"
    config = directory / f"{name}.toml"
    config.write_text(
        daemon_toml(
            prefix, agents, heartbeat_interval=1.0, grace_period=2.0, metrics_address=target
        )
    )
    proc = Proc([*CLI, "run", str(config)], env=env, name=name)
    cleanup.callback(proc.stop)
    try:
        proc.stderr.wait_for(READY_LINE, STARTUP_TIMEOUT)
    except AssertionError as exc:
        pytest.fail(f"the daemon with metrics_address = {target!r} did not start: {exc}")
    wait_until(
        partial(http_status, f"http://{target}/healthz"),
        lambda status: status == 200,
        timeout=STARTUP_TIMEOUT,
        what=f"{name}'s /healthz on {target} answering 200",
    )
    return proc, target


def start_monitor(
    cleanup: ExitStack, env: dict[str, str], prefix: str, missing: dict[str, str]
) -> str | None:
    """``callboard monitor --metrics``, following the status stream: its target.

    None (and why, in ``missing``) when this ``callboard monitor`` has no ``--metrics``.
    """
    help_text = subprocess.run(
        [*CLI, "monitor", "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=STARTUP_TIMEOUT,
        check=True,
    ).stdout
    if "--metrics" not in help_text:
        missing["monitor"] = "`callboard monitor` has no --metrics option yet (FleetMetrics)"
        return None
    target = f"127.0.0.1:{free_port()}"
    proc = Proc([*CLI, "monitor", "--prefix", prefix, "--metrics", target], env=env, name="monitor")
    cleanup.callback(proc.stop)
    proc.stderr.wait_for("following ", STARTUP_TIMEOUT)
    return target


@contextmanager
def serve_registry(registry: CollectorRegistry) -> Iterator[str]:
    """Serve ``registry`` on /metrics of a free loopback port for the block: its target."""
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def orchestrator_with_metrics(
    nc: Client, prefix: str, registry: CollectorRegistry, missing: dict[str, str]
) -> Orchestrator:
    """An orchestrator recording ``DispatchMetrics`` in ``registry``.

    Without them where ``Orchestrator`` takes no ``metrics`` yet (noted in ``missing``).
    """
    if "metrics" not in inspect.signature(Orchestrator).parameters:
        missing["orchestrator"] = "Orchestrator takes no metrics=DispatchMetrics(...) yet"
        return Orchestrator(nc, prefix=prefix, name="prometheus-test")
    metrics = DispatchMetrics(registry)
    return Orchestrator(nc, prefix=prefix, name="prometheus-test", metrics=metrics)


def model_server(cleanup: ExitStack) -> str:
    """A fake Ollama for the LLM agent: it writes its math call as text (a correction the
    agent counts), then answers from the result. Its URL."""
    server = cleanup.enter_context(FakeOllama(models=["llama3.2"]))
    call = {"name": "math", "arguments": {"expression": "6*7"}}

    def answer(body: dict[str, Any]) -> str:
        (result,) = [m for m in body["messages"] if m["role"] == "tool"]
        return f"6*7 is {json.loads(result['content'])['value']}."

    server.script(f"```json\n{json.dumps(call)}\n```", answer)
    return server.url


def llm_agent(agent_id: str, base_url: str) -> dict[str, Any]:
    """The daemon config of an LLM agent serving ``research`` that may delegate to math."""
    model = {"provider": "ollama", "model": "llama3.2", "base_url": base_url, "retries": 0}
    options = {"capability": "research", "model": model, "delegate": ["math"]}
    return {"type": "llm", "id": agent_id, "options": options}


async def generate_load(
    url: str,
    prefix: str,
    ids: dict[str, str],
    registry: CollectorRegistry,
    missing: dict[str, str],
) -> None:
    """Tasks that give every metric of the contract a value (and check their answers)."""
    async with (
        bus_connect(url, name="prometheus-test") as nc,
        watch_status(nc, prefix) as watch,
        orchestrator_with_metrics(nc, prefix, registry, missing) as orchestrator,
    ):
        dispatch = orchestrator.dispatch
        for n in range(5):
            assert await dispatch("math", {"expression": f"6*7+{n}"}) == {"value": 42 + n}
        assert "summary" in await dispatch("summarize", {"text": TEXT, "sentences": 1})
        for bad in ({"expression": "2 +"}, {"no_expression": 1}):
            with pytest.raises(AgentError) as info:
                await dispatch("math", bad)
            assert info.value.code == 400
        # delegation: relay -> math, once fine, once failing with the sub-task's 400
        assert await dispatch("relay", {"expression": "20+22"}) == {"value": 42}
        with pytest.raises(AgentError):
            await dispatch("relay", {"expression": "1 +"})
        # nobody serves it: no agent, after one retry
        with pytest.raises(NoAgentError):
            await dispatch(
                f"nobody-{new_agent_suffix()}",
                {},
                retry=RetryPolicy(attempts=2, backoff=0.01, jitter=0.0),
            )
        # overload: the echo agent runs one task at a time and refuses a second
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(dispatch, "echo", {"delay_ms": 1000}, timeout=10))
            await watch.wait_state("started", agent=ids["echo"])
            with pytest.raises(AgentOverloaded):
                await dispatch("echo", {"n": 1})
        with pytest.raises(TaskTimeout):
            await dispatch("echo", {"delay_ms": 2000}, timeout=0.3)
        # an LLM agent whose model writes its tool call as text: a model correction
        assert await dispatch("research", "what is 6*7?") == "6*7 is 42."
        # pipelines: one that succeeds, one that fails, one that partly fails
        good = {"capability": "math", "payload": {"expression": "1+2"}}
        bad = {"capability": "math", "payload": {"expression": "1 +"}}
        echo = {"capability": "echo", "payload": {"n": 2}}
        assert len(await orchestrator.run_pipeline([good, echo], timeout=10)) == 2
        with pytest.raises(StepFailed):
            await orchestrator.run_pipeline([bad, echo], timeout=10)
        results = await orchestrator.run_pipeline([bad, good], timeout=10, partial=True)
        assert [r.error is None for r in results] == [False, True]


@pytest.fixture(scope="module")
def stack(nats_server: EmbeddedServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The processes, the load, and a Prometheus scraping it all (all stopped by PID after)."""
    binary = require_tool("prometheus")
    directory = tmp_path_factory.mktemp("prometheus")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATS_")}
    env["NATS_URL"] = nats_server.url
    env["PYTHONUNBUFFERED"] = "1"
    # the daemons import prometheus_support:Relay from tests/
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "tests"), env.get("PYTHONPATH")]))
    prefix = f"t{new_agent_suffix()}.agents"
    suffix = new_agent_suffix()
    ids = {kind: f"{kind}-{suffix}" for kind in ("math", "echo", "summarize", "relay", "llm")}
    doomed_agent = f"math-doomed-{suffix}"
    missing: dict[str, str] = {}
    with ExitStack() as cleanup:
        registry = CollectorRegistry()
        jobs = [
            ScrapeJob("callboard-orchestrator", [cleanup.enter_context(serve_registry(registry))])
        ]
        monitor = start_monitor(cleanup, env, prefix, missing)  # first: it sees every event
        if monitor is not None:
            jobs.append(ScrapeJob("callboard-monitor", [monitor]))
        agents: list[dict[str, Any]] = [
            {"type": "math", "id": ids["math"]},
            {"type": "echo", "id": ids["echo"], "max_concurrency": 1},
            {"type": "summarize", "id": ids["summarize"]},
            {"type": "prometheus_support:Relay", "id": ids["relay"], "options": {"target": "math"}},
            llm_agent(ids["llm"], model_server(cleanup)),
        ]
        _, daemon = start_daemon(cleanup, "daemon", directory, env, prefix, agents)
        doomed, doomed_target = start_daemon(
            cleanup, "doomed", directory, env, prefix, [{"type": "math", "id": doomed_agent}]
        )
        jobs.append(ScrapeJob("callboard-daemon", [daemon, doomed_target]))

        config = directory / "prometheus.yml"
        config.write_text(prometheus_config(jobs, rule_files=[ALERTS], interval=SCRAPE_INTERVAL))
        prometheus = Prometheus(binary, config, directory)
        cleanup.callback(prometheus.stop)
        prometheus.wait_ready()
        wait_until(
            prometheus.targets,
            lambda found: (
                len(found) == sum(len(job.targets) for job in jobs)
                and all(target["health"] == "up" for target in found)
            ),
            timeout=STARTUP_TIMEOUT,
            what="every target up",
        )
        anyio.run(generate_load, nats_server.url, prefix, ids, registry, missing)
        yield Stack(prometheus, doomed, doomed_target, doomed_agent, missing, jobs)


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return load_dashboard()


def test_prometheus_scrapes_every_callboard_process(stack: Stack) -> None:
    down = [
        f"{t['labels']['job']} {t['labels']['instance']}: {t['lastError']}"
        for t in stack.prometheus.targets()
        if t["health"] != "up" and t["labels"]["instance"] != stack.doomed_target
    ]
    assert not down, f"targets down: {down}"
    assert not stack.missing, stack.explain()


def test_the_shipped_config_scrapes_every_component_that_fills_the_dashboard(
    stack: Stack,
) -> None:
    """A user who follows the README gets every row: deploy/prometheus/prometheus.yml has
    a job for each kind of process this stack scrapes (the orchestrator's included)."""
    shipped = {job["job_name"] for job in read_yaml(PROMETHEUS_CONFIG)["scrape_configs"]}
    assert {job.name for job in stack.jobs} <= shipped
    wait_until(
        partial(stack.prometheus.query, 'callboard_dispatch_total{job="callboard-orchestrator"}'),
        bool,
        timeout=DATA_TIMEOUT,
        what="the orchestrator job's callboard_dispatch_total series",
    )


def test_every_dashboard_query_evaluates(stack: Stack, dashboard: dict[str, Any]) -> None:
    problems = query_problems(stack.prometheus, dashboard_exprs(dashboard))
    assert not problems, json.dumps(problems, indent=2)


def test_every_dashboard_panel_shows_data(stack: Stack, dashboard: dict[str, Any]) -> None:
    # Waiting is for the panels whose process runs: the others cannot fill.
    blocked = stack.blocked_panels(dashboard)
    try:
        empty = wait_until(
            partial(empty_panels, stack.prometheus, dashboard),
            lambda empty: set(empty) <= blocked.keys(),
            timeout=DATA_TIMEOUT,
            what="every panel returning data",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{stack.explain()}") from None
    assert not empty, f"panels without data, for want of a component: {blocked}"


def test_every_dashboard_variable_offers_values(stack: Stack, dashboard: dict[str, Any]) -> None:
    empty = empty_variables(stack.prometheus, dashboard)
    assert not empty, f"variables without values: {empty}\n{stack.explain()}"


def test_every_alert_rule_is_loaded_and_evaluates(stack: Stack) -> None:
    rules = alert_rules()
    loaded = wait_until(
        stack.prometheus.rules,
        lambda found: (
            len(found) == len(rules)
            and all(r["lastEvaluation"] > "1970-01-01T00:00:00Z" for r in found)
        ),
        timeout=DATA_TIMEOUT,
        what=f"Prometheus evaluating the {len(rules)} rules of {ALERTS.name}",
    )
    assert [r["name"] for r in loaded] == [r.alert for r in rules]
    unhealthy = {r["name"]: r.get("lastError") for r in loaded if r["health"] != "ok"}
    assert not unhealthy, unhealthy
    # the same expressions through the query API (an empty result: not firing)
    problems = query_problems(stack.prometheus, [rule.expr for rule in rules])
    assert not problems, json.dumps(problems, indent=2)


def test_a_stopped_daemon_raises_agent_down(stack: Stack) -> None:
    """Stopping the second daemon makes CallboardAgentDown pending: its target is down,
    and the status stream saw its agent go offline. (The other tests do not use it.)"""
    stack.doomed.stop()

    def agent_down() -> set[tuple[str, str]]:
        """(cause, the daemon's target or the agent) of each CallboardAgentDown alert."""
        found = set()
        for alert in stack.prometheus.api("alerts")["alerts"]:
            labels = alert["labels"]
            if labels["alertname"] == "CallboardAgentDown":
                what = labels["instance"] if labels["cause"] == "scrape_failed" else labels["agent"]
                found.add((labels["cause"], what))
        return found

    expected = {("scrape_failed", stack.doomed_target)}
    if "monitor" not in stack.missing:
        expected.add(("offline", stack.doomed_agent))
    found = wait_until(
        agent_down,
        lambda found: expected <= found,
        timeout=ALERT_TIMEOUT,
        what=f"CallboardAgentDown pending for {sorted(expected)}",
    )
    assert expected <= found
