"""Building the prompt for one turn: pure functions, no I/O.

The prompt is the system message, then the conversation's window of stored messages.
The window only moves forward, in chunks (see `trim_window`), so between trims the
prompt grows append-only and its prefix stays byte-stable for Mistral's prefix cache.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from itertools import groupby
from operator import itemgetter

from bot.model import ChatMessage
from bot.store import StoredMessage
from bot.types import Image

# After a trim the window holds at most this share of the budget, so the next
# several turns append to an unchanged prefix before another trim is needed.
TRIM_TARGET = 0.6


def system_message(base: str, persona: str, today: str) -> ChatMessage:
    parts = [base.strip()]
    if persona.strip():
        parts.append("Instructions for this conversation:\n" + persona.strip())
    parts.append(f"Today's date is {today}.")
    return {"role": "system", "content": "\n\n".join(parts)}


def render(message: StoredMessage, named: bool) -> str:
    """A stored message as the model reads it: speaker named in group conversations."""
    text = message.text
    images = [a.name for a in message.attachments if a.is_image]
    if images:
        text += "".join(f"\n[image: {name}]" for name in images)
    if not text.strip():
        text = "(no text)"  # the API rejects empty content
    if named and message.role == "user":
        return f"[{message.author_name or message.author_id}]: {text}"
    return text


def image_part(image: Image) -> dict[str, str]:
    encoded = base64.b64encode(image.data).decode("ascii")
    return {"type": "image_url", "image_url": f"data:{image.mime};base64,{encoded}"}


def merge_turns(
    turns: Iterable[tuple[str, str]], into: list[ChatMessage] | None = None
) -> list[ChatMessage]:
    """(role, text) turns as chat messages, same-role neighbours merged, appended to `into`.

    Channel chatter produces runs of user messages; merging them keeps roles
    alternating. A conversation that starts with an assistant turn loses that turn,
    because the first turn after the system message must be the user's.
    """
    merged = [] if into is None else into
    # groupby/map/itemgetter keep this loop in C: windows hold thousands of turns.
    for role, group in groupby(turns, key=itemgetter(0)):
        text = "\n\n".join(map(itemgetter(1), group))
        if merged and merged[-1]["role"] == role:
            merged[-1] = {"role": role, "content": merged[-1]["content"] + "\n\n" + text}
        elif merged or role == "user":
            merged.append({"role": role, "content": text})
    return merged


def build_messages(
    system: ChatMessage, turns: Sequence[ChatMessage], *, images: Sequence[Image] = ()
) -> list[ChatMessage]:
    """The request's messages: system, the merged turns, images on the last user turn."""
    messages = [system, *turns]
    if images and len(messages) > 1 and messages[-1]["role"] == "user":
        text = messages[-1]["content"]
        messages[-1] = {
            "role": "user",
            "content": [{"type": "text", "text": text}, *map(image_part, images)],
        }
    return messages


def trim_window(window: Sequence[StoredMessage], total: int, budget: int) -> int | None:
    """The position the window should start at so the prompt fits `budget`.

    `total` is the prompt's size with the whole window. Returns None when that fits
    (the start stays put). Otherwise drops the oldest messages until the total is at
    most TRIM_TARGET of the budget; the newest message is always kept, even if it
    alone is over the budget.
    """
    if total <= budget or not window:
        return None
    target = budget * TRIM_TARGET
    for index, message in enumerate(window[:-1]):
        total -= message.tokens
        if total <= target:
            return window[index + 1].position
    return window[-1].position
