"""A small real MCP server built with the SDK's `MCPServer`, for the MCP client tests.

Run it as `python tests/fakes/mcp_server.py stdio` or `... http PORT`. Its tools:
`add`, `echo`, `fail` (raises, so the result has isError), `slow` (sleeps), `picture`
(an image and a text part), `data` (structured output only), `whoami` (the
`X-Test-Token` header on HTTP) and `die` (exits the process, to test reconnects).
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from mcp.server.mcpserver import Context, Image, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult

# One transparent pixel: enough for an ImageContent part.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"
)

server: MCPServer[Any] = MCPServer("fake")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two whole numbers."""
    return a + b


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
def fail() -> str:
    """Always fails (a ToolError's message reaches the client; other exceptions do not)."""
    raise ToolError("this tool always fails")


@server.tool()
async def slow(seconds: float) -> str:
    """Sleep, then answer."""
    await asyncio.sleep(seconds)
    return f"slept {seconds}"


@server.tool(structured_output=False)
def picture() -> list[Any]:
    """A caption and an image."""
    return ["a pixel", Image(data=PNG, format="png")]


@server.tool()
def data() -> CallToolResult:
    """Structured output only, no text part."""
    return CallToolResult(content=[], structured_content={"answer": 42})


@server.tool()
def whoami(ctx: Context) -> str:
    """The X-Test-Token request header (HTTP only)."""
    headers = ctx.headers or {}
    return headers.get("x-test-token", "no token")


@server.tool()
def die() -> str:
    """Exit the whole server process at once."""
    os._exit(3)


def main(argv: list[str]) -> None:
    if argv[:1] == ["http"]:
        server.run("streamable-http", host="127.0.0.1", port=int(argv[1]))
    else:
        print("fake MCP server starting on stdio", file=sys.stderr)
        server.run()


if __name__ == "__main__":
    main(sys.argv[1:])
