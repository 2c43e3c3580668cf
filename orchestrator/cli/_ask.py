"""``callboard ask``: a request in plain words, planned by rules or by a model.

Without a model the rule-based decomposer splits the request and the results
are joined; with ``--model`` (or ``CALLBOARD_MODEL``) an ``LLMDecomposer``
plans the steps and an ``LLMAggregator`` writes the answer. A model's failure
exits with 1 and a line that says what to do (start Ollama, pull the model, ...).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import msgspec

from actors.llm.models import (
    DEFAULT_MODEL_TIMEOUT,
    ChatModel,
    ModelError,
    ModelNotFound,
    ModelRateLimited,
    ModelSettings,
    ModelUnavailable,
    create_model,
)
from bus import CallboardError

from .._orchestrator import Orchestrator
from .._pipeline import StepResult
from .._planner import AggregationError, LLMAggregator, LLMDecomposer, PlanError
from ._common import Subcommands, connect_cli, say
from ._exit_codes import EXIT_AGENT_ERROR, EXIT_OK
from ._values import duration

__all__ = ["MODEL_ENV", "cmd_ask", "register"]

MODEL_ENV = "CALLBOARD_MODEL"
"""The environment variable that names the default ``--model``."""


def register(commands: Subcommands) -> None:
    """Add ``ask`` and its flags to the parser."""
    p = commands.add("ask", cmd_ask, "run a request in plain words: decompose, route, aggregate")
    p.add_argument("request", help="what to do, e.g. \"calculate 6*7, then summarize '...'\"")
    p.add_argument(
        "--timeout",
        type=duration,
        default=30.0,
        help="time per step: seconds or a duration, e.g. 30, 45s, 2m (default 30s)",
    )
    p.add_argument("--json", action="store_true", help="print the whole result as JSON")
    g = p.add_argument_group(
        "model",
        "plan the steps and write the answer with a language model; without one, the "
        "request is split at sentences and 'then', and the results are joined",
    )
    g.add_argument(
        "--model",
        default=None,
        metavar="NAME",
        help=f"the model, e.g. llama3.2 (env {MODEL_ENV}; '' for no model)",
    )
    g.add_argument(
        "--provider",
        choices=("ollama", "openai"),
        default="ollama",
        help="ollama, or any OpenAI-compatible server (default ollama)",
    )
    g.add_argument(
        "--model-url",
        default=None,
        metavar="URL",
        help="the model server (env OLLAMA_HOST or OPENAI_BASE_URL; "
        "default the local Ollama or api.openai.com)",
    )
    g.add_argument(
        "--model-timeout",
        type=duration,
        default=DEFAULT_MODEL_TIMEOUT,
        metavar="DURATION",
        help=f"time to wait for each answer of the model (default {DEFAULT_MODEL_TIMEOUT:g})",
    )


async def cmd_ask(args: argparse.Namespace) -> int:
    """Decompose a request, run its steps, print the aggregated answer.

    With a model (``--model`` or ``CALLBOARD_MODEL``) the model plans the steps
    and writes the answer; without one the rule-based planner and the joined
    results do. A model that fails exits with 1 and says what to do about it.
    """
    model = _ask_model(args)  # bad model settings fail here, before connecting
    try:
        async with (
            connect_cli(args) as nc,
            Orchestrator(
                nc,
                prefix=args.prefix,
                name="cli",
                decomposer=LLMDecomposer(model) if model is not None else None,
                aggregator=LLMAggregator(model) if model is not None else None,
            ) as orchestrator,
        ):
            result = await orchestrator.run(args.request, timeout=args.timeout)
    except (ModelError, PlanError) as exc:
        if isinstance(exc, AggregationError):
            _print_steps(exc.steps)
        message = " ".join(str(exc).split())
        say(args, f"callboard ask: {message} (hint: {_model_hint(exc, args)})", level=logging.ERROR)
        return EXIT_AGENT_ERROR
    finally:
        if model is not None:
            await model.aclose()
    if args.json:
        sys.stdout.write(msgspec.json.encode(result).decode() + "\n")
        return EXIT_OK
    answer = result.answer if isinstance(result.answer, str) else msgspec.json.encode(result.answer)
    print(answer if isinstance(answer, str) else answer.decode())
    _print_steps(result.steps)
    return EXIT_OK


def _print_steps(steps: Sequence[StepResult]) -> None:
    print("\nsteps:", file=sys.stderr)
    for step in steps:
        shown = msgspec.json.encode(step.result).decode()
        print(
            f"  {step.seq}. {step.capability} by {step.agent} in {step.elapsed_ms:.1f}ms: {shown}",
            file=sys.stderr,
        )


def _ask_model(args: argparse.Namespace) -> ChatModel | None:
    """The model ``--model`` (else ``CALLBOARD_MODEL``) names; None: the rule-based planner."""
    name = _model_name(args)
    if not name:
        return None
    fields: dict[str, Any] = {
        "model": name,
        "provider": args.provider,
        "timeout": args.model_timeout,
        "temperature": 0.0,  # a plan should be the model's likeliest, not a sample of many
    }
    if args.model_url:
        fields["base_url"] = args.model_url
    return create_model(ModelSettings.from_mapping(fields))


def _model_name(args: argparse.Namespace) -> str:
    """``--model``, else ``CALLBOARD_MODEL``; "" means no model."""
    name = args.model if args.model is not None else os.environ.get(MODEL_ENV, "")
    return str(name).strip()


def _model_hint(exc: CallboardError, args: argparse.Namespace) -> str:
    """What the user can do about a model's failure, in the CLI's own terms (its flags)."""
    cause = exc.cause if isinstance(exc, AggregationError) and exc.cause else exc
    ollama = args.provider == "ollama"
    if isinstance(cause, PlanError):
        return "try a larger --model, or name a capability in the request (`callboard agents`)"
    if isinstance(cause, ModelNotFound):
        return (
            f"`ollama pull {_model_name(args)}`, or pick another --model"
            if ollama
            else "check --model"
        )
    if isinstance(cause, ModelRateLimited):
        return "wait, then retry"
    if isinstance(cause, ModelUnavailable):
        where = (
            "start Ollama, or point --model-url / OLLAMA_HOST at it"
            if ollama
            else "check --model-url / OPENAI_BASE_URL and OPENAI_API_KEY"
        )
        return f"{where}; a slow model needs a larger --model-timeout"
    return "retry, or try a larger --model"
