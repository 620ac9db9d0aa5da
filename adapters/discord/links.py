"""Discord message links: jump URLs built for citations and read back when pasted."""

from __future__ import annotations

import re

PLATFORM = "discord"
JUMP = re.compile(
    r"https?://(?:(?:ptb|canary)\.)?discord(?:app)?\.com/channels/(\d+|@me)/(\d+)/(\d+)",
    re.IGNORECASE,
)


class DiscordLinks:
    def permalink(self, conversation: str, platform_id: str) -> str | None:
        """A jump URL; a thread's messages link through the thread's own channel id."""
        _, guild, channel, thread = conversation.split(":", 3)
        if not platform_id.isdigit():  # a slash command's question has no message
            return None
        return f"https://discord.com/channels/{guild or '@me'}/{thread or channel}/{platform_id}"

    def parse(self, url: str) -> tuple[str, str] | None:
        """Message ids are unique across Discord, so the guild narrows the search enough
        (a DM's link names its channel, which is the conversation)."""
        match = JUMP.fullmatch(url.strip())
        if match is None:
            return None
        guild, channel, message = match.groups()
        if guild == "@me":
            return f"{PLATFORM}::{channel}:", message
        return f"{PLATFORM}:{guild}:", message
