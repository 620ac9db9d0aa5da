"""The built-in tools: search the team's history, read linked messages, tell the time.

Everything they read goes through the store with the asker's `Scope`, which is where
visibility is enforced; this module only shapes arguments and results.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.store import PlaceInfo, SearchQuery, StoredMessage
from bot.tools import Tool, ToolContext, ToolError, ToolSpec, parse_link, started_thread

QUOTED_MAX = 60  # characters of a query shown in the activity line
TEXT_MAX = 600  # characters of one message shown to the model
NOT_AVAILABLE = (
    "That message is not available: it is outside what can be read from here, "
    "was deleted, or was never seen by the bot."
)

SEARCH = ToolSpec(
    "search_messages",
    "Full-text search over this team's chat history (messages people wrote where the bot "
    "is present). Returns the best matches, each with author, time, channel and link. "
    "Use it for questions about what was said, decided or reported before.",
    {
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "Words to look for."},
            "channel": {
                "type": "string",
                "description": "Only this channel (name like general, without #).",
            },
            "author": {"type": "string", "description": "Only messages by this person."},
            "after": {"type": "string", "description": "ISO date or date-time; newer only."},
            "before": {"type": "string", "description": "ISO date or date-time; older only."},
            "limit": {"type": "integer", "description": "How many results (1-25, default 10)."},
        },
        "required": ["query"],
    },
)

READ = ToolSpec(
    "read_messages",
    "Read stored messages: the thread or the messages around a message link someone "
    "pasted (Discord or Slack), or a channel's messages around a time.",
    {
        "type": "object",
        "properties": {
            "link": {"type": "string", "description": "A message link."},
            "channel": {"type": "string", "description": "A channel name, when no link."},
            "around": {
                "type": "string",
                "description": "With channel: ISO date-time to read around (default: now).",
            },
            "limit": {"type": "integer", "description": "How many messages (1-50, default 20)."},
        },
    },
)

TIME = ToolSpec(
    "current_time",
    "The current date and time.",
    {
        "type": "object",
        "properties": {
            "timezone": {
                "type": "string",
                "description": "IANA time zone, e.g. Europe/Paris (default: the team's).",
            }
        },
    },
)


# Argument helpers: a bad argument is a ToolError the model can correct.


def text_arg(args: dict[str, Any], name: str, *, required: bool = False) -> str:
    value = args.get(name)
    if value is None or value == "":
        if required:
            raise ToolError(f"`{name}` is required")
        return ""
    if not isinstance(value, str | int | float):
        raise ToolError(f"`{name}` must be a string")
    return str(value).strip()


def int_arg(args: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = args.get(name)
    if value is None:
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ToolError(f"`{name}` must be a whole number") from None
    return max(low, min(high, number))


def time_arg(args: dict[str, Any], name: str, zone: ZoneInfo) -> float | None:
    raw = text_arg(args, name)
    if not raw:
        return None
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ToolError(f"`{name}` must be an ISO date or date-time, like 2026-12-01") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=zone)
    return when.timestamp()


def zone_of(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolError(f"unknown time zone {name!r}") from None


def quoted(text: str) -> str:
    short = text if len(text) <= QUOTED_MAX else text[: QUOTED_MAX - 1] + "…"
    return f"“{short}”"


# Results as the model reads them


def channel_name(place: PlaceInfo) -> str:
    if place.visibility == "dm":
        return "a direct message"
    return f"#{place.name}" if place.name else "a channel"


def line(message: StoredMessage, where: str, ctx: ToolContext, zone: ZoneInfo) -> str:
    when = datetime.fromtimestamp(message.created_at, zone).strftime("%Y-%m-%d %H:%M")
    who = "teambot" if message.role == "assistant" else message.author_name or message.author_id
    link = ""
    if ctx.links is not None and message.platform_id:
        link = ctx.links.permalink(message.conversation, message.platform_id) or ""
    text = " ".join(message.text.split())
    if len(text) > TEXT_MAX:
        text = text[: TEXT_MAX - 1] + "…"
    head = " · ".join(part for part in (when, who, where, link) if part)
    return f"- {head}\n  {text or '(no text)'}"


async def find_place(ctx: ToolContext, name: str) -> PlaceInfo:
    """The readable channel called `name` (with or without #, or its id)."""
    wanted = name.strip().lstrip("#").lower()
    places = await ctx.store.places(ctx.scope)
    for place in places:
        if wanted in (place.name.lower(), place.key.rsplit(":", 1)[-1].lower()):
            return place
    known = ", ".join(f"#{p.name}" for p in places if p.name and p.visibility != "dm")
    raise ToolError(f"no channel {name!r} can be read from here. Channels: {known or 'none'}")


class SearchMessages:
    spec = SEARCH

    def activity(self, args: dict[str, Any], ctx: ToolContext) -> str:
        query = quoted(str(args.get("query") or ""))
        channel = str(args.get("channel") or "").strip().lstrip("#")
        return f"Searching #{channel} for {query}…" if channel else f"Searching for {query}…"

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> str:
        zone = zone_of(ctx.timezone)
        text = text_arg(args, "query", required=True)
        channel = text_arg(args, "channel")
        query = SearchQuery(
            text=text,
            place=(await find_place(ctx, channel)).key if channel else None,
            author=text_arg(args, "author") or None,
            after=time_arg(args, "after", zone),
            before=time_arg(args, "before", zone),
            limit=int_arg(args, "limit", 10, 1, 25),
        )
        hits = await ctx.store.search(ctx.scope, query)
        if not hits:
            return f"No messages found for {quoted(text)}."
        lines = [f"{len(hits)} messages found for {quoted(text)}, best first:"]
        for hit in hits:
            where = channel_name(hit.place)
            if hit.place.key == ctx.scope.place:
                where += " (here)"
            lines.append(line(hit.message, where, ctx, zone))
        return "\n".join(lines)


class ReadMessages:
    spec = READ

    def activity(self, args: dict[str, Any], ctx: ToolContext) -> str:
        channel = str(args.get("channel") or "").strip().lstrip("#")
        return f"Reading #{channel}…" if channel and not args.get("link") else "Reading messages…"

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> str:
        zone = zone_of(ctx.timezone)
        limit = int_arg(args, "limit", 20, 1, 50)
        link, channel = text_arg(args, "link"), text_arg(args, "channel")
        if link:
            rows = await self._linked(link, limit, ctx)
        elif channel:
            place = await find_place(ctx, channel)
            when = time_arg(args, "around", zone)
            half = limit // 2 if when is not None else limit
            rows = await ctx.store.around(
                ctx.scope, place.key + ":", time=when, before=half, after=limit - half
            )
        else:
            raise ToolError("give a message `link`, or a `channel`")
        if not rows:
            return NOT_AVAILABLE if link else "No stored messages there."
        return "\n".join(line(row, "", ctx, zone) for row in rows)

    async def _linked(self, link: str, limit: int, ctx: ToolContext) -> list[StoredMessage]:
        located = parse_link(ctx.links, link)
        if located is None:
            raise ToolError("that is not a message link of this platform")
        found = await ctx.store.locate(ctx.scope, *located)
        if found is None:
            return []
        thread = started_thread(found)
        if thread is not None:
            replies = await ctx.store.around(ctx.scope, thread, before=limit - 1)
            if replies:
                return [found, *(r for r in replies if not r.copied)]
        half = limit // 2
        return await ctx.store.around(
            ctx.scope, found.conversation, message_id=found.id, before=half, after=limit - half
        )


class CurrentTime:
    spec = TIME

    def activity(self, args: dict[str, Any], ctx: ToolContext) -> str:
        return "Checking the time…"

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> str:
        zone = zone_of(text_arg(args, "timezone") or ctx.timezone)
        now = datetime.now(zone)
        return now.strftime(f"%Y-%m-%d %H:%M (%A), {zone.key} (UTC%z)")


BUILTINS: dict[str, Tool] = {
    tool.spec.name: tool for tool in (SearchMessages(), ReadMessages(), CurrentTime())
}
