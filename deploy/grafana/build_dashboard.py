"""Build the Grafana dashboard of callboard: ``dashboards/callboard.json``.

The JSON is generated so that a review reads these few lines per panel instead of
Grafana's verbose model; the test suite checks that the committed file is this
script's output, and evaluates every query against a real Prometheus.

    python deploy/grafana/build_dashboard.py           # rewrite dashboards/callboard.json
    python deploy/grafana/build_dashboard.py --check   # exit 1 if it is out of date

Queries use the metrics contract (issue 5): ``callboard_agent_*`` from the daemons,
``callboard_dispatch_*`` / ``callboard_pipeline_*`` / ``callboard_registry_*`` from
orchestrators, ``callboard_fleet_*`` from ``callboard monitor``, ``callboard_nats_*``
and ``callboard_refused_messages_total`` from every process. The datasource is the
``DS_PROMETHEUS`` variable, so the file works both provisioned (see ``provisioning/``)
and imported by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parent / "dashboards" / "callboard.json"

SCHEMA_VERSION = 39
"""Grafana 11's dashboard schema; newer Grafana versions migrate it on load."""
UID = "callboard"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
WIDTH = 24
"""Grafana's grid is 24 columns wide."""

RATE = "$__rate_interval"
CAP = 'capability=~"$capability"'
AGENT = 'agent=~"$agent"'
CONN = "job, instance, connection"


@dataclass
class Query:
    """One target of a panel: a PromQL expression and its series' legend."""

    expr: str
    legend: str = ""


@dataclass
class Panel:
    """A panel before layout: what it shows and how wide it is."""

    title: str
    queries: list[Query]
    description: str
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 8
    height: int = 8
    min: float | None = 0
    max: float | None = None
    thresholds: list[tuple[float, str]] = field(default_factory=list)


@dataclass
class Row:
    """A titled row of panels."""

    title: str
    panels: list[Panel]


def quantiles(metric: str, matcher: str, by: str, levels: tuple[float, ...]) -> list[Query]:
    """``histogram_quantile`` of a histogram's buckets, one query per quantile."""
    return [
        Query(
            f"histogram_quantile({q}, "
            f"sum by ({by}, le) (rate({metric}_bucket{{{matcher}}}[{RATE}])))",
            f"{{{{{by}}}}} p{round(q * 100)}",
        )
        for q in levels
    ]


