"""Observability: Prometheus metrics, ``/metrics`` and ``/healthz``, and logging.

What an operator watches: the agents', dispatchers', connections' and fleet's
metrics, the HTTP server that exposes them with a health check, and the log
formats (text or JSON lines) every ``callboard`` command writes.
"""

from __future__ import annotations

from ._connection_metrics import DEFAULT_CONNECTION_LABEL, ConnectionMetrics, ConnectionState
from ._exposition import DEFAULT_METRICS_HOST, HealthCheck, MetricsServer, parse_metrics_address
from ._fleet_metrics import FleetMetrics
from ._logging import (
    LOG_FORMAT_ENV,
    LOG_FORMATS,
    TASK_FIELDS,
    Announcer,
    JsonFormatter,
    TextFormatter,
    configure_logging,
    resolve_log_format,
    resolve_repeat_window,
)
from ._metrics import (
    DISPATCH_OUTCOMES,
    DURATION_BUCKETS,
    MODEL_CORRECTIONS,
    AgentMetrics,
    AgentSeries,
    CapabilitySeries,
    DispatchMetrics,
    dispatch_outcome,
    label_sets,
)
from ._refusal_metrics import REFUSAL_REASONS, RefusalMetrics, RefusalReason

__all__ = [
    "DEFAULT_CONNECTION_LABEL",
    "DEFAULT_METRICS_HOST",
    "DISPATCH_OUTCOMES",
    "DURATION_BUCKETS",
    "LOG_FORMATS",
    "LOG_FORMAT_ENV",
    "MODEL_CORRECTIONS",
    "REFUSAL_REASONS",
    "TASK_FIELDS",
    "AgentMetrics",
    "AgentSeries",
    "Announcer",
    "CapabilitySeries",
    "ConnectionMetrics",
    "ConnectionState",
    "DispatchMetrics",
    "FleetMetrics",
    "HealthCheck",
    "JsonFormatter",
    "MetricsServer",
    "RefusalMetrics",
    "RefusalReason",
    "TextFormatter",
    "configure_logging",
    "dispatch_outcome",
    "label_sets",
    "parse_metrics_address",
    "resolve_log_format",
    "resolve_repeat_window",
]
