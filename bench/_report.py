"""The results of a run: one JSON document, and a Markdown table of it.

The JSON keeps every round (so a later reader can recompute anything); the
table shows the medians and the ratios callboard / raw that the targets are
stated in.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._compare import LevelComparison
from ._stats import TARGET_P99, TARGET_THROUGHPUT, RoundResult, median

__all__ = ["level_json", "render_markdown", "write_json"]

TARGET_CONCURRENCY = 128
MIB = 2**20


def _round_json(result: RoundResult) -> dict[str, Any]:
    data = dataclasses.asdict(result)
    data["throughput"] = result.throughput
    return data


def _medians(rounds: Sequence[RoundResult]) -> dict[str, Any]:
    sides = sorted({side for r in rounds for side in r.cpu_us})
    return {
        "throughput": median(r.throughput for r in rounds),
        "p50": median(r.p50 for r in rounds),
        "p99": median(r.p99 for r in rounds),
        "errors": sum(r.errors for r in rounds),
        "cpu_us": {side: median(r.cpu_us.get(side, math.nan) for r in rounds) for side in sides},
    }


def level_json(level: LevelComparison) -> dict[str, Any]:
    """One concurrency's comparison: medians, ratios, and every round."""
    return {
        "concurrency": level.concurrency,
        "ratios": dataclasses.asdict(level.ratios),
        "meets_targets": level.ratios.meets_targets(),
        "raw": _medians(level.raw),
        "callboard": _medians(level.callboard),
        "rounds": {
            "raw": [_round_json(r) for r in level.raw],
            "callboard": [_round_json(r) for r in level.callboard],
        },
    }


def _default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=2, default=_default) + "\n")


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


def _cpu(cpu: dict[str, float]) -> str:
    return " / ".join(
        f"{cpu.get(side, math.nan):.0f}" for side in ("requester", "responder", "server")
    )


def _cpu_ratio(raw: dict[str, float], callboard: dict[str, float]) -> float:
    """callboard's CPU per reply over raw's, all processes summed."""
    total = sum(raw.values())
    return sum(callboard.values()) / total if total > 0 else math.nan


