"""Marking Discord replies a crash cut short (bot/journal.py): refs are
"channel id/message id" (a thread is a channel)."""

from __future__ import annotations

import discord

from bot.journal import with_note
from bot.store import Orphan

LIMIT = 2000  # a Discord message's content limit
NO_PINGS = discord.AllowedMentions.none()


def message_ref(message: discord.Message) -> str:
    return f"{message.channel.id}/{message.id}"


class DiscordRecoverer:
    def __init__(self, client: discord.Client) -> None:
        self.client = client

    async def cut_off(self, orphan: Orphan, note: str) -> str:
        channel_id, _, message_id = orphan.refs[-1].partition("/")
        channel = self.client.get_partial_messageable(int(channel_id))
        try:  # what it shows now: it may have grown since it was last recorded
            shown = (await channel.fetch_message(int(message_id))).content
        except discord.HTTPException:
            shown = orphan.shown[-1]
        message = channel.get_partial_message(int(message_id))
        await message.edit(content=with_note(shown, note, LIMIT), allowed_mentions=NO_PINGS)
        return shown
