"""The "Ask teambot about this" message shortcut: a modal asks the question, the answer
comes in a thread on that message, with the message as context.

Slack gives the shortcut's trigger_id 3 seconds to open a modal, so the listener opens it
right after the ack. The modal carries where to answer (and the message's text, capped
to fit `private_metadata`) to its `view_submission`, so any process can take that.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from adapters.slack import render
from adapters.slack.delivery import Place
from adapters.slack.manifest import ASK_ABOUT_MESSAGE
from adapters.slack.runtime import Runtime
from bot.types import ConversationKey, Message

log = logging.getLogger("teambot.slack")

MODAL = "ask_about_message_modal"
BLOCK, FIELD = "question", "text"
QUOTE_CHARS = 2400  # of the message's text, so private_metadata stays under 3,000
CANNOT_POST = "I can't post in that channel; invite me to it first."

__all__ = ["ASK_ABOUT_MESSAGE", "MODAL", "AskAbout", "modal"]


@dataclass(frozen=True)
class Target:
    """The message asked about and where its answer goes."""

    team: str
    channel: str
    ts: str
    root: str  # its thread's root (its own ts when it starts none)
    author: str
    text: str

    def metadata(self) -> str:
        return json.dumps(
            {
                "team": self.team,
                "channel": self.channel,
                "ts": self.ts,
                "root": self.root,
                "author": self.author,
                "text": self.text[:QUOTE_CHARS],
            }
        )

    @classmethod
    def of_metadata(cls, raw: str) -> Target | None:
        try:
            data = json.loads(raw or "{}")
            return cls(**{k: str(data[k]) for k in cls.__dataclass_fields__})
        except (ValueError, KeyError, TypeError):
            return None


def target(body: dict[str, Any]) -> Target:
    message = body.get("message") or {}
    ts = str(message.get("ts") or body.get("message_ts") or "")
    return Target(
        team=str((body.get("team") or {}).get("id") or ""),
        channel=str((body.get("channel") or {}).get("id") or ""),
        ts=ts,
        root=str(message.get("thread_ts") or ts),
        author=str(message.get("user") or message.get("bot_id") or ""),
        text=str(message.get("text") or ""),
    )


def modal(found: Target) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": MODAL,
        "title": {"type": "plain_text", "text": "Ask teambot"},
        "submit": {"type": "plain_text", "text": "Ask"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "private_metadata": found.metadata(),
        "blocks": [
            {
                "type": "input",
                "block_id": BLOCK,
                "label": {"type": "plain_text", "text": "Your question about this message"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": FIELD,
                    "multiline": True,
                    "max_length": 3000,
                },
            }
        ],
    }


def question_of(view: dict[str, Any]) -> str:
    values = (view.get("state") or {}).get("values") or {}
    return str(((values.get(BLOCK) or {}).get(FIELD) or {}).get("value") or "").strip()


class AskAbout:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def open(self, body: dict[str, Any]) -> None:
        """Show the modal (right away: the trigger expires in 3 seconds)."""
        await self.rt.client.views_open(
            trigger_id=str(body.get("trigger_id") or ""), view=modal(target(body))
        )

    async def submitted(self, body: dict[str, Any], view: dict[str, Any]) -> None:
        found = Target.of_metadata(str(view.get("private_metadata") or ""))
        question = question_of(view)
        user = str((body.get("user") or {}).get("id") or "")
        if found is None or not question or not user:
            log.info("an %s submission without its message or question", MODAL)
            return
        names = await self.rt.names.many([found.author, *render.mentioned_users(found.text)])
        quoted = render.incoming(found.text, names, self.rt.bot_user_id)
        about = names.get(found.author) or found.author or "someone"
        asked = render.incoming(question, names, self.rt.bot_user_id)
        author, where, roles = await self.rt.asker(user, found.channel)
        channel_key = ConversationKey("slack", found.team, found.channel)
        group = not found.channel.startswith("D")
        refused = self.rt.engine.refusal(
            channel_key, author, is_group=group, place=where, roles=roles, channels=(found.channel,)
        )
        place = Place(found.channel, found.root, found.root, user, found.team, native=True)
        if refused is not None:  # told privately; nothing is posted or stored
            await self.rt.api.ephemeral(found.channel, found.root, user, refused)
            return
        posted = await self.rt.say(place, f"**{author.name}** asked about this message: {asked}")
        if not posted.handles:
            await self.rt.api.ephemeral(found.channel, "", user, CANNOT_POST)
            return
        thread = ConversationKey("slack", found.team, found.channel, found.root)
        await self.rt.engage(channel_key, thread, seed=True)
        text = f"{asked}\n\nThe message I am asking about, by {about}:\n{render.quote(quoted)}"
        message = Message(
            thread,
            str(posted.handles[0]),
            author,
            text,
            is_group=group,
            place=where,
            roles=roles,
            channels=(found.channel,),
        )
        await self.rt.answer(message, place)
