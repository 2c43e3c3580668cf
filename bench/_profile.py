"""CPU profiles (cProfile) of the requester and the serving side, read per request.

A profile is summarised three ways, each per request so that runs of any
length compare: the top functions by own time (tottime) and by time including
callees (cumtime); callboard's own functions by cumtime; and own time grouped
into categories (codec, status events, metrics, nats-py, the event loop, ...)
that say where a request's CPU goes. Waiting in epoll is idle time, not cost,
and is left out of the "busy" total.
"""

from __future__ import annotations

import dataclasses
import pstats
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["IDLE", "OTHER", "ProfileSummary", "categorise", "render", "summarise"]

ROOT = Path(__file__).resolve().parent.parent
TOP = 25

IDLE = "idle (waiting in epoll)"
OTHER = "other (builtins, stdlib)"

_Key = tuple[str, int, str]
_IDLE = re.compile(r"method 'poll' of 'select\.epoll'|method 'select' of|built-in method select\.")
_NATS_HEADERS = re.compile(
    r"nats/aio/client\.py:\d+\((_parse_header_lines|_process_headers)\)"
    r"|bus/_headers\.py:\d+\((parse_header_lines|_parse_header_bytes)\)"
)
"""nats-py's header parsing, which callboard's connections do with ``bus._headers``'s parser."""
_READ_PATH = re.compile(r"bus/_natspy\.py:\d+\((parse|_delivered|put_nowait|take|wait)\)")
"""callboard's reader of ``MSG``/``HMSG`` and the hand-off to a subscription: what
nats-py's parser and ``_process_msg`` do for raw's connections."""
_TRANSPARENT = re.compile(
    r"\((<genexpr>|<listcomp>|<dictcomp>|<setcomp>|<lambda>)\)$|nats/nuid\.py"
)
_CALLBOARD = ("bus/", "actors/", "orchestrator/")

# (substring of the file or builtin name, category); the first match wins
_CATEGORIES: tuple[tuple[str, str], ...] = (
    ("bench/", "bench harness (pool, timing)"),
    ("bus/_codec.py", "codec (headers, JSON, AgentMessage)"),
    ("msgspec", "codec (headers, JSON, AgentMessage)"),
    ("bus/_messages.py", "codec (headers, JSON, AgentMessage)"),
    ("actors/_status.py", "status events"),
    ("bus/_metrics.py", "metrics"),
    ("orchestrator/_metrics.py", "metrics"),
    ("prometheus_client/", "metrics"),
    ("bus/_ids.py", "task ids"),
    ("bus/_client.py", "task client (dispatch)"),
    ("bus/_inbox.py", "task client (dispatch)"),
    ("bus/_wire.py", "wire writes (framing, buffer)"),
    ("bus/_natspy.py", "wire writes (framing, buffer)"),
    ("orchestrator/", "orchestrator (dispatch, retry)"),
    ("actors/_context.py", "agent runtime (admit, run, reply)"),
    ("actors/_runner.py", "agent runtime (admit, run, reply)"),
    ("actors/_executor.py", "agent runtime (admit, run, reply)"),
    ("actors/_core_intake.py", "agent runtime (admit, run, reply)"),
    ("actors/_replier.py", "agent runtime (admit, run, reply)"),
    ("actors/_direct.py", "agent runtime (admit, run, reply)"),
    ("actors/_pool.py", "agent runtime (admit, run, reply)"),
    ("actors/_discovery.py", "agent runtime (admit, run, reply)"),
    ("actors/builtins/", "echo handler"),
    ("anyio/", "anyio (task groups, cancel scopes, streams)"),
    ("nats/", "nats-py (protocol, parser, flusher)"),
    ("uvloop", "event loop"),
    ("asyncio/", "event loop"),
    ("_asyncio", "event loop"),
    ("'_socket.socket'", "socket I/O"),
    ("selector_events.py", "event loop"),
    ("contextvars", "event loop"),
    ("selectors.py", "event loop"),
)


