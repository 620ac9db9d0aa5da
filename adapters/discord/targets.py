"""Where streamed replies are written: a channel (as replies) or an interaction's follow-ups."""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from typing import Any

import discord

from adapters.discord.streaming import Attachment

# Nothing the model writes may ping anyone, including the author of the message we reply to.
NO_MENTIONS = discord.AllowedMentions.none()


def _files(files: list[Attachment]) -> list[discord.File]:
    return [discord.File(io.BytesIO(f.data), filename=f.name) for f in files]


class ChannelTarget:
    """Replies in a text channel, thread or DM; the first part replies to the asking message."""

    counts_global = True

    def __init__(
        self, channel: discord.abc.Messageable, channel_id: int, reply_to: discord.Message | None
    ) -> None:
        self.channel = channel
        self.bucket = f"channel:{channel_id}"
        self.reply_to = reply_to
        self.typing: Callable[[], Awaitable[None]] | None = self._type

    async def _type(self) -> None:
        await self.channel.typing()

    async def send(self, content: str, previous: Any, files: list[Attachment]) -> discord.Message:
        anchor: discord.Message | None = previous if previous is not None else self.reply_to
        if anchor is None:
            return await self.channel.send(
                content, allowed_mentions=NO_MENTIONS, files=_files(files)
            )
        reference = anchor.to_reference(fail_if_not_exists=False)
        if files:
            return await self.channel.send(
                content, reference=reference, allowed_mentions=NO_MENTIONS, files=_files(files)
            )
        return await self.channel.send(content, reference=reference, allowed_mentions=NO_MENTIONS)

    async def edit(self, handle: Any, content: str, files: list[Attachment]) -> discord.Message:
        message: discord.Message = handle
        if files:
            return await message.edit(
                content=content,
                allowed_mentions=NO_MENTIONS,
                attachments=[*message.attachments, *_files(files)],
            )
        return await message.edit(content=content, allowed_mentions=NO_MENTIONS)


class FollowupTarget:
    """Answers to a deferred slash command: follow-ups, edited while they grow."""

    counts_global = False  # interaction webhooks have their own limits, not the global one

    def __init__(self, interaction: discord.Interaction, ephemeral: bool = False) -> None:
        self.interaction = interaction
        self.ephemeral = ephemeral
        self.bucket = f"webhook:{interaction.id}"
        self.typing: Callable[[], Awaitable[None]] | None = None

    async def send(
        self, content: str, previous: Any, files: list[Attachment]
    ) -> discord.WebhookMessage:
        if files:
            return await self.interaction.followup.send(
                content,
                wait=True,
                allowed_mentions=NO_MENTIONS,
                ephemeral=self.ephemeral,
                files=_files(files),
            )
        return await self.interaction.followup.send(
            content, wait=True, allowed_mentions=NO_MENTIONS, ephemeral=self.ephemeral
        )

    async def edit(
        self, handle: Any, content: str, files: list[Attachment]
    ) -> discord.WebhookMessage:
        message: discord.WebhookMessage = handle
        if files:
            return await message.edit(
                content=content,
                allowed_mentions=NO_MENTIONS,
                attachments=[*message.attachments, *_files(files)],
            )
        return await message.edit(content=content, allowed_mentions=NO_MENTIONS)
