"""The text of ``callboard monitor``'s live table: a header line of totals and
one row per agent, fitted to the terminal.

Pure: it returns lines and never writes, so the fitting is testable at any
width. ASCII only, so that one character is one terminal column everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._fleet_view import AgentRow, FleetTotals

__all__ = ["COLUMNS", "format_latency", "render_table"]

COLUMNS = ("AGENT", "CAPABILITIES", "STATE", "IN FLIGHT", "TASKS/S", "ERRORS", "P50", "P99")
_FLEXIBLE = {1: 6, 0: 8}
"""Columns that shrink when the terminal is narrow (index -> narrowest), in that order."""
_KEPT = 4
"""Columns never dropped: who, what, state, load. The statistics go first, from the right."""
_GAP = "  "
_MORE = "~"


def format_latency(ms: float | None) -> str:
    """``0.8ms``, ``120.0ms``, ``2.35s``; ``-`` when there is none."""
    if ms is None:
        return "-"
    return f"{ms:.1f}ms" if ms < 1000 else f"{ms / 1000:.2f}s"


def _percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{fraction * 100:.1f}%"


def _cells(row: AgentRow) -> list[str]:
    limit = str(row.max_concurrency) if row.max_concurrency else "?"
    return [
        row.agent,
        ",".join(row.capabilities) or "-",
        row.state,
        f"{row.in_flight}/{limit}",
        f"{row.tasks_per_second:.2f}",
        _percent(row.error_rate),
        format_latency(row.p50_ms),
        format_latency(row.p99_ms),
    ]


def _header(totals: FleetTotals, title: str) -> str:
    states = ", ".join(f"{n} {state}" for state, n in totals.states.items() if n)
    return _GAP.join(
        [
            title,
            f"{totals.agents} agent(s)" + (f": {states}" if states else ""),
            f"in flight {totals.in_flight}/{totals.capacity}",
            f"{totals.tasks_per_second:.2f} tasks/s",
            f"errors {_percent(totals.error_rate)}",
        ]
    )


def _clip(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    return text[: max(width - 1, 0)] + _MORE if width > 0 else ""


def _fit(widths: list[int], width: int) -> list[int]:
    """Shrink the flexible columns, then drop statistics, until the row fits ``width``."""
    widths = list(widths)

    def total() -> int:
        return sum(widths) + len(_GAP) * (len(widths) - 1)

    for index, narrowest in _FLEXIBLE.items():
        excess = total() - width
        if excess > 0:
            widths[index] = max(min(narrowest, widths[index]), widths[index] - excess)
    while total() > width and len(widths) > _KEPT:
        widths.pop()
    return widths


def render_table(
    rows: Sequence[AgentRow],
    totals: FleetTotals,
    *,
    width: int,
    height: int | None = None,
    title: str = "callboard monitor",
) -> list[str]:
    """The table's lines, none longer than ``width``; at most ``height`` lines if given.

    Args:
        rows: one per agent, in the order shown.
        totals: the header's numbers.
        width: terminal columns.
        height: terminal lines; agents that do not fit are summed up in the last line.
        title: the start of the header line (what is being watched).
    """
    table = [list(COLUMNS), *(_cells(row) for row in rows)]
    natural = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    widths = _fit(natural, width)
    right = {3, 4, 5, 6, 7}  # numbers line up on the right
    lines = [_clip(_header(totals, title), width)]
    shown = table
    if height is not None and len(table) + 1 > height:
        shown = table[: max(height - 2, 1)]
    for cells in shown:
        parts = []
        for index, column_width in enumerate(widths):
            cell = _clip(cells[index], column_width)
            parts.append(cell.rjust(column_width) if index in right else cell.ljust(column_width))
        lines.append(_clip(_GAP.join(parts).rstrip(), width))
    hidden = len(table) - len(shown)
    if hidden:
        lines.append(_clip(f"... and {hidden} more agent(s): make the terminal taller", width))
    if not rows:
        lines.append(_clip("no agents heard of yet (waiting for their events)", width))
    return lines
