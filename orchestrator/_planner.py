"""Planning with a language model: ``LLMDecomposer`` and ``LLMAggregator``.

The decomposer shows the model the live capabilities (name, description,
keywords, input JSON Schema) and asks for a plan, ``{"steps": [{"capability":
..., "payload": ...}]}``, passing that shape as structured output, each step's
payload typed by its capability's input schema, so that servers which can
enforce it do. The plan is checked against the live
capabilities before anything is dispatched; when it is wrong the model is told
exactly what is wrong, once, and a second bad plan is a ``PlanError``. The
aggregator asks the model to answer the request from the step results. Both
take any ``ChatModel``, so tests drive them with ``actors.llm.models.ScriptedModel``.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from actors.llm.models import ChatMessage, ChatModel, ModelError
from bus import ConfigError

from ._pipeline import Step, StepResult
from ._plan import catalogue_of, check_plan, render_catalogue
from ._plan_schema import plan_schema
from ._registry import AgentInfo
from ._router import NoRouteError

__all__ = [
    "DEFAULT_MAX_STEPS",
    "AggregationError",
    "LLMAggregator",
    "LLMDecomposer",
    "PlanError",
]

DEFAULT_MAX_STEPS = 8
"""Most steps a model's plan may have: a longer plan is more likely a runaway than a need."""
MAX_RESULT_CHARS = 4000
"""Longest step result, as JSON text, shown to the aggregating model (the rest is cut)."""


class PlanError(NoRouteError):
    """The model's plan was unusable, even after the repair; nothing was dispatched.

    A ``NoRouteError`` because, to a caller of ``Orchestrator.run``, it means
    the same thing: the request could not be turned into steps the live agents
    can take. Its code is 422: the request was read, the plan made of it was not
    valid.

    Attributes:
        problems: what was wrong with the last plan, one entry per problem.
        answer: the model's last answer, as it gave it.
    """

    code = 422
    type = "bad_plan"

    def __init__(self, message: str, *, problems: Sequence[str] = (), answer: str = "") -> None:
        super().__init__(message)
        self.problems = tuple(problems)
        self.answer = answer


class AggregationError(ModelError):
    """The steps ran, but the model could not combine their results.

    A ``ModelError`` since the model failed, not an agent; it keeps the
    cause's code, and carries the step results so a caller can still show them.

    Attributes:
        steps: every step's result, in step order.
        cause: the model's own error (None when it answered with nothing).
    """

    type = "aggregation_failed"

    def __init__(
        self, message: str, *, steps: Sequence[StepResult], cause: ModelError | None = None
    ) -> None:
        super().__init__(message, code=cause.code if cause else None)
        self.steps = list(steps)
        self.cause = cause


_PLAN_PROMPT = """\
You plan work for callboard, a network of AI agents. Each capability below is \
served by an agent and takes one JSON payload that matches its input schema.

Turn the user's request into the fewest steps that do it, at most {max_steps}, \
in the order they must run. Each step sends one payload to one capability. Use \
only these capabilities, by their exact names.

A payload may use an earlier step's result: "$prev" is the previous step's whole \
result, "$prev.<field>" one field of it, "$steps.<n>.<field>" a field of step n's \
result (steps count from 1), and "${{prev.<field>}}" puts a value inside a longer string.

A payload is the data itself, never a schema. For example, with capabilities \
"lookup" and "translate", "look up Oslo's weather, then translate it" is:
{{"steps": [{{"capability": "lookup", "payload": {{"city": "Oslo"}}}}, \
{{"capability": "translate", "payload": {{"text": "$prev.forecast"}}}}]}}

Answer with JSON only, no prose:
{{"steps": [{{"capability": "<name>", "payload": <JSON value>}}]}}

Capabilities:
{catalogue}"""

_AGGREGATE_PROMPT = """\
You write the final answer for a user of callboard, a network of AI agents. Their \
request was split into steps, each answered by an agent. Answer the request \
directly and briefly, in plain text, from the step results alone; if a step \
failed, say so."""


