"""The observability files of ``deploy/``: the Prometheus config, the alert rules and
their promtool unit tests, the Grafana dashboard and its provisioning.

promtool checks what it can (config, rules, the rules' unit tests); the rest is
checked here against the metrics callboard exports (``exported_metrics``: a fresh
registry filled by the metrics classes). That
every query evaluates and returns data against a real Prometheus is the system
test ``tests/system/test_prometheus.py``.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from prometheus_support import (
    ALERTS,
    ALERTS_TEST,
    BUILD_DASHBOARD,
    DASHBOARD,
    GRAFANA_DASHBOARDS,
    GRAFANA_DATASOURCES,
    GRAFANA_DIR,
    PROMETHEUS_CONFIG,
    PROMETHEUS_DIR,
    TARGET_LABELS,
    alert_rules,
    concrete,
    dashboard_exprs,
    dashboard_panels,
    exported_metrics,
    grouping_labels,
    load_dashboard,
    metric_family,
    metric_names,
    read_yaml,
    require_tool,
    run_tool,
    selector_labels,
    variable_label_values,
)

SEVERITIES = {"critical", "warning"}
ALERT_NAMES = {
    "CallboardAgentDown",
    "CallboardCapabilityUnserved",
    "CallboardHighErrorRatio",
    "CallboardHighLatencyP99",
    "CallboardSustainedOverload",
    "CallboardNatsDisconnected",
    "CallboardMessagesRefused",
}
"""The alerts operators rely on; renaming one breaks their routing and silences."""


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_tool("promtool")


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return load_dashboard()


def promtool_ok(promtool: str, *args: str) -> str:
    """Run ``promtool ARGS``; fail with its whole output unless it exits 0."""
    result = run_tool([promtool, *args])
    output = f"{result.stdout}{result.stderr}"
    assert result.returncode == 0, f"`promtool {' '.join(args)}` failed:\n{output}"
    return output


# --- Prometheus ---------------------------------------------------------------------------


def test_prometheus_config_is_valid(promtool: str) -> None:
    promtool_ok(promtool, "check", "config", str(PROMETHEUS_CONFIG))


def test_alert_rules_are_valid_and_lint_clean(promtool: str) -> None:
    output = promtool_ok(promtool, "check", "rules", str(ALERTS))
    found = re.search(r"SUCCESS: (\d+) rules found", output)
    assert found, output
    # promtool and this suite's reader see the same rules
    assert int(found.group(1)) == len(alert_rules()), output


def test_alert_rule_unit_tests_pass(promtool: str) -> None:
    promtool_ok(promtool, "test", "rules", str(ALERTS_TEST))


def test_the_config_scrapes_callboard_and_nats_and_loads_the_rules() -> None:
    config = read_yaml(PROMETHEUS_CONFIG)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    ports = {
        name: {t.rsplit(":", 1)[1] for c in job["static_configs"] for t in c["targets"]}
        for name, job in jobs.items()
    }
    assert ports["callboard-daemon"] == {"9464"}
    assert ports["callboard-monitor"] == {"9465"}
    assert ports["callboard-orchestrator"] == {"9466"}  # the README's DispatchMetrics example
    assert ports["nats"] == {"7777"}  # prometheus-nats-exporter's default port
    assert [PROMETHEUS_DIR / f for f in config["rule_files"]] == [ALERTS]


def test_every_alert_has_a_severity_a_duration_and_says_what_to_do() -> None:
    rules = alert_rules()
    assert {rule.alert for rule in rules} == ALERT_NAMES
    for rule in rules:
        where = f"{rule.alert} ({rule.expr})"
        assert rule.labels.get("severity") in SEVERITIES, where
        assert re.fullmatch(r"[1-9][0-9]*[smh]", rule.for_), f"{where}: for: {rule.for_}"
        assert rule.annotations.get("summary"), f"{where}: no summary"
        assert len(rule.annotations.get("description", "")) > 80, f"{where}: no description"


def test_rules_of_one_alert_differ_by_their_cause_label() -> None:
    rules = alert_rules()
    for name in ALERT_NAMES:
        same = [rule for rule in rules if rule.alert == name]
        if len(same) > 1:
            causes = [rule.labels.get("cause") for rule in same]
            assert None not in causes and len(set(causes)) == len(causes), (name, causes)


def test_every_alert_rule_has_a_firing_and_a_quiet_unit_test() -> None:
    cases = [
        case
        for test in read_yaml(ALERTS_TEST)["tests"]
        for case in test.get("alert_rule_test") or []
    ]
    for rule in alert_rules():
        mine = [case for case in cases if case["alertname"] == rule.alert]
        assert any(not case.get("exp_alerts") for case in mine), f"{rule.alert}: no quiet case"
        fired = [
            alert["exp_labels"]
            for case in mine
            for alert in case.get("exp_alerts") or []
            if alert["exp_labels"].get("cause") == rule.labels.get("cause")
        ]
        assert fired, f"{rule.alert} (cause {rule.labels.get('cause')}): no firing case"


# --- the queries against the metrics callboard exports ------------------------------------


def queries() -> list[tuple[str, str]]:
    """(where, expr) of every alert rule and dashboard target."""
    found = [(f"alert {rule.alert}", rule.expr) for rule in alert_rules()]
    for panel in dashboard_panels(load_dashboard()):
        found += [(f"panel {panel['title']!r}", t["expr"]) for t in panel["targets"]]
    return found


@pytest.mark.parametrize(("where", "expr"), queries())
def test_a_query_uses_only_metrics_and_labels_callboard_exports(where: str, expr: str) -> None:
    exported = exported_metrics()
    names = metric_names(expr)
    assert names, f"{where}: selects no callboard metric: {expr}"
    labels = set(TARGET_LABELS)
    for name in names - {"up"}:
        family = metric_family(name)
        assert family in exported, f"{where}: callboard exports no {name}"
        if family != name:
            assert name.endswith("_bucket"), f"{where}: use the histogram's buckets: {expr}"
            labels.add("le")
        labels |= exported[family].labels
    for name, label in selector_labels(expr):
        own = exported[metric_family(name)].labels if name != "up" else frozenset()
        assert label in TARGET_LABELS | own | {"le"}, f"{where}: {name} has no label {label!r}"
    unknown = grouping_labels(expr) - labels
    assert not unknown, f"{where}: groups by labels no selected metric has: {unknown}"


def test_every_exported_metric_is_on_the_dashboard_or_in_an_alert() -> None:
    used = {metric_family(n) for _, expr in queries() for n in metric_names(expr)}
    assert set(exported_metrics()) - used == set()


def test_the_jobs_the_queries_name_are_scraped() -> None:
    jobs = {job["job_name"] for job in read_yaml(PROMETHEUS_CONFIG)["scrape_configs"]}
    named = {job for _, expr in queries() for job in re.findall(r'job="([^"]+)"', expr)}
    assert named <= jobs


# --- Grafana ------------------------------------------------------------------------------


def load_builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_dashboard", BUILD_DASHBOARD)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_the_committed_dashboard_is_the_generators_output() -> None:
    assert DASHBOARD.read_text(encoding="utf-8") == load_builder().render(), (
        f"{DASHBOARD.relative_to(GRAFANA_DIR.parent.parent)} is out of date: "
        "run `python deploy/grafana/build_dashboard.py`"
    )


def test_the_dashboard_model_is_complete(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "callboard"
    assert dashboard["schemaVersion"] >= 39
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert set(variable_label_values(dashboard)) == {"capability", "agent"}
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    rows = [panel["title"] for panel in dashboard["panels"] if panel["type"] == "row"]
    assert len(rows) >= 5, rows
    titles = [panel["title"] for panel in dashboard_panels(dashboard)]
    assert len(titles) == len(set(titles)), "panel titles repeat: the tests name panels by title"


def test_every_panel_has_the_datasource_and_a_query(dashboard: dict[str, Any]) -> None:
    datasource = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    for panel in dashboard_panels(dashboard):
        title = panel["title"]
        assert panel["datasource"] == datasource, title
        assert panel["targets"], f"{title}: no target"
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), f"{title}: refIds repeat"
        for target in panel["targets"]:
            assert target["datasource"] == datasource, title
            assert target["expr"].strip(), f"{title}: empty expr"
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["w"] > 0 and grid["h"] > 0, title


def test_every_dashboard_variable_the_queries_use_is_known(dashboard: dict[str, Any]) -> None:
    for expr in dashboard_exprs(dashboard):
        concrete(expr)  # fails on a variable the tests cannot substitute
    defined = {v["name"] for v in dashboard["templating"]["list"]}
    used = {
        name
        for expr in dashboard_exprs(dashboard)
        for name in re.findall(r"\$\{?([a-zA-Z]\w*)", expr)
    }
    assert used <= defined


def test_grafana_provisions_the_datasource_the_dashboard_uses() -> None:
    document = read_yaml(GRAFANA_DATASOURCES)
    assert document["apiVersion"] == 1
    [source] = document["datasources"]
    assert source["type"] == "prometheus"
    assert source["access"] == "proxy"
    assert source["url"].startswith("http://")
    assert source["isDefault"] is True  # what the DS_PROMETHEUS variable starts on
    assert source["uid"]


def test_grafana_provisions_the_dashboards_folder() -> None:
    document = read_yaml(GRAFANA_DASHBOARDS)
    assert document["apiVersion"] == 1
    [provider] = document["providers"]
    assert provider["type"] == "file"
    assert Path(provider["options"]["path"]).is_absolute()
