"""Tool calls a model wrote as text instead of as structured calls.

Small local models often print a call as the whole of their answer, e.g.
``{"name": "math", "arguments": {"expression": "1234*5678"}}``, bare, in a
```` ```json ```` fence, or inside the ``<tool_call>`` tags of their chat
template, and the server passes it on as content. Such a reply is read as
calls, and nothing looser: the whole reply (whitespace aside) must be one
JSON object, one fenced JSON object, or ``<tool_call>`` blocks of one object
each; every object must have exactly ``name`` and ``arguments`` (or
``parameters``, the other common spelling), name an offered tool, and its
arguments must validate against that tool's JSON Schema. Anything else stays
the model's answer.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from typing import Any

try:  # the llm extra; without it no text is taken for a tool call (nothing looser)
    import jsonschema
except ModuleNotFoundError as exc:  # pragma: no cover - the test extra installs it
    if exc.name != "jsonschema":
        raise
    jsonschema = None
import msgspec

from actors.llm.models import ToolCall

from ._tools import Tool

__all__ = ["text_tool_calls"]

_FENCE = re.compile(r"```(?:json)?[ \t]*\n(?P<body>.*?)\n?```", re.DOTALL)
_TAGGED = re.compile(r"<tool_call>(?P<body>.*?)</tool_call>", re.DOTALL)
_ARGUMENT_KEYS = ("arguments", "parameters")
_call_ids = itertools.count(1)


def text_tool_calls(content: str, tools: Mapping[str, Tool]) -> tuple[ToolCall, ...]:
    """The calls ``content`` writes as text, or () when it is not exactly that."""
    if not tools:
        return ()
    text = content.strip()
    if not text:
        return ()
    bodies: list[str]
    if text.startswith("<tool_call>"):
        bodies = [m.group("body") for m in _TAGGED.finditer(text)]
        if not bodies or _TAGGED.sub("", text).strip():
            return ()
    elif (fenced := _FENCE.fullmatch(text)) is not None:
        bodies = [fenced.group("body")]
    else:
        bodies = [text]
    calls: list[ToolCall] = []
    for body in bodies:
        call = _call(_unfenced(body.strip()), tools)
        if call is None:
            return ()
        calls.append(call)
    return tuple(calls)


def _unfenced(body: str) -> str:
    fenced = _FENCE.fullmatch(body)
    return fenced.group("body").strip() if fenced is not None else body


def _call(body: str, tools: Mapping[str, Tool]) -> ToolCall | None:
    if not (body.startswith("{") and body.endswith("}")):
        return None
    try:
        value: Any = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):  # nested past msgspec's limit: no call
        return None
    if not isinstance(value, dict) or len(value) != 2 or "name" not in value:
        return None
    key = next((k for k in _ARGUMENT_KEYS if k in value), None)
    name, arguments = value["name"], value.get(key) if key else None
    if not isinstance(name, str) or not isinstance(arguments, dict):
        return None
    tool = tools.get(name)
    if tool is None or jsonschema is None:
        return None
    try:
        jsonschema.validate(arguments, tool.parameters)
    except (jsonschema.ValidationError, jsonschema.SchemaError):
        return None
    return ToolCall(id=f"text_call_{next(_call_ids)}", name=name, arguments=arguments)
