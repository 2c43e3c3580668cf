"""A model's plan: the catalogue it is shown, the shape it must have, the check it must pass.

``Catalogue`` is what the model may use: each live capability once, with its
description, keywords and input schema (``_plan_schema`` makes the plan's JSON
Schema of it, for structured output). ``check_plan`` reads an answer into
``Step`` values and lists every problem in words the model can act on, so one
repair message can fix them all. The payload check is light on purpose (an object
where an object is asked for, its required fields present): the agent
validates its input fully, and a schema library would be a new dependency.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from ._decompose import input_object_schema, reference_problems
from ._pipeline import Step
from ._references import MAX_NESTING, find_references
from ._registry import AgentInfo

__all__ = [
    "Catalogue",
    "CatalogueEntry",
    "catalogue_of",
    "check_plan",
    "render_catalogue",
]

_FENCED = re.compile(r"^```[A-Za-z]*\s*(.*?)\s*```$", re.DOTALL)


class CatalogueEntry(msgspec.Struct, frozen=True):
    """One capability as the model is shown it."""

    name: str
    description: str
    keywords: tuple[str, ...]
    input_schema: str


Catalogue = Mapping[str, CatalogueEntry]
"""The live capabilities by name, in name order."""


def catalogue_of(agents: Sequence[AgentInfo]) -> dict[str, CatalogueEntry]:
    """Each live capability once (from the first agent by id that serves it), by name."""
    found: dict[str, CatalogueEntry] = {}
    for agent in sorted(agents, key=lambda a: a.id):
        for name in agent.capabilities:
            if name not in found:
                found[name] = CatalogueEntry(
                    name=name,
                    description=agent.description,
                    keywords=agent.keywords.get(name, ()),
                    input_schema=agent.input_schemas.get(name, "{}"),
                )
    return dict(sorted(found.items()))


def render_catalogue(catalogue: Catalogue) -> str:
    """The catalogue as the prompt lists it: name, description, keywords, input schema."""
    lines = []
    for cap in catalogue.values():
        lines.append(f"- {cap.name}: {cap.description or '(no description)'}")
        if cap.keywords:
            lines.append(f"  keywords: {', '.join(cap.keywords)}")
        lines.append(f"  input schema: {_schema_text(cap.input_schema)}")
    return "\n".join(lines)


def _schema_text(input_schema: str) -> str:
    """The schema as the model should read it: the object itself when it is behind a ``$ref``."""
    if input_schema.strip() in ("", "{}"):
        return "{} (any JSON value)"
    resolved = input_object_schema(input_schema)
    if resolved is None:
        return input_schema
    text = msgspec.json.encode(resolved).decode()
    return input_schema if '"$ref"' in text else text  # nested refs need the $defs


def check_plan(answer: str, catalogue: Catalogue, max_steps: int) -> tuple[list[Step], list[str]]:
    """The plan's steps and every problem found; the steps are usable only without problems.

    A fenced answer (```json ... ```) is accepted, as is a bare list of steps:
    small models add both, and neither is worth a repair.
    """
    text = answer.strip()
    fenced = _FENCED.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        data = msgspec.json.decode(text.encode())
    except msgspec.DecodeError as exc:
        return [], [f"the answer is not JSON ({exc}); answer with the JSON object only"]
    except RecursionError:
        return [], [f"the answer nests deeper than {MAX_NESTING} levels; send a flat plan"]
    items = data.get("steps") if isinstance(data, dict) else data
    if not isinstance(items, list):
        return [], ['the answer must be a JSON object {"steps": [...]}']
    if not items:
        return [], ["the plan has no steps; give at least one"]
    problems: list[str] = []
    if len(items) > max_steps:
        problems.append(f"the plan has {len(items)} steps; use at most {max_steps}")
    positioned: list[str | Step] = []  # a bad step keeps its place, so references still count
    choices = ", ".join(catalogue)
    for n, item in enumerate(items, 1):
        capability = item.get("capability") if isinstance(item, dict) else None
        if not isinstance(item, dict):
            problems.append(f'step {n} must be an object {{"capability": ..., "payload": ...}}')
        elif not isinstance(capability, str) or capability not in catalogue:
            problems.append(f"step {n}: unknown capability {capability!r}; choose from: {choices}")
        elif "payload" not in item:
            problems.append(f"step {n} ({capability}): no payload; give one its input schema fits")
        else:
            schema = catalogue[capability].input_schema
            problems += _payload_problems(n, capability, item["payload"], schema)
            positioned.append(Step(capability=capability, payload=item["payload"]))
            continue
        positioned.append("")
    problems += reference_problems(positioned)
    return [s for s in positioned if isinstance(s, Step)], problems


def _payload_problems(n: int, capability: str, payload: Any, input_schema: str) -> list[str]:
    """A light check: an object input gets an object with its required fields."""
    schema = input_object_schema(input_schema)
    if schema is None:
        return []
    if isinstance(payload, str) and any(ref == payload for _, ref in find_references(payload)):
        return []  # a whole earlier result: known only when the step runs
    required = [str(name) for name in schema.get("required", [])]
    if not isinstance(payload, dict):
        fields = f" (required: {', '.join(required)})" if required else ""
        return [f"step {n} ({capability}): the payload must be a JSON object{fields}"]
    missing = [name for name in required if name not in payload]
    if missing:
        word = "field" if len(missing) == 1 else "fields"
        return [
            f"step {n} ({capability}): the payload lacks the required {word} {', '.join(missing)}"
        ]
    return []
