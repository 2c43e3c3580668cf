"""Support for the tests of the observability files (``deploy/prometheus``,
``deploy/grafana``): the metrics callboard exports, the queries of the dashboard and of the
alert rules, and a real Prometheus server driven through its HTTP API.

Nothing here sleeps to wait for something: ``wait_until`` polls a condition at a
short interval until a deadline, and says what it last saw when the deadline passes.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from prometheus_client import CollectorRegistry

from actors import Agent, Capability
from bus import (
    AgentMessage,
    AgentMetrics,
    ConnectionMetrics,
    DispatchMetrics,
    ErrorInfo,
    Failed,
    FleetMetrics,
    Online,
)

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yml"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "callboard.json"
BUILD_DASHBOARD = GRAFANA_DIR / "build_dashboard.py"
GRAFANA_DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"
GRAFANA_DASHBOARDS = GRAFANA_DIR / "provisioning" / "dashboards" / "callboard.yml"


# --- the metrics contract ------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """One metric family callboard exports: its type and label names."""

    type: str
    labels: frozenset[str]


class _PendingBytes:
    pending_data_size = 0


def populated_registry() -> CollectorRegistry:
    """A fresh registry with every metric family of callboard, each with a series.

    Built from the classes the processes use (``AgentMetrics``, ``DispatchMetrics``,
    ``FleetMetrics``, ``ConnectionMetrics``), so the dashboard and the alert rules
    are checked against what the code exports, not against a copy of the spec.
    """
    registry = CollectorRegistry()
    agent = AgentMetrics(registry).bind("math-1", "math", ["math"], 4)
    agent.capabilities["math"].finished(0.01, 400)
    agent.delegated("echo", "ok")
    agent.model_corrected("text_tool_calls")
    dispatch = DispatchMetrics(registry)
    dispatch.dispatched("math", 0.01, None)
    dispatch.retries.labels("math").inc()
    dispatch.pipeline_runs.labels("ok").inc()
    dispatch.pipeline_steps.labels("ok").inc()
    dispatch.set_live_agents({"math": 1})
    ConnectionMetrics(registry).track("daemon").on_connected(_PendingBytes())
    fleet = FleetMetrics(registry)
    fleet.observe(Online(agent="math-1", ts=1.0, capabilities=("math",), max_concurrency=4))
    error = ErrorInfo(code=400, type="bad_input", message="bad")
    fleet.observe(Failed(agent="math-1", ts=1.0, task_id="t", capability="math", error=error))
    refused = ErrorInfo(code=503, type="overloaded", message="busy")
    fleet.observe(Failed(agent="math-1", ts=1.0, task_id="u", capability="math", error=refused))
    fleet.left_out.labels("agent").inc()
    return registry


@functools.cache
def exported_metrics() -> dict[str, Metric]:
    """Series name (a counter's with ``_total``) -> type and labels, of every family."""
    found: dict[str, Metric] = {}
    for family in populated_registry().collect():
        name = f"{family.name}_total" if family.type == "counter" else family.name
        labels = {k for sample in family.samples for k in sample.labels if k != "le"}
        found[name] = Metric(family.type, frozenset(labels))
    return found


TARGET_LABELS = frozenset({"job", "instance"})
"""Labels Prometheus adds to every scraped series."""

_HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
_METRIC_NAME = re.compile(r"\b(?:callboard_[a-z0-9_]+|up)\b(?!\s*\()")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")


def metric_family(series_name: str) -> str:
    """The family of a series name: a histogram's ``_bucket`` series is the histogram."""
    for suffix in _HISTOGRAM_SERIES:
        base = series_name.removesuffix(suffix)
        metric = exported_metrics().get(base)
        if base != series_name and metric is not None and metric.type == "histogram":
            return base
    return series_name


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects (``callboard_*`` and ``up``)."""
    return {match.group(0) for match in _METRIC_NAME.finditer(expr)}


_SELECTOR = re.compile(r"\b(callboard_[a-z0-9_]+|up)\{([^}]*)\}")
_MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)\s*\"")


def selector_labels(expr: str) -> set[tuple[str, str]]:
    """The (series name, label name) pairs of every label matcher in an expression."""
    return {
        (match.group(1), label)
        for match in _SELECTOR.finditer(expr)
        for label in _MATCHER.findall(match.group(2))
    }


def grouping_labels(expr: str) -> set[str]:
    """The label names of every ``by``/``without``/``on``/``ignoring`` clause."""
    return {
        label.strip()
        for match in _GROUPING.finditer(expr)
        for label in match.group(1).split(",")
        if label.strip()
    }


GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "${__rate_interval}": "1m",
    "$__interval": "1m",
    "${__interval}": "1m",
    "$__range": "5m",
    "${capability}": ".*",
    "$capability": ".*",
    "${agent}": ".*",
    "$agent": ".*",
}
"""What the tests put in place of Grafana's variables: every value ("All")."""


def concrete(expr: str) -> str:
    """A dashboard expression with Grafana's variables replaced, ready for Prometheus."""
    for variable in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(variable, GRAFANA_VARIABLES[variable])
    assert "$" not in expr, f"a Grafana variable the tests do not know is left in {expr!r}"
    return expr


# --- the dashboard ------------------------------------------------------------------------


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    """The dashboard JSON (fails the test with the decoder's message if it is invalid)."""
    try:
        loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        pytest.fail(f"{path} is not valid JSON: {exc}")
    return loaded


def dashboard_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that shows data (rows left out; collapsed rows' panels included)."""
    found: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        if panel.get("type") == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def panel_exprs(panel: dict[str, Any]) -> list[str]:
    """The PromQL of a panel's targets, as written (with Grafana variables)."""
    return [target["expr"] for target in panel.get("targets", []) if target.get("expr")]


_LABEL_VALUES = re.compile(r"^label_values\(\s*([a-zA-Z_:][\w:]*)\s*,\s*(\w+)\s*\)$")


def variable_label_values(dashboard: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """The query variables: name -> (metric, label) of their ``label_values(metric, label)``."""
    found: dict[str, tuple[str, str]] = {}
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        match = _LABEL_VALUES.match(text)
        assert match, f"variable {variable['name']}: unexpected query {text!r}"
        found[variable["name"]] = (match.group(1), match.group(2))
    return found


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the dashboard, as written."""
    return [expr for panel in dashboard_panels(dashboard) for expr in panel_exprs(panel)]


def read_yaml(path: Path) -> Any:
    """The document of a YAML file (PyYAML's safe loader)."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class AlertRule:
    """One alerting rule of a rule file."""

    group: str
    alert: str
    expr: str
    for_: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


def alert_rules(path: Path = ALERTS) -> list[AlertRule]:
    """Every alerting rule of a Prometheus rule file, in order."""
    document = read_yaml(path)
    return [
        AlertRule(
            group=group["name"],
            alert=rule["alert"],
            expr=rule["expr"],
            for_=rule.get("for", "0s"),
            labels=rule.get("labels") or {},
            annotations=rule.get("annotations") or {},
        )
        for group in document["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


# --- tools: promtool and prometheus --------------------------------------------------------


def require_tool(name: str) -> str:
    """The path of a Prometheus tool; skipped where missing, except on CI where it fails."""
    path = shutil.which(name)
    if path is not None:
        return path
    why = (
        f"`{name}` is not installed: install Debian's `prometheus` package "
        "(apt-get install prometheus), as .ci/run does"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why} (CI=true: these tests must run on CI)")
    pytest.skip(why)


TOOL_TIMEOUT = 60.0
"""Seconds a promtool command may run."""


def run_tool(args: list[str], *, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run a tool to completion; fail the test, with its output, if it outlives the timeout."""
    try:
        return subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            cwd=cwd,
            timeout=TOOL_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:  # subprocess.run has killed it
        pytest.fail(f"`{' '.join(args)}` did not finish within {TOOL_TIMEOUT:g}s: {exc.output}")


def free_port() -> int:
    """A TCP port free on loopback now (for a server started right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


T = TypeVar("T")

POLL_INTERVAL = 0.1
"""Seconds between two checks of a condition ``wait_until`` polls."""


def wait_until(
    probe: Callable[[], T],
    done: Callable[[T], bool],
    *,
    timeout: float,
    what: str,
) -> T:
    """Call ``probe`` until ``done(result)``; fail with the last result after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if done(result):
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: still not so after {timeout:g}s; last saw {result!r}")
        time.sleep(POLL_INTERVAL)


@dataclass
class ScrapeJob:
    """A scrape job of a test config: a name and its ``host:port`` targets."""

    name: str
    targets: list[str]


def prometheus_config(jobs: list[ScrapeJob], *, rule_files: list[Path], interval: str) -> str:
    """A Prometheus config (YAML) scraping ``jobs`` every ``interval``, with those rules."""
    lines = [
        "global:",
        f"  scrape_interval: {interval}",
        f"  scrape_timeout: {interval}",
        f"  evaluation_interval: {interval}",
        "rule_files:",
        *(f"  - {json.dumps(str(path))}" for path in rule_files),
        "scrape_configs:",
    ]
    for job in jobs:
        lines += [
            f"  - job_name: {json.dumps(job.name)}",
            "    static_configs:",
            "      - targets: [" + ", ".join(json.dumps(t) for t in job.targets) + "]",
        ]
    return "\n".join(lines) + "\n"


class PrometheusError(AssertionError):
    """The Prometheus server under test failed or answered an error."""


class Prometheus:
    """A real ``prometheus`` process on a free loopback port, stopped by PID.

    Its log goes to ``<directory>/prometheus.log`` and is shown by every failure.
    """

    READY_TIMEOUT = 30.0
    STOP_TIMEOUT = 10.0
    HTTP_TIMEOUT = 10.0

    def __init__(self, binary: str, config: Path, directory: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = directory / "prometheus.log"
        data = directory / "data"
        data.mkdir()
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={data}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=info",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=directory,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        """What Prometheus has logged so far."""
        return self.log_path.read_text(errors="replace")

    def fail(self, message: str) -> PrometheusError:
        return PrometheusError(f"{message}\n--- prometheus log ---\n{self.log()[-4000:]}")

    def _get(self, path: str, params: dict[str, str] | None = None) -> tuple[int, bytes]:
        url = f"{self.url}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=self.HTTP_TIMEOUT) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:  # 4xx/5xx: the body says why
            return exc.code, exc.read()

    def wait_ready(self) -> None:
        """Return once Prometheus answers ``/-/ready``; fail if it exits or times out."""

        def probe() -> int | str:
            if self.popen.poll() is not None:
                raise self.fail(f"prometheus exited with code {self.popen.returncode}")
            try:
                return self._get("/-/ready")[0]
            except OSError as exc:  # not listening yet
                return str(exc)

        try:
            wait_until(probe, lambda s: s == 200, timeout=self.READY_TIMEOUT, what="/-/ready")
        except PrometheusError:
            raise
        except AssertionError as exc:
            raise self.fail(str(exc)) from None

    def api(self, path: str, **params: str) -> Any:
        """The ``data`` of a successful ``/api/v1/...`` answer; fails on an error answer."""
        status, body = self._get(f"/api/v1/{path}", params)
        answer = json.loads(body)
        if status != 200 or answer.get("status") != "success":
            raise PrometheusError(
                f"/api/v1/{path} {params}: HTTP {status}: "
                f"{answer.get('errorType')}: {answer.get('error')}"
            )
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector of ``expr`` now (a scalar becomes a one-sample list)."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def targets(self) -> list[dict[str, Any]]:
        """The active scrape targets with their health."""
        active: list[dict[str, Any]] = self.api("targets", state="active")["activeTargets"]
        return active

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule (of every group) with its health and last error."""
        groups = self.api("rules")["groups"]
        return [rule for group in groups for rule in group["rules"]]

    def series_names(self) -> list[str]:
        """Every metric name Prometheus holds (for failure messages)."""
        names: list[str] = self.api("label/__name__/values")
        return names

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time. Idempotent."""
        try:
            if self.popen.poll() is None:
                self.popen.terminate()
                try:
                    self.popen.wait(self.STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self.popen.kill()
                    self.popen.wait(self.STOP_TIMEOUT)
        finally:
            self._log.close()


# --- what a running Prometheus says about the dashboard and the rules ----------------------


def query_problems(prometheus: Prometheus, exprs: list[str]) -> dict[str, str]:
    """expr -> Prometheus' error, for each expression it does not evaluate."""
    problems: dict[str, str] = {}
    for expr in exprs:
        try:
            prometheus.query(concrete(expr))
        except PrometheusError as exc:
            problems[expr] = str(exc)
    return problems


def empty_panels(prometheus: Prometheus, dashboard: dict[str, Any]) -> list[str]:
    """The titles of the panels none of whose queries returns a series now."""
    empty = []
    for panel in dashboard_panels(dashboard):
        if not any(prometheus.query(concrete(expr)) for expr in panel_exprs(panel)):
            empty.append(panel["title"])
    return empty


def empty_variables(prometheus: Prometheus, dashboard: dict[str, Any]) -> dict[str, str]:
    """name -> query, for each ``label_values`` variable that would offer no value."""
    empty: dict[str, str] = {}
    for name, (metric, label) in variable_label_values(dashboard).items():
        if not prometheus.api(f"label/{label}/values", **{"match[]": metric}):
            empty[name] = f"label_values({metric}, {label})"
    return empty


# --- an agent that delegates, for the daemons of the system test ------------------------------


class Relay(Agent):
    """Sends its payload to the ``target`` capability and answers with that result.

    A daemon runs it as ``type = "prometheus_support:Relay"`` (with ``tests/`` on
    ``PYTHONPATH``) so that its delegation metrics have something to count.
    """

    kind = "relay"
    capabilities = (Capability(name="relay", description="Delegate the payload."),)

    def __init__(
        self,
        agent_id: str | None = None,
        *,
        target: str = "math",
        capability: str = "relay",
        **settings: Any,
    ) -> None:
        super().__init__(agent_id, capabilities=[capability], **settings)
        self.target = target

    async def handle(self, task: AgentMessage) -> Any:
        """Delegate the payload; the sub-task's failure fails this task with its code."""
        return await self.context.delegate(self.target, task.payload)
