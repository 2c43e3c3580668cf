"""``python -m bench``: run the benchmark suite and print its table.

Starts its own nats-server and serving processes, and writes ``latest.json``,
``latest.md`` and ``profile-*.txt`` to ``bench/results/`` (``--quick`` runs
write to ``bench/results/quick/``, so they never replace a full run's).
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

from ._suite import PRESETS, run_suite

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="callboard's benchmark suite: dispatch against raw nats-py request-reply "
        "in alternating rounds, fan-out, memory and CPU profiles.",
    )
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument(
        "--quick", action="store_true", help="short rounds and a 50,000-task long run (~1.5 min)"
    )
    preset.add_argument(
        "--long",
        action="store_true",
        help="the full 1,000,000-task memory run even if it takes the suite past 10 minutes",
    )
    parser.add_argument("--out", type=Path, help="results directory (default: bench/results)")
    parser.add_argument("--payload-bytes", type=int, help="JSON payload size (default 256)")
    parser.add_argument("--rounds", type=int, help="alternating pairs per concurrency")
    parser.add_argument("--duration", type=float, help="seconds per round")
    parser.add_argument("--longrun-tasks", type=int, help="dispatches in the memory long run")
    args = parser.parse_args(argv)

    name = "quick" if args.quick else "long" if args.long else "default"
    settings = PRESETS[name]
    changes = {
        "payload_bytes": args.payload_bytes,
        "rounds": args.rounds,
        "duration": args.duration,
        "longrun_tasks": args.longrun_tasks,
    }
    settings = dataclasses.replace(settings, **{k: v for k, v in changes.items() if v})
    if args.longrun_tasks:
        settings = dataclasses.replace(settings, fit_longrun=False)
    out = args.out or (RESULTS / "quick" if args.quick else RESULTS)
    command = shlex.join(["python", "-m", "bench", *(sys.argv[1:] if argv is None else argv)])
    run_suite(settings, out, command)
    print((out / "latest.md").read_text())


if __name__ == "__main__":
    main()