def _throughput_table(variants: dict[str, Any]) -> list[str]:
    lines = [
        "| variant | c | raw req/s | callboard req/s | **throughput x** | raw p50 ms "
        "| callboard p50 ms | **p50 x** | raw p99 ms | callboard p99 ms | **p99 x** "
        "| CPU µs/req raw (req / resp / server) | CPU µs/req callboard | **CPU x** |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, variant in variants.items():
        if "skipped" in variant:
            lines.append(f"| {name} | - | skipped: {variant['skipped']} |" + " |" * 11)
            continue
        for level in variant["levels"]:
            raw, board, ratios = level["raw"], level["callboard"], level["ratios"]
            errors = raw["errors"] + board["errors"]
            mark = f" ({errors} errors)" if errors else ""
            lines.append(
                f"| {name} | {level['concurrency']} | {raw['throughput']:.0f} "
                f"| {board['throughput']:.0f}{mark} | **{ratios['throughput']:.2f}** "
                f"| {_ms(raw['p50'])} | {_ms(board['p50'])} | **{ratios['p50']:.2f}** "
                f"| {_ms(raw['p99'])} | {_ms(board['p99'])} | **{ratios['p99']:.2f}** "
                f"| {_cpu(raw['cpu_us'])} | {_cpu(board['cpu_us'])} "
                f"| **{_cpu_ratio(raw['cpu_us'], board['cpu_us']):.2f}** |"
            )
    return lines


def _targets(variants: dict[str, Any]) -> list[str]:
    lines = [
        f"Targets at c={TARGET_CONCURRENCY}: throughput ≥ {TARGET_THROUGHPUT}x raw and "
        f"p99 ≤ {TARGET_P99}x raw.",
        "",
    ]
    for name, variant in variants.items():
        for level in variant.get("levels", []):
            if level["concurrency"] == TARGET_CONCURRENCY:
                ratios = level["ratios"]
                verdict = "met" if level["meets_targets"] else "**not met**"
                lines.append(
                    f"- {name}: throughput {ratios['throughput']:.2f}x, "
                    f"p99 {ratios['p99']:.2f}x — {verdict}"
                )
    return lines


def _memory(memory: dict[str, Any]) -> list[str]:
    lines = []
    inflight = memory.get("inflight")
    if inflight:
        lines += [
            f"In flight ({inflight['tasks']:,} tasks held {inflight['hold_ms']} ms by the "
            "responder; fresh requester process each):",
            "",
            "| requester | RSS before | RSS with all in flight | growth | per task | in flight "
            "when read | RSS after (gc) |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for mode in ("raw", "callboard"):
            r = inflight[mode]
            growth = r["rss"] - r["baseline_rss"]
            lines.append(
                f"| {mode} | {r['baseline_rss'] / MIB:.1f} MiB | {r['rss'] / MIB:.1f} MiB "
                f"| {growth / MIB:.1f} MiB | {growth / r['tasks'] / 1024:.2f} KiB "
                f"| {r['in_flight']:,} | {r['after_rss'] / MIB:.1f} MiB |"
            )
        lines += [
            "",
            f"callboard's own cost: {inflight['callboard_extra_mib']:.1f} MiB per "
            f"{inflight['tasks']:,} tasks in flight above raw nats-py's.",
            "",
        ]
    longrun = memory.get("longrun")
    if longrun:
        checkpoints = longrun["checkpoints"]
        first, last = checkpoints[0], checkpoints[-1]
        later = [c["rss"] for c in checkpoints[1:]] or [first["rss"]]
        lines += [
            "| dispatches | RSS MiB | live objects | allocated blocks | seconds |",
            "|---:|---:|---:|---:|---:|",
            *(
                f"| {c['tasks']:,} | {c['rss'] / MIB:.1f} | {c['objects']:,} "
                f"| {c.get('allocated_blocks', 0):,} | {c['seconds']:.0f} |"
                for c in checkpoints
            ),
            "",
            f"Long run: {last['tasks']:,} dispatches at c={longrun['concurrency']} "
            f"({last['tasks'] / last['seconds']:.0f}/s, {last['errors']} errors). "
            f"RSS after {first['tasks']:,}: {first['rss'] / MIB:.1f} MiB; after "
            f"{last['tasks']:,}: {last['rss'] / MIB:.1f} MiB "
            f"(growth {(last['rss'] - first['rss']) / MIB:+.1f} MiB; live objects "
            f"{first['objects']:,} → {last['objects']:,}). From the second checkpoint on, RSS "
            f"stays within {min(later) / MIB:.1f}-{max(later) / MIB:.1f} MiB.",
        ]
        if longrun.get("note"):
            lines += ["", longrun["note"]]
    return lines


def _profile(profiles: dict[str, Any]) -> list[str]:
    lines = []
    for name, summary in profiles.items():
        top = ", ".join(
            f"{row['category']} {row['share'] * 100:.0f}%"
            for row in summary["categories"][:6]
            if row["share"] is not None
        )
        lines.append(
            f"- **{summary['title']}** ({summary['busy_us']:.0f} µs/req under "
            f"cProfile): {top} — `{name}.txt`"
        )
    return lines


def render_markdown(document: dict[str, Any]) -> str:
    """The Markdown report (``latest.md``)."""
    suite, machine = document["suite"], document["machine"]
    settings = suite["settings"]
    lines = [
        f"# callboard benchmark ({suite['preset']}, {machine['date']})",
        "",
        f"`{suite['command']}` — {suite['seconds']:.0f} s in all. Machine: {machine['cpu']}, "
        f"{machine['logical_cpus']} CPUs, {machine['memory_gib']} GiB, {machine['python']}, "
        f"{machine['nats_server']}, nats-py {machine['packages']['nats-py']}, "
        f"uvloop {machine['packages']['uvloop'] or 'not installed'}; commit "
        f"{machine['commit']}; load average at start {machine['load_average_at_start']}.",
        "",
        document["topology"],
        "",
        f"## Dispatch against raw nats-py (payload {settings['payload_bytes']} B JSON)",
        "",
        f"Ratios are callboard / raw, the median over {settings['rounds']} alternating pairs "
        f"of {settings['duration']} s rounds; absolute values are medians over rounds. "
        "CPU µs/req is the CPU each process spent per reply (requester / responder(s) / "
        "nats-server), and CPU x callboard's total over raw's: on a machine where all the "
        "processes share 2 cores it bounds the throughput ratio, and noise moves it least.",
        "",
        *_throughput_table(document["throughput"]),
        "",
        *_targets(document["throughput"]),
        "",
        "## Fan-out",
        "",
    ]
    fanout = document["fanout"]
    lines += [
        f"A pipeline of {fanout['steps']:,} independent steps (`run_pipeline`, "
        f"`max_concurrency={fanout['steps']}`) against {fanout['steps']:,} concurrent raw "
        f"requests: raw {median(fanout['raw']) * 1e3:.0f} ms, pipeline "
        f"{median(fanout['callboard']) * 1e3:.0f} ms, **{fanout['ratio']:.2f}x** "
        f"(median of {len(fanout['raw'])} alternating pairs).",
        "",
        "## Durable mode",
        "",
        *render_durable(document["durable"]),
        "",
        "## Memory (orchestrator process RSS)",
        "",
        *_memory(document["memory"]),
        "",
        f"## CPU profile at c={settings['profile_concurrency']} "
        f"({settings['profile_requests']:,} requests, cProfile)",
        "",
        *_profile(document["profiles"]),
        "",
    ]
    return "\n".join(lines)


def render_durable(section: dict[str, Any]) -> list[str]:
    """The durable section of the Markdown report."""
    if section.get("status") != "measured":
        return [section.get("note", "Not measured.")]
    lines = [
        section["note"],
        "",
        "| c | core req/s | durable req/s | **throughput x** | core p50 ms | durable p50 ms "
        "| core p99 ms | durable p99 ms | **p99 x** | CPU µs/req core (req / agent / server) "
        "| CPU µs/req durable |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in section["levels"]:
        core, durable, ratios = row["core"], row["durable"], row["ratios"]
        lines.append(
            f"| {row['concurrency']} | {core['throughput']:.0f} | {durable['throughput']:.0f} "
            f"| **{ratios['throughput']:.2f}** | {core['p50'] * 1e3:.2f} "
            f"| {durable['p50'] * 1e3:.2f} | {core['p99'] * 1e3:.2f} "
            f"| {durable['p99'] * 1e3:.2f} | **{ratios['p99']:.2f}** "
            f"| {_durable_cpu(core)} | {_durable_cpu(durable)} |"
        )
    return lines


def _durable_cpu(medians: dict[str, Any]) -> str:
    cpu = medians.get("cpu_us") or {}
    return " / ".join(f"{cpu.get(side, 0):.0f}" for side in ("requester", "responder", "server"))
