"""Tools the model may call while it answers.

A `Tool` has a `ToolSpec` (what the model is told), an `activity` line (what people see
while it runs) and `run`, which returns text for the model or raises `ToolError`. The
built-ins read the team's history through the store within the asker's `Scope`
(`bot/tools/builtin.py`); MCP servers add theirs (`bot/tools/mcp_servers.py`). The
pipeline runs the loop (`bot/tools/loop.py`).

Exceptions: `ToolError` is a failure the model should hear about (bad arguments, nothing
found, a server's error); anything else a tool raises is a bug or an outage, logged in
one line and reported to the model as a generic error. Neither ends the reply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

from bot.store import PlaceInfo, Scope, Store, StoredMessage
from bot.types import ConversationKey, Message, Place


class ToolError(Exception):
    """A tool could not do what was asked; the message is told to the model."""


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON Schema of the arguments object

    def schema(self) -> dict[str, Any]:
        """The entry of a Mistral request's `tools` list."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


class Links(Protocol):
    """A platform's message links: building permalinks and reading pasted ones."""

    def permalink(self, conversation: str, platform_id: str) -> str | None:
        """The link to a stored message (None when it cannot be built)."""
        ...

    def parse(self, url: str) -> tuple[str, str] | None:
        """(conversation key prefix, platform id) of a message link, or None."""
        ...


@dataclass(frozen=True)
class ToolContext:
    """What a tool call knows about who asked, and where."""

    message: Message
    scope: Scope
    store: Store
    timezone: str  # IANA name, the default for dates the model reads and writes
    links: Links | None = None


class Tool(Protocol):
    @property
    def spec(self) -> ToolSpec: ...

    def activity(self, args: dict[str, Any], ctx: ToolContext) -> str:
        """One line for people while it runs, e.g. 'Searching #general for “release”…'."""
        ...

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> str:
        """The result for the model; raise ToolError for a failure it should hear about."""
        ...


def parse_link(links: Links | None, text: str) -> tuple[str, str] | None:
    """(conversation key prefix, platform id) of a pasted message link, or None. Slack
    wraps links as <url|text>; the wrapping goes first."""
    url = re.sub(r"^<|>$|\|.*$", "", text.strip())
    return links.parse(url) if links is not None else None


def started_thread(message: StoredMessage) -> str | None:
    """The conversation key of the thread a top-level message starts (its replies live
    there whether or not it has any), or None for a message inside a thread."""
    platform, space, channel, thread = message.conversation.split(":", 3)
    if thread or not message.platform_id:
        return None
    return f"{platform}:{space}:{channel}:{message.platform_id}"


def place_info(key: ConversationKey, place: Place | None) -> PlaceInfo:
    """The place conversation `key` lives in, as the store keeps it; a conversation whose
    adapter could not tell is a private place of its own channel (readable only there)."""
    place = place or Place(key.channel)
    return PlaceInfo(f"{key.platform}:{key.space}:{place.id}", place.name, place.visibility)


def scope_for(key: ConversationKey, place: Place | None, spaces: tuple[str, ...]) -> Scope:
    """What someone asking in `key` (at `place`, reading the public channels of `spaces`,
    by default the key's own space) may read through tools, searches and summaries."""
    return Scope(key.platform, place_info(key, place).key, spaces or (key.space,))


def place_of(message: Message) -> PlaceInfo:
    return place_info(message.key, message.place)


def scope_of(message: Message) -> Scope:
    """What the author of `message` may read."""
    return scope_for(message.key, message.place, message.spaces)
