"""Shared delivery: how every platform shows a reply.

- `compose`: the text a reply shows at each moment (answer, notice, activity, footer).
- `split`: messages of the platform's size, code fences repaired.
- `plan`: the posts, edits and deletes that turn what is shown into what should be.
- `budget`, `scheduler`: rate budgets per scope and who may spend them when.
- `reply`: one reply's state; `surface`: what an adapter supplies.

`deliver` is what adapters call: it feeds the engine's reply events to a `Reply` and
waits until the complete answer is shown (or the platform refused it).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence

from bot.delivery.compose import File, Style, Thinking
from bot.delivery.reply import Reply
from bot.delivery.scheduler import Limit, Scheduler
from bot.delivery.surface import NativeStream, Refused, Surface, TooLong
from bot.types import ReplyDone, ReplyEvent, ReplyFailed

log = logging.getLogger("teambot.delivery")

BROKEN = "Something went wrong on my side; the details are in the bot's log."

__all__ = [
    "BROKEN",
    "File",
    "Limit",
    "NativeStream",
    "Refused",
    "Reply",
    "Scheduler",
    "Style",
    "Surface",
    "Thinking",
    "TooLong",
    "deliver",
    "say",
]


async def deliver(
    scheduler: Scheduler,
    surface: Surface,
    events: AsyncIterator[ReplyEvent],
    notes: Sequence[str] = (),
) -> Reply:
    """Show the reply `events` describe on `surface`; return once it has landed."""
    reply = scheduler.open(surface, notes)
    answered = False
    try:
        async for event in events:
            reply.feed(event)
            answered = answered or isinstance(event, ReplyDone | ReplyFailed)
    except Exception:
        log.exception("reply events failed")
        reply.fail(BROKEN)
        answered = True
    if not answered:
        reply.close()  # answered before (a redelivered event): nothing to show
    await reply.closed.wait()
    await surface.settle(reply.visible)
    return reply


async def say(scheduler: Scheduler, surface: Surface, text: str) -> Reply:
    """Show `text` as a complete reply (a command's answer, a note, an apology)."""
    reply = scheduler.open(surface)
    reply.say(text)
    await reply.closed.wait()
    await surface.settle(reply.visible)
    return reply