class LLMDecomposer:
    """Asks a model for a plan of ``Step`` values over the live capabilities.

    Args:
        model: the model that plans.
        max_steps: most steps a plan may have.
        repair: when a plan is invalid, tell the model what is wrong and take
            its second answer; when False the first invalid plan is an error.
    """

    def __init__(
        self, model: ChatModel, *, max_steps: int = DEFAULT_MAX_STEPS, repair: bool = True
    ) -> None:
        if max_steps < 1:
            raise ConfigError(f"max_steps must be at least 1, got {max_steps}")
        self.model = model
        self.max_steps = max_steps
        self.repair = repair

    async def decompose(self, request: str, agents: Sequence[AgentInfo]) -> list[Step]:
        """The model's plan for ``request``, checked against the live ``agents``.

        Raises:
            NoRouteError: no agent is live, so there is nothing to plan with.
            PlanError: the plan was invalid (after the repair, if enabled).
            ModelError: the model could not be reached or failed.
        """
        catalogue = catalogue_of(agents)
        if not catalogue:
            raise NoRouteError("no live agents to plan with: start some agents first")
        schema = plan_schema(catalogue, self.max_steps)
        messages = [
            ChatMessage.system(
                _PLAN_PROMPT.format(max_steps=self.max_steps, catalogue=render_catalogue(catalogue))
            ),
            ChatMessage.user(request),
        ]
        attempts = 2 if self.repair else 1
        for attempt in range(1, attempts + 1):
            reply = await self.model.chat(messages, output_schema=schema)
            answer = reply.message.content
            steps, problems = check_plan(answer, catalogue, self.max_steps)
            if not problems:
                return steps
            if attempt < attempts:
                listed = "\n".join(f"- {p}" for p in problems)
                messages += [
                    ChatMessage.assistant(answer),
                    ChatMessage.user(
                        f"That plan cannot be run:\n{listed}\n"
                        "Answer again with the whole corrected plan, as JSON only."
                    ),
                ]
        after = " after one repair" if self.repair else ""
        shown = (
            problems[0]
            if len(problems) == 1
            else "; ".join(f"({n}) {p}" for n, p in enumerate(problems, 1))
        )
        raise PlanError(
            f"{self.model.name} gave no usable plan{after}: {shown}",
            problems=problems,
            answer=answer,
        )


class LLMAggregator:
    """Asks a model to answer the request from the step results.

    Args:
        model: the model that writes the answer.
    """

    def __init__(self, model: ChatModel) -> None:
        self.model = model

    async def aggregate(self, request: str, results: Sequence[StepResult]) -> str:
        """The model's answer to ``request`` from ``results`` (in step order).

        Raises:
            AggregationError: the model failed or answered with nothing; it
                carries the step results.
        """
        lines = [f"Request: {request}", "", "Step results, in order:"]
        lines += [_result_line(r) for r in results]
        messages = [ChatMessage.system(_AGGREGATE_PROMPT), ChatMessage.user("\n".join(lines))]
        ran = "succeeded" if all(r.ok for r in results) else "ran"
        where = f"all {len(results)} steps {ran}, but {self.model.name}"
        try:
            reply = await self.model.chat(messages)
        except ModelError as exc:
            raise AggregationError(
                f"{where} could not combine their results: {exc}", steps=results, cause=exc
            ) from exc
        answer = reply.message.content.strip()
        if not answer:
            raise AggregationError(f"{where} combined them into an empty answer", steps=results)
        return answer


def _result_line(result: StepResult) -> str:
    by = f" (agent {result.agent})" if result.agent else ""
    if result.error is not None:
        shown = f"failed: error {result.error.code} ({result.error.type}): {result.error.message}"
    else:
        shown = msgspec.json.encode(result.result).decode()
        if len(shown) > MAX_RESULT_CHARS:
            shown = f"{shown[:MAX_RESULT_CHARS]}... (cut)"
    return f"{result.seq}. {result.capability}{by}: {shown}"
