"""The JSON Schema of a model's plan, with each step's payload typed by its capability.

A server with constrained decoding (llama.cpp's ``response_format``/``json_schema``,
Ollama's ``format``) turns this schema into a grammar, so the plan it samples
can only name live capabilities and give each the payload its input schema
asks for. Each step is a ``oneOf`` over the capabilities: every branch fixes
``capability`` to one name (a ``const``) and ``payload`` to that capability's
input schema.

The input schemas come from agents, over the bus, so they are treated as data:
their ``$defs`` (or ``definitions``) are moved to the plan's root under names
prefixed by the capability, since a ``$ref`` resolves against the document
root; a capability whose schema is not an object, or refers to anything but
its own definitions, or nests deeper than ``MAX_SCHEMA_DEPTH``, gets an
unconstrained payload (its agent still validates
its input). A payload, or one of its top-level fields, may also be a reference
to an earlier step's result (``"$prev"``, ``"$steps.1.value"``): the model
cannot know those values when it plans.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec

from ._plan import Catalogue

__all__ = ["MAX_SCHEMA_DEPTH", "REFERENCE_SCHEMA", "plan_schema"]

REFERENCE_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": r"^\$(prev|steps\.[A-Za-z0-9_-]+)(\.[A-Za-z0-9_-]+)*$",
    "description": "an earlier step's result: $prev, $prev.<field>, $steps.<n>.<field>",
}
"""A string that is exactly a reference to an earlier step's result (see ``_references``)."""

MAX_SCHEMA_DEPTH = 64
"""Deepest an input schema may nest (objects and arrays) and still be embedded."""
_DEFINITION_KEYS = ("$defs", "definitions")
_POINTER_SAFE = re.compile(r"[A-Za-z0-9_.-]+")
"""Names used in a ``$ref`` as they are: no JSON Pointer or URI escaping to get wrong."""
_PLAIN_STRING_KEYS = frozenset({"type", "title", "description", "default", "examples"})


class _UnusableSchema(Exception):
    """The input schema cannot be embedded as it is; the payload is left unconstrained."""


def plan_schema(catalogue: Catalogue, max_steps: int) -> dict[str, Any]:
    """The plan's JSON Schema: 1 to ``max_steps`` steps, each typed by its capability.

    Args:
        catalogue: the live capabilities by name.
        max_steps: most steps a plan may have.
    """
    definitions: dict[str, Any] = {}
    branches = []
    for name, entry in sorted(catalogue.items()):
        branches.append(
            {
                "type": "object",
                "properties": {
                    "capability": {"const": name},
                    "payload": _payload_schema(name, entry.input_schema, definitions),
                },
                "required": ["capability", "payload"],
                "additionalProperties": False,
            }
        )
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "steps": {
                "type": "array",
                "minItems": 1,
                "maxItems": max_steps,
                "items": {"oneOf": branches},
            }
        },
        "required": ["steps"],
        "additionalProperties": False,
    }
    if definitions:
        schema["$defs"] = definitions
    return schema


def _payload_schema(capability: str, input_schema: str, definitions: dict[str, Any]) -> Any:
    """The payload's schema for one capability; its definitions go into ``definitions``."""
    try:
        schema = msgspec.json.decode(input_schema or "{}")
    except (msgspec.DecodeError, RecursionError):
        return {}
    if not isinstance(schema, dict) or not schema or not _POINTER_SAFE.fullmatch(capability):
        return {}
    prefix = f"{capability}."
    try:
        own = _own_definitions(schema)
        hoisted = {prefix + key: _rewrite_refs(value, prefix, own) for key, value in own.items()}
        top = _rewrite_refs(
            {k: v for k, v in schema.items() if k not in (*_DEFINITION_KEYS, "$schema", "$id")},
            prefix,
            own,
        )
    except _UnusableSchema:
        return {}
    definitions.update(hoisted)
    ref = top.get("$ref") if len(top) == 1 else None
    if isinstance(ref, str):  # msgspec's shape: {"$ref": "#/$defs/X", "$defs": {...}}
        top = hoisted[ref.removeprefix("#/$defs/")]
    return {"anyOf": [_fields_may_refer(top), REFERENCE_SCHEMA]}


def _own_definitions(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema's definitions (``$defs`` and ``definitions``), by name."""
    own: dict[str, Any] = {}
    for key in _DEFINITION_KEYS:
        found = schema.get(key, {})
        if not isinstance(found, dict):
            raise _UnusableSchema(f"{key} is not an object")
        if not all(_POINTER_SAFE.fullmatch(name) for name in found):
            raise _UnusableSchema(f"a name in {key} needs escaping in a $ref")
        own.update(found)
    return own


def _rewrite_refs(schema: Any, prefix: str, own: Mapping[str, Any]) -> Any:
    """``schema`` (freshly decoded, so changed in place) with ``$ref`` values pointing at the
    hoisted definitions.

    Walks without recursion, since the schema came over the bus.

    Raises:
        _UnusableSchema: a ``$ref`` points anywhere but at one of ``own``, or the
            schema nests deeper than ``MAX_SCHEMA_DEPTH`` (too deep to encode or to
            make a grammar of).
    """
    pending = [(schema, 0)]
    while pending:
        node, depth = pending.pop()
        if depth > MAX_SCHEMA_DEPTH:
            raise _UnusableSchema(f"nested deeper than {MAX_SCHEMA_DEPTH} levels")
        if isinstance(node, dict):
            ref = node.get("$ref")
            if ref is not None:
                node["$ref"] = _hoisted_ref(ref, prefix, own)
            pending.extend((v, depth + 1) for k, v in node.items() if k != "$ref")
        elif isinstance(node, list):
            pending.extend((v, depth + 1) for v in node)
    return schema


def _hoisted_ref(ref: Any, prefix: str, own: Mapping[str, Any]) -> str:
    for key in _DEFINITION_KEYS:
        marker = f"#/{key}/"
        if isinstance(ref, str) and ref.startswith(marker) and ref[len(marker) :] in own:
            return f"#/$defs/{prefix}{ref[len(marker) :]}"
    raise _UnusableSchema(f"unsupported $ref {ref!r}")


def _fields_may_refer(schema: Any) -> Any:
    """``schema`` with each top-level field that is not a plain string also open to a reference."""
    if not isinstance(schema, dict) or not isinstance(schema.get("properties"), dict):
        return schema
    fields = {}
    for name, field in schema["properties"].items():
        plain_string = (
            isinstance(field, dict)
            and field.get("type") == "string"
            and field.keys() <= _PLAIN_STRING_KEYS
        )
        fields[name] = field if plain_string else {"anyOf": [field, REFERENCE_SCHEMA]}
    return {**schema, "properties": fields}