# (what, regex on the function's label): cumulative time of named steps of the hot
# path; a probe that matches nothing in a profile is left out of its summary
_PROBES: tuple[tuple[str, str], ...] = (
    ("agent: one task, admitted to replied (_run)", r"actors/_core_intake\.py:\d+\(_run\)$"),
    ("agent: admission on the direct address (admit)", r"actors/_core_intake\.py:\d+\(admit\)"),
    ("agent: leading a capability's intake (_lead)", r"actors/_core_intake\.py:\d+\(_lead\)"),
    ("agent: hand-off to a worker (_Jobs.get)", r"actors/_pool\.py:\d+\(get\)"),
    ("agent: handler, events, decode (_execute)", r"actors/_executor\.py:\d+\(_execute\)"),
    (
        "agent: decode task: headers → AgentMessage, JSON (_decode)",
        r"actors/_executor\.py:\d+\(_decode\)",
    ),
    ("agent: status events accepted+started+completed", r"actors/_status\.py:\d+\(task_event\)"),
    (
        "agent: status events framed (accepted+started, completed) and counted",
        r"actors/_status\.py:\d+\((begun_frames|completed_frame|sent)\)",
    ),
    ("wire: framed writes into nats-py's buffer", r"bus/_natspy\.py:\d+\(append\)"),
    ("agent: reply publish with headers (_reply)", r"actors/_replier\.py:\d+\(_reply\)"),
    ("agent: metrics at the end of a task (finished)", r"bus/_metrics\.py:\d+\(finished\)"),
    (
        "agent: task context set/reset",
        r"actors/_context\.py:\d+\((set_context|reset_context|__init__)\)",
    ),
    (
        "anyio: cancel scopes / task groups enter+exit",
        r"anyio/_backends/_asyncio\.py:\d+\((__enter__|__exit__)\)",
    ),
    ("anyio: memory stream receive (worker wake-up)", r"anyio/streams/memory\.py:\d+\(receive\)"),
    ("requester: Orchestrator.dispatch", r"orchestrator/_orchestrator\.py:\d+\(dispatch\)"),
    (
        "requester: retry wrapper (send_with_retry)",
        r"orchestrator/_retry\.py:\d+\(send_with_retry\)",
    ),
    ("requester: TaskClient.request", r"bus/_client\.py:\d+\(request\)"),
    ("requester: request through the inbox (Inbox.request)", r"bus/_inbox\.py:\d+\(request\)"),
    ("requester: reply to its future (Inbox._on_reply)", r"bus/_inbox\.py:\d+\(_on_reply\)"),
    ("requester: new task id", r"bus/_ids\.py:\d+\(new_task_id\)"),
    ("requester: task headers (task_headers)", r"bus/_codec\.py:\d+\(task_headers\)"),
    ("codec: JSON encode (encode_json)", r"bus/_codec\.py:\d+\(encode_json\)"),
    ("requester: reply decode (decode_reply)", r"bus/_codec\.py:\d+\(decode_reply\)"),
    ("requester: dispatch metrics (dispatched)", r"orchestrator/_metrics\.py:\d+\(dispatched\)"),
    ("nats-py: Client.request", r"nats/aio/client\.py:\d+\(request\)"),
    ("nats-py: asyncio.wait_for around the reply", r"asyncio/tasks\.py:\d+\(wait_for\)"),
    ("nats-py: every publish", r"nats/aio/client\.py:\d+\(publish\)"),
    ("nats-py: parse incoming headers", r"nats/aio/client\.py:\d+\(_process_headers\)"),
)


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/lib/python3."):
        if marker in filename:
            tail = filename.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker.startswith("/lib") else tail
    try:
        return str(Path(filename).resolve().relative_to(ROOT))
    except ValueError:
        return filename


def _label(key: _Key) -> str:
    filename, line, name = key
    if filename == "~":
        return name
    return f"{_short(filename)}:{line}({name})"


def categorise(key: _Key) -> str | None:
    """The category of a profiled function's own time, or None when its time
    belongs to whoever called it (builtins, the stdlib's helpers, generator
    expressions, NUIDs)."""
    label = _label(key)
    if _IDLE.search(label):
        return IDLE
    if _NATS_HEADERS.search(label):
        return "nats-py header parsing"
    if _READ_PATH.search(label):
        return "nats-py (protocol, parser, flusher)"
    if _TRANSPARENT.search(label):
        return None
    for needle, category in _CATEGORIES:
        if needle in label:
            return category
    return None


def _attribute(stats: dict[_Key, Any]) -> dict[str, float]:
    """Own time by category, time of transparent functions going to their callers
    (in proportion to the time each caller caused), up the stack as far as needed."""
    shares: dict[_Key, dict[str, float]] = {}

    def share_of(key: _Key, depth: int) -> dict[str, float]:
        if key in shares:
            return shares[key]
        category = categorise(key)
        if category is not None:
            return {category: 1.0}
        callers = stats.get(key, (0, 0, 0.0, 0.0, {}))[4]
        total = sum(timing[2] for timing in callers.values())
        if depth > 8 or not callers or total <= 0:
            return {OTHER: 1.0}
        mix: dict[str, float] = {}
        for caller, timing in callers.items():
            for name, part in share_of(caller, depth + 1).items():
                mix[name] = mix.get(name, 0.0) + part * timing[2] / total
        shares[key] = mix
        return mix

    by_category: dict[str, float] = {}
    for key, (_cc, _calls, own, _cum, _callers) in stats.items():
        for name, part in share_of(key, 0).items():
            by_category[name] = by_category.get(name, 0.0) + own * part
    return by_category


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProfileSummary:
    """A profile read per request.

    Attributes:
        title: which process and variant.
        requests: requests served during the profile.
        busy_us: CPU microseconds per request under the profiler, idle excluded
            (cProfile inflates it; compare shares, not absolute values).
        categories: (category, µs per request, share of busy) by cost.
        top_tottime: rows by own time.
        top_cumtime: rows by time with callees.
        callboard_cumtime: callboard's own functions by time with callees.
        probes: (step of the hot path, calls per request, cumulative µs per request).
    """

    title: str
    requests: int
    busy_us: float
    categories: list[dict[str, Any]]
    top_tottime: list[dict[str, Any]]
    top_cumtime: list[dict[str, Any]]
    callboard_cumtime: list[dict[str, Any]]
    probes: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _rows(items: Iterable[tuple[_Key, Any]], requests: int) -> list[dict[str, Any]]:
    rows = []
    for key, (_cc, calls, own, cumulative, _callers) in items:
        rows.append(
            {
                "function": _label(key),
                "calls_per_request": calls / requests,
                "tottime_us": own / requests * 1e6,
                "cumtime_us": cumulative / requests * 1e6,
            }
        )
    return rows


