"""Building the prompt for one turn: pure functions, no I/O.

The prompt is the system message, then the conversation's window of stored messages.
The window only moves forward, in chunks (see `trim_window`), so between trims the
prompt grows append-only and its prefix stays byte-stable for Mistral's prefix cache.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter

from bot.model import ChatMessage
from bot.store import StoredMessage
from bot.tools import rounds
from bot.types import Image

# After a trim the window holds at most this share of the budget, so the next
# several turns append to an unchanged prefix before another trim is needed.
TRIM_TARGET = 0.6


def tools_guide(timezone: str) -> str:
    """How to use the tools, for the system message of a conversation that has them."""
    return (
        "You have tools. For questions about what people said, decided or reported in this "
        "team's chats, search the history with search_messages, and read a thread or a "
        "pasted message link with read_messages, instead of guessing. When your answer uses "
        "messages from the history, cite each one with its link as a Markdown link, like "
        f"[Ana, Dec 1](link). The team's time zone is {timezone}."
    )


def system_message(
    base: str, persona: str, today: str, guide: str = "", memory: str = ""
) -> ChatMessage:
    parts = [base.strip()]
    if guide:
        parts.append(guide)
    if persona.strip():
        parts.append("Instructions for this conversation:\n" + persona.strip())
    if memory.strip():
        parts.append(
            "Summary of this conversation's earlier turns (no longer shown below):\n"
            + memory.strip()
        )
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


@dataclass(frozen=True)
class Replayed:
    """An answer that used tools: the messages replaying its rounds, then its text."""

    messages: tuple[ChatMessage, ...]
    text: str


Turn = str | Replayed


def turn(message: StoredMessage, named: bool) -> Turn:
    """A stored message as the prompt replays it."""
    text = render(message, named)
    replayed = rounds.loads(message.rounds) if message.rounds else ()
    return Replayed(tuple(rounds.history(replayed)), text) if replayed else text


def merge_turns(
    turns: Iterable[tuple[str, Turn]], into: list[ChatMessage] | None = None
) -> list[ChatMessage]:
    """(role, turn) pairs as chat messages, same-role neighbours merged, appended to `into`.

    Channel chatter produces runs of user messages; merging them keeps roles
    alternating. A conversation that starts with an assistant turn loses that turn,
    because the first turn after the system message must be the user's. Tool rounds
    are never merged into: their messages replay exactly as stored.
    """
    merged = [] if into is None else into
    # groupby/map/itemgetter keep this loop in C: windows hold thousands of turns.
    for role, group in groupby(turns, key=itemgetter(0)):
        parts = list(map(itemgetter(1), group))
        if all(type(part) is str for part in parts):
            _append(merged, role, "\n\n".join(parts))
            continue
        for part in parts:
            if isinstance(part, str):
                _append(merged, role, part)
            elif merged:  # an answer cannot open the prompt, with or without its tools
                _replay(merged, part)
    return merged


def _append(merged: list[ChatMessage], role: str, text: str) -> None:
    last = merged[-1] if merged else None
    if last is not None and last["role"] == role and "tool_calls" not in last:
        merged[-1] = {"role": role, "content": last["content"] + "\n\n" + text}
    elif merged or role == "user":
        merged.append({"role": role, "content": text})


def _replay(merged: list[ChatMessage], part: Replayed) -> None:
    first, *rest = part.messages
    last = merged[-1]
    if last["role"] == "assistant" and "tool_calls" not in last:
        # Two answers in a row (a question between them was deleted): one assistant turn.
        joined = "\n\n".join(t for t in (last["content"], first["content"]) if t)
        merged[-1] = {**first, "content": joined}
    else:
        merged.append(first)
    merged.extend(rest)
    merged.append({"role": "assistant", "content": part.text})


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


def trim_window(
    window: Sequence[StoredMessage], total: int, budget: int, fixed: int = 0
) -> int | None:
    """The position the window should start at so the prompt fits `budget`.

    `total` is the prompt's size with the whole window, `fixed` the part of it that is
    not conversation (system message, tools, images). Returns None when that fits (the
    start stays put). Otherwise drops the oldest messages until the conversation takes
    at most TRIM_TARGET of what `fixed` leaves of the budget; the newest message is
    always kept, even if it alone is over the budget.
    """
    if total <= budget or not window:
        return None
    target = fixed + (budget - fixed) * TRIM_TARGET
    for index, message in enumerate(window[:-1]):
        total -= message.tokens
        if total <= target:
            return window[index + 1].position
    return window[-1].position
