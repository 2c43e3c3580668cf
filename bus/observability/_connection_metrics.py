"""Prometheus metrics of NATS connections: connected, reconnects, time spent
disconnected, bytes not yet flushed, slow-consumer errors; and, given the
process's ``RefusalMetrics``, the malformed frames its connections dropped.

``connect(..., metrics=ConnectionMetrics(registry))`` feeds them from nats-py's
callbacks. They are one custom collector rather than Counters and Gauges so
that what changes continuously (the disconnected time of an outage still in
progress, the client's pending bytes) is read at scrape time, from the
scraping thread, and nothing is done per message.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ._refusal_metrics import RefusalMetrics

__all__ = ["DEFAULT_CONNECTION_LABEL", "ConnectionMetrics", "ConnectionState"]

DEFAULT_CONNECTION_LABEL = "default"
"""The ``connection`` label of a connection that has no name."""


class _Pending(Protocol):
    """The one thing read from the client at scrape time (nats-py's ``Client``)."""

    @property
    def pending_data_size(self) -> int: ...


class ConnectionState:
    """What one connection has been through, updated on the event loop.

    The scraping thread reads it without a lock, so every field is a plain
    value replaced whole: the downtime is one ``(total, since)`` tuple, so a
    scrape never sees the total already grown and the outage not yet ended.

    Attributes:
        name: the ``connection`` label.
        connected: True while the client is connected.
        reconnects: reconnections so far.
        slow_consumer_events: slow-consumer errors the client reported.
        refusals: logins the server refused in a row since the last connection
            (a revoked password, say): retrying will not fix it by itself.
        lost: the client closed the connection for good (a refusal on a live
            connection, reconnect attempts used up), not the program: it will
            not come back.
    """

    __slots__ = (
        "_client",
        "_downtime",
        "_listeners",
        "connected",
        "lost",
        "name",
        "reconnects",
        "refusals",
        "slow_consumer_events",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.connected = False
        self.reconnects = 0
        self.slow_consumer_events = 0
        self.refusals = 0
        self.lost = False
        self._downtime: tuple[float, float | None] = (0.0, None)
        self._client: _Pending | None = None
        self._listeners: tuple[Callable[[], None], ...] = ()

    def listen(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` (on the event loop) after every change of the connection's
        fortunes; returns the function that stops it."""
        self._listeners = (*self._listeners, listener)

        def stop() -> None:
            self._listeners = tuple(x for x in self._listeners if x is not listener)

        return stop

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    def on_connected(self, client: _Pending) -> None:
        """The first connection is up (the client is read for pending bytes from now on)."""
        self._client = client
        self.connected = True
        self.refusals = 0
        self.lost = False
        self._changed()

    def on_disconnected(self) -> None:
        """The connection broke; the client is reconnecting."""
        self.connected = False
        total, since = self._downtime
        if since is None:
            self._downtime = (total, time.monotonic())
        self._changed()

    def on_refused(self) -> None:
        """The server refused the client's login while it tried to reconnect."""
        self.on_disconnected()
        self.refusals += 1
        self._changed()

    def on_lost(self) -> None:
        """The client closed the connection for good without being asked to."""
        self.on_disconnected()
        self.lost = True
        self._changed()

    def on_reconnected(self) -> None:
        """The client is connected again."""
        total, since = self._downtime
        if since is not None:
            self._downtime = (total + time.monotonic() - since, None)
        self.reconnects += 1
        self.connected = True
        self.refusals = 0
        self._changed()

    def on_slow_consumer(self) -> None:
        """The client dropped messages of a subscription that fell behind."""
        self.slow_consumer_events += 1

    def on_closed(self) -> None:
        """The connection was closed on purpose: not connected, but not an outage either."""
        total, since = self._downtime
        if since is not None:
            self._downtime = (total + time.monotonic() - since, None)
        self.connected = False
        self._client = None

    def disconnected_seconds(self) -> float:
        """Seconds spent disconnected, the outage in progress included."""
        total, since = self._downtime
        return total if since is None else total + time.monotonic() - since

    def pending_bytes(self) -> int:
        """Bytes the client holds that are not yet flushed to the server."""
        client = self._client
        return client.pending_data_size if client is not None else 0


class ConnectionMetrics:
    """The ``callboard_nats_*`` metrics of the connections made with it.

    Args:
        registry: the registry this collector registers itself on.
        refusals: where ``connect`` counts the malformed frames its connections
            drop (``malformed_frame``); None counts them only in the client.

    Attributes:
        refusals: as given.
    """

    def __init__(
        self, registry: CollectorRegistry, *, refusals: RefusalMetrics | None = None
    ) -> None:
        self._states: dict[str, ConnectionState] = {}
        self.refusals = refusals
        registry.register(self)

    def track(self, name: str | None) -> ConnectionState:
        """The state of the connection called ``name``, created on first use.

        A connection made again under the same name goes on with the same
        series, so its counters never go back.
        """
        label = name or DEFAULT_CONNECTION_LABEL
        state = self._states.get(label)
        if state is None:
            state = ConnectionState(label)
            # replaced whole, never mutated: the scraping thread iterates it
            self._states = {**self._states, label: state}
        return state

    def describe(self) -> Iterator[Metric]:
        """The families without samples, so the registry can refuse duplicate names."""
        return iter(_families())

    def collect(self) -> Iterator[Metric]:
        """Read every tracked connection now (called from the scraping thread)."""
        connected, reconnects, downtime, pending, slow = families = _families()
        for state in self._states.values():
            labels = [state.name]
            connected.add_metric(labels, 1.0 if state.connected else 0.0)
            reconnects.add_metric(labels, state.reconnects)
            downtime.add_metric(labels, state.disconnected_seconds())
            pending.add_metric(labels, state.pending_bytes())
            slow.add_metric(labels, state.slow_consumer_events)
        return iter(families)


def _families() -> tuple[
    GaugeMetricFamily,
    CounterMetricFamily,
    CounterMetricFamily,
    GaugeMetricFamily,
    CounterMetricFamily,
]:
    labels = ["connection"]
    return (
        GaugeMetricFamily("callboard_nats_connected", "1 connected, 0 not", labels=labels),
        CounterMetricFamily("callboard_nats_reconnects_total", "Reconnections", labels=labels),
        CounterMetricFamily(
            "callboard_nats_disconnected_seconds_total", "Time spent disconnected", labels=labels
        ),
        GaugeMetricFamily(
            "callboard_nats_pending_bytes",
            "Bytes buffered, not yet flushed to the server",
            labels=labels,
        ),
        CounterMetricFamily(
            "callboard_nats_slow_consumer_events_total",
            "Slow-consumer errors reported by the client",
            labels=labels,
        ),
    )
