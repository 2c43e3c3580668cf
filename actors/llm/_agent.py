"""``LLMAgent``: a worker agent that answers with a language model and tools.

Each task runs the agent loop: the model reads the request, calls tools
(Python functions, or other agents' capabilities over the bus), and answers.
Every option is plain data or an object, so a daemon config can declare one::

    [[agents]]
    type = "llm"
    id = "assistant"
    [agents.options]
    system_prompt = "You answer questions; use math for arithmetic."
    delegate = ["math"]
    model = { provider = "ollama", model = "llama3.2" }
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from bus import AgentMessage, CallboardError, ConfigError, validate_capability

from .._agent import Agent, Capability
from .._context import DEFAULT_DISCOVERY_WAIT, TaskContext, current_context
from ._catalog import DEFAULT_CATALOG_TTL, CapabilityCatalog, capability_tools
from ._loop import DEFAULT_MAX_TOOL_ROUNDS, AgentLoop
from ._output import OutputContract
from ._progress import DEFAULT_PROGRESS_INTERVAL
from ._tools import CapabilityTool, Tool, as_tool
from .models import ChatMessage, ChatModel, ModelSettings, create_model

__all__ = ["DEFAULT_SYSTEM_PROMPT", "LLMAgent", "LLMInput", "Prompt"]

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant. Use the tools you are given when they help; answer concisely."
)


class Prompt(msgspec.Struct, frozen=True, kw_only=True):
    """A request to an LLM agent, with optional context.

    Attributes:
        prompt: what to do or answer.
        context: anything that helps (text, or any JSON value), put after the prompt.
    """

    prompt: str
    context: Any = None


LLMInput = str | Prompt
"""An LLM agent's input: a plain string (``"hi"``) or ``{"prompt": "hi", "context": ...}``."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class _SchemaCapability(Capability):
    """A capability whose result is described by a JSON Schema rather than a type."""

    result_schema: dict[str, Any] = dataclasses.field(default_factory=dict)

    def output_schema(self) -> dict[str, Any]:
        return self.result_schema


