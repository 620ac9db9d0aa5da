"""Discord objects → the engine's platform-neutral values."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import discord

from adapters.discord.members import spaces_of
from bot.attachments import Attachment, Prepared, Readers, prepare
from bot.types import DM, PRIVATE, PUBLIC, Author, ConversationKey, Message, Place

PLATFORM = "discord"
_MENTION = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION = re.compile(r"<@&(\d+)>")


def key_for(channel: object, guild_id: int | None) -> ConversationKey:
    """A thread is its own conversation (under its parent channel); a DM has no space."""
    if guild_id is None:
        return ConversationKey(PLATFORM, "", str(getattr(channel, "id", "")))
    if isinstance(channel, discord.Thread):
        return ConversationKey(PLATFORM, str(guild_id), str(channel.parent_id), str(channel.id))
    return ConversationKey(PLATFORM, str(guild_id), str(getattr(channel, "id", "")))


def place_for(channel: object) -> Place | None:
    """Who can read `channel`: a DM's members, a private thread's, a channel's viewers.

    A guild channel is public when @everyone may view it; anything we cannot tell is
    left to the engine, which then treats it as private to itself.
    """
    if isinstance(channel, discord.DMChannel | discord.GroupChannel):
        return Place(str(channel.id), "", DM)
    if isinstance(channel, discord.Thread):
        if channel.type is discord.ChannelType.private_thread:
            return Place(str(channel.id), channel.name, PRIVATE)
        parent = channel.parent
        return place_for(parent) if parent is not None else None
    if isinstance(channel, discord.abc.GuildChannel):
        everyone = channel.guild.get_role(channel.guild.id)
        if everyone is None:  # a server the bot is not in (a user install): unknown
            return None
        public = channel.permissions_for(everyone).view_channel
        return Place(str(channel.id), channel.name, PUBLIC if public else PRIVATE)
    return None


async def spaces_for(
    client: discord.Client, user: discord.abc.User, guild: discord.Guild | None
) -> tuple[str, ...]:
    """The servers whose public channels `user` can read: this one, or from a DM every
    server of the bot's they are a member of."""
    if guild is not None:
        return (str(guild.id),)
    return await spaces_of(client, user)


def interaction_key(interaction: discord.Interaction) -> ConversationKey:
    """The conversation a slash command was used in (the channel may be only partly known)."""
    channel = interaction.channel
    if channel is None or isinstance(channel, discord.PartialMessageable):
        space = "" if interaction.guild_id is None else str(interaction.guild_id)
        return ConversationKey(PLATFORM, space, str(interaction.channel_id))
    return key_for(channel, interaction.guild_id)


def interaction_facts(interaction: discord.Interaction) -> dict[str, Any]:
    """Who acts where through an interaction, as the engine's access rules and admin
    checks need it (keyword arguments of Engine.refusal, command, answers_privately)."""
    return {
        "author": author_of(interaction.user),
        "is_group": interaction.guild_id is not None,
        "place": place_for(interaction.channel),
        "roles": roles_of(interaction.user),
        "channels": channels_of(interaction.channel) or (str(interaction.channel_id),),
    }


def author_of(user: discord.abc.User) -> Author:
    """The author; in a server, a member with Manage Server (owners and Administrators
    have it too) is an admin there."""
    manages = isinstance(user, discord.Member) and user.guild_permissions.manage_guild
    return Author(str(user.id), user.display_name, user.bot, platform_admin=manages)


def roles_of(user: discord.abc.User) -> tuple[str, ...]:
    """A member's role ids in the server, without @everyone; a DM's user has none."""
    if not isinstance(user, discord.Member):
        return ()
    return tuple(str(role.id) for role in user.roles if not role.is_default())


def channels_of(channel: object) -> tuple[str, ...]:
    """The ids describing a place for the channel allow and block lists: the channel (or
    thread), a thread's parent channel, then the category the channel is filed under."""
    found: list[object] = [getattr(channel, "id", None)]
    if isinstance(channel, discord.Thread):
        found.append(channel.parent_id)
        channel = channel.parent
    found.append(getattr(channel, "category_id", None))
    return tuple(str(i) for i in dict.fromkeys(found) if i is not None)


def clean_text(message: discord.Message, bot_id: int) -> str:
    """The words without the bot's own mention; other user mentions become readable names."""
    names = {str(u.id): u.display_name for u in message.mentions}

    def swap(match: re.Match[str]) -> str:
        uid = match.group(1)
        if uid == str(bot_id):
            return ""
        return f"@{names[uid]}" if uid in names else match.group(0)

    text = _MENTION.sub(swap, message.content)
    own_role = _own_role_id(message)
    if own_role is not None:
        text = text.replace(f"<@&{own_role}>", "")
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def _own_role_id(message: discord.Message) -> int | None:
    """The bot's managed role, which people often @mention instead of the bot itself."""
    role = message.guild.self_role if message.guild is not None else None
    return role.id if role is not None else None


def addressed_to_bot(message: discord.Message, bot_id: int) -> bool:
    """DMs always; in guilds an @mention of the bot or a reply to one of its messages."""
    if message.guild is None:
        return True
    if any(user.id == bot_id for user in message.mentions):
        return True
    own_role = _own_role_id(message)
    if own_role is not None and own_role in message.raw_role_mentions:
        return True
    ref = message.reference
    resolved = ref.resolved if ref is not None else None
    return isinstance(resolved, discord.Message) and resolved.author.id == bot_id


def files_for(message: discord.Message, bot_id: int) -> list[discord.Attachment]:
    """The message's files, then those of the message it replies to.

    "@bot what's in this?" as a reply to someone's screenshot means that screenshot;
    the bot's own attachments (thinking files) are left out.
    """
    files = list(message.attachments)
    ref = message.reference.resolved if message.reference is not None else None
    if isinstance(ref, discord.Message) and ref.author.id != bot_id:
        files += ref.attachments
    return files


def describe(attachments: Sequence[discord.Attachment]) -> list[Attachment]:
    return [
        Attachment(
            name=a.filename,
            mime=a.content_type or "application/octet-stream",
            size=a.size,
            fetch=a.read,
            # A voice message (flag 1 << 13) carries one audio/ogg file with its length.
            voice=a.is_voice_message(),
            seconds=a.duration,
        )
        for a in attachments
    ]


async def to_message(
    message: discord.Message,
    bot_id: int,
    *,
    fetch_files: bool = True,
    spaces: tuple[str, ...] = (),
    readers: Readers | None = None,
) -> tuple[Message, Prepared]:
    """Build the engine's Message; attachments are downloaded only when `fetch_files`,
    and documents and voice messages are read only with `readers`."""
    key = key_for(message.channel, message.guild.id if message.guild else None)
    author = author_of(message.author)
    reading = readers.reading(key, author.id) if readers is not None else None
    files = describe(files_for(message, bot_id))
    prepared = await prepare(files, reading) if fetch_files else Prepared()
    text = prepared.message_text(clean_text(message, bot_id))
    return (
        Message(
            key=key,
            id=str(message.id),
            author=author,
            text=text,
            images=prepared.images,
            attachments=prepared.meta,
            is_group=message.guild is not None,
            place=place_for(message.channel),
            spaces=spaces,
            roles=roles_of(message.author),
            channels=channels_of(message.channel),
        ),
        prepared,
    )
