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

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from bot.delivery.compose import Controls, File, Style, Thinking
from bot.delivery.reply import Reply
from bot.delivery.scheduler import Limit, Scheduler
from bot.delivery.surface import NativeStream, Refused, Surface, TooLong
from bot.journal import Journal
from bot.types import ReplyDone, ReplyEvent, ReplyFailed, Started

log = logging.getLogger("teambot.delivery")

WATCH_S = 0.25  # how often a reply in progress is checked for new messages to record

BROKEN = "Something went wrong on my side; the details are in the bot's log."

__all__ = [
    "BROKEN",
    "Controls",
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
    watcher: asyncio.Task[None] | None = None
    try:
        async for event in events:
            if watcher is None and isinstance(event, Started):
                watcher = _watch(scheduler, event.question, reply, surface)
            reply.feed(event)
            answered = answered or isinstance(event, ReplyDone | ReplyFailed)
    except Exception:
        log.exception("reply events failed")
        reply.fail(BROKEN)
        answered = True
    if not answered:
        reply.close()  # answered before (a redelivered event): nothing to show
    await reply.closed.wait()
    if watcher is not None:
        await watcher
    await surface.settle(reply.visible)
    return reply


def _watch(
    scheduler: Scheduler, question: int, reply: Reply, surface: Surface
) -> asyncio.Task[None] | None:
    """Record which messages hold the reply while it shows (bot/journal.py), for
    surfaces whose messages can be edited later (those with a `ref`)."""
    ref: Callable[[Any], str] | None = getattr(surface, "ref", None)
    if scheduler.journal is None or not question:
        return None
    return asyncio.create_task(_record(scheduler.journal, question, reply, ref))


async def _record(
    journal: Journal, question: int, reply: Reply, ref: Callable[[Any], str] | None
) -> None:
    try:
        while ref is not None and not reply.closed.is_set():
            if reply.streaming and reply.stream is not None and reply.stream.handle:
                await journal.showing(question, [ref(reply.stream.handle)], [reply.stream.shown])
            elif reply.handles:
                await journal.showing(question, [ref(h) for h in reply.handles], reply.shown)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reply.closed.wait(), WATCH_S)
        await reply.closed.wait()
        await journal.end(question)
    except Exception:
        log.exception("recording a reply in progress failed")


async def say(scheduler: Scheduler, surface: Surface, text: str) -> Reply:
    """Show `text` as a complete reply (a command's answer, a note, an apology)."""
    reply = scheduler.open(surface)
    reply.say(text)
    await reply.closed.wait()
    await surface.settle(reply.visible)
    return reply
