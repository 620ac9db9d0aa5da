"""Slack events as platform-neutral facts: who wrote what, where, and to whom."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from bot.attachments import Attachment
from bot.types import AttachmentMeta, ConversationKey

# Message subtypes that are people (or other bots) saying something.
SPOKEN = (None, "file_share", "thread_broadcast", "bot_message")


@dataclass(frozen=True)
class Incoming:
    team: str
    channel: str
    ts: str
    thread_ts: str  # "" for a top-level message
    user: str
    text: str  # Slack's escaped text, mentions as <@U...>
    files: tuple[dict[str, Any], ...]
    is_dm: bool
    mentioned: bool
    from_bot: bool
    bot_name: str = ""
    channel_type: str = ""  # "channel", "group", "im" or "mpim"; "" when the event omits it

    def key(self, thread: str = "") -> ConversationKey:
        return ConversationKey("slack", self.team, self.channel, thread)

    @property
    def starts_thread(self) -> bool:
        """A top-level channel mention: its thread becomes a new conversation."""
        return self.mentioned and not self.thread_ts and not self.is_dm and not self.from_bot

    @property
    def context_key(self) -> ConversationKey:
        """Where this message belongs as context: the DM, its thread, or the channel."""
        return self.key("" if self.is_dm else self.thread_ts)


def parse(body: dict[str, Any], bot_user_id: str, bot_id: str) -> Incoming | None:
    """The message an event carries, or None for our own messages and non-messages."""
    event = body.get("event") or {}
    if event.get("subtype") not in SPOKEN:
        return None
    user = str(event.get("user") or "")
    other_bot = str(event.get("bot_id") or "")
    if user == bot_user_id or (other_bot and other_bot == bot_id):
        return None
    channel, ts = str(event.get("channel") or ""), str(event.get("ts") or "")
    if not channel or not ts or not (user or other_bot):
        return None
    text = str(event.get("text") or "")
    thread_ts = str(event.get("thread_ts") or "")
    is_dm = event.get("channel_type") == "im" or (
        event.get("type") == "message" and channel.startswith("D")
    )
    return Incoming(
        team=str(body.get("team_id") or event.get("team") or ""),
        channel=channel,
        ts=ts,
        thread_ts="" if thread_ts == ts else thread_ts,
        user=user or other_bot,
        text=text,
        files=tuple(f for f in event.get("files") or () if f.get("mode") != "tombstone"),
        is_dm=is_dm,
        mentioned=f"<@{bot_user_id}>" in text,
        from_bot=bool(other_bot) or event.get("subtype") == "bot_message",
        bot_name=str(event.get("username") or (event.get("bot_profile") or {}).get("name") or ""),
        channel_type=str(event.get("channel_type") or ""),
    )


def attachments(
    files: tuple[dict[str, Any], ...], fetch: Callable[[str], Awaitable[bytes]]
) -> list[Attachment]:
    found = []
    for file in files:
        url = str(file.get("url_private_download") or file.get("url_private") or "")
        duration = file.get("duration_ms")
        found.append(
            Attachment(
                name=str(file.get("name") or file.get("title") or "file"),
                mime=str(file.get("mimetype") or ""),
                size=int(file.get("size") or 0),
                fetch=partial(fetch, url),
                voice=is_voice_clip(file),
                seconds=duration / 1000 if isinstance(duration, int | float) else None,
            )
        )
    return found


def is_voice_clip(file: dict[str, Any]) -> bool:
    """A clip recorded in Slack: its mimetype may be audio/mp4, audio/webm or even
    video/mp4, so the subtype (or the clip's file name) tells."""
    name = str(file.get("name") or "")
    return file.get("subtype") == "slack_audio" or name.startswith("audio_message")


def file_meta(files: tuple[dict[str, Any], ...]) -> tuple[AttachmentMeta, ...]:
    return tuple(
        AttachmentMeta(
            str(f.get("name") or ""), str(f.get("mimetype") or ""), int(f.get("size") or 0)
        )
        for f in files
    )
