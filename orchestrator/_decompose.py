"""Turning a request in plain words into steps, and step results into an answer.

The defaults are rule-based and offline: ``RuleDecomposer`` makes each
sentence, and each part joined by "then" / "and then" / "after that" /
"finally", a sequential step (quoted text is never split); ``JoinAggregator``
joins the step results, labelled by agent, in step order. Both are small
protocols so a language model can do either job instead (``_planner``).

A decomposer returns text steps, which the orchestrator routes and turns into
payloads (``payload_from_text``), or ``Step`` values already bound to a
capability and payload, which it dispatches as they are: a planner that knows
the live capabilities' input schemas can fill payloads better than keywords can.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol

import msgspec

from ._pipeline import Step, StepResult
from ._references import PipelineError, find_references
from ._registry import AgentInfo
from ._router import GENERIC_WORDS, is_generic, is_operator

__all__ = [
    "Aggregator",
    "Decomposer",
    "JoinAggregator",
    "RuleDecomposer",
    "input_object_schema",
    "payload_from_text",
    "reference_problems",
]


class Decomposer(Protocol):
    """Splits a request into steps, in the order they should run."""

    async def decompose(self, request: str, agents: Sequence[AgentInfo]) -> Sequence[str | Step]:
        """The steps of ``request``, given the live ``agents``.

        Each item is step text (routed, then turned into a payload) or a
        ``Step`` bound to a capability and payload (dispatched as is; its
        payload may refer to earlier steps' results, ``$prev``, ``$steps.<n>``).
        """
        ...


class Aggregator(Protocol):
    """Combines the step results into one answer."""

    async def aggregate(self, request: str, results: Sequence[StepResult]) -> Any:
        """The answer to ``request`` from its step results."""
        ...


# Every pattern here is linear in the text's length (issue 15.9): a whitespace
# run is entered only at its first character (the look-behinds), and an opening
# curly quote stops at the next opening one, so no pattern rescans a run from
# each of its positions. Quoted passages are found once, and the text between
# them is split on its own, so no placeholder can collide with the request.
_QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'|“[^“”]*”")
_SPLIT = re.compile(
    r"(?:(?<=[.!?;])\s+)"
    r"|(?:,?(?<!\s)\s+(?:and\s+then|after\s+that|and\s+finally|then|finally)\s+)",
    re.IGNORECASE,
)

_LEADING = re.compile(r"^(?:and\s+then|after\s+that|and\s+finally|then|finally)\b[\s,]*", re.I)


class RuleDecomposer:
    """Sentences and "then"-style connectives become sequential steps."""

    async def decompose(self, request: str, agents: Sequence[AgentInfo] = ()) -> list[str]:
        """Split ``request``; quoted passages stay whole (``agents`` is not needed)."""
        parts: list[list[str]] = [[]]
        start = 0
        for quoted in _QUOTED.finditer(request):
            _split_onto(parts, request[start : quoted.start()])
            parts[-1].append(quoted.group(0))
            start = quoted.end()
        _split_onto(parts, request[start:])
        steps = (_LEADING.sub("", "".join(p).strip(" \t\n,;.!?")) for p in parts)
        return [step for step in steps if step]


def _split_onto(parts: list[list[str]], text: str) -> None:
    """Continue the last part with ``text``'s first piece; each further piece starts a part."""
    first, *rest = _SPLIT.split(text)
    parts[-1].append(first)
    parts.extend([piece] for piece in rest)


class JoinAggregator:
    """Joins the results, labelled by agent and capability, in step order."""

    async def aggregate(self, request: str, results: Sequence[StepResult]) -> str:
        """One line per step: ``[seq] capability (agent): result``."""
        lines = []
        for r in results:
            shown = r.result if isinstance(r.result, str) else _text(r.result)
            if r.error is not None:
                shown = f"error {r.error.code}: {r.error.message}"
            lines.append(f"[{r.seq}] {r.capability} ({r.agent or '-'}): {shown}")
        return "\n".join(lines)


def _text(value: Any) -> str:
    if isinstance(value, dict) and len(value) == 1:
        (only,) = value.values()
        if isinstance(only, str | int | float):
            return str(only)
    return msgspec.json.encode(value).decode()


_LEAD = re.compile(r"^(?:[\s:,]|-(?![\d(.]))+")  # a minus sign stays: "-5+3"
_TRAIL = re.compile(r"^[\s?!.]+")  # on the reversed text: linear, unlike ``[...]+$``


def _trimmed(text: str) -> str:
    """``text`` without leading ``: , -`` (not a minus sign) and trailing ``? ! .``
    (and whitespace at both ends)."""
    head = _LEAD.sub("", text, count=1)
    return _TRAIL.sub("", head[::-1], count=1)[::-1]


def payload_from_text(text: str, matched: Sequence[str], input_schema: str) -> Any:
    """Build a capability's payload from a step's text.

    The routing keywords at the start of the text are dropped ("calculate
    6*7" → "6*7"), and so are question and function words before them when a
    specific keyword chose the capability ("what is 6*7" → "6*7"; a question
    routed by "what" alone stays whole). Surrounding quotes are
    removed, and the rest goes into the input's first required string field
    (``{"expression": "6*7"}``), or is sent as a plain string when the input
    schema asks for nothing specific.
    """
    rest = _trimmed(text[_lead_in_end(text, matched) :])
    if len(rest) >= 2 and rest[0] in "\"'“" and rest[-1] in "\"'”":
        rest = rest[1:-1]
    field = _first_required_string(input_schema)
    return {field: rest} if field else rest


_SEPARATORS = re.compile(r"[\s:,]*")
_LEAD_WORD = re.compile(r"([A-Za-z]+)(?:'[A-Za-z]+)?")


def _lead_in_end(text: str, matched: Sequence[str]) -> int:
    """Where ``text`` starts once its lead-in is dropped: question and function words
    up to the first routing keyword, then the keywords (but not what follows them).

    It walks forward by index, so a long lead-in costs linear time.
    """
    keywords = sorted(
        (k.lower() for k in matched if not is_generic(k) and not is_operator(k)),
        key=len,
        reverse=True,
    )
    drop_generic = any(not is_generic(k) for k in matched)
    start = 0
    while True:
        separators = _SEPARATORS.match(text, start)  # ``*``: it always matches
        start = separators.end() if separators else start
        keyword = next((k for k in keywords if _word_at(text, k, start)), None)
        if keyword is not None:
            start += len(keyword)
            drop_generic = False  # "summarize what is new": what follows is the input
            continue
        word = _LEAD_WORD.match(text, start)
        if drop_generic and word and word.group(1).lower() in GENERIC_WORDS:
            start = word.end()
            continue
        return start


def _word_at(text: str, keyword: str, start: int) -> bool:
    """``keyword`` (lower case) is at ``start`` as a whole word, whatever the case."""
    end = start + len(keyword)
    return text[start:end].lower() == keyword and not (
        keyword[-1:].isalnum() and text[end : end + 1].isalnum()
    )


def input_object_schema(input_schema: str) -> dict[str, Any] | None:
    """The object schema an input schema (JSON text) describes, its ``$ref`` followed.

    None when the input is not an object or the text is not a JSON Schema, so
    callers treat such inputs as "anything goes" rather than guessing.
    """
    try:
        schema = msgspec.json.decode(input_schema or "{}")
    except msgspec.DecodeError:
        return None
    if not isinstance(schema, dict):
        return None
    ref = schema.get("$ref", "")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        defs = schema.get("$defs", {})
        schema = defs.get(ref.removeprefix("#/$defs/"), {}) if isinstance(defs, dict) else {}
    if not isinstance(schema, dict):
        return None
    is_object = (
        schema.get("type", "object" if {"properties", "required"} & schema.keys() else None)
        == "object"
    )
    return schema if is_object else None


def _first_required_string(input_schema: str) -> str | None:
    schema = input_object_schema(input_schema)
    if schema is None:
        return None
    properties = schema.get("properties", {})
    for name in schema.get("required", []):
        if properties.get(name, {}).get("type") == "string":
            return str(name)
    return None


def reference_problems(steps: Sequence[str | Step]) -> list[str]:
    """What is wrong with the references of a decomposer's ``Step`` items.

    ``Orchestrator.run`` runs steps one after another, so a payload may refer
    only to steps before it (``$prev``, ``$steps.<n>`` with n below its own
    position, or an earlier step's ``id``); anything else would fail halfway
    through a run, so it is caught before the first dispatch.
    """
    problems: list[str] = []
    ids: set[str] = set()
    for index, step in enumerate(steps):
        if not isinstance(step, Step):
            continue
        try:
            references = list(find_references(step.payload))
        except PipelineError as exc:  # nested too deep
            problems.append(f"step {index + 1}: {exc}")
            references = []
        for root, reference in references:
            if root == "prev" and index == 0:
                problems.append(f"step 1: {reference!r}: the first step has no previous result")
            elif root.isdigit() and not 1 <= int(root) <= index:
                problems.append(
                    f"step {index + 1}: {reference!r}: step {root} does not run before it"
                )
            elif root != "prev" and not root.isdigit() and root not in ids:
                problems.append(
                    f"step {index + 1}: {reference!r}: no earlier step is named {root!r}"
                )
        if step.id:
            ids.add(step.id)
    return problems
