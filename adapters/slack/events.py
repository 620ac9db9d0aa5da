"""Message events: answer mentions, DMs and engaged threads; record the rest as context.

Each user message is answered once however Slack delivers it: event ids are claimed
durably, the (channel, ts) pair is checked here because a channel mention arrives as
both `app_mention` and `message`, and the engine's `reply` is idempotent per message.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import replace
from typing import Any

from adapters.slack import agent, render
from adapters.slack.inbound import Incoming, attachments, file_meta, parse
from adapters.slack.runtime import FAILED, Runtime
from bot.attachments import prepare
from bot.text import repair
from bot.types import Author, ConversationKey, Message

log = logging.getLogger("teambot.slack")

SEEN_MAX = 20_000


class Events:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()

    async def handle(self, body: dict[str, Any]) -> None:
        event = body.get("event") or {}
        subtype = event.get("subtype")
        event_id = str(body.get("event_id") or "")
        if subtype == "message_changed":
            if not self._own(event.get("message") or {}) and await self._claim(event_id):
                await self._edited(body, event)
        elif subtype == "message_deleted":
            if await self._claim(event_id):
                await self._deleted(body, event)
        else:
            incoming = parse(body, self.rt.bot_user_id, self.rt.bot_id)
            # The twin of a mention we already have costs no database write.
            if incoming is not None and self._first_sight(incoming):
                await self._message(incoming, event_id)

    async def _message(self, incoming: Incoming, event_id: str) -> None:
        if not incoming.from_bot:
            self.rt.names.prefetch(incoming.user)
        try:
            if incoming.starts_thread:
                # Seeding is idempotent, so it may overlap the durable claim: one round trip less.
                thread = incoming.key(incoming.ts)
                engaging = self.rt.engage(incoming.key(), thread, True)
                claimed, _ = await asyncio.gather(self._claim(event_id), engaging)
            else:
                claimed = await self._claim(event_id)
            if claimed:
                await self._route(incoming)
        except Exception:
            log.exception("handling %s in %s failed", incoming.ts, incoming.channel)
            if (incoming.is_dm or incoming.mentioned) and not incoming.from_bot:
                place = self.rt.place_for(incoming, incoming.thread_ts or incoming.ts)
                await self.rt.say(place, FAILED)

    def _own(self, message: dict[str, Any]) -> bool:
        bot = self.rt.bot_id
        return (bool(bot) and message.get("bot_id") == bot) or message.get(
            "user"
        ) == self.rt.bot_user_id

    async def _claim(self, event_id: str) -> bool:
        return not event_id or await self.rt.engine.claim_event("slack", event_id)

    def _first_sight(self, incoming: Incoming) -> bool:
        key = (incoming.channel, incoming.ts)
        if key in self._seen:
            return False
        self._seen[key] = None
        if len(self._seen) > SEEN_MAX:
            self._seen.popitem(last=False)
        return True

    async def _route(self, incoming: Incoming) -> None:
        if incoming.is_dm and not incoming.from_bot:
            await self._answer(incoming, incoming.key(), incoming.thread_ts or incoming.ts)
        elif incoming.from_bot:
            await self._record(incoming, incoming.context_key)
        elif incoming.starts_thread:
            await self._start_thread(incoming)
        elif incoming.mentioned or await self._engaged(incoming.key(incoming.thread_ts)):
            await self._in_thread(incoming)
        elif await self.rt.engine.listening(incoming.key()):
            # `listen on` here: every message is answered, in its thread, unmentioned.
            if incoming.thread_ts:
                await self._in_thread(incoming)
            else:
                await self._start_thread(incoming)
        else:
            await self._record(incoming, incoming.context_key)

    async def _start_thread(self, incoming: Incoming) -> None:
        thread = incoming.key(incoming.ts)
        # Seed before recording the mention in the channel, so it isn't in the thread twice.
        await self.rt.engage(incoming.key(), thread, seed=True)
        try:
            await self._answer(incoming, thread, incoming.ts)
        finally:
            # Channel context for later threads; after the answer, so that this database
            # write doesn't queue ahead of the reply's own. Its failure is not the
            # asker's business: they have had their one answer (or apology) already.
            try:
                await self._record(incoming, incoming.key())
            except Exception:
                log.exception("keeping %s as context in %s failed", incoming.ts, incoming.channel)

    async def _in_thread(self, incoming: Incoming) -> None:
        thread = incoming.key(incoming.thread_ts)
        await self.rt.engage(incoming.key(), thread, seed=False)
        await self._answer(incoming, thread, incoming.thread_ts)

    async def _engaged(self, key: ConversationKey) -> bool:
        """Whether the bot has answered in this thread (also before a restart)."""
        if key in self.rt.engaged:
            return True
        if await self.rt.engine.has_answered(key):
            self.rt.engaged.add(key)
            return True
        return False

    async def _text(self, incoming: Incoming) -> str:
        users = render.mentioned_users(incoming.text)
        names = await self.rt.names.many(u for u in users if u != self.rt.bot_user_id)
        return render.incoming(incoming.text, names, self.rt.bot_user_id)

    async def _record(self, incoming: Incoming, key: ConversationKey) -> None:
        text = await self._text(incoming)
        if not text and not incoming.files:
            return
        roles: tuple[str, ...] = ()
        if incoming.from_bot:
            author = Author(incoming.user, incoming.bot_name or incoming.user, is_bot=True)
        else:
            author, roles = await asyncio.gather(
                self.rt.author(incoming.user), self.rt.roles(incoming.user)
            )
        names = ", ".join(str(f.get("name", "file")) for f in incoming.files)
        if names:
            text = f"{text}\n[attached: {names}]".strip()
        place = await self.rt.channels.place(incoming.channel, incoming.channel_type)
        message = Message(
            key,
            incoming.ts,
            author,
            text,
            attachments=file_meta(incoming.files),
            is_group=not incoming.is_dm,
            place=place,
            roles=roles,
            channels=(incoming.channel,),
        )
        await self.rt.engine.record(message)

    async def _answer(self, incoming: Incoming, key: ConversationKey, thread_ts: str) -> None:
        place = self.rt.place_for(incoming, thread_ts)
        (author, where, roles), text = await asyncio.gather(
            self.rt.asker(incoming.user, incoming.channel, incoming.channel_type),
            self._text(incoming),
        )
        if incoming.is_dm and self.rt.agent is not None:
            self.rt.agent.title_soon(incoming.channel, thread_ts, not incoming.thread_ts, text)
            viewing = self.rt.agent.viewing(incoming.user)
            if viewing is not None:
                if agent.asks_for_channel_summary(text):
                    await self.rt.summarize_viewed(viewing, author, roles, place)
                    return
                text = await self.rt.with_viewed_channel(viewing, text)
        message = Message(
            key,
            incoming.ts,
            author,
            text,
            is_group=not incoming.is_dm,
            place=where,
            roles=roles,
            channels=(incoming.channel,),
        )
        if self.rt.engine.allows(message):  # a refused message's files are not fetched
            files = await self.rt.complete_files(incoming.files)
            reading = self.rt.engine.pipeline.readers.reading(key, message.author.id)
            prepared = await prepare(attachments(files, self.rt.download), reading)
            if prepared.notes or prepared.heard:
                # What a voice message said comes first, as said, then the warnings.
                notes = [*prepared.heard, *(f":warning: {note}" for note in prepared.notes)]
                await self.rt.say(place, "\n".join(notes))
            message = replace(
                message,
                text=prepared.message_text(text),
                images=prepared.images,
                attachments=prepared.meta,
            )
        await self.rt.answer(message, place)

    async def _edited(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        message = event.get("message") or {}
        incoming = parse(
            {
                **body,
                "event": {
                    **message,
                    "channel": event.get("channel"),
                    "channel_type": event.get("channel_type"),
                },
            },
            self.rt.bot_user_id,
            self.rt.bot_id,
        )
        if incoming is None:
            return
        text = repair(await self._text(incoming))  # edits don't pass through Message
        for key in self._keys_of(incoming):
            await self.rt.engine.edit(key, incoming.ts, text)

    async def _deleted(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        ts = str(event.get("deleted_ts") or "")
        previous = event.get("previous_message") or {}
        incoming = Incoming(
            team=str(body.get("team_id") or ""),
            channel=str(event.get("channel") or ""),
            ts=ts,
            thread_ts=str(previous.get("thread_ts") or ""),
            user="",
            text="",
            files=(),
            is_dm=event.get("channel_type") == "im",
            mentioned=False,
            from_bot=False,
        )
        for key in self._keys_of(incoming):
            await self.rt.engine.delete(key, ts)

    @staticmethod
    def _keys_of(incoming: Incoming) -> list[ConversationKey]:
        """Every conversation a message may be stored in (a mention is in two)."""
        if incoming.is_dm:
            return [incoming.key()]
        if incoming.thread_ts and incoming.thread_ts != incoming.ts:
            return [incoming.key(incoming.thread_ts)]
        return [incoming.key(), incoming.key(incoming.ts)]
