"""Message shortcuts: "Summarize thread" runs `summarize` on the thread a message is in.

Slack wants the acknowledgement within 3 seconds, so the listener acks first. The
summary is posted in that message's thread, for everyone there to read. The shortcut
names the message by its thread's root, so the summary covers the whole thread (or the
messages around a message that starts none); it reads only what the person who used
the shortcut could read from that channel.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.context.respond.async_respond import AsyncRespond

from adapters.slack.delivery import Place
from adapters.slack.links import SlackLinks
from adapters.slack.manifest import SUMMARIZE_THREAD
from adapters.slack.render import markdown_message
from adapters.slack.runtime import FAILED, Runtime
from bot.types import ConversationKey

log = logging.getLogger("teambot.slack")

__all__ = ["SUMMARIZE_THREAD", "Shortcuts"]

CANNOT_POST = "I can't post in this channel; invite me to it first."


class Shortcuts:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.links: SlackLinks | None = None  # set once auth.test named the workspace

    async def summarize_thread(self, body: dict[str, Any], respond: AsyncRespond) -> None:
        message = body.get("message") or {}
        channel, team, user = _id(body, "channel"), _id(body, "team"), _id(body, "user")
        ts = str(message.get("ts") or body.get("message_ts") or "")
        root = str(message.get("thread_ts") or ts)
        key = ConversationKey("slack", team, channel)
        place = Place(channel, root, ts, user, team)
        link = self.links.permalink(str(key), root) if self.links else None
        if not link:
            log.warning("no permalink for %s in %s; was auth.test answered?", root, channel)
            await self.rt.say(place, FAILED)
            return
        try:
            author, where, roles = await self.rt.asker(user, channel)
            result = await self.rt.engine.command(
                key,
                author,
                "summarize",
                link,
                is_group=not channel.startswith("D"),
                place=where,
                roles=roles,
                channels=(channel,),
            )
            text = result.text
        except Exception:
            log.exception("the %s shortcut failed in %s", SUMMARIZE_THREAD, channel)
            text = FAILED
        else:
            if result.private:  # a refusal: only for the person who used the shortcut
                await respond(response_type="ephemeral", **markdown_message(text))
                return
        posted = await self.rt.say(place, text)
        if not posted.handles:
            log.info("%s could not post in %s: %s", SUMMARIZE_THREAD, channel, posted.error)
            await respond(response_type="ephemeral", **markdown_message(CANNOT_POST))


def _id(body: dict[str, Any], field: str) -> str:
    return str((body.get(field) or {}).get("id") or "")
