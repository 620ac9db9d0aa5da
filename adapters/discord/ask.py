"""The message menu's "Ask teambot": a modal asks the question, the answer goes to a thread
on that message, with the message (its text, images and text files) as context.

Where no thread can be started (threads off, a DM, a server the bot is not in, no
permission) the answer comes through the interaction itself: public where Discord
allows it, else only to the asker.
"""

from __future__ import annotations

import logging

import discord
from discord import app_commands

from adapters.discord.clicks import note_answer
from adapters.discord.convert import describe, interaction_facts, interaction_key, spaces_for
from adapters.discord.delivery import ChannelSurface, FollowupSurface
from adapters.discord.threads import in_thread, may_thread, open_thread
from bot.attachments import Prepared, prepare
from bot.delivery import Scheduler, deliver, say
from bot.delivery.surface import Surface
from bot.engine import Engine
from bot.types import Message

log = logging.getLogger(__name__)

ASK_TEAMBOT = "Ask teambot"
NO_THREAD = "I can't start a thread on that message here, so I'm answering below."


def must_be_private(interaction: discord.Interaction) -> bool:
    """A user install in a server without the bot: Discord shows an app's answer to
    everyone only where the member may use external apps."""
    absent = interaction.guild_id is not None and not interaction.is_guild_integration()
    return absent and not interaction.permissions.use_external_apps


def ask_teambot(engine: Engine, pacer: Scheduler, *, threads: bool) -> app_commands.ContextMenu:
    async def callback(interaction: discord.Interaction, message: discord.Message) -> None:
        # A modal must be the interaction's first response: no defer before it.
        await interaction.response.send_modal(AskModal(engine, pacer, message, threads))

    return app_commands.ContextMenu(name=ASK_TEAMBOT, callback=callback)


class AskModal(discord.ui.Modal, title=ASK_TEAMBOT):
    question: discord.ui.TextInput[AskModal] = discord.ui.TextInput(
        label="Your question about this message",
        style=discord.TextStyle.paragraph,
        max_length=4000,
    )

    def __init__(
        self, engine: Engine, pacer: Scheduler, target: discord.Message, threads: bool
    ) -> None:
        super().__init__(timeout=15 * 60)  # an interaction's token lives 15 minutes
        self.engine, self.pacer, self.target, self.threads = engine, pacer, target, threads

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await ask_about(self, interaction, self.question.value)

    async def on_error(  # type: ignore[override]
        self, interaction: discord.Interaction, error: Exception
    ) -> None:
        if isinstance(error, discord.HTTPException):
            log.warning("Ask teambot: Discord refused a response (HTTP %s)", error.status)
        else:
            log.error("Ask teambot failed", exc_info=error)


async def ask_about(modal: AskModal, interaction: discord.Interaction, question: str) -> None:
    engine, target = modal.engine, modal.target
    facts = interaction_facts(interaction)
    refused = engine.refusal(interaction_key(interaction), **facts)
    if refused is not None:
        await interaction.response.defer(thinking=True, ephemeral=True)
        await say(modal.pacer, FollowupSurface(interaction, True), refused)
        return
    private = must_be_private(interaction)
    threads = modal.threads and interaction.is_guild_integration() and may_thread(target)
    await interaction.response.defer(thinking=True, ephemeral=threads or private)
    message, prepared = await _question(engine, interaction, target, question)
    surface: Surface = FollowupSurface(interaction, private)
    if threads:
        thread = await open_thread(target, question, modal.pacer)
        if thread is not None:
            await interaction.followup.send(f"Answering in {thread.mention}.", ephemeral=True)
            message = in_thread(message, thread)
            surface = ChannelSurface(thread, thread.id, None)
        else:
            await interaction.followup.send(NO_THREAD, ephemeral=True)
    notes = [*prepared.heard, *prepared.notes]
    reply = await deliver(modal.pacer, surface, engine.reply(message), notes)
    await note_answer(engine, reply)


async def _question(
    engine: Engine, interaction: discord.Interaction, target: discord.Message, question: str
) -> tuple[Message, Prepared]:
    """The question with the message it is about: its author, words and files."""
    facts = interaction_facts(interaction)
    key = interaction_key(interaction)
    reading = engine.pipeline.readers.reading(key, facts["author"].id)
    prepared = await prepare(describe(target.attachments), reading)
    about = prepared.message_text(target.content)
    text = f"{question}\n\nThe message, from {target.author.display_name}:\n{about}"
    message = Message(
        key=key,
        id=f"i{interaction.id}",
        author=facts["author"],
        text=text,
        images=prepared.images,
        attachments=prepared.meta,
        is_group=facts["is_group"],
        place=facts["place"],
        spaces=await spaces_for(interaction.client, interaction.user, interaction.guild),
        roles=facts["roles"],
        channels=facts["channels"],
    )
    return message, prepared
