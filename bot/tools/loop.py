"""Running one round of tool calls: look up, parse, run with a timeout, cap, never raise.

Whatever goes wrong with a call (an unknown tool, arguments that are not a JSON object,
a `ToolError`, a timeout, a crash) becomes an "Error: …" result the model can read and
react to; the reply goes on. Only cancellation (shutdown) propagates.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from bot import tokens
from bot.model import ToolCall
from bot.tools import Tool, ToolContext, ToolError

log = logging.getLogger("teambot.tools")

RESULT_TOKENS = 3000  # the most one result may add to the prompt
MIN_RESULT_TOKENS = 100  # even a prompt near its budget hears at least this much
CHARS_PER_TOKEN_MAX = 8  # no text has more characters per token than this (for pre-cuts)
LIMIT_NOTE = "[Tool limit reached for this reply: answer now with what you have.]"


class ToolSource(Protocol):
    """Tools that come and go (MCP servers connect, die and reconnect)."""

    def start(self) -> None:
        """Begin connecting in the background; returns at once."""
        ...

    def tools(self) -> list[Tool]:
        """The tools available right now."""
        ...

    async def aclose(self) -> None: ...


class Toolbox:
    """The tools a reply may offer: the enabled built-ins, then each source's, by name."""

    def __init__(self, builtins: Sequence[Tool], sources: Sequence[ToolSource] = ()) -> None:
        self.builtins = tuple(builtins)
        self.sources = tuple(sources)

    def offered(self) -> dict[str, Tool]:
        # A stable order keeps the request's tool list, and so the prompt, byte-stable.
        extra = sorted(
            (tool for source in self.sources for tool in source.tools()),
            key=lambda tool: tool.spec.name,
        )
        return {tool.spec.name: tool for tool in (*self.builtins, *extra)}


def activity(calls: Sequence[ToolCall], tools: Mapping[str, Tool], ctx: ToolContext) -> str:
    """The line people see while `calls` run: the first call's, and how many more."""
    lines = []
    for call in calls:
        tool = tools.get(call.name)
        args = parse_arguments(call.arguments)
        if tool is not None and isinstance(args, dict):
            try:
                lines.append(tool.activity(args, ctx))
            except Exception:  # an activity line is never worth failing a reply over
                lines.append(f"Using {call.name}…")
    if not lines:
        return "Working…"
    more = len(lines) - 1
    return lines[0] + (f" (and {more} more)" if more else "")


def parse_arguments(raw: str) -> dict[str, Any] | str:
    """The arguments object, or why it is not one."""
    try:
        args = json.loads(raw or "{}")
    except ValueError:
        return "the arguments are not valid JSON"
    return args if isinstance(args, dict) else "the arguments must be a JSON object"


async def run_call(call: ToolCall, tool: Tool | None, ctx: ToolContext, seconds: float) -> str:
    if tool is None:
        return f"Error: there is no tool named {call.name!r}."
    args = parse_arguments(call.arguments)
    if isinstance(args, str):
        return f"Error: {args}."
    try:
        async with asyncio.timeout(seconds):
            result = await tool.run(args, ctx)
    except ToolError as error:
        log.info("tool %s: %s", call.name, error)
        return f"Error: {error}"
    except TimeoutError:
        log.warning("tool %s timed out after %g s", call.name, seconds)
        return f"Error: {call.name} took longer than {seconds:g} s and was stopped."
    except Exception as error:
        log.warning("tool %s failed: %s: %s", call.name, type(error).__name__, error)
        return f"Error: {call.name} failed ({type(error).__name__})."
    if not isinstance(result, str):
        result = str(result)
    return result if result.strip() else "(no result)"


def cap(text: str, limit: int) -> str:
    """`text` cut to about `limit` tokens, with a marker saying it was."""
    if len(text) <= limit:  # at least one character per token: surely fits
        return text
    text_cut = text[: limit * CHARS_PER_TOKEN_MAX]
    count = tokens.count(text_cut)
    if count <= limit and len(text_cut) == len(text):
        return text
    keep = int(len(text_cut) * min(1.0, limit / max(count, 1)) * 0.95)
    while keep and tokens.count(text[:keep]) > limit:
        keep = int(keep * 0.9)
    return (
        f"{text[:keep]}\n[truncated: the result was too long; this is its first {keep} characters]"
    )


async def run_round(
    calls: Sequence[ToolCall],
    tools: Mapping[str, Tool],
    ctx: ToolContext,
    *,
    seconds: float,
    room: int,
) -> tuple[str, ...]:
    """The results of `calls`, run in parallel, each capped so together they fit `room`
    tokens of prompt (and no one over RESULT_TOKENS)."""
    results = await asyncio.gather(
        *(run_call(call, tools.get(call.name), ctx, seconds) for call in calls)
    )
    share = max(MIN_RESULT_TOKENS, min(RESULT_TOKENS, room // max(len(calls), 1)))
    return tuple(cap(result, share) for result in results)
