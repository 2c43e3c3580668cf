"""An MCP server written with the official ``mcp`` SDK (FastMCP), for the bridge tests.

Run as ``python tests/mcp_tool_server.py`` it speaks MCP on stdio; with
``http PORT`` it serves streamable HTTP on 127.0.0.1:PORT instead.
"""

from __future__ import annotations

import sys

from mcp.server.fastmcp import Context, FastMCP

server = FastMCP("callboard-test-tools")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def shout(text: str) -> str:
    """Say it in capitals."""
    return text.upper()


@server.tool()
async def count(to: int, ctx: Context) -> str:  # type: ignore[type-arg]
    """Count up, reporting each number as progress."""
    for n in range(1, to + 1):
        await ctx.report_progress(n, to, f"counted {n}")
    return f"counted to {to}"


@server.tool()
def broken() -> str:
    """Always fails."""
    raise ValueError("broken on purpose")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "http":
        server.settings.host = "127.0.0.1"
        server.settings.port = int(sys.argv[2])
        server.run("streamable-http")
    else:
        server.run()
