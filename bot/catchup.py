"""What `summarize` reads: the span of messages a request names, within the asker's scope.

In a thread: the thread. In a channel or DM: the channel and its threads over a period
(`30m`, `2h`, `1d`, `7d`; `since:me` is since the asker's last message there; the
default is since their last message, at most 24 h back). With a message link: the thread
it starts or belongs to, or the messages around it; with `from:<link>`, everything from
that message on in its channel. Reading goes through the store with a `Scope`, so a
summary never holds what the asker could not read.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from bot.store import Scope, Store, StoredMessage
from bot.tools import Links, parse_link, started_thread
from bot.types import ConversationKey

DAY = 86_400.0
DEFAULT_BACK = DAY  # the default span: since your last message, at most this far back
SINCE_ME_BACK = 7 * DAY
MAX_BACK = 30 * DAY
AROUND = 25  # messages before and after a linked one that starts no thread
PERIOD = re.compile(r"^(\d{1,4})\s*(m|min|h|d)$", re.IGNORECASE)
UNITS = {"m": 60.0, "min": 60.0, "h": 3600.0, "d": DAY}
USAGE = (
    "Use `summarize` with nothing (since your last message), a period (`30m`, `2h`, `1d`, "
    "`7d`), `since:me`, or a message link; add `private` to see it alone."
)


class SpanError(Exception):
    """The request names no span the asker can read; the message says why, in a sentence."""


class NothingSaid(SpanError):
    """The span is readable and empty; nothing to summarise (and no model call to make)."""


@dataclass(frozen=True)
class Span:
    rows: list[StoredMessage]
    what: str  # "in this thread", "here over the last 2 hours", ... (after "said")


def period_seconds(text: str) -> float | None:
    match = PERIOD.match(text.strip())
    if match is None:
        return None
    seconds = int(match.group(1)) * UNITS[match.group(2).lower()]
    return seconds if 0 < seconds <= MAX_BACK else None


def describe(seconds: float) -> str:
    if seconds % DAY == 0:
        days = int(seconds // DAY)
        return "the last day" if days == 1 else f"the last {days} days"
    if seconds % 3600 == 0:
        hours = int(seconds // 3600)
        return "the last hour" if hours == 1 else f"the last {hours} hours"
    return f"the last {int(seconds // 60)} minutes"


async def find_span(
    store: Store,
    scope: Scope,
    key: ConversationKey,
    author_id: str,
    request: str,
    links: Links | None,
    now: float | None = None,
) -> Span:
    """The messages `request` names, oldest first; raises SpanError."""
    now = time.time() if now is None else now
    text = request.strip()
    if text.lower().startswith("from:"):
        return await _from_link(store, scope, text[5:].strip(), links, now)
    if "://" in text:
        return await _linked(store, scope, text, links, now)
    if key.thread:
        rows = await _exactly(store, scope, str(key), 0.0, now)
        return Span(rows, "in this thread")
    channel = f"{key.platform}:{key.space}:{key.channel}:"
    if text.lower() in ("since:me", "since me"):
        rows = await store.span(scope, channel, now - SINCE_ME_BACK, now)
        return Span(_after_last_by(rows, author_id), "here since your last message")
    if not text:
        rows = await store.span(scope, channel, now - DEFAULT_BACK, now)
        mine = _after_last_by(rows, author_id)
        if len(mine) < len(rows):
            return Span(mine, "here since your last message")
        return Span(rows, "here over the last day")
    seconds = period_seconds(text)
    if seconds is None:
        raise SpanError(USAGE)
    rows = await store.span(scope, channel, now - seconds, now)
    return Span(rows, f"here over {describe(seconds)}")


def _after_last_by(rows: list[StoredMessage], author_id: str) -> list[StoredMessage]:
    last = max(
        (i for i, row in enumerate(rows) if row.role == "user" and row.author_id == author_id),
        default=-1,
    )
    return rows[last + 1 :]


async def _exactly(
    store: Store, scope: Scope, conversation: str, since: float, until: float
) -> list[StoredMessage]:
    rows = await store.span(scope, conversation, since, until)
    return [row for row in rows if row.conversation == conversation]


async def _located(store: Store, scope: Scope, link: str, links: Links | None) -> StoredMessage:
    located = parse_link(links, link)
    if located is None:
        raise SpanError("That is not a message link I can read here.")
    found = await store.locate(scope, *located)
    if found is None:
        raise SpanError(
            "That message is not available: it is outside what you can read from here, "
            "was deleted, or was never seen by the bot."
        )
    return found


async def _linked(store: Store, scope: Scope, link: str, links: Links | None, now: float) -> Span:
    found = await _located(store, scope, link, links)
    started = started_thread(found)  # located messages have a platform id: None means a reply
    if started is None:
        return Span(await _exactly(store, scope, found.conversation, 0.0, now), "in that thread")
    replies = [r for r in await _exactly(store, scope, started, 0.0, now) if not r.copied]
    if replies:
        return Span([found, *replies], "in the thread of that message")
    rows = await store.around(
        scope, found.conversation, message_id=found.id, before=AROUND, after=AROUND
    )
    return Span(rows, "around that message")


async def _from_link(
    store: Store, scope: Scope, link: str, links: Links | None, now: float
) -> Span:
    found = await _located(store, scope, link, links)
    platform, space, channel, thread = found.conversation.split(":", 3)
    if thread:  # from a message in a thread: the rest of that thread
        rows = await _exactly(store, scope, found.conversation, found.created_at, now)
    else:
        rows = await store.span(scope, f"{platform}:{space}:{channel}:", found.created_at, now)
    return Span(rows, "from that message on")
