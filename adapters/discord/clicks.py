"""Clicks on an answer's buttons (adapters/discord/buttons.py), in any process.

Stop and 👍/👎 are answered privately with the engine's sentence. Regenerate replaces
the answer in place: in its channel messages where the bot can reach them, else (an
ephemeral answer, a user install) in the clicked message through the click itself.
A refused regenerate leaves the answer alone and says why, privately.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import discord

from adapters.discord.buttons import REGENERATE, STOP, UP, parse
from adapters.discord.convert import author_of
from adapters.discord.delivery import ChannelSurface, FollowupSurface, Replacing
from bot.delivery import Reply, Scheduler, deliver
from bot.engine import Engine
from bot.types import ReplyEvent, ReplyFailed

log = logging.getLogger(__name__)

MAX_PARTS = 20  # how far back a regenerated answer's earlier messages are looked for


async def on_click(interaction: discord.Interaction, engine: Engine, pacer: Scheduler) -> bool:
    """Handle a click on one of our buttons; False when the interaction is not one."""
    if interaction.type is not discord.InteractionType.component:
        return False
    data: dict[str, Any] = dict(interaction.data or {})
    parsed = parse(str(data.get("custom_id", "")))
    if parsed is None:
        return False
    action, question = parsed
    by = author_of(interaction.user)
    # Discord's word for people who may manage others' messages here.
    admin = interaction.permissions.manage_messages
    if action == REGENERATE:
        await regenerate(interaction, engine, pacer, question)
        return True
    await interaction.response.defer(ephemeral=True, thinking=True)
    if action == STOP:
        text = await engine.stop(question, by, admin=admin)
    else:
        text = await engine.feedback(question, by, 1 if action == UP else -1)  # UP or DOWN
    await interaction.followup.send(text, ephemeral=True)
    return True


async def regenerate(
    interaction: discord.Interaction, engine: Engine, pacer: Scheduler, question: int
) -> None:
    await interaction.response.defer()  # a component's quiet acknowledgement (type 6)
    admin = interaction.permissions.manage_messages
    events = engine.regenerate(question, author_of(interaction.user), admin=admin)
    first = await anext(aiter(events), None)
    if first is None:
        return
    if isinstance(first, ReplyFailed):  # refused before anything ran: the answer stays
        await interaction.followup.send(first.notice, ephemeral=True)
        return
    surface = await _in_place(interaction)
    reply = await deliver(pacer, surface, _chained(first, events))
    await note_answer(engine, reply)


async def _chained(first: ReplyEvent, rest: AsyncIterator[ReplyEvent]) -> AsyncIterator[ReplyEvent]:
    yield first
    async for event in rest:
        yield event


async def _in_place(interaction: discord.Interaction) -> Replacing:
    """Where the regenerated answer goes: over the old one's messages."""
    message = interaction.message
    assert message is not None  # a component's interaction always has its message
    channel = interaction.channel
    reachable = (
        isinstance(channel, discord.abc.Messageable)
        and not isinstance(channel, discord.PartialMessageable)
        and message.webhook_id is None  # not an interaction's follow-up
        and not message.flags.ephemeral
    )
    if not reachable:
        ephemeral = message.flags.ephemeral
        return Replacing([Clicked(interaction)], FollowupSurface(interaction, ephemeral))
    assert isinstance(channel, discord.abc.Messageable)
    parts = await _parts(message)
    return Replacing(parts, ChannelSurface(channel, message.channel.id, parts[-1]))


async def _parts(message: discord.Message) -> list[discord.Message]:
    """The answer's messages up to `message`: each part replies to the one before it."""
    parts = [message]
    while len(parts) < MAX_PARTS and (ref := parts[0].reference) is not None:
        earlier = ref.resolved if isinstance(ref.resolved, discord.Message) else None
        if earlier is None and ref.message_id is not None:
            try:
                earlier = await message.channel.fetch_message(ref.message_id)
            except discord.HTTPException:
                break
        if earlier is None or earlier.author.id != message.author.id:
            break  # the question: the answer starts after it
        parts.insert(0, earlier)
    return parts


class Clicked:
    """The message a button was clicked on, edited through that click's interaction:
    it works where the bot cannot reach the channel (ephemeral answers, user installs)."""

    def __init__(self, interaction: discord.Interaction) -> None:
        assert interaction.message is not None
        self.interaction = interaction
        self.id = interaction.message.id
        self.attachments = list(interaction.message.attachments)

    async def edit(self, **fields: Any) -> discord.InteractionMessage:
        return await self.interaction.edit_original_response(**fields)

    async def delete(self) -> None:
        await self.interaction.delete_original_response()


async def note_answer(engine: Engine, reply: Reply) -> None:
    """Tell the engine which message shows the stored answer, for links to it."""
    if reply.answer_id and reply.handles:
        handle = reply.handles[0]
        try:
            await engine.answer_posted(reply.answer_id, str(handle.id))
        except Exception as exc:  # e.g. the store closed at shutdown: only links suffer
            log.info("could not note where answer %d was posted: %s", reply.answer_id, exc)
