"""The gateway's configuration file (TOML), validated into Structs.

The file names the capabilities the gateway exposes, and nothing else is
reachable through it: a capability that is live on the bus but not listed is
neither a tool nor a skill, and a call to it is refused.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import msgspec

from bus import (
    DEFAULT_PREFIX,
    ConfigError,
    load_toml_file,
    parse_metrics_address,
    validate_capability,
)

__all__ = [
    "DEFAULT_HTTP_ADDRESS",
    "DEFAULT_MAX_TIMEOUT",
    "DEFAULT_TOKEN_ENV",
    "ExposedCapability",
    "GatewayConfig",
    "load_gateway_config",
]

DEFAULT_HTTP_ADDRESS = "127.0.0.1:8765"
"""Where MCP (``/mcp``) and A2A (``/a2a``) are served unless the file says otherwise."""
DEFAULT_TOKEN_ENV = "CALLBOARD_GATEWAY_TOKEN"
"""The environment variable that holds the bearer token HTTP callers must send."""
DEFAULT_MAX_TIMEOUT = 300.0
"""The longest deadline a caller may ask for, in seconds."""


class ExposedCapability(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One ``[capabilities.<name>]`` entry.

    Attributes:
        description: the tool's (and skill's) description; when None, the one
            the agents declare in discovery (a claim of theirs: set it here
            when the agents of the account are not all trusted).
        timeout: seconds a call may take when the caller does not say; the
            gateway's ``default_timeout`` when None.
        durable: run its calls as durable tasks (JetStream; the daemons
            serving it need ``[durable]``); the gateway's ``durable`` when None.
    """

    description: str | None = None
    timeout: Annotated[float, msgspec.Meta(gt=0)] | None = None
    durable: bool | None = None


class GatewayConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The whole gateway config file.

    Attributes:
        capabilities: the capabilities exposed, by name (at least one).
        nats: connection options (``url``, ``user``, ``password``, ``creds``, ...).
        prefix: the subject prefix of the system.
        name: the ``Agent-Sender`` of the tasks the gateway sends.
        http_address: where MCP and A2A are served over HTTP (``HOST:PORT``).
        public_url: the URL callers reach the gateway at (the A2A card's
            ``url``); ``http://<http_address>`` when None.
        token_env: the environment variable holding the bearer token.
        default_timeout: seconds a call may take when neither the caller nor
            its capability's entry says.
        max_timeout: the longest deadline a caller may ask for.
        metrics_address: serve ``/metrics`` and ``/healthz`` here; None serves nothing.
        durable: run calls as durable tasks unless a capability's entry says
            otherwise; an A2A task of a durable capability is its durable
            record, readable after a restart and by every replica.
    """

    capabilities: dict[str, ExposedCapability]
    nats: dict[str, Any] = msgspec.field(default_factory=dict)
    prefix: str = DEFAULT_PREFIX
    name: str = "gateway"
    http_address: str = DEFAULT_HTTP_ADDRESS
    public_url: str | None = None
    token_env: str = DEFAULT_TOKEN_ENV
    default_timeout: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    max_timeout: Annotated[float, msgspec.Meta(gt=0)] = DEFAULT_MAX_TIMEOUT
    metrics_address: str | None = None
    durable: bool = False

    def is_durable(self, capability: str) -> bool:
        """Whether calls to ``capability`` are durable tasks."""
        entry = self.capabilities.get(capability)
        if entry is not None and entry.durable is not None:
            return entry.durable
        return self.durable

    @property
    def durable_capabilities(self) -> list[str]:
        """The exposed capabilities whose calls are durable tasks."""
        return [name for name in self.capabilities if self.is_durable(name)]

    def timeout_for(self, capability: str, asked: float | None) -> float:
        """The seconds a call may take: what the caller asked, up to ``max_timeout``."""
        entry = self.capabilities.get(capability)
        default = entry.timeout if entry is not None and entry.timeout else self.default_timeout
        if asked is None or not asked > 0:  # NaN too: it compares false to everything
            return min(default, self.max_timeout)
        return min(asked, self.max_timeout)

    def token(self, environ: Mapping[str, str] | None = None) -> str:
        """The bearer token from the environment.

        Raises:
            ConfigError: it is not set (an HTTP gateway never runs without one).
        """
        value = (os.environ if environ is None else environ).get(self.token_env, "")
        if len(value) < 16:
            raise ConfigError(
                f"set {self.token_env} to the bearer token HTTP callers must send "
                "(at least 16 characters, e.g. `openssl rand -hex 32`): the gateway "
                "refuses to serve HTTP without one"
            )
        return value


def load_gateway_config(path: str | Path) -> GatewayConfig:
    """Read and validate a gateway config file."""
    config = load_toml_file(path, GatewayConfig, what="gateway config")
    if not config.capabilities:
        raise ConfigError(
            f"gateway config {path} exposes no capabilities: add e.g. [capabilities.math]"
        )
    try:
        for name in config.capabilities:
            validate_capability(name)
        parse_metrics_address(config.http_address)
        if config.metrics_address is not None:
            parse_metrics_address(config.metrics_address)
    except ConfigError as exc:
        raise ConfigError(f"invalid gateway config {path}: {exc.message}") from exc
    return config
