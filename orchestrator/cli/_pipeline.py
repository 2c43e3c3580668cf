"""``callboard pipeline``: run the steps of a pipeline file (JSON or TOML)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

import msgspec

from bus import ConfigError

from .._orchestrator import Orchestrator
from .._pipeline import StepFailed, StepResult, load_pipeline
from ._common import Subcommands, connect_cli, say
from ._exit_codes import EXIT_OK, exit_code_for, exit_code_of_error_type
from ._values import duration

__all__ = ["cmd_pipeline", "register"]


def register(commands: Subcommands) -> None:
    """Add ``pipeline`` and its flags to the parser."""
    p = commands.add("pipeline", cmd_pipeline, "run the steps of a pipeline file (JSON or TOML)")
    p.add_argument("file", help="the pipeline: a .toml file, else JSON ('-' reads stdin)")
    p.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="steps in flight at once (default: the file's max_concurrency, else 1)",
    )
    p.add_argument(
        "--partial",
        action="store_true",
        help="run every step that can run despite failures, instead of stopping at the first",
    )
    p.add_argument(
        "--timeout",
        type=duration,
        default=30.0,
        help="time per step unless it sets its own: seconds or a duration (30, 45s, 2m)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document of all results")


async def cmd_pipeline(args: argparse.Namespace) -> int:
    """Run the steps of a pipeline file and print one line per step (or one JSON document).

    Exit code: 0 when every step succeeded; else that of the first failure
    (1 a step's error, 2 a bad file or reference, 3 no agent, 4 timeout, 5 connection).
    """
    text = sys.stdin.buffer.read() if args.file == "-" else None
    pipeline = load_pipeline(args.file, text)  # a bad file fails here, before connecting
    concurrency = pipeline.max_concurrency if args.concurrency is None else args.concurrency
    if concurrency < 1:
        raise ConfigError(f"--concurrency must be at least 1, got {concurrency}")
    async with connect_cli(args) as nc:
        orchestrator = Orchestrator(nc, prefix=args.prefix, name="cli")
        try:
            results = await orchestrator.run_pipeline(
                pipeline.steps,
                timeout=args.timeout,
                max_concurrency=concurrency,
                partial=args.partial,
            )
        except StepFailed as exc:
            shown = sorted([*exc.results, exc.result], key=lambda r: r.seq)
            _print_pipeline(shown, args.json, error=str(exc), cancelled=exc.cancelled)
            task = {"task_id": exc.task_id, "capability": exc.capability}
            task["agent"] = getattr(exc.cause, "agent_id", None)
            say(args, f"callboard pipeline: {exc}", level=logging.ERROR, **task)
            if exc.cancelled:
                cancelled = ", ".join(map(str, exc.cancelled))
                say(args, f"callboard pipeline: cancelled steps {cancelled}", level=logging.ERROR)
            return exit_code_for(exc)
    _print_pipeline(results, args.json)
    failures = [r.error for r in results if r.error is not None and r.error.code != 424]
    if not failures:
        return EXIT_OK
    say(args, f"callboard pipeline: {len(failures)} step(s) failed", level=logging.ERROR)
    return exit_code_of_error_type(failures[0].type)


def _print_pipeline(
    results: Sequence[StepResult],
    as_json: bool,
    *,
    error: str | None = None,
    cancelled: Sequence[int] = (),
) -> None:
    if as_json:
        document: dict[str, Any] = {"ok": error is None and all(r.ok for r in results)}
        if error is not None:
            document.update(error=error, cancelled=list(cancelled))
        document["results"] = results
        sys.stdout.write(msgspec.json.encode(document).decode() + "\n")
        return
    for r in results:
        name = f" {r.step_id!r}" if r.step_id else ""
        by = f" by {r.agent}" if r.agent else ""
        where = f"{by} in {r.elapsed_ms:.1f}ms" if r.task_id else " not run"
        if r.error is None:
            outcome = msgspec.json.encode(r.result).decode()
        else:
            outcome = f"error {r.error.code} ({r.error.type}): {r.error.message}"
        print(f"{r.seq}. {r.capability}{name}{where}: {outcome}", flush=True)
