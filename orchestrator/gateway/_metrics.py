"""The gateway's Prometheus metrics: calls by protocol, capability and outcome,
refused requests, dropped status events, and the tools offered.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["GatewayMetrics"]


class GatewayMetrics:
    """The gateway's series, in a registry of the caller's.

    Attributes:
        calls: ``callboard_gateway_calls_total{protocol, capability, outcome}``
            (outcome as ``bus.dispatch_outcome`` names it, or ``not_exposed``).
        refused: ``callboard_gateway_refused_total{reason}``: HTTP requests
            refused before reaching MCP or A2A (``unauthorized``).
        dropped_events: ``callboard_gateway_dropped_events_total{reason}``:
            status events not relayed (``spoofed``: not from an agent that serves the
            capability; ``backlog``: the caller's relay was full).
        tools: ``callboard_gateway_tools``: the tools offered now.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.calls = Counter(
            "callboard_gateway_calls",
            "Calls through the gateway, by protocol, capability and outcome.",
            ["protocol", "capability", "outcome"],
            registry=registry,
        )
        self.refused = Counter(
            "callboard_gateway_refused",
            "HTTP requests refused before reaching MCP or A2A.",
            ["reason"],
            registry=registry,
        )
        self.dropped_events = Counter(
            "callboard_gateway_dropped_events",
            "Status events the gateway did not relay to a caller.",
            ["reason"],
            registry=registry,
        )
        self.tools = Gauge(
            "callboard_gateway_tools", "Capabilities the gateway offers now.", registry=registry
        )
