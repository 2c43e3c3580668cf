"""The shape an agent's final answer must have, and its check.

An agent that declares an output type or schema promises its callers JSON of
that shape; models break such promises now and then, so the answer is
checked before it leaves, and the check's message is what the model gets to
fix it. A plain JSON Schema is checked only as far as the standard library
allows (JSON, top-level type, required keys): no schema validator dependency.
"""

from __future__ import annotations

from typing import Any

import msgspec

from bus import ConfigError

from ._schema import object_schema

__all__ = ["InvalidOutput", "OutputContract"]

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


class InvalidOutput(ValueError):
    """The answer does not fit the contract; the message says how."""


class OutputContract:
    """A final answer's required shape: a msgspec type, or a JSON Schema.

    Attributes:
        schema: the JSON Schema sent to the model (structured output).
        output_type: the msgspec type the answer decodes into, if one was given.
    """

    def __init__(self, schema: dict[str, Any], output_type: Any = None) -> None:
        self.schema = schema
        self.output_type = output_type
        self._decoder = msgspec.json.Decoder(output_type) if output_type is not None else None

    @classmethod
    def create(
        cls, *, output_schema: dict[str, Any] | None = None, output_type: Any = None
    ) -> OutputContract | None:
        """The contract for an agent's options, or None when the answer is free text."""
        if output_schema is not None and output_type is not None:
            raise ConfigError(
                "give output_schema (a JSON Schema) or output_type (a msgspec type), not both"
            )
        if output_type is not None:
            return cls(object_schema(output_type), output_type)  # ConfigError if not a type
        if output_schema is not None:
            if not isinstance(output_schema, dict):
                raise ConfigError(f"output_schema must be a JSON Schema object: {output_schema!r}")
            return cls(output_schema)
        return None

    def parse(self, text: str) -> Any:
        """The answer's value, decoded and checked.

        Raises:
            InvalidOutput: it is not JSON, or not of the declared shape.
        """
        body = _strip_fence(text)
        if self._decoder is not None:
            try:
                return self._decoder.decode(body)
            except msgspec.ValidationError as exc:
                raise InvalidOutput(f"the JSON does not match the output type: {exc}") from None
            except (msgspec.DecodeError, RecursionError) as exc:
                raise InvalidOutput(f"the answer is not JSON: {exc}") from None
        try:
            value = msgspec.json.decode(body)
        except (msgspec.DecodeError, RecursionError) as exc:  # nested past msgspec's limit
            raise InvalidOutput(f"the answer is not JSON: {exc}") from None
        _check(value, self.schema)
        return value


def _check(value: Any, schema: dict[str, Any]) -> None:
    expected = schema.get("type")
    names = [expected] if isinstance(expected, str) else expected
    if isinstance(names, list):
        kinds = tuple(t for n in names for t in _JSON_TYPES.get(n, ()))
        is_bool = isinstance(value, bool) and "boolean" not in names
        if kinds and (not isinstance(value, kinds) or is_bool):
            raise InvalidOutput(
                f"expected JSON of type {' or '.join(names)}, got {_json_type(value)}"
            )
    required = schema.get("required", [])
    if isinstance(value, dict) and isinstance(required, list):
        missing = [key for key in required if key not in value]
        if missing:
            raise InvalidOutput(f"the JSON object lacks required key(s): {', '.join(missing)}")


def _json_type(value: Any) -> str:
    for name, kinds in _JSON_TYPES.items():
        if isinstance(value, kinds) and not (isinstance(value, bool) and name != "boolean"):
            return name
    return type(value).__name__


def _strip_fence(text: str) -> str:
    """The text without a surrounding Markdown code fence, which models add unasked."""
    body = text.strip()
    if body.startswith("```") and body.endswith("```") and "\n" in body:
        body = body[body.index("\n") + 1 : -3].strip()
    return body
