"""Slash commands mapped onto the engine's commands; /ask starts a thread and answers.

Slack wants the acknowledgement within 3 seconds, so the listener acks first and the
work (which may touch the database or the model) replies through `response_url`.
Slack does not allow slash commands inside threads, so they act on the channel (or
the DM) they were typed in.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.context.respond.async_respond import AsyncRespond

from adapters.slack import render
from adapters.slack.delivery import Place
from adapters.slack.render import markdown_message
from adapters.slack.runtime import Runtime
from bot.commands import REGISTRY
from bot.text import repair
from bot.types import ConversationKey, Message

log = logging.getLogger("teambot.slack")

COMMANDS = tuple(c.typed("slack") for c in REGISTRY.on("slack"))


class Slash:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def handle(self, command: dict[str, Any], respond: AsyncRespond) -> None:
        name = str(command.get("command", "")).lstrip("/")
        text = repair(str(command.get("text") or "")).strip()
        channel = str(command.get("channel_id") or "")
        is_dm = channel.startswith("D") or command.get("channel_name") == "directmessage"
        key = ConversationKey("slack", str(command.get("team_id") or ""), channel)
        try:
            if name == "ask":
                await self._ask(command, key, text, is_dm, respond)
                return
            user = str(command.get("user_id") or "")
            author, where, roles = await self.rt.asker(user, channel, "im" if is_dm else "")
            result = await self.rt.engine.command(
                key,
                author,
                name,
                text,
                is_group=not is_dm,
                place=where,
                roles=roles,
                channels=(channel,),
            )
            await self._respond(respond, result.text, result.private)
        except Exception:
            log.exception("/%s failed in %s", name, channel)
            await self._respond(respond, "Sorry, that command failed; the details are in the log.")

    async def _respond(self, respond: AsyncRespond, text: str, private: bool = True) -> None:
        kind = "ephemeral" if private else "in_channel"
        await respond(response_type=kind, **markdown_message(text))

    async def _ask(
        self,
        command: dict[str, Any],
        channel_key: ConversationKey,
        question: str,
        is_dm: bool,
        respond: AsyncRespond,
    ) -> None:
        names = await self.rt.names.many(render.mentioned_users(question))
        question = render.incoming(question, names, self.rt.bot_user_id)
        if not question:
            await self._respond(respond, "Usage: `/ask <your question>`")
            return
        user = str(command.get("user_id") or "")
        author, where, roles = await self.rt.asker(user, channel_key.channel, "im" if is_dm else "")
        refused = self.rt.engine.refusal(
            channel_key,
            author,
            is_group=not is_dm,
            place=where,
            roles=roles,
            channels=(channel_key.channel,),
        )
        if refused is not None:  # told privately, every time; nothing is posted or stored
            await self._respond(respond, refused)
            return
        top = Place(channel_key.channel, "", "", author.id, channel_key.space)
        posted = await self.rt.say(top, f"**{author.name}** asked: {question}")
        if not posted.handles:
            log.info("/ask could not post in %s: %s", channel_key.channel, posted.error)
            await self._respond(respond, "I can't post here; invite me to the channel first.")
            return
        ts = str(posted.handles[0])
        key = channel_key
        if not is_dm:
            key = ConversationKey("slack", channel_key.space, channel_key.channel, ts)
            await self.rt.engage(channel_key, key, seed=True)
        place = Place(channel_key.channel, ts, ts, author.id, channel_key.space, native=True)
        message = Message(
            key,
            ts,
            author,
            question,
            is_group=not is_dm,
            place=where,
            roles=roles,
            channels=(channel_key.channel,),
        )
        await self.rt.answer(message, place)
