"""Tools a language model may call: Python callables, or capabilities on the bus.

A ``Tool`` has a name the model calls it by, a description the model chooses
it by, a JSON Schema of its arguments, and ``invoke``. ``FunctionTool`` wraps
a function (its schema and argument validation come from one msgspec type
derived from the signature); ``CapabilityTool`` sends the call to another
agent as a delegated task, so the runtime's chain, deadline and cycle
protection apply to it as to any delegation.
"""

from __future__ import annotations

import abc
import functools
import hashlib
import importlib
import inspect
import re
from collections.abc import Callable
from typing import Any, overload

import anyio
import msgspec

from bus import CallboardError, ConfigError, validate_capability
from bus.micro import CapabilityInfo

from .._context import current_context
from ._errors import ToolArgumentsError, ToolUnavailable
from ._schema import (
    WRAPPED_FIELD,
    describe,
    object_schema,
    signature_struct,
    single_struct_parameter,
    wrap_as_object,
)
from .models import ToolSpec

__all__ = ["CapabilityTool", "FunctionTool", "Tool", "as_tool", "tool", "tool_name"]

_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MAX_NAME = 64


def tool_name(name: str) -> str:
    """A valid tool name (``^[A-Za-z0-9_-]{1,64}$``) for ``name``.

    Other characters become ``_``; a longer name (capability names may have
    128 characters) keeps its start plus a hash of the whole, so two long
    names that share a start still get different tool names.
    """
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "_", name) or "tool"
    if len(cleaned) <= _MAX_NAME:
        return cleaned
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{cleaned[: _MAX_NAME - 9]}_{digest}"


