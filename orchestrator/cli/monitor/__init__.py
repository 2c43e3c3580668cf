"""The terminal monitor: the status feed, the fleet view, its table and screen.

``callboard monitor`` (``cli/_monitor.py``) reads the status stream through
the feed, folds it into the fleet view, and draws the view as a table on a
live screen; ``demo`` and ``history`` print events with the feed's format.
"""

from __future__ import annotations

from ._feed import (
    decode_status,
    follow_status,
    format_status,
    replay_and_follow_status,
    status_subject,
)
from ._fleet_table import COLUMNS, format_latency, render_table
from ._fleet_view import (
    AGENT_STATES,
    DEFAULT_FORGET_AFTER,
    DEFAULT_MAX_AGENTS,
    DEFAULT_MAX_CAPABILITIES,
    AgentRow,
    FleetTotals,
    FleetView,
    Sweep,
    Tracked,
    fleet_totals,
)
from ._fleet_window import DEFAULT_WINDOW, TaskWindow, quantile
from ._screen import LiveScreen

__all__ = [
    "AGENT_STATES",
    "COLUMNS",
    "DEFAULT_FORGET_AFTER",
    "DEFAULT_MAX_AGENTS",
    "DEFAULT_MAX_CAPABILITIES",
    "DEFAULT_WINDOW",
    "AgentRow",
    "FleetTotals",
    "FleetView",
    "LiveScreen",
    "Sweep",
    "TaskWindow",
    "Tracked",
    "decode_status",
    "fleet_totals",
    "follow_status",
    "format_latency",
    "format_status",
    "quantile",
    "render_table",
    "replay_and_follow_status",
    "status_subject",
]
