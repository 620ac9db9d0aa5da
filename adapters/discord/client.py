"""The discord.py client: gateway events → engine calls."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import discord
from discord import app_commands

from adapters.discord.clicks import note_answer, on_click
from adapters.discord.commands import install
from adapters.discord.convert import (
    PLATFORM,
    addressed_to_bot,
    clean_text,
    key_for,
    place_for,
    spaces_for,
    to_message,
)
from adapters.discord.delivery import NO_MENTIONS, ChannelSurface
from adapters.discord.settings import DiscordSettings
from adapters.discord.sync import sync_if_changed
from adapters.discord.threads import may_thread, open_thread, started_now, thread_key
from bot.delivery import Scheduler, deliver
from bot.engine import Engine
from bot.types import ConversationKey, ReplyEvent

log = logging.getLogger(__name__)

CHAT_TYPES = (discord.MessageType.default, discord.MessageType.reply)
IDENTIFY_WINDOW_S = 5.0  # Discord: one IDENTIFY per 5 s in each of `max_concurrency` buckets


def intents(message_content: bool) -> discord.Intents:
    wanted = discord.Intents.none()
    wanted.guilds = True
    wanted.guild_messages = True
    wanted.dm_messages = True
    wanted.message_content = message_content
    return wanted


class TeambotClient(discord.AutoShardedClient):
    """Runs the shards DISCORD_SHARD_COUNT / DISCORD_SHARD_IDS name, else every shard
    Discord recommends; the rest of the adapter sees one client either way."""

    def __init__(
        self, engine: Engine, settings: DiscordSettings, pacer: Scheduler, *, message_content: bool
    ) -> None:
        subset: dict[str, Any] = (
            {"shard_ids": list(settings.shard_ids)} if settings.shard_ids else {}
        )
        super().__init__(
            intents=intents(message_content),
            allowed_mentions=NO_MENTIONS,
            shard_count=settings.shard_count,
            **subset,
        )
        self.engine = engine
        self.settings = settings
        self.pacer = pacer
        self.reads_content = message_content
        self.tree: app_commands.CommandTree[TeambotClient] = app_commands.CommandTree(self)
        install(self.tree, engine, pacer, threads=settings.threads)
        self.ready = asyncio.Event()
        self.on_connected: Callable[[], None] = lambda: None
        self._identify_buckets = 1  # GET /gateway/bot's max_concurrency, when asked
        self._identify_free: dict[int, float] = {}  # bucket -> when it may IDENTIFY again

    async def setup_hook(self) -> None:
        # Runs once per login, not per reconnect (unlike on_ready).
        assert self.application_id is not None
        try:
            await sync_if_changed(
                self.tree, self.engine, self.application_id, self.settings.guild_ids
            )
        except discord.HTTPException as exc:
            log.warning("slash command sync failed (HTTP %s): %s", exc.status, exc.text)

    async def connect(self, *, reconnect: bool = True) -> None:
        if self.shard_count is None:
            # Left to discord.py, this would connect to the URL GET /gateway/bot names,
            # bypassing DISCORD_GATEWAY_URL (a proxy), and drop max_concurrency.
            count, _url, limits = await self.http.get_bot_gateway()
            self.shard_count = count
            self._identify_buckets = max(1, int(limits.get("max_concurrency", 1)))
        await super().connect(reconnect=reconnect)

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """Wait for the shard's IDENTIFY slot. discord.py's default waits 5 s before every
        IDENTIFY but the first, even when Discord allows several shards at once."""
        bucket = (shard_id or 0) % self._identify_buckets
        now = self.loop.time()
        at = max(now, self._identify_free.get(bucket, now))
        self._identify_free[bucket] = at + IDENTIFY_WINDOW_S
        if at > now:
            await asyncio.sleep(at - now)

    async def on_ready(self) -> None:
        # With shards, discord.py calls this once every shard this process runs is ready.
        log.info(
            "connected to Discord as %s in %d servers%s%s",
            self.user,
            len(self.guilds),
            self._shards_note(),
            "" if self.reads_content else " (without the message content intent)",
        )
        self.ready.set()
        self.on_connected()

    async def on_shard_ready(self, shard_id: int) -> None:
        log.debug("Discord shard %d of %s ready", shard_id, self.shard_count)

    def _shards_note(self) -> str:
        count = self.shard_count or 1
        if count == 1:
            return ""
        mine = sorted(self.shards)
        if len(mine) == count:
            return f" ({count} shards)"
        return f" (shards {','.join(map(str, mine))} of {count})"

    def _bot_id(self) -> int:
        assert self.user is not None
        return self.user.id

    async def on_message(self, message: discord.Message) -> None:
        if self.user is None or message.author.id == self.user.id:
            return
        if message.type not in CHAT_TYPES:
            return
        if not message.author.bot and (
            addressed_to_bot(message, self.user.id) or await self._follows(message)
        ):
            await self._answer(message)
        elif message.guild is not None and self.reads_content:
            msg, _ = await to_message(message, self.user.id, fetch_files=False)
            if msg.text:
                await self.engine.record(msg)

    async def _follows(self, message: discord.Message) -> bool:
        """Whether to answer without a mention: in a thread the bot has answered in (its
        own threads above all), and anywhere in a channel where `listen` is on."""
        if message.guild is None or self._blanked(message):
            return False
        key = key_for(message.channel, message.guild.id)
        if isinstance(message.channel, discord.Thread) and await self.engine.has_answered(key):
            return True
        return await self.engine.listening(key)

    async def _answer(self, message: discord.Message) -> None:
        assert self.user is not None
        if self._blanked(message):
            log.info("ignoring a reply without ping: Discord hid its text (no content intent)")
            return
        spaces = await spaces_for(self, message.author, message.guild)
        msg, prepared = await to_message(message, self.user.id, spaces=spaces, fetch_files=False)
        surface = ChannelSurface(message.channel, message.channel.id, message)
        events: AsyncIterator[ReplyEvent]
        if not self.engine.allows(msg):  # a refused message's files are not fetched
            events = self.engine.reply(msg)
        else:
            msg, prepared = await to_message(
                message, self.user.id, spaces=spaces, readers=self.engine.pipeline.readers
            )
            if self._threads_for(message):
                # The question is stored under its thread and the model asked while the
                # thread opens (Discord gives it the message's id).
                events = started_now(self.engine.reply(thread_key(msg, message)))
                thread = await open_thread(message, clean_text(message, self.user.id), self.pacer)
                if thread is not None:
                    surface = ChannelSurface(thread, thread.id, None)
            else:
                events = self.engine.reply(msg)
        notes = [*prepared.heard, *prepared.notes]  # what a voice message said, first
        reply = await deliver(self.pacer, surface, events, notes)
        await note_answer(self.engine, reply)

    def _threads_for(self, message: discord.Message) -> bool:
        """A question asked in a text channel itself (not a reply to the bot) gets a thread."""
        assert self.user is not None
        ref = message.reference.resolved if message.reference is not None else None
        to_bot = isinstance(ref, discord.Message) and ref.author.id == self.user.id
        return self.settings.threads and may_thread(message) and not to_bot

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """Clicks on answers' buttons; commands go through the command tree."""
        try:
            await on_click(interaction, self.engine, self.pacer)
        except discord.HTTPException as exc:
            log.warning(
                "Discord refused the answer to a click (HTTP %s, code %s)", exc.status, exc.code
            )

    def _blanked(self, message: discord.Message) -> bool:
        """Without the content intent Discord blanks replies that do not ping the bot."""
        return (
            message.guild is not None
            and not self.reads_content
            and not (message.content or message.attachments or message.embeds)
        )

    async def on_guild_channel_update(
        self, before: discord.abc.GuildChannel, after: discord.abc.GuildChannel
    ) -> None:
        """A channel made private (or renamed) stops being searchable from elsewhere now,
        not at its next message."""
        place = place_for(after)
        if place is not None and place != place_for(before):
            await self.engine.place_changed(key_for(after, after.guild.id), place)

    async def on_raw_message_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        data: dict[str, Any] = dict(payload.data)
        author_id = str(data.get("author", {}).get("id"))
        if "content" not in data or author_id == str(self._bot_id()):
            return
        # Without the intent, edits of ordinary messages arrive blank; never store blanks.
        if not data["content"] and not self.reads_content:
            return
        key = await self._key(payload.channel_id, payload.guild_id)
        text = clean_text(payload.message, self._bot_id())
        await self.engine.edit(key, str(payload.message_id), text)

    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        key = await self._key(payload.channel_id, payload.guild_id)
        await self.engine.delete(key, str(payload.message_id))

    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        key = await self._key(payload.channel_id, payload.guild_id)
        for message_id in sorted(payload.message_ids):
            await self.engine.delete(key, str(message_id))

    async def _key(self, channel_id: int, guild_id: int | None) -> ConversationKey:
        if guild_id is None:
            return ConversationKey(PLATFORM, "", str(channel_id))
        channel: Any = self.get_channel(channel_id)
        if channel is None:
            try:
                channel = await self.fetch_channel(channel_id)
            except discord.HTTPException:
                return ConversationKey(PLATFORM, str(guild_id), str(channel_id))
        return key_for(channel, guild_id)
