"""The daemon's configuration file (TOML), validated into Structs.

Unknown keys are errors, so a typo (``replica = 2``) is reported with its
location instead of being silently ignored.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import msgspec

from bus import DEFAULT_PREFIX, ConfigError, load_toml_file, parse_metrics_address
from bus.durable import DurableSettings
from bus.micro import SERVICE_NAME_RULE, valid_service_name

from ._agent import Agent
from ._host import DEFAULT_GRACE_PERIOD, DEFAULT_HEARTBEAT_INTERVAL
from ._runner import DEFAULT_MAX_DELEGATION_DEPTH, DEFAULT_MAX_PAYLOAD
from .bridges import BRIDGE_AGENTS, bridge_agent_type
from .builtins import BUILTIN_AGENTS

__all__ = [
    "AgentSlot",
    "AgentSpec",
    "DaemonConfig",
    "agent_slots",
    "build_agent",
    "build_agents",
    "load_config",
    "resolve_agent_type",
]


class AgentSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One ``[[agents]]`` entry.

    Attributes:
        type: a built-in agent's name (math, echo, summarize) or ``module:Class``.
        id: the agent id; with replicas, ``<id>-1``, ``<id>-2``, ...
        replicas: instances to run; they share the capability's queue group.
        max_concurrency: tasks each instance runs at once.
        default_timeout: seconds a task may run when its sender set no deadline.
        options: keyword arguments for the agent class's constructor.
    """

    type: str
    id: str | None = None
    replicas: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 1
    max_concurrency: Annotated[int, msgspec.Meta(ge=1)] | None = None
    default_timeout: Annotated[float, msgspec.Meta(gt=0)] | None = None
    options: dict[str, Any] = msgspec.field(default_factory=dict)


class DaemonConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The whole daemon config file.

    Attributes:
        nats: connection options (``url``, ``user``, ``creds``, ``tls_ca``, ...).
        prefix: the subject prefix of the system.
        grace_period: seconds to finish in-flight tasks on shutdown.
        heartbeat_interval: seconds between heartbeats.
        max_delegation_depth: longest delegation chain accepted.
        max_payload: largest task payload accepted, in bytes.
        metrics_address: serve ``/metrics`` and ``/healthz`` here (``PORT`` or
            ``HOST:PORT``, loopback unless a host is written); None serves nothing.
        durable: a ``[durable]`` section serves durable tasks from JetStream
            too (``DurableSettings``; an empty section takes the defaults);
            without it the agents serve core request-reply only.
        agents: the agents to run.
    """

    nats: dict[str, Any] = msgspec.field(default_factory=dict)
    prefix: str = DEFAULT_PREFIX
    grace_period: Annotated[float, msgspec.Meta(ge=0)] = DEFAULT_GRACE_PERIOD
    heartbeat_interval: Annotated[float, msgspec.Meta(gt=0)] = DEFAULT_HEARTBEAT_INTERVAL
    max_delegation_depth: Annotated[int, msgspec.Meta(ge=1)] = DEFAULT_MAX_DELEGATION_DEPTH
    max_payload: Annotated[int, msgspec.Meta(ge=1)] = DEFAULT_MAX_PAYLOAD
    metrics_address: str | None = None
    durable: DurableSettings | None = None
    agents: list[AgentSpec] = msgspec.field(default_factory=list)


def load_config(path: str | Path) -> DaemonConfig:
    """Read and validate a daemon config file."""
    config = load_toml_file(path, DaemonConfig, what="config")
    if not config.agents:
        raise ConfigError(f"config {path} has no [[agents]] entries: nothing to run")
    if config.metrics_address is not None:
        try:
            parse_metrics_address(config.metrics_address)
        except ConfigError as exc:
            raise ConfigError(f"invalid config {path}: {exc.message}") from exc
    return config


def resolve_agent_type(name: str) -> type[Agent]:
    """A built-in agent by name, or a class by import path ``module:Class``."""
    if name in BUILTIN_AGENTS:
        return BUILTIN_AGENTS[name]
    if name in BRIDGE_AGENTS:
        return bridge_agent_type(name)
    if ":" not in name:
        known = ", ".join(sorted(BUILTIN_AGENTS))
        raise ConfigError(
            f"unknown agent type {name!r}: use a built-in ({known}) or 'module:Class'"
        )
    module_name, _, class_name = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r} for agent type {name!r}: {exc}") from exc
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Agent)):
        raise ConfigError(f"{name!r} is not an Agent subclass")
    return cls


@dataclass(frozen=True)
class AgentSlot:
    """One agent of a config after replica expansion: what a reload compares.

    Attributes:
        key: the agent id, or ``<type>#<n>`` for the n-th agent of that type
            whose id is generated (so a reload can tell it is the same one).
        agent_id: the id to create it with; None generates one.
        spec: the ``[[agents]]`` entry it comes from.
    """

    key: str
    agent_id: str | None
    spec: AgentSpec

    def differs_from(self, other: AgentSlot) -> list[str]:
        """The fields of the spec that changed: an agent can only be replaced for them."""
        fields = ("type", "options", "max_concurrency", "default_timeout")
        return [f for f in fields if getattr(self.spec, f) != getattr(other.spec, f)]


def agent_slots(config: DaemonConfig) -> list[AgentSlot]:
    """Every agent (and replica) the config asks for, without creating them yet."""
    slots: list[AgentSlot] = []
    generated: dict[str, int] = {}
    for spec in config.agents:
        for n in range(1, spec.replicas + 1):
            agent_id = spec.id
            if agent_id and spec.replicas > 1:
                agent_id = f"{agent_id}-{n}"
            if agent_id:
                slots.append(AgentSlot(agent_id, agent_id, spec))
                continue
            generated[spec.type] = generated.get(spec.type, 0) + 1
            slots.append(AgentSlot(f"{spec.type}#{generated[spec.type]}", None, spec))
    keys = [s.key for s in slots]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise ConfigError(f"agent ids must be unique; repeated: {', '.join(duplicates)}")
    return slots


def build_agent(slot: AgentSlot) -> Agent:
    """Create the agent of one slot."""
    spec = slot.spec
    cls = resolve_agent_type(spec.type)
    try:
        agent = cls(
            slot.agent_id,
            max_concurrency=spec.max_concurrency,
            default_timeout=spec.default_timeout,
            **spec.options,
        )
    except TypeError as exc:
        raise ConfigError(f"cannot create agent of type {spec.type!r}: {exc}") from exc
    if not valid_service_name(agent.kind):
        # The kind is the agent's NATS micro service name: natscli aborts a whole
        # `nats micro ls` on one reply whose name breaks the pattern.
        raise ConfigError(
            f"agent type {spec.type!r} has kind {agent.kind!r}: a kind is its service name "
            f"in NATS micro discovery, so use {SERVICE_NAME_RULE}"
        )
    return agent


def build_agents(config: DaemonConfig) -> list[Agent]:
    """Instantiate every agent (and replica) the config asks for."""
    return [build_agent(slot) for slot in agent_slots(config)]
