"""Small builders shared by the engine tests."""

from __future__ import annotations

import itertools
from typing import Any

from bot.engine import Engine
from bot.types import (
    Author,
    ConversationKey,
    Message,
    ReplyDone,
    ReplyEvent,
    ReplyFailed,
    TextDelta,
)

_ids = itertools.count(1)
ALICE = Author("U1", "Alice")
BOB = Author("U2", "Bob")


def key(channel: str = "C1", thread: str = "") -> ConversationKey:
    return ConversationKey("test", "T1", channel, thread)


def message(
    text: str, *, conv: ConversationKey | None = None, author: Author = ALICE, **kw: Any
) -> Message:
    """A message in a one-person conversation unless `is_group=True` is passed."""
    kw.setdefault("is_group", False)
    return Message(key=conv or key(), id=f"m{next(_ids)}", author=author, text=text, **kw)


async def collect(engine: Engine, msg: Message) -> list[ReplyEvent]:
    return [event async for event in engine.reply(msg)]


def streamed_text(events: list[ReplyEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def final(events: list[ReplyEvent]) -> ReplyDone | ReplyFailed:
    last = events[-1]
    assert isinstance(last, ReplyDone | ReplyFailed), events
    return last


def prompt_text(body: dict[str, Any]) -> str:
    """Every text the model was shown in one request, joined."""
    parts = []
    for m in body["messages"]:
        content = m["content"]
        if isinstance(content, str):
            parts.append(content)
        else:
            parts.extend(p.get("text", "") for p in content if p.get("type") == "text")
    return "\n".join(parts)