class LLMAgent(Agent):
    """Answers tasks with a language model that may call tools.

    Args:
        agent_id: a unique id on the bus; ``llm-<random>`` when None.
        model: a ``ChatModel``, or ``ModelSettings`` / a mapping of them (a
            config table) from which the agent creates, and owns, a client.
        system_prompt: the model's instructions.
        capability: the capability served (when ``capabilities`` is not given).
        description: what it does, for routers and other agents' models.
        keywords: words a request may contain when it wants this agent.
        capabilities: serve these instead (names, or ``Capability`` values).
        tools: Python tools: ``Tool`` objects, callables, or ``module:function`` paths.
        delegate: capabilities offered as tools, or True for every live one
            but the agent's own (found by discovery and cached).
        max_tool_rounds: model turns with tool calls before it must answer.
        output_schema: a JSON Schema the answer must match (it is returned decoded).
        output_type: a msgspec type the answer must decode into (instead of a schema).
        progress_interval: least seconds between two streamed-text progress events.
        catalog_ttl: seconds discovered capabilities are reused.
        discovery_wait: seconds a discovery listens for agents' replies.
        max_concurrency: tasks run at once before refusing with 503.
        default_timeout: seconds a task may run when its sender set no deadline.

    Attributes:
        text_tool_calls: model replies whose tool calls came written as text
            and were run as calls (see ``AgentLoop``), since the agent started.
            Hosted with metrics, each task also counts its corrections in
            ``callboard_agent_model_corrections_total`` (agent, kind).
    """

    kind = "llm"
    capabilities = (Capability(name="chat", input_type=LLMInput, output_type=str),)
    description = "Answers requests with a language model that can call tools."

    def __init__(
        self,
        agent_id: str | None = None,
        *,
        model: ChatModel | ModelSettings | Mapping[str, Any],
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        capability: str = "chat",
        description: str = "",
        keywords: Sequence[str] = (),
        capabilities: Sequence[str | Capability] | None = None,
        tools: Sequence[Tool | Callable[..., Any] | str] = (),
        delegate: Sequence[str] | bool = (),
        max_tool_rounds: int = DEFAULT_MAX_TOOL_ROUNDS,
        output_schema: dict[str, Any] | None = None,
        output_type: Any = None,
        progress_interval: float = DEFAULT_PROGRESS_INTERVAL,
        catalog_ttl: float = DEFAULT_CATALOG_TTL,
        discovery_wait: float = DEFAULT_DISCOVERY_WAIT,
        max_concurrency: int | None = None,
        default_timeout: float | None = None,
    ) -> None:
        if max_tool_rounds < 1:
            raise ConfigError(f"max_tool_rounds must be at least 1, not {max_tool_rounds}")
        if progress_interval < 0 or catalog_ttl < 0 or discovery_wait <= 0:
            raise ConfigError(
                "progress_interval and catalog_ttl must be >= 0 and discovery_wait > 0"
            )
        self.output = OutputContract.create(output_schema=output_schema, output_type=output_type)
        self.text_tool_calls = 0
        specs = [
            c if isinstance(c, Capability) else self._capability(c, description, keywords)
            for c in ([capability] if capabilities is None else capabilities)
        ]
        super().__init__(
            agent_id,
            capabilities=specs,
            max_concurrency=max_concurrency,
            default_timeout=default_timeout,
        )
        self.system_prompt = system_prompt
        self.tools: tuple[Tool, ...] = tuple(as_tool(t) for t in tools)
        if isinstance(delegate, str):
            raise ConfigError(f"delegate takes a list of capabilities, e.g. [{delegate!r}]")
        self._delegate_all = delegate is True
        self._delegate: tuple[str, ...] = (
            () if isinstance(delegate, bool) else tuple(map(validate_capability, delegate))
        )
        self.max_tool_rounds = max_tool_rounds
        self.progress_interval = progress_interval
        self.catalog = CapabilityCatalog(ttl=catalog_ttl, wait=discovery_wait)
        self.model, self._owns_model = _as_model(model)
        AgentLoop(self.model, self.tools)  # duplicate tool names fail here, at start-up

    def _capability(self, name: str, description: str, keywords: Sequence[str]) -> Capability:
        output = self.output
        common: dict[str, Any] = {
            "name": name,
            "input_type": LLMInput,
            "description": description or type(self).description,
            "keywords": tuple(keywords),
        }
        if output is None:
            return Capability(output_type=str, **common)
        if output.output_type is not None:
            return Capability(output_type=output.output_type, **common)
        return _SchemaCapability(result_schema=output.schema, **common)

    async def handle(self, task: AgentMessage) -> Any:
        """Run the agent loop on the task's prompt; return the model's answer."""
        return await self.ask(task.payload)

    async def ask(self, prompt: str | Prompt) -> Any:
        """Answer one prompt: inside a task with progress and bus tools, else without.

        Raises:
            ModelError: the model failed (502/503), or twice broke the output schema.
            ToolRoundsExceeded: the model was still calling tools at the limit.
        """
        context = _context_or_none()
        tools = [*self.tools, *await self._bus_tools(context)]
        loop = AgentLoop(
            self.model,
            tools,
            max_tool_rounds=self.max_tool_rounds,
            output=self.output,
            progress_interval=self.progress_interval,
        )
        messages = [ChatMessage.system(self.system_prompt), ChatMessage.user(_user_text(prompt))]
        try:
            if context is None:
                return await loop.run(messages)
            return await loop.run(
                messages, report=context.progress, deadline_ms=context.task.deadline_ms
            )
        finally:
            self.text_tool_calls += loop.text_tool_calls
            if context is not None:  # the agent's model_corrections series
                context.model_corrected("text_tool_calls", loop.text_tool_calls)
                context.model_corrected("repeated_calls", loop.repeated_calls)
                context.model_corrected("output_repairs", loop.output_repairs)

    async def _bus_tools(self, context: TaskContext | None) -> list[CapabilityTool]:
        """The capabilities to offer as tools for this task."""
        if not (self._delegate_all or self._delegate):
            return []
        taken = {t.name for t in self.tools}
        if context is None:  # no bus: named ones are offered, and fail clearly when called
            return capability_tools([], self._delegate, taken=taken)
        found = await self.catalog.get(context)
        if self._delegate_all:
            return capability_tools(found, None, exclude=self.capability_names, taken=taken)
        return capability_tools(found, self._delegate, taken=taken)

    async def aclose(self) -> None:
        """Close the model client if this agent created it; idempotent."""
        if self._owns_model:
            await self.model.aclose()


def _as_model(model: ChatModel | ModelSettings | Mapping[str, Any]) -> tuple[ChatModel, bool]:
    """The client, and whether the agent created it (and so must close it)."""
    if isinstance(model, ModelSettings):
        return create_model(model), True
    if isinstance(model, Mapping):
        return create_model(ModelSettings.from_mapping(model)), True
    if isinstance(model, ChatModel):
        return model, False
    raise ConfigError(
        f"model must be a ChatModel or a model table such as "
        f"{{provider = 'ollama', model = 'llama3.2'}}, not {model!r}"
    )


def _context_or_none() -> TaskContext | None:
    try:
        return current_context()
    except CallboardError:
        return None


def _user_text(prompt: str | Prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    if prompt.context is None:
        return prompt.prompt
    context = prompt.context
    if not isinstance(context, str):
        context = msgspec.json.encode(context).decode()
    return f"{prompt.prompt}\n\nContext:\n{context}"
