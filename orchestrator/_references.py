"""References from one step's payload to other steps' results.

- ``"$prev"`` is the previous step's whole result; ``"$prev.summary"`` one field of it;
- ``"$steps.<name>"`` / ``"$steps.<name>.field"`` is the result of the step
  with that ``id`` (or that 1-based position, ``$steps.1.value``);
- inside a longer string, ``"${prev.summary}"`` is replaced by the value as text.

A string that is exactly a reference keeps the value's JSON type; a path that
does not exist is an error that names the reference.

``find_references`` lists them (the pipeline's dependencies come from it) and
``resolve_references`` replaces them; both read the same two patterns, so a
string is a reference for one exactly when it is for the other.

Both walk the payload without recursion and refuse one whose arrays and objects
nest deeper than ``MAX_NESTING``: a payload is data from a file, a model or a
caller, and a deep one must be a clear error, never a ``RecursionError``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec

from bus import ConfigError

__all__ = [
    "MAX_NESTING",
    "PipelineError",
    "find_references",
    "nested_too_deep",
    "resolve_references",
]

MAX_NESTING = 256
"""How deep arrays and objects may nest in a payload (the wire codec allows a few hundred)."""


class PipelineError(ConfigError):
    """A pipeline is malformed (unknown reference or dependency, cycle, bad step)."""


_WHOLE = re.compile(r"\$(prev|steps\.[A-Za-z0-9_-]+)((?:\.[A-Za-z0-9_-]+)*)")
_EMBEDDED = re.compile(r"\$\{(prev|steps\.[A-Za-z0-9_-]+)((?:\.[A-Za-z0-9_-]+)*)\}")


def find_references(payload: Any) -> Iterator[tuple[str, str]]:
    """Each reference in ``payload`` as (``"prev"`` or a step key, the reference's text).

    It finds exactly what ``resolve_references`` replaces, in document order.

    Raises:
        PipelineError: the payload nests deeper than ``MAX_NESTING`` levels.
    """
    pending: list[tuple[Any, int]] = [(payload, 0)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, str):
            whole = _WHOLE.fullmatch(value)
            if whole:
                yield _root_key(whole.group(1)), value
            elif "${" in value:
                for match in _EMBEDDED.finditer(value):
                    yield _root_key(match.group(1)), match.group(0)
        elif isinstance(value, dict | list):
            _check_depth(depth + 1)
            items = value.values() if isinstance(value, dict) else value
            pending.extend((item, depth + 1) for item in reversed(list(items)))


def nested_too_deep(value: Any) -> bool:
    """True when ``value``'s arrays and objects nest deeper than ``MAX_NESTING`` levels."""
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            if depth >= MAX_NESTING:
                return True
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
    return False


def _check_depth(depth: int) -> None:
    if depth > MAX_NESTING:
        raise PipelineError(f"the payload is nested deeper than {MAX_NESTING} levels")


def _root_key(root: str) -> str:
    return root if root == "prev" else root.split(".", 1)[1]


def resolve_references(payload: Any, results: Mapping[str, Any], *, prev: str | None) -> Any:
    """Replace references in ``payload`` with values from earlier results.

    Args:
        payload: the step's payload (any JSON value).
        results: earlier results by step id and by 1-based position (as text).
        prev: the key of the previous step in ``results``, or None for the first step.

    Raises:
        PipelineError: a reference names nothing, or the payload nests deeper
            than ``MAX_NESTING`` levels.
    """
    return _resolve(payload, results, prev, 0)


def _resolve(payload: Any, results: Mapping[str, Any], prev: str | None, depth: int) -> Any:
    if isinstance(payload, str):
        whole = _WHOLE.fullmatch(payload)
        if whole:
            return _lookup(whole.group(1), whole.group(2), results, prev, payload)
        if "${" in payload:
            return _EMBEDDED.sub(
                lambda m: _as_text(_lookup(m.group(1), m.group(2), results, prev, m.group(0))),
                payload,
            )
        return payload
    if isinstance(payload, dict | list):
        _check_depth(depth + 1)  # before recursing: the limit keeps the stack shallow
    if isinstance(payload, dict):
        return {k: _resolve(v, results, prev, depth + 1) for k, v in payload.items()}
    if isinstance(payload, list):
        return [_resolve(value, results, prev, depth + 1) for value in payload]
    return payload


def _lookup(
    root: str, path: str, results: Mapping[str, Any], prev: str | None, reference: str
) -> Any:
    if root == "prev":
        if prev is None:
            raise PipelineError(f"{reference!r}: the first step has no previous result")
        key = prev
    else:
        key = root.split(".", 1)[1]
    if key not in results:
        raise PipelineError(f"{reference!r}: no earlier step is named {key!r}")
    value = results[key]
    for part in path.split(".")[1:]:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise PipelineError(f"{reference!r}: the result has no field {part!r}")
    return value


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return msgspec.json.encode(value).decode()
