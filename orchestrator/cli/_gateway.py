"""``callboard gateway``: the mesh seen from outside, over MCP and A2A (orchestrator.gateway)."""

from __future__ import annotations

import argparse

from bus.observability import Announcer
from orchestrator.gateway._command import add_gateway_arguments, run_gateway
from orchestrator.gateway._config import load_gateway_config

from ._common import Subcommands, connect_flags

__all__ = ["cmd_gateway", "register"]


def register(commands: Subcommands) -> None:
    """Add ``gateway`` and its flags to the parser."""
    parser = commands.add("gateway", cmd_gateway, "serve the live capabilities over MCP and A2A")
    add_gateway_arguments(parser)


async def cmd_gateway(args: argparse.Namespace) -> int:
    """Run the gateway of a config file until SIGTERM/SIGINT."""
    config = load_gateway_config(args.config)
    if getattr(args, "prefix", None) not in (None, "agents"):
        config.prefix = args.prefix
    if args.http is not None:
        config.http_address = args.http
    if args.metrics is not None:
        config.metrics_address = args.metrics
    announce = Announcer(getattr(args, "log_format", "text"), logger="callboard.gateway")
    await run_gateway(config, flags=connect_flags(args), stdio=args.stdio, announce=announce)
    return 0