def summarise(stats_file: Path | str, *, title: str, requests: int) -> ProfileSummary:
    """Read a cProfile stats file written by ``dump_stats``."""
    stats: dict[_Key, Any] = pstats.Stats(str(stats_file)).stats  # type: ignore[attr-defined]
    requests = max(requests, 1)
    by_category = _attribute(stats)
    idle = by_category.pop(IDLE, 0.0)
    busy = sum(by_category.values())
    categories = [
        {"category": name, "us_per_request": seconds / requests * 1e6, "share": seconds / busy}
        for name, seconds in sorted(by_category.items(), key=lambda item: -item[1])
        if seconds / requests >= 5e-9  # under 0.005 µs: a category this process never ran
    ]
    if idle:
        categories.append(
            {"category": IDLE, "us_per_request": idle / requests * 1e6, "share": None}
        )
    busy_items = [(k, v) for k, v in stats.items() if categorise(k) != IDLE]
    own_first = sorted(busy_items, key=lambda item: -item[1][2])[:TOP]
    cumulative_first = sorted(busy_items, key=lambda item: -item[1][3])[:TOP]
    callboard = [
        (k, v) for k, v in busy_items if any(_short(k[0]).startswith(p) for p in _CALLBOARD)
    ]
    callboard_first = sorted(callboard, key=lambda item: -item[1][3])[:TOP]
    probes = []
    for what, pattern in _PROBES:
        matcher = re.compile(pattern)
        hits = [v for k, v in busy_items if matcher.search(_label(k))]
        if hits:
            probes.append(
                {
                    "step": what,
                    "calls_per_request": sum(v[1] for v in hits) / requests,
                    "cumtime_us": sum(v[3] for v in hits) / requests * 1e6,
                }
            )
    return ProfileSummary(
        title=title,
        requests=requests,
        busy_us=busy / requests * 1e6,
        categories=categories,
        top_tottime=_rows(own_first, requests),
        top_cumtime=_rows(cumulative_first, requests),
        callboard_cumtime=_rows(callboard_first, requests),
        probes=probes,
    )


def _table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [f"{'calls/req':>9} {'own µs/req':>10} {'cum µs/req':>10}  function"]
    for row in rows:
        lines.append(
            f"{row['calls_per_request']:9.2f} {row['tottime_us']:10.2f} "
            f"{row['cumtime_us']:10.2f}  {row['function']}"
        )
    return lines


def render(summary: ProfileSummary) -> str:
    """The summary as text, for ``bench/results/profile-*.txt``."""
    lines = [
        f"# {summary.title}",
        f"{summary.requests} requests profiled; busy CPU under cProfile: "
        f"{summary.busy_us:.1f} µs per request (cProfile inflates this; read the shares)",
        "",
        "## Where a request's CPU goes (own time by category)",
        f"{'µs/req':>8} {'share':>6}  category",
    ]
    for row in summary.categories:
        share = "" if row["share"] is None else f"{row['share'] * 100:5.1f}%"
        lines.append(f"{row['us_per_request']:8.2f} {share:>6}  {row['category']}")
    if summary.probes:
        lines += [
            "",
            "## Steps of the hot path (cumulative: callees included, so nested steps overlap;",
            "## a coroutine's time counts only while it runs, not while it awaits)",
            f"{'calls/req':>9} {'cum µs/req':>10}  step",
        ]
        for probe in summary.probes:
            lines.append(
                f"{probe['calls_per_request']:9.2f} {probe['cumtime_us']:10.2f}  {probe['step']}"
            )
    sections = (
        (f"## Top {TOP} by own time (tottime)", summary.top_tottime),
        (f"## Top {TOP} by time with callees (cumtime)", summary.top_cumtime),
        (f"## callboard's functions by cumtime (top {TOP})", summary.callboard_cumtime),
    )
    for heading, rows in sections:
        if rows:
            lines += ["", heading, *_table(rows)]
    return "\n".join(lines) + "\n"