def rows() -> list[Row]:
    """Every row and panel of the dashboard, top to bottom."""
    return [
        Row(
            "Fleet overview",
            [
                Panel(
                    "Daemons up",
                    [
                        Query('sum(up{job="callboard-daemon"})', "up"),
                        Query('count(up{job="callboard-daemon"})', "scraped"),
                    ],
                    "Daemon targets that answer Prometheus' scrapes, out of those configured.",
                    kind="stat",
                    width=6,
                    height=4,
                ),
                Panel(
                    "Agents serving",
                    [Query("sum(callboard_agent_up)", "serving")],
                    "Agents of the scraped daemons that serve tasks now.",
                    kind="stat",
                    width=6,
                    height=4,
                ),
                Panel(
                    "Agents live on the status stream",
                    [Query("sum(callboard_fleet_agent_up)", "live")],
                    "Agents seen online or heartbeating by callboard monitor, wherever they run.",
                    kind="stat",
                    width=6,
                    height=4,
                ),
                Panel(
                    "NATS connections up",
                    [
                        Query("sum(callboard_nats_connected)", "connected"),
                        Query("count(callboard_nats_connected)", "connections"),
                    ],
                    "Connected NATS clients of the scraped processes, out of all of them.",
                    kind="stat",
                    width=6,
                    height=4,
                ),
                Panel(
                    "Live agents per capability",
                    [
                        Query(
                            "max by (capability) ("
                            "callboard_registry_live_agents or callboard_fleet_live_agents)",
                            "{{capability}}",
                        )
                    ],
                    "The highest count any observer (orchestrator registry, monitor) sees. "
                    "Zero means every task of that capability fails with no agent.",
                    thresholds=[(0, "red"), (1, "green")],
                ),
                Panel(
                    "Tasks per second",
                    [
                        Query(f"sum(rate(callboard_agent_tasks_{outcome}_total[{RATE}]))", outcome)
                        for outcome in ("received", "completed", "failed", "rejected")
                    ],
                    "Every task reaching an agent ends completed, failed or rejected.",
                    unit="reqps",
                ),
                Panel(
                    "Error ratio",
                    [
                        Query(
                            f"sum(rate(callboard_agent_tasks_{outcome}_total[{RATE}]))"
                            f" / sum(rate(callboard_agent_tasks_received_total[{RATE}]))",
                            f"{outcome} / received",
                        )
                        for outcome in ("failed", "rejected")
                    ],
                    "Share of the tasks answered with an error, and refused (overloaded, "
                    "draining). The CallboardHighErrorRatio alert fires above 5%.",
                    unit="percentunit",
                    thresholds=[(0, "green"), (0.05, "red")],
                ),
            ],
        ),
        Row(
            "Capabilities",
            [
                Panel(
                    "Throughput by capability",
                    [
                        Query(
                            f"sum by (capability) "
                            f"(rate(callboard_agent_tasks_{outcome}_total{{{CAP}}}[{RATE}]))",
                            f"{{{{capability}}}} {outcome}",
                        )
                        for outcome in ("completed", "failed", "rejected")
                    ],
                    "Tasks per second of each capability, by how they ended.",
                    unit="reqps",
                ),
                Panel(
                    "Errors by code",
                    [
                        Query(
                            "sum by (capability, code) "
                            f"(rate(callboard_agent_tasks_failed_total{{{CAP}}}[{RATE}]))",
                            "{{capability}} {{code}}",
                        )
                    ],
                    "Error replies by wire code: 400 bad input, 408 timeout, 409 delegation "
                    "cycle or depth, 413 too large, 500 agent failure, 503 overloaded/draining.",
                    unit="reqps",
                ),
                Panel(
                    "Task latency p50 / p90 / p99",
                    quantiles(
                        "callboard_agent_task_duration_seconds", CAP, "capability", (0.5, 0.9, 0.99)
                    ),
                    "Handler time of completed and failed tasks, per capability.",
                    unit="s",
                ),
            ],
        ),
        Row(
            "Agents",
            [
                Panel(
                    "Agents up",
                    [Query(f"max by (agent, kind) (callboard_agent_up{{{AGENT}}})", "{{agent}}")],
                    "1 while the agent serves, 0 once it drains or stops.",
                    width=6,
                    max=1,
                ),
                Panel(
                    "Tasks in flight",
                    [
                        Query(
                            f"sum by (agent) (callboard_agent_tasks_in_flight{{{AGENT}}})",
                            "{{agent}}",
                        )
                    ],
                    "Tasks each agent runs now.",
                    width=6,
                ),
                Panel(
                    "Saturation (in flight / max concurrency)",
                    [
                        Query(
                            f"max by (agent) (callboard_agent_tasks_in_flight{{{AGENT}}}"
                            f" / callboard_agent_max_concurrency{{{AGENT}}})",
                            "{{agent}}",
                        )
                    ],
                    "At 100% the agent refuses new tasks with 503 overloaded. "
                    "CallboardSustainedOverload fires above 90% for 10 minutes.",
                    unit="percentunit",
                    width=6,
                    max=1,
                    thresholds=[(0, "green"), (0.9, "red")],
                ),
                Panel(
                    "Rejections",
                    [
                        Query(
                            "sum by (agent, reason) "
                            f"(rate(callboard_agent_tasks_rejected_total{{{AGENT}}}[{RATE}]))",
                            "{{agent}} {{reason}}",
                        )
                    ],
                    "Tasks refused before running: overloaded (at max_concurrency) or draining.",
                    unit="reqps",
                    width=6,
                ),
                Panel(
                    "Delegated sub-tasks",
                    [
                        Query(
                            "sum by (agent, capability, outcome) "
                            f"(rate(callboard_agent_delegations_total{{{AGENT}}}[{RATE}]))",
                            "{{agent}} → {{capability}} {{outcome}}",
                        )
                    ],
                    "Sub-tasks agents sent to other capabilities, by outcome.",
                    unit="reqps",
                    width=12,
                ),
                Panel(
                    "Status events",
                    [
                        Query(
                            "sum by (state) "
                            f"(rate(callboard_agent_status_events_total{{{AGENT}}}[{RATE}]))",
                            "{{state}}",
                        )
                    ],
                    "Status events the agents publish, by state.",
                    unit="ops",
                    width=12,
                ),
                Panel(
                    "Model corrections",
                    [
                        Query(
                            "sum by (agent, kind) (increase("
                            f"callboard_agent_model_corrections_total{{{AGENT}}}[{RATE}]))",
                            "{{agent}} {{kind}}",
                        )
                    ],
                    "Model replies LLM agents corrected: tool calls written as text (run "
                    "as calls), calls repeated after their results, answers off the output "
                    "schema (asked again). A rise means the model struggles with its tools "
                    "or schema: a larger model, or clearer tool descriptions.",
                    unit="short",
                    width=12,
                ),
            ],
        ),
        Row(
            "Orchestrator",
            [
                Panel(
                    "Dispatches by outcome",
                    [
                        Query(
                            "sum by (capability, outcome) "
                            f"(rate(callboard_dispatch_total{{{CAP}}}[{RATE}]))",
                            "{{capability}} {{outcome}}",
                        )
                    ],
                    "Tasks the orchestrators sent: ok, no_agent, timeout, agent_error, cancelled.",
                    unit="reqps",
                ),
                Panel(
                    "Dispatch latency p50 / p99",
                    quantiles(
                        "callboard_dispatch_duration_seconds", CAP, "capability", (0.5, 0.99)
                    ),
                    "Request to reply, as the orchestrator sees it (every outcome).",
                    unit="s",
                ),
                Panel(
                    "Dispatch retries",
                    [
                        Query(
                            "sum by (capability) "
                            f"(rate(callboard_dispatch_retries_total{{{CAP}}}[{RATE}]))",
                            "{{capability}}",
                        )
                    ],
                    "Retry attempts made by the retry policy.",
                    unit="reqps",
                ),
                Panel(
                    "Pipeline runs",
                    [
                        Query(
                            f"sum by (outcome) (rate(callboard_pipeline_runs_total[{RATE}]))",
                            "{{outcome}}",
                        )
                    ],
                    "Pipelines run per second: ok, failed, partial.",
                    unit="ops",
                ),
                Panel(
                    "Pipeline steps",
                    [
                        Query(
                            f"sum by (outcome) (rate(callboard_pipeline_steps_total[{RATE}]))",
                            "{{outcome}}",
                        )
                    ],
                    "Pipeline steps per second: ok, failed, skipped.",
                    unit="ops",
                ),
                Panel(
                    "Registry: live agents per capability",
                    [
                        Query(
                            f"max by (capability) (callboard_registry_live_agents{{{CAP}}})",
                            "{{capability}}",
                        )
                    ],
                    "Live agents per capability in the orchestrators' registries.",
                ),
            ],
        ),
        Row(
            "Fleet (status stream, callboard monitor)",
            [
                Panel(
                    "Agents live (status stream)",
                    [Query(f"max by (agent) (callboard_fleet_agent_up{{{AGENT}}})", "{{agent}}")],
                    "1 after online or a heartbeat, 0 after offline or missed heartbeats.",
                    width=6,
                    max=1,
                ),
                Panel(
                    "Live agents per capability (status stream)",
                    [
                        Query(
                            f"max by (capability) (callboard_fleet_live_agents{{{CAP}}})",
                            "{{capability}}",
                        )
                    ],
                    "Agents live on the status stream, per capability.",
                    width=6,
                ),
                Panel(
                    "Saturation at the last heartbeat",
                    [
                        Query(
                            f"max by (agent) (callboard_fleet_agent_in_flight{{{AGENT}}}"
                            f" / callboard_fleet_agent_max_concurrency{{{AGENT}}})",
                            "{{agent}}",
                        )
                    ],
                    "In flight / max concurrency as each agent's last heartbeat reported it.",
                    unit="percentunit",
                    width=6,
                    max=1,
                    thresholds=[(0, "green"), (0.9, "red")],
                ),
                Panel(
                    "Status events seen",
                    [
                        Query(
                            f"sum by (state) (rate(callboard_fleet_status_events_total[{RATE}]))",
                            "{{state}}",
                        ),
                        Query(
                            f"sum by (what) (rate(callboard_fleet_left_out_total[{RATE}]))",
                            "left out: new {{what}}",
                        ),
                    ],
                    "Events on the status stream, by state; and those the monitor left "
                    "out at its cap of agents or capabilities (--max-agents, --max-capabilities).",
                    unit="ops",
                    width=6,
                ),
                Panel(
                    "Tasks by outcome",
                    [
                        Query(
                            "sum by (capability, outcome) "
                            f"(rate(callboard_fleet_tasks_total{{{CAP}}}[{RATE}]))",
                            "{{capability}} {{outcome}}",
                        ),
                        Query(
                            "sum by (capability, reason) "
                            f"(rate(callboard_fleet_tasks_rejected_total{{{CAP}}}[{RATE}]))",
                            "{{capability}} refused ({{reason}})",
                        ),
                    ],
                    "Tasks every agent on the stream ended: completed, failed, cancelled; "
                    "and the failed ones refused before running (overloaded, draining).",
                    unit="reqps",
                ),
                Panel(
                    "Failures by code",
                    [
                        Query(
                            "sum by (capability, code) "
                            f"(rate(callboard_fleet_tasks_failed_total{{{CAP}}}[{RATE}]))",
                            "{{capability}} {{code}}",
                        )
                    ],
                    "Failed tasks on the stream by error code.",
                    unit="reqps",
                ),
                Panel(
                    "Task latency p50 / p90 / p99 (status stream)",
                    quantiles(
                        "callboard_fleet_task_duration_seconds", CAP, "capability", (0.5, 0.9, 0.99)
                    ),
                    "From the elapsed_ms of completed and failed events; refusals left out.",
                    unit="s",
                ),
            ],
        ),
        Row(
            "NATS connections",
            [
                Panel(
                    "Connected",
                    [
                        Query(
                            f"min by ({CONN}) (callboard_nats_connected)",
                            "{{connection}} {{instance}}",
                        )
                    ],
                    "1 while the process is connected to NATS. "
                    "CallboardNatsDisconnected fires after a minute at 0.",
                    max=1,
                    thresholds=[(0, "red"), (1, "green")],
                ),
                Panel(
                    "Reconnects",
                    [
                        Query(
                            f"sum by ({CONN}) (increase(callboard_nats_reconnects_total[{RATE}]))",
                            "{{connection}} {{instance}}",
                        )
                    ],
                    "Reconnections to a NATS server (a server restart, a network cut).",
                ),
                Panel(
                    "Time disconnected",
                    [
                        Query(
                            f"sum by ({CONN}) "
                            f"(rate(callboard_nats_disconnected_seconds_total[{RATE}]))",
                            "{{connection}} {{instance}}",
                        )
                    ],
                    "Share of the time each connection spent disconnected.",
                    unit="percentunit",
                    max=1,
                ),
                Panel(
                    "Pending bytes",
                    [
                        Query(
                            f"sum by ({CONN}) (callboard_nats_pending_bytes)",
                            "{{connection}} {{instance}}",
                        )
                    ],
                    "Bytes buffered by the client, not yet flushed to the server: "
                    "growth means the server or the network cannot keep up.",
                    unit="bytes",
                    width=12,
                ),
                Panel(
                    "Slow consumer events",
                    [
                        Query(
                            f"sum by ({CONN}) "
                            f"(increase(callboard_nats_slow_consumer_events_total[{RATE}]))",
                            "{{connection}} {{instance}}",
                        )
                    ],
                    "Messages dropped by a subscription that could not keep up.",
                    width=12,
                ),
            ],
        ),
        Row(
            "Security",
            [
                Panel(
                    "Refused messages by reason",
                    [
                        Query(
                            "sum by (job, instance, reason) "
                            f"(increase(callboard_refused_messages_total[{RATE}]))",
                            "{{reason}} {{job}} {{instance}}",
                        )
                    ],
                    "Messages each process refused from the bus: reply_not_inbox (a "
                    "reflection attempt), cancel_token (a cancel without the caller's token), "
                    "status_body_mismatch (a forged status event), malformed_status_event, "
                    "malformed_frame. Anything above 0 is an attack or a broken client; "
                    "CallboardMessagesRefused fires after 5 minutes.",
                    width=24,
                ),
            ],
        ),
    ]