class Tool(abc.ABC):
    """Something the model may call: subclass it and implement ``invoke``.

    Args:
        name: the name the model calls it by (``^[A-Za-z0-9_-]{1,64}$``).
        description: what it does, so the model knows when to call it.
        parameters: the JSON Schema (an object schema) of its arguments.
    """

    def __init__(
        self, name: str, *, description: str = "", parameters: dict[str, Any] | None = None
    ) -> None:
        if not _TOOL_NAME.fullmatch(name):
            raise ConfigError(
                f"invalid tool name {name!r}: use 1-64 letters, digits, '-' or '_' "
                "(what every model provider accepts); tool_name() makes one"
            )
        self.name = name
        self.description = description
        self.parameters = parameters or {"type": "object", "properties": {}}

    def spec(self) -> ToolSpec:
        """How the model is told about this tool."""
        return ToolSpec(name=self.name, description=self.description, parameters=self.parameters)

    @abc.abstractmethod
    async def invoke(self, arguments: dict[str, Any]) -> Any:
        """Run the tool with the model's arguments; return any JSON-encodable value.

        Raises:
            ToolError: a failure the model should hear about (any exception
                is reported to the model; a ``CallboardError`` keeps its code).
        """

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class FunctionTool(Tool):
    """A Python function as a tool; build one with ``from_callable`` or ``@tool``.

    Arguments are validated by ``msgspec.convert`` into the function's
    declared types before the call, so the function never sees a bad value.
    Sync functions run in a worker thread, because one slow tool must not
    stall every agent sharing the event loop.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str,
        description: str,
        arguments_type: type[msgspec.Struct],
        parameters: dict[str, Any],
        whole_struct: bool,
    ) -> None:
        super().__init__(name, description=description, parameters=parameters)
        self.fn = fn
        self._type = arguments_type
        self._whole = whole_struct
        self._positional = [
            p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.POSITIONAL_ONLY
        ]
        self._is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            type(fn).__call__  # an object with an async __call__
        )

    @classmethod
    def from_callable(
        cls, fn: Callable[..., Any], *, name: str | None = None, description: str | None = None
    ) -> FunctionTool:
        """A tool for ``fn``: its name, docstring and signature describe it.

        A function whose only parameter is a msgspec Struct takes the model's
        arguments as that Struct, with the Struct's own schema.
        """
        tool_id = name or tool_name(getattr(fn, "__name__", type(fn).__name__))
        summary, argument_docs = describe(fn)
        struct = single_struct_parameter(fn)
        parameters = object_schema(struct) if struct is not None else {}
        whole = struct is not None and parameters.get("type") == "object"
        arguments_type = struct if whole and struct is not None else signature_struct(fn, tool_id)
        if not whole:
            parameters = object_schema(arguments_type)
        properties = parameters.get("properties", {})
        for arg, text in argument_docs.items():
            if arg in properties and text and "description" not in properties[arg]:
                properties[arg] = {**properties[arg], "description": text}
        return cls(
            fn,
            name=tool_id,
            description=summary if description is None else description,
            arguments_type=arguments_type,
            parameters=parameters,
            whole_struct=whole,
        )

    async def invoke(self, arguments: dict[str, Any]) -> Any:
        """Validate the arguments, then call the function (awaiting it if async)."""
        try:
            # not strict: models often quote numbers ("3"); the type still decides
            values = msgspec.convert(arguments, self._type, strict=False)
        except msgspec.ValidationError as exc:
            raise ToolArgumentsError(f"invalid arguments for tool {self.name}: {exc}") from None
        if self._whole:
            args: list[Any] = [values]
            kwargs: dict[str, Any] = {}
        else:
            fields = msgspec.structs.asdict(values)
            args = [fields.pop(n) for n in self._positional]
            kwargs = fields
        if self._is_async:
            return await self.fn(*args, **kwargs)
        result = await anyio.to_thread.run_sync(functools.partial(self.fn, *args, **kwargs))
        if inspect.isawaitable(result):
            return await result
        return result


class CapabilityTool(Tool):
    """A capability on the bus as a tool: calling it delegates a task.

    Delegation goes through ``current_context().delegate``, so the sub-task
    carries this task's chain (a cycle comes back as 409), never outlives
    this task's deadline, and shows up in the status stream like any task.

    Args:
        capability: the capability to delegate to.
        input_schema: its declared input schema; a non-object schema (``{}``,
            a string, a union) is wrapped as the one argument ``input``.
        description: what it does, for the model.
        name: the tool name; derived from the capability when None.
        timeout: seconds each call may take (never past this task's deadline).
    """

    def __init__(
        self,
        capability: str,
        *,
        input_schema: dict[str, Any] | None = None,
        description: str = "",
        name: str | None = None,
        timeout: float | None = None,
    ) -> None:
        self.capability = validate_capability(capability)
        parameters, self.wrapped = wrap_as_object(input_schema or {})
        super().__init__(
            name or tool_name(capability),
            description=description or f"Send a task to the {capability!r} capability.",
            parameters=parameters,
        )
        self.timeout = timeout

    @classmethod
    def from_info(cls, info: CapabilityInfo, *, name: str | None = None) -> CapabilityTool:
        """A tool for a capability found by discovery, described as it describes itself."""
        return cls(
            info.name, input_schema=info.input_schema, description=info.description, name=name
        )

    async def invoke(self, arguments: dict[str, Any]) -> Any:
        """Delegate the arguments as the task's payload (unwrapped from ``input``).

        A model that ignores the wrapper and sends other keys gets them sent
        as one object: right for a capability that takes any JSON, and
        otherwise refused by the agent with a 400 that names the problem.
        """
        payload: Any = arguments
        if self.wrapped and set(arguments) == {WRAPPED_FIELD}:
            payload = arguments[WRAPPED_FIELD]
        try:
            context = current_context()
        except CallboardError:
            raise ToolUnavailable(
                f"tool {self.name} delegates to capability {self.capability!r} over the bus, "
                "which needs a running task: host the agent with AgentHost"
            ) from None
        return await context.delegate(self.capability, payload, timeout=self.timeout)


@overload
def tool(fn: Callable[..., Any], /) -> FunctionTool: ...
@overload
def tool(
    *, name: str | None = None, description: str | None = None
) -> Callable[[Callable[..., Any]], FunctionTool]: ...
def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
) -> FunctionTool | Callable[[Callable[..., Any]], FunctionTool]:
    """Make a function a tool: ``@tool`` or ``@tool(name=..., description=...)``."""
    if fn is not None:
        return FunctionTool.from_callable(fn, name=name, description=description)
    return functools.partial(FunctionTool.from_callable, name=name, description=description)


def as_tool(value: Tool | Callable[..., Any] | str) -> Tool:
    """A ``Tool`` from a tool, a callable, or an import path ``module:function``.

    Import paths are what a daemon config can hold; they are resolved when
    the agent is built, so a typo fails at start-up, not at the first task.
    """
    if isinstance(value, Tool):
        return value
    if isinstance(value, str):
        return as_tool(_import(value))
    if callable(value):
        return FunctionTool.from_callable(value)
    raise ConfigError(f"not a tool: {value!r} (give a Tool, a callable, or 'module:function')")


def _import(path: str) -> Any:
    module_name, colon, attribute = path.partition(":")
    if not colon or not module_name or not attribute:
        raise ConfigError(f"tool {path!r}: use an import path 'module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r} for tool {path!r}: {exc}") from exc
    try:
        return functools.reduce(getattr, attribute.split("."), module)
    except AttributeError:
        raise ConfigError(f"tool {path!r}: {module_name} has no {attribute!r}") from None
