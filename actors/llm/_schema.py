"""JSON Schemas for tool parameters, derived from Python signatures.

Every provider wants a tool's parameters as one JSON *object* schema, while
``msgspec.json.schema`` answers with a ``$ref`` into ``$defs`` and a
capability may accept any JSON value. These helpers bridge the two, so that
the schema the model sees and the validation the arguments get come from the
same msgspec type.
"""

from __future__ import annotations

import copy
import inspect
import typing
from collections.abc import Callable
from typing import Any

import msgspec

from bus import ConfigError

__all__ = [
    "describe",
    "inline_root_ref",
    "object_schema",
    "signature_struct",
    "single_struct_parameter",
    "wrap_as_object",
]

WRAPPED_FIELD = "input"
"""The one property a non-object input schema is wrapped in."""

_DEFS_PREFIX = "#/$defs/"
_ARG_SECTIONS = ("Args:", "Arguments:", "Parameters:")


def inline_root_ref(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with a top-level ``$ref`` replaced by the definition it names.

    Other definitions stay in ``$defs`` at the root, where nested ``$ref``s
    still find them; the inlined one too if something else refers to it.
    """
    ref = schema.get("$ref")
    defs: dict[str, Any] = dict(schema.get("$defs", {}))
    if not (isinstance(ref, str) and ref.startswith(_DEFS_PREFIX)) or len(schema) > 2:
        return schema
    name = ref.removeprefix(_DEFS_PREFIX)
    if name not in defs:
        return schema
    body = {k: v for k, v in defs[name].items() if k != "title"}
    rest = {k: v for k, v in defs.items() if k != name}
    if ref in msgspec.json.encode([body, rest]).decode():
        rest[name] = defs[name]  # recursive: something still points at it
    return {**body, "$defs": rest} if rest else body


def object_schema(tp: Any) -> dict[str, Any]:
    """The JSON Schema of a msgspec type, with its root definition inlined."""
    try:
        return inline_root_ref(msgspec.json.schema(tp))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cannot derive a JSON Schema from {tp!r}: {exc}") from exc


def wrap_as_object(schema: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """An object schema for ``schema``, and whether it had to be wrapped.

    Providers accept only object schemas as tool parameters, so any other
    schema (``{}`` for any JSON, a string, a union) becomes the one required
    property ``input``; the caller unwraps it before sending the payload.
    """
    schema = inline_root_ref(schema)
    if schema.get("type") == "object":
        return schema, False
    inner = dict(schema)
    defs = inner.pop("$defs", None)
    wrapped: dict[str, Any] = {
        "type": "object",
        "properties": {WRAPPED_FIELD: inner},
        "required": [WRAPPED_FIELD],
    }
    if defs:
        wrapped["$defs"] = defs
    return wrapped, True


def describe(fn: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """The first paragraph of a Google-style docstring, and its ``Args:`` entries.

    The model chooses a tool by its description and fills each argument by
    its name and description, so the docstring already written for people is
    the best prompt there is.
    """
    doc = inspect.getdoc(fn) or ""
    paragraphs = doc.split("\n\n")
    summary = " ".join(paragraphs[0].split()) if paragraphs else ""
    arguments: dict[str, str] = {}
    current = ""
    in_args = False
    entry_indent: int | None = None
    for line in doc.splitlines():
        stripped = line.strip()
        if not in_args:
            in_args = stripped in _ARG_SECTIONS
            continue
        if not stripped:
            continue
        indent = len(line) - len(line.lstrip())
        if indent == 0:
            break  # the next section
        entry_indent = indent if entry_indent is None else entry_indent
        name, colon, text = stripped.partition(":")
        name = name.split("(")[0].strip()  # "count (int): ..."
        if indent == entry_indent and colon and name.isidentifier():
            current = name
            arguments[current] = text.strip()
        elif current:
            arguments[current] = f"{arguments[current]} {stripped}".strip()
    return summary, arguments


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    target = fn if inspect.isroutine(fn) else type(fn).__call__
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception as exc:
        raise ConfigError(
            f"cannot resolve the type hints of {fn!r}: {exc} "
            "(define the types at module level so they can be looked up)"
        ) from exc


def single_struct_parameter(fn: Callable[..., Any]) -> type[msgspec.Struct] | None:
    """The Struct type of ``fn``'s only parameter, if it has exactly one and it is one."""
    params = list(inspect.signature(fn).parameters.values())
    if len(params) != 1 or params[0].kind in (params[0].VAR_POSITIONAL, params[0].VAR_KEYWORD):
        return None
    hint = _hints(fn).get(params[0].name)
    if isinstance(hint, type) and issubclass(hint, msgspec.Struct):
        return hint
    return None


def signature_struct(fn: Callable[..., Any], name: str) -> type[msgspec.Struct]:
    """A Struct with one field per parameter of ``fn``: its schema and its validator.

    Unannotated parameters accept any JSON value; unknown arguments are
    refused, so that a misspelt argument is reported instead of ignored.
    """
    hints = _hints(fn)
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ConfigError(
                f"tool {name}: *{param.name} cannot be described to a model; use named parameters"
            )
        tp = hints.get(param.name, Any)
        if param.default is inspect.Parameter.empty:
            fields.append((param.name, tp))
        elif isinstance(param.default, list | dict | set) and param.default:
            fields.append((param.name, tp, msgspec.field(default_factory=_copier(param.default))))
        else:
            fields.append((param.name, tp, param.default))
    try:
        return msgspec.defstruct(
            f"{name}_arguments", fields, kw_only=True, forbid_unknown_fields=True
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"tool {name}: cannot build its arguments type: {exc}") from exc


def _copier(value: Any) -> Callable[[], Any]:
    return lambda: copy.deepcopy(value)
