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
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec

from bus import ConfigError

__all__ = ["PipelineError", "find_references", "resolve_references"]


class PipelineError(ConfigError):
    """A pipeline is malformed (unknown reference or dependency, cycle, bad step)."""


_WHOLE = re.compile(r"\$(prev|steps\.[A-Za-z0-9_-]+)((?:\.[A-Za-z0-9_-]+)*)")
_EMBEDDED = re.compile(r"\$\{(prev|steps\.[A-Za-z0-9_-]+)((?:\.[A-Za-z0-9_-]+)*)\}")


def find_references(payload: Any) -> Iterator[tuple[str, str]]:
    """Each reference in ``payload`` as (``"prev"`` or a step key, the reference's text).

    It finds exactly what ``resolve_references`` replaces.
    """
    if isinstance(payload, str):
        whole = _WHOLE.fullmatch(payload)
        if whole:
            yield _root_key(whole.group(1)), payload
        elif "${" in payload:
            for match in _EMBEDDED.finditer(payload):
                yield _root_key(match.group(1)), match.group(0)
    elif isinstance(payload, dict):
        for value in payload.values():
            yield from find_references(value)
    elif isinstance(payload, list):
        for value in payload:
            yield from find_references(value)


def _root_key(root: str) -> str:
    return root if root == "prev" else root.split(".", 1)[1]


def resolve_references(payload: Any, results: Mapping[str, Any], *, prev: str | None) -> Any:
    """Replace references in ``payload`` with values from earlier results.

    Args:
        payload: the step's payload (any JSON value).
        results: earlier results by step id and by 1-based position (as text).
        prev: the key of the previous step in ``results``, or None for the first step.
    """
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
    if isinstance(payload, dict):
        return {k: resolve_references(v, results, prev=prev) for k, v in payload.items()}
    if isinstance(payload, list):
        return [resolve_references(v, results, prev=prev) for v in payload]
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
