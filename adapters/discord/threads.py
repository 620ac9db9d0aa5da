"""A public thread per question (TEAMBOT_DISCORD_THREADS): the thread is the conversation.

Discord gives a thread started from a message that message's id. Where the bot may not
create threads (403, 50013 Missing Permissions) the question is answered in the channel,
as without threads, and the log says so once per channel.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
from collections.abc import AsyncIterator

import discord

from adapters.discord.convert import channels_of, key_for, place_for
from adapters.discord.delivery import global_slot
from bot.delivery import Scheduler
from bot.types import ConversationKey, Message, ReplyEvent

log = logging.getLogger(__name__)

NAME_LIMIT = 100  # Discord: a thread's name is 1 to 100 characters
THREAD_EXISTS = 160004  # the message already has a thread (its id is the message's)
RETRY_S = 600.0  # after a refusal, how long a channel's questions are answered in it
_refused_in: dict[int, float] = {}  # channel id -> when Discord last refused a thread there
_pumps: set[asyncio.Task[None]] = set()


def thread_name(question: str, asker: str) -> str:
    """The question's first words on one line, trimmed to Discord's limit."""
    line = re.sub(r"\s+", " ", question).strip() or f"Question from {asker}"
    if len(line) <= NAME_LIMIT:
        return line
    return line[: NAME_LIMIT - 1].rstrip() + "…"


def may_thread(message: discord.Message) -> bool:
    """Whether a thread can start on `message`: a message in a server's text channel
    where Discord has not just refused one."""
    if not isinstance(message.channel, discord.TextChannel):
        return False
    refused = _refused_in.get(message.channel.id)
    return refused is None or time.monotonic() - refused > RETRY_S


async def open_thread(
    message: discord.Message, question: str, pacer: Scheduler
) -> discord.Thread | None:
    """A public thread on `message` named from `question`; None where Discord refuses."""
    name = thread_name(question, message.author.display_name)
    try:
        async with global_slot(pacer):
            return await message.create_thread(name=name)
    except discord.HTTPException as exc:
        if exc.code == THREAD_EXISTS and message.guild is not None:
            found = message.guild.get_thread(message.id)
            if found is not None:
                return found
        channel = message.channel.id
        logged = channel in _refused_in
        _refused_in[channel] = time.monotonic()
        if not logged:
            log.warning(
                "Discord refused to start a thread in channel %s (HTTP %s, code %s); "
                "answering in the channel (give the bot Create Public Threads there)",
                channel,
                exc.status,
                exc.code,
            )
        return None


def in_thread(message: Message, thread: discord.Thread) -> Message:
    """`message` as the first question of the conversation `thread` is."""
    return dataclasses.replace(
        message,
        key=key_for(thread, thread.guild.id),
        place=place_for(thread),
        channels=channels_of(thread),
    )


def thread_key(message: Message, starter: discord.Message) -> Message:
    """`message` in the thread about to start on `starter`: Discord gives that thread the
    starter's id, so the engine may store the question and ask the model meanwhile."""
    key = message.key
    thread = ConversationKey(key.platform, key.space, key.channel, str(starter.id))
    return dataclasses.replace(message, key=thread, channels=(str(starter.id), *message.channels))


def started_now(events: AsyncIterator[ReplyEvent]) -> AsyncIterator[ReplyEvent]:
    """Run `events` from now on, so the engine works while the caller opens the thread."""
    queue: asyncio.Queue[ReplyEvent | BaseException | None] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for event in events:
                queue.put_nowait(event)
        except Exception as exc:  # delivery reports it as it would have
            queue.put_nowait(exc)
        finally:
            queue.put_nowait(None)

    task = asyncio.create_task(pump())
    _pumps.add(task)
    task.add_done_callback(_pumps.discard)

    async def drained() -> AsyncIterator[ReplyEvent]:
        while (item := await queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    return drained()
