"""The gateway's Prometheus metrics: calls by protocol, capability and outcome,
refused requests, dropped status events, the tools offered, and what the
gateway refuses from the bus (``callboard_refused_messages_total``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from bus import RefusalMetrics

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
        refusals: ``callboard_refused_messages_total{reason}``: messages from the
            bus its registry, its task-event relay and its connection dropped
            (forged or malformed status events, malformed frames).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.refusals = RefusalMetrics(registry)
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