def variables() -> list[dict[str, Any]]:
    """The template variables: the datasource, and capability / agent filters."""

    def label_values(name: str, metric: str, text: str) -> dict[str, Any]:
        query = f"label_values({metric}, {name})"
        return {
            "name": name,
            "label": text,
            "type": "query",
            "datasource": DATASOURCE,
            "definition": query,
            "query": {"qryType": 1, "query": query, "refId": "PrometheusVariableQueryEditor"},
            "refresh": 2,
            "includeAll": True,
            "multi": True,
            "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "sort": 1,
            "hide": 0,
            "options": [],
            "regex": "",
        }

    return [
        {
            "name": "DS_PROMETHEUS",
            "label": "Prometheus",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
            "options": [],
            "refresh": 1,
            "regex": "",
        },
        label_values("capability", "callboard_agent_tasks_received_total", "Capability"),
        label_values("agent", "callboard_agent_up", "Agent"),
    ]


def _thresholds(steps: list[tuple[float, str]]) -> dict[str, Any]:
    steps = steps or [(0, "green")]
    return {
        "mode": "absolute",
        "steps": [
            {"color": color, "value": None if index == 0 else value}
            for index, (value, color) in enumerate(steps)
        ],
    }


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "unit": panel.unit,
        "color": {"mode": "thresholds" if panel.kind == "stat" else "palette-classic"},
        "thresholds": _thresholds(panel.thresholds),
    }
    if panel.min is not None:
        defaults["min"] = panel.min
    if panel.max is not None:
        defaults["max"] = panel.max
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "spanNulls": False,
            "thresholdsStyle": {"mode": "line" if panel.thresholds else "off"},
        }
        options: dict[str, Any] = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    else:
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "value_and_name",
        }
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
        "targets": [
            {
                "refId": chr(ord("A") + index),
                "datasource": DATASOURCE,
                "editorMode": "code",
                "expr": query.expr,
                "legendFormat": query.legend or "__auto",
                "range": True,
            }
            for index, query in enumerate(panel.queries)
        ],
    }


def _layout(all_rows: list[Row]) -> list[dict[str, Any]]:
    """Grafana's flat panel list: each row header, then its panels left to right."""
    panels: list[dict[str, Any]] = []
    panel_id = 0
    y = 0
    for row in all_rows:
        panel_id += 1
        panels.append(
            {
                "id": panel_id,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": WIDTH, "x": 0, "y": y},
                "panels": [],
            }
        )
        y += 1
        x = 0
        line_height = 0
        for panel in row.panels:
            if x + panel.width > WIDTH:
                x, y, line_height = 0, y + line_height, 0
            panel_id += 1
            panels.append(_panel_json(panel, panel_id, x, y))
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    return panels


def dashboard() -> dict[str, Any]:
    """The whole dashboard model."""
    return {
        "uid": UID,
        "title": "callboard",
        "description": "AI agents over NATS: agents, capabilities, orchestrators, connections.",
        "tags": ["callboard", "nats"],
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "timezone": "browser",
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "links": [],
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "templating": {"list": variables()},
        "panels": _layout(rows()),
    }


def render() -> str:
    """The dashboard as the committed file's text."""
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the committed file is out of date"
    )
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT} is out of date: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
